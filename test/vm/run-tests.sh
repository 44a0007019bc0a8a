#!/usr/bin/env bash
# make vmtest: run test/vmtest inside a VM with a real IPVS kernel.
#   test/vm/run-tests.sh [go test flags for the test binary, e.g. -test.run TestDR]
# Env: CACHE (default .cache/vm), VM_TIMEOUT (s, default 900), NO_AGENT=1 to
# skip building cmd/ipvs-agent (the agent tests then fail, they do not skip).
source "$(dirname "$0")/lib.sh"
start=$(date +%s)
need_host_tools
fetch_kernel
build_base

# The payload: static test binary and agent, built on the host.
pl=$CACHE/payload-tests
rm -rf "$pl" && mkdir -p "$pl"
log "building test binary and agent"
(cd "$ROOT" && CGO_ENABLED=0 go test -c -tags vmtest -o "$pl/vmtest.test" ./test/vmtest) || die "building ./test/vmtest failed"
if [ "${NO_AGENT:-}" != 1 ]; then
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$pl/ipvs-agent" ./cmd/ipvs-agent) || die "building ./cmd/ipvs-agent failed (NO_AGENT=1 skips it)"
fi
{
	echo 'export VMTEST_AGENT=/payload/ipvs-agent VMTEST_IN_VM=1'
	printf './vmtest.test -test.v -test.timeout %ss' "$((VM_TIMEOUT - 60))"
	printf ' %q' "$@"
	echo
} >"$pl/run.sh"
build_payload "$pl"

rc=0
boot_vm "$CACHE/out-tests" || rc=$?
log "VM tests finished with exit code $rc after $(($(date +%s) - start))s (logs: $CACHE/out-tests)"
exit $rc
