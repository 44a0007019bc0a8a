#!/usr/bin/env bash
# make systemtest: the .deb in a booted Debian. For each suite (trixie, then
# bookworm): a rootfs from mmdebstrap (cached under .cache/systemtest, keyed
# on the suite and the package list), the package and the test binary copied
# in, an ext4 image made with `mke2fs -d` (no loop mount), booted under qemu
# (TCG) with the suite's cloud kernel and systemd as PID 1. A oneshot unit
# runs test/system's tests in two phases around a reboot; results come back
# on the second serial port. Assertions: system_test.go.
# Suites in SYSTEMTEST_SHORT (default bookworm) run phase 1's install,
# sandbox, reload, bad reload and watchdog tests only, with no upgrade and no
# reboot: the unit and the synchronous reload on systemd 252 in half the time.
#   env: SYSTEMTEST_SUITES (default "trixie bookworm"), SYSTEMTEST_SHORT
#   (default "bookworm"), VM_TIMEOUT (s per suite, default 1500), CACHE
#   (default .cache/systemtest).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CACHE=${CACHE:-$ROOT/.cache/systemtest}
SUITES=${SYSTEMTEST_SUITES:-trixie bookworm}
SHORT=${SYSTEMTEST_SHORT-bookworm}
VM_TIMEOUT=${VM_TIMEOUT:-1500}
start=$(date +%s)
log() { echo "[systemtest $(date +%T)] $*" >&2; }
die() { log "$*"; exit 1; }

need=""
for p in qemu-system-x86_64:qemu-system-x86 mmdebstrap:mmdebstrap mke2fs:e2fsprogs dpkg-deb:dpkg; do
	command -v "${p%%:*}" >/dev/null || need="$need ${p#*:}"
done
[ -z "$need" ] || die "missing host tools; apt-get install$need"
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, a rootfs owned by root for mke2fs -d)"

# What the rootfs holds. Changing this list (or ROOTFS_REV) makes a new cache key.
PKGS=systemd-sysv,dbus,linux-image-cloud-amd64,initramfs-tools,ipvsadm,iproute2,kmod,procps
ROOTFS_REV=1
rootfs() { # suite -> path of the cached rootfs tarball
	local suite=$1 key tar
	key=$(printf '%s|%s|%s' "$suite" "$PKGS" "$ROOTFS_REV" | sha256sum | cut -c1-12)
	tar=$CACHE/rootfs-$suite-$key.tar
	if [ ! -s "$tar" ]; then
		log "mmdebstrap $suite (cold cache: a few minutes)"
		mkdir -p "$CACHE"
		# No mirror argument: mmdebstrap uses the machine's apt sources.
		mmdebstrap --quiet --variant=apt --format=tar --include="$PKGS" \
			--customize-hook='echo director > "$1/etc/hostname"' \
			--customize-hook='printf "/dev/vda / ext4 rw 0 1\n" > "$1/etc/fstab"' \
			"$suite" "$tar.tmp" || die "mmdebstrap $suite failed"
		mv "$tar.tmp" "$tar"
		find "$CACHE" -maxdepth 1 -name "rootfs-$suite-*.tar" ! -name "$(basename "$tar")" -delete
	fi
	echo "$tar"
}

RUN=$CACHE/run
rm -rf "$RUN"
mkdir -p "$RUN/payload"
pl=$RUN/payload

# The package twice: as built, and rebuilt with a higher version for the
# upgrade test. Then the test binary.
V=$(packaging/deb/version.sh)
log "building ipvs-agent_${V}_amd64.deb and a +up rebuild"
deb1=$(OUT=$pl bash packaging/deb/build.sh)
deb2=$(DEB_VERSION="$V+up" OUT=$pl bash packaging/deb/build.sh)
if command -v lintian >/dev/null; then
	log "lintian $(basename "$deb1")"
	lintian --fail-on error,warning "$deb1" || die "lintian: the package is not clean (see packaging/README.md)"
fi
CGO_ENABLED=0 go test -c -tags systemtest -o "$pl/system.test" ./test/system || die "building test/system failed"
cat >"$pl/env" <<ENV
SYSTEMTEST_DEB1=/root/systemtest/$(basename "$deb1")
SYSTEMTEST_DEB2=/root/systemtest/$(basename "$deb2")
SYSTEMTEST_VERSION2=$V+up
ENV
install -m 0755 test/system/inside.sh "$pl/inside.sh"

rc=0
summary=""
for suite in $SUITES; do
	t0=$(date +%s)
	tar=$(rootfs "$suite")
	d=$RUN/$suite
	mkdir -p "$d/root"
	tar -C "$d/root" -xf "$tar"
	mkdir -p "$d/root/root/systemtest"
	cp -a "$pl/." "$d/root/root/systemtest/"
	want_phases=2
	case " $SHORT " in *" $suite "*)
		echo SYSTEMTEST_SHORT=1 >>"$d/root/root/systemtest/env"
		want_phases=1 ;;
	esac
	cat >"$d/root/etc/systemd/system/systemtest.service" <<'UNIT'
[Unit]
Description=ipvs-agent system test
After=multi-user.target
[Service]
Type=oneshot
TimeoutStartSec=infinity
EnvironmentFile=/root/systemtest/env
ExecStart=/root/systemtest/inside.sh
[Install]
WantedBy=multi-user.target
UNIT
	ln -sf /etc/systemd/system/systemtest.service "$d/root/etc/systemd/system/multi-user.target.wants/systemtest.service"
	mke2fs -q -t ext4 -d "$d/root" "$d/root.img" 3G >/dev/null
	K=$(ls "$d"/root/boot/vmlinuz-* | head -1)
	I=$(ls "$d"/root/boot/initrd.img-* | head -1)
	cp "$K" "$I" "$d/"
	rm -rf "$d/root"
	log "$suite: booting $(basename "$K") (TCG, timeout ${VM_TIMEOUT}s); console: $d/console.log"
	# tsc=reliable: without it TCG picks hpet and every clock read is
	# emulated MMIO. The guest reboots once (phase 2) then powers off.
	src=0
	timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1536 \
		-nographic -nic none -drive file="$d/root.img",format=raw,if=virtio \
		-serial "file:$d/console.log" -serial "file:$d/results.log" \
		-kernel "$d/$(basename "$K")" -initrd "$d/$(basename "$I")" \
		-append "root=/dev/vda rw console=ttyS0 quiet panic=-1 tsc=reliable clocksource=tsc" </dev/null >"$d/qemu.log" 2>&1 || src=$?
	[ $src = 124 ] && log "$suite: the VM timed out after ${VM_TIMEOUT}s"
	res=$d/results.log
	touch "$res"
	grep -E '^(=== RUN|--- |    |@@|PASS|FAIL|ok)' "$res" | sed "s/^/[$suite] /" >&2 || true
	passed=$(grep -c '^--- PASS' "$res" || true)
	failed=$({ grep '^--- FAIL' "$res" || true; } | awk '{print $3}' | xargs) # no FAIL: grep exits 1 (pipefail)
	phases=$(grep -c '^@@rc ' "$res" || true)
	if [ -n "$failed" ] || [ "$phases" != "$want_phases" ] || [ "$passed" = 0 ]; then
		rc=1
	fi
	summary="$summary $suite: $passed passed, failed: ${failed:-none}, phases finished: $phases/$want_phases, $(($(date +%s) - t0))s;"
	rm -f "$d/root.img"
done
log "summary:$summary"
log "systemtest finished with exit code $rc after $(($(date +%s) - start))s (logs: $RUN)"
echo "systemtest:$summary"
exit $rc
