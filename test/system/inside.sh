#!/bin/sh
# Runs in the booted VM as a oneshot unit (run.sh installs it). Phase 1:
# install, reload, bad reload, watchdog, upgrade; then reboot (with
# SYSTEMTEST_SHORT=1: no upgrade, power off instead). Phase 2 (after
# the reboot): boot, stop/remove/purge; then power off. Everything goes to
# the second serial port, which run.sh reads.
exec >/dev/ttyS1 2>&1
cd /root/systemtest
export SYSTEMTEST_DEB1 SYSTEMTEST_DEB2 SYSTEMTEST_VERSION2
tests='^(TestInstall|TestSandbox|TestReload|TestBadReload|TestWatchdog|TestUpgrade)$'
[ "${SYSTEMTEST_SHORT:-}" = 1 ] && tests='^(TestInstall|TestSandbox|TestReload|TestBadReload|TestWatchdog)$'
phase=$(cat phase 2>/dev/null || echo 1)
echo "@@phase $phase: $(systemctl --version | head -1), kernel $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME")"
if [ "$phase" = 1 ]; then
	SYSTEMTEST_PHASE=1 ./system.test -test.v -test.timeout 20m -test.run "$tests"
	echo "@@rc $?"
	echo "@@ systemctl status:"
	systemctl status --no-pager ipvs-agent 2>&1 | sed 's/^/@@ /'
	echo "@@ systemd-analyze security ipvs-agent:"
	systemd-analyze security --no-pager ipvs-agent 2>&1 | sed 's/^/@@SEC /'
	sync
	if [ "${SYSTEMTEST_SHORT:-}" = 1 ]; then
		systemctl poweroff
	else
		echo 2 >phase
		sync
		systemctl reboot
	fi
else
	SYSTEMTEST_PHASE=2 ./system.test -test.v -test.timeout 10m -test.run '^(TestReboot|TestStopRemovePurge)$'
	echo "@@rc $?"
	sync
	systemctl poweroff
fi
