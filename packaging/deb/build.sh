#!/usr/bin/env bash
# make deb: builds ipvs-agent_<version>_<arch>.deb from the checked-out tree
# with dpkg-deb over a staged tree. Reproducible: the same commit gives the
# same bytes (timestamps from the commit, -trimpath, root:root, sorted tar).
# Network: the Go module proxy only (go build).
#   env: DEB_VERSION (default: packaging/deb/version.sh), DEB_ARCH (default
#   amd64), OUT (directory, default the repository root).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
P=packaging
VERSION=${DEB_VERSION:-$($P/deb/version.sh)}
ARCH=${DEB_ARCH:-amd64}
OUT=${OUT:-$ROOT}
case $ARCH in
amd64 | arm64 | ppc64el | s390x | riscv64) GOARCH=${ARCH/ppc64el/ppc64le} ;;
*) echo "build.sh: unsupported DEB_ARCH $ARCH" >&2; exit 2 ;;
esac
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
export LC_ALL=C TZ=UTC

S=$(mktemp -d)
chmod 0755 "$S"
trap 'rm -rf "$S"' EXIT
umask 022
mkdir -p "$S/DEBIAN" "$S/usr/sbin" "$S/usr/lib/systemd/system" "$S/usr/lib/modules-load.d" "$S/etc" \
	"$S/usr/share/man/man8" "$S/usr/share/man/man5" "$S/usr/share/doc/ipvs-agent/examples" \
	"$S/usr/share/lintian/overrides"

# Static PIE: no libc dependency, and ASLR. lintian takes a static PIE for a
# shared library without prerequisites: see lintian-overrides.
CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH go build -trimpath -buildvcs=false -buildmode=pie \
	-ldflags "-s -w -X main.version=$VERSION" -o "$S/usr/sbin/ipvs-agent" ./cmd/ipvs-agent

install -m 0644 $P/ipvs-agent.service "$S/usr/lib/systemd/system/ipvs-agent.service"
install -m 0644 $P/modules-load.conf "$S/usr/lib/modules-load.d/ipvs-agent.conf"
install -m 0644 $P/deb/ipvs-agent.toml "$S/etc/ipvs-agent.toml"
install -m 0644 $P/ipvs-agent.toml "$S/usr/share/doc/ipvs-agent/examples/ipvs-agent.toml"
install -m 0644 $P/deb/lintian-overrides "$S/usr/share/lintian/overrides/ipvs-agent"
install -m 0644 $P/deb/copyright "$S/usr/share/doc/ipvs-agent/copyright"
for m in ipvs-agent.8:man8 ipvs-agent.toml.5:man5; do
	# The page must render without a warning (what `man -l` shows).
	if command -v groff >/dev/null; then
		w=$(groff -man -Tutf8 -ww -z "$P/man/${m%%:*}" 2>&1)
		[ -z "$w" ] || { echo "build.sh: $P/man/${m%%:*} does not render cleanly:" >&2; echo "$w" >&2; exit 1; }
	fi
	sed "s/@VERSION@/$VERSION/g; s/@DATE@/$DATE/g" "$P/man/${m%%:*}" | gzip -9n >"$S/usr/share/man/${m#*:}/${m%%:*}.gz"
done
# A native package's changelog: one entry for this build, dated by the commit.
cat <<CHANGELOG | gzip -9n >"$S/usr/share/doc/ipvs-agent/changelog.gz"
ipvs-agent ($VERSION) unstable; urgency=medium

  * Built from git commit $(git rev-parse --short=12 HEAD) (the project history is its git log).

 -- ipvs-agent developers <ipvs-agent@example.org>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
CHANGELOG

install -m 0755 $P/deb/postinst $P/deb/prerm $P/deb/postrm "$S/DEBIAN/"
echo /etc/ipvs-agent.toml >"$S/DEBIAN/conffiles"
size=$(du -k -s --apparent-size --exclude=DEBIAN "$S" | cut -f1)
sed "s/@VERSION@/$VERSION/; s/@ARCH@/$ARCH/; s/@SIZE@/$size/" $P/deb/control.in >"$S/DEBIAN/control"
(cd "$S" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$S/DEBIAN/control" "$S/DEBIAN/conffiles" "$S/DEBIAN/md5sums"
find "$S" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb=$OUT/ipvs-agent_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$S" "$deb" >/dev/null
echo "$deb"
