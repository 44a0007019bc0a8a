# Shared by run-tests.sh and demo.sh (sourced, not run).
#
# The host kernel has no IPVS, so the real-kernel tests boot Debian's cloud
# kernel under qemu (software emulation, no KVM needed) with a small initramfs:
#   base.cpio.gz    busybox-static, ip_vs + scheduler modules, ipvsadm, iproute2's ip
#                   (cached: depends only on this file, the kernel and the host's packages)
#   payload.cpio.gz /payload/run.sh plus whatever the caller puts there (rebuilt every run)
# The kernel unpacks both archives on top of each other. /init (from base) mounts
# the usual filesystems, loads the modules, runs /payload/run.sh with its output on
# the second serial port (ttyS1, a file on the host) and writes a final
# "VMTEST-EXIT <rc>" line there. The host streams that file while the VM runs and
# trusts nothing but that marker: no marker (crash, hang, timeout) is a failure.

set -eu

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${CACHE:-$ROOT/.cache/vm}
VM_TIMEOUT=${VM_TIMEOUT:-900} # seconds for the whole VM run, boot to poweroff
VM_CPUS=${VM_CPUS:-2}
VM_MEM=${VM_MEM:-1024}
# VM_KEEPALIVED=1 (make vmbench) boots a base that also holds keepalived and its
# libraries: the side-by-side benchmarks run it next to the agent. The plain
# base leaves it out because it would cost every make vmtest boot time.
VM_KEEPALIVED=${VM_KEEPALIVED:-0}
# tsc=reliable: under TCG the guest finds no stable TSC and falls back to hpet,
# which makes every clock read (time.Now, Go's scheduler, timers) an emulated
# MMIO access, as no real director pays. With it clock reads take the vDSO.
VM_CMDLINE="console=ttyS0 quiet panic=-1 oops=panic tsc=reliable clocksource=tsc"
mkdir -p "$CACHE"

# new_run_dir sets RUN to a fresh directory for one run's payload and logs,
# so runs from several shells of one checkout do not collide. Old ones go.
new_run_dir() {
	find "$CACHE" -maxdepth 1 -name 'run.*' -mmin +720 -exec rm -rf {} + 2>/dev/null || true
	RUN=$(mktemp -d "$CACHE/run.XXXXXX")
}

# finish_run drops the run's big files (binaries, initrd) and keeps its logs.
finish_run() {
	rm -rf "$RUN/payload" "$RUN/payload.cpio.gz" "$RUN/initrd.gz"
}

log() { printf '[vm] %s\n' "$*" >&2; }
die() { printf '[vm] ERROR: %s\n' "$*" >&2; exit 1; }

# Debian packages the harness needs, by the command that proves each is there.
HOST_PKGS="qemu-system-x86:qemu-system-x86_64 busybox-static:/bin/busybox ipvsadm:/usr/sbin/ipvsadm
kmod:depmod cpio:cpio iproute2:/usr/bin/ip"

# need_host_tools installs missing packages when we are root on a Debian-like
# machine (CI, a fresh box) and otherwise stops with the command to run.
need_host_tools() {
	local missing="" p pkg cmd
	for p in $HOST_PKGS; do
		pkg=${p%%:*} cmd=${p#*:}
		# busybox (the dynamic one) does not do: we copy the binary into the VM.
		if [ "$pkg" = busybox-static ]; then
			dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing="$missing $pkg"
			continue
		fi
		command -v "$cmd" >/dev/null 2>&1 || missing="$missing $pkg"
	done
	command -v go >/dev/null 2>&1 || die "go is not on PATH (export PATH=\$PATH:/usr/local/go/bin)"
	[ -z "$missing" ] && return 0
	local fix="apt-get update && apt-get install -y$missing"
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		log "installing:$missing"
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; } >&2 ||
			die "could not install packages; run: $fix"
	else
		die "missing packages:$missing; run: sudo sh -c '$fix'"
	fi
}

# fetch_kernel sets KVER and KDIR (the unpacked linux-image package, with
# modules.dep). The cloud flavour is small and has IPVS as modules.
fetch_kernel() {
	local meta=linux-image-cloud-amd64 pkg
	pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
	if [ -z "$pkg" ]; then
		# Empty package lists on a fresh machine: update once, then ask again.
		if [ "$(id -u)" = 0 ]; then apt-get update -qq >&2 || true; fi
		pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
	fi
	if [ -z "$pkg" ]; then
		# Offline but cached: use the newest kernel we already have.
		pkg=$(ls -1 "$CACHE" 2>/dev/null | grep '^linux-image-.*\.deb$' | sort -V | tail -1 | sed 's/\.deb$//')
		[ -n "$pkg" ] || die "cannot resolve $meta (run: apt-get update)"
		log "apt cannot resolve $meta; using cached $pkg"
	fi
	KVER=${pkg#linux-image-}
	KDIR=$CACHE/kernel-$KVER
	if [ ! -f "$KDIR/lib/modules/$KVER/modules.dep" ]; then
		if [ ! -f "$CACHE/$pkg.deb" ]; then
			log "downloading $pkg"
			# apt-get download writes into the current directory; _apt cannot
			# always write there, which only costs a warning.
			(cd "$CACHE" && apt-get download "$pkg" >&2 2>/dev/null && mv "${pkg}"_*.deb "$pkg.deb") ||
				die "apt-get download $pkg failed (run: apt-get update)"
		fi
		# Unpack beside and rename: two runs starting at once must not share
		# a half-written directory.
		local tmp
		tmp=$(mktemp -d "$CACHE/kernel.XXXXXX")
		dpkg -x "$CACHE/$pkg.deb" "$tmp"
		depmod -b "$tmp" "$KVER"
		rm -rf "$KDIR"
		mv "$tmp" "$KDIR" 2>/dev/null || rm -rf "$tmp"
	fi
	[ -f "$KDIR/boot/vmlinuz-$KVER" ] || die "no kernel image in $KDIR"
}

# Modules the tests need. modules.dep lists each module's full dependency
# chain, so copying every file named on a matching line is enough.
VM_MODULES="ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_dh ip_vs_sh
ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_mh dummy veth bridge ipip ip6_tunnel"

# copy_bin copies a host binary and the shared libraries ldd names for it.
copy_bin() {
	local bin=$1 dst=$2 lib
	mkdir -p "$dst$(dirname "$bin")"
	cp -L "$bin" "$dst$bin"
	for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
		mkdir -p "$dst$(dirname "$lib")"
		cp -L "$lib" "$dst$lib"
	done
}

# fetch_keepalived sets KA_BIN to keepalived unpacked from its Debian package
# and KA_LIBPATH to the library directories of the packages it needs that the
# host does not have (apt-get download + dpkg -x, as for the kernel; nothing
# is installed on the host, so no daemon starts there). KA_VERSION goes into
# the base's cache key.
fetch_keepalived() {
	KA_VERSION=$(apt-cache policy keepalived 2>/dev/null | awk '/Candidate:/{print $2}')
	[ -n "$KA_VERSION" ] && [ "$KA_VERSION" != "(none)" ] || die "apt cannot resolve keepalived (run: apt-get update)"
	local dir=$CACHE/keepalived-${KA_VERSION//[:~+]/_} want new p d level
	if [ ! -x "$dir/root/usr/sbin/keepalived" ]; then
		# keepalived and whatever of its dependency tree (3 levels) is not
		# installed here: on bookworm libsnmp40, libnftnl11, libpci3, libwrap0.
		want=keepalived new=keepalived
		for level in 1 2 3; do
			local next=""
			for p in $new; do
				for d in $(apt-cache depends "$p" 2>/dev/null | awk '$1=="Depends:" || $1=="PreDepends:" {print $2}' | grep -v '^<'); do
					dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'ok installed' && continue
					case " $want " in *" $d "*) continue ;; esac
					want="$want $d" next="$next $d"
				done
			done
			new=$next
		done
		log "downloading$(printf ' %s' $want) (keepalived $KA_VERSION for the benchmarks)"
		local tmp
		tmp=$(mktemp -d "$CACHE/keepalived.XXXXXX")
		(cd "$tmp" && apt-get download $want >&2 2>/dev/null) || die "apt-get download$want failed (run: apt-get update)"
		for p in "$tmp"/*.deb; do dpkg -x "$p" "$tmp/root"; done
		rm -f "$tmp"/*.deb
		rm -rf "$dir"
		mv "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
	fi
	KA_BIN=$dir/root/usr/sbin/keepalived
	KA_LIBPATH=$dir/root/usr/lib/x86_64-linux-gnu:$dir/root/lib/x86_64-linux-gnu
	if LD_LIBRARY_PATH=$KA_LIBPATH ldd "$KA_BIN" | grep -q 'not found'; then
		LD_LIBRARY_PATH=$KA_LIBPATH ldd "$KA_BIN" | grep 'not found' >&2
		die "keepalived needs libraries neither the host nor $dir has"
	fi
}

# copy_keepalived puts keepalived at /usr/sbin/keepalived in the stage, with
# every library ldd names (from the host or the unpacked packages; the
# latter land at their path without the unpack prefix).
copy_keepalived() {
	local dst=$1 root=${KA_BIN%/usr/sbin/keepalived} lib rel
	mkdir -p "$dst/usr/sbin"
	cp "$KA_BIN" "$dst/usr/sbin/keepalived"
	for lib in $(LD_LIBRARY_PATH=$KA_LIBPATH ldd "$KA_BIN" | grep -o '/[^ ]*'); do
		rel=${lib#$root}
		mkdir -p "$dst$(dirname "$rel")"
		cp -L "$lib" "$dst$rel"
	done
}

# build_base sets BASE to the cached base archive, building it if needed.
build_base() {
	local key stage M m re variant=std
	if [ "$VM_KEEPALIVED" = 1 ]; then
		fetch_keepalived
		variant=keepalived
	fi
	key=$( {
		cat "${BASH_SOURCE[0]}"
		echo "$KVER $variant ${KA_VERSION:-}"
		dpkg-query -W busybox-static ipvsadm iproute2 libc6 2>/dev/null || true
	} | sha256sum | cut -c1-12)
	BASE=$CACHE/base-$KVER-$variant-$key.cpio.gz
	[ -f "$BASE" ] && return 0
	log "building initramfs base for $KVER"
	stage=$(mktemp -d "$CACHE/stage.XXXXXX")
	M=lib/modules/$KVER
	mkdir -p "$stage"/{bin,sbin,proc,sys,dev,tmp,run,var/lib,etc,$M}
	ln -s ../run "$stage/var/run"
	cp /bin/busybox "$stage/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ -e "$stage/bin/$a" ] || ln -s busybox "$stage/bin/$a"
	done
	ln -s ../bin/modprobe "$stage/sbin/modprobe" # the kernel's request_module helper path
	copy_bin /usr/sbin/ipvsadm "$stage"
	# iproute2's ip (netns, veth, bridge) replaces busybox's applet on PATH.
	# busybox sh still runs its own applet for a bare "ip" (it prefers
	# applets), so shell scripts in the VM call /usr/sbin/ip.
	local ipbin
	ipbin=$(command -v ip)
	copy_bin "$ipbin" "$stage"
	mkdir -p "$stage/usr/sbin"
	[ "$ipbin" = /usr/sbin/ip ] || ln -sf "$ipbin" "$stage/usr/sbin/ip"
	ln -sf /usr/sbin/ip "$stage/bin/ip"
	[ "$variant" = keepalived ] && copy_keepalived "$stage"
	re=$(echo $VM_MODULES | sed 's/ /|/g')
	for m in $(grep -E "/($re)\.ko(\.[a-z]+)?:" "$KDIR/$M/modules.dep" | tr -d ':' | tr ' ' '\n' | sort -u); do
		mkdir -p "$stage/$M/$(dirname "$m")"
		cp "$KDIR/$M/$m" "$stage/$M/$m"
	done
	cp "$KDIR/$M"/modules.builtin* "$KDIR/$M/modules.order" "$stage/$M/"
	depmod -b "$stage" "$KVER"
	cat >"$stage/init" <<EOF
#!/bin/sh
# PID 1 in the test VM. Results go to ttyS1; the console (ttyS0) is for the kernel.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
ip link set lo up  # IPVS rejects destinations while no local address exists
for m in $(echo $VM_MODULES); do modprobe \$m || echo "modprobe \$m failed"; done
stty -F /dev/ttyS1 raw -echo 2>/dev/null  # no \\r\\n translation on the results port
echo "VMTEST-BOOTED \$(uname -r)" >/dev/ttyS1
echo "[vm] clocksource: \$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)" >/dev/ttyS1
cd /payload && sh /payload/run.sh >/dev/ttyS1 2>&1
echo "VMTEST-EXIT \$?" >/dev/ttyS1
sleep 1  # let the UART drain before the power goes
poweroff -f
EOF
	chmod +x "$stage/init"
	(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$BASE.tmp"
	mv "$BASE.tmp" "$BASE"
	rm -rf "$stage"
	find "$CACHE" -maxdepth 1 -name "base-$KVER-$variant-*.cpio.gz" ! -name "$(basename "$BASE")" -delete # stale builds
}

# build_payload DIR sets PAYLOAD to an archive of DIR placed at /payload.
build_payload() {
	local dir=$1
	[ -f "$dir/run.sh" ] || die "payload $dir has no run.sh"
	PAYLOAD=$dir.cpio.gz
	local st # cpio takes names from find: stage a copy named payload
	st=$(mktemp -d "$CACHE/pl.XXXXXX")
	cp -a "$dir" "$st/payload"
	(cd "$st" && find payload | cpio -o -H newc --quiet | gzip -1) >"$PAYLOAD"
	rm -rf "$st"
}

# boot_vm OUTDIR boots kernel + BASE + PAYLOAD, streams the results port to
# stdout and returns the payload's exit code (1 when no marker arrived).
boot_vm() {
	local out=$1 qpid rc code
	mkdir -p "$out"
	: >"$out/results.log"
	: >"$out/console.log"
	cat "$BASE" "$PAYLOAD" >"$out/initrd.gz"
	log "booting $KVER under qemu (TCG, $VM_CPUS vCPUs, timeout ${VM_TIMEOUT}s)"
	timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 \
		-accel tcg -cpu max -smp "$VM_CPUS" -m "$VM_MEM" \
		-display none -monitor none -no-reboot -nic none \
		-serial "file:$out/console.log" -serial "file:$out/results.log" \
		-kernel "$KDIR/boot/vmlinuz-$KVER" -initrd "$out/initrd.gz" \
		-append "$VM_CMDLINE" </dev/null &
	qpid=$!
	tail -n +1 -F --pid=$qpid "$out/results.log" 2>/dev/null | sed -u 's/\r$//' | grep --line-buffered -v '^VMTEST-' || true
	rc=0
	wait $qpid || rc=$?
	[ $rc = 124 ] && log "TIMEOUT: the VM ran longer than ${VM_TIMEOUT}s"
	[ $rc != 0 ] && [ $rc != 124 ] && log "qemu exited with $rc"
	code=$(tr -d '\r' <"$out/results.log" | awk '/^VMTEST-EXIT /{print $2}' | tail -1)
	if [ -z "$code" ]; then
		log "no exit marker from the VM (crash, panic or timeout); console tail:"
		tr -d '\r' <"$out/console.log" | tail -40 >&2
		return 1
	fi
	return "$code"
}
