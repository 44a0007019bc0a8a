#!/usr/bin/env bash
# make vmtest: run every package's vmtest-tagged tests inside a VM with a
# real IPVS kernel (test/vmtest: the agent end to end; agent/kernel: the
# netlink adapter; any package that adds //go:build vmtest tests is picked up).
#   test/vm/run-tests.sh [flags for the test binaries, e.g. -test.run TestReload]
# Env: CACHE (default .cache/vm), VM_TIMEOUT (s, default 900), NO_AGENT=1 to
# skip building cmd/ipvs-agent (the agent tests then fail, they do not skip).
source "$(dirname "$0")/lib.sh"
start=$(date +%s)
need_host_tools
fetch_kernel
build_base

# The payload: static test binaries and the agent, built on the host.
new_run_dir
pl=$RUN/payload
mkdir -p "$pl"
log "building test binaries and agent"
pkgs=$(cd "$ROOT" && grep -rlx --include='*_test.go' '//go:build vmtest' . | xargs -r -n1 dirname | sort -u)
[ -n "$pkgs" ] || die "no vmtest-tagged tests found"
bins=""
for p in $pkgs; do
	b=$(echo "${p#./}" | tr / _).test
	(cd "$ROOT" && CGO_ENABLED=0 go test -c -tags vmtest -o "$pl/$b" "$p") || die "building $p tests failed"
	# test/vmtest last: it rebuilds the network; the others need only ip_vs.
	if [ "$p" = ./test/vmtest ]; then last=$b; else bins="$bins $b"; fi
done
bins="$bins ${last:-}"
if [ "${NO_AGENT:-}" != 1 ]; then
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$pl/ipvs-agent" ./cmd/ipvs-agent) || die "building ./cmd/ipvs-agent failed (NO_AGENT=1 skips it)"
fi
# make vmbench BASELINE=<rev>: the agent as of another commit runs beside
# this one in the same boot (a "before" column). Built from git archive, so
# the worktree is not touched.
agent_rev=$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)
if [ -n "${VMBENCH_BASELINE:-}" ]; then
	brev=$(cd "$ROOT" && git rev-parse --short "$VMBENCH_BASELINE") || die "BASELINE=$VMBENCH_BASELINE is not a commit"
	bsrc=$(mktemp -d "$CACHE/baseline.XXXXXX")
	(cd "$ROOT" && git archive "$brev" | tar -x -C "$bsrc") || die "git archive $brev failed"
	(cd "$bsrc" && CGO_ENABLED=0 go build -o "$pl/ipvs-agent-baseline" ./cmd/ipvs-agent) || die "building the agent at $brev failed"
	rm -rf "$bsrc"
	log "baseline agent: $brev"
fi
{
	echo 'export VMTEST_AGENT=/payload/ipvs-agent VMTEST_IN_VM=1'
	printf 'export VMBENCH_QUICK=%q VMBENCH_AGENT_REV=%q\n' "${VMBENCH_QUICK:-}" "$agent_rev" # make vmbench
	printf 'export VMTEST_STARVE_QUOTA=%q\n' "${VMTEST_STARVE_QUOTA:-}" # make vmtest-starve
	[ -z "${brev:-}" ] || printf 'export VMBENCH_BASELINE_AGENT=/payload/ipvs-agent-baseline VMBENCH_BASELINE_REV=%q\n' "$brev"
	echo 'rc=0'
	for b in $bins; do
		echo "echo '>>> $b'"
		printf './%s -test.v -test.timeout %ss' "$b" "$((VM_TIMEOUT - 60))"
		printf ' %q' "$@"
		echo ' || rc=1'
		echo "ipvsadm -C"
	done
	echo 'exit $rc'
} >"$pl/run.sh"
build_payload "$pl"

rc=0
boot_vm "$RUN" || rc=$?
finish_run

# One summary line per run for the CI log. Top-level tests only ("--- " at
# the start of a line); a skip counts as a failure here: inside the VM every
# test has what it needs, so a skip means something did not run.
res=$RUN/results.log
passed=$(grep -c '^--- PASS' "$res" || true)
benched=$(grep -cE '^Benchmark[^ ]+[[:space:]]+[0-9]+[[:space:]]+[0-9.e+]+ ns/op' "$res" || true) # make vmbench
failed=$(grep '^--- FAIL' "$res" | awk '{print $3}' | xargs)
skipped=$(grep '^--- SKIP' "$res" | awk '{print $3}' | xargs)
log "summary: $passed passed; failed: ${failed:-none}; skipped: ${skipped:-none}"
[ "$benched" = 0 ] || log "benchmarks: $benched results"
if [ -n "$skipped" ] && [ "${VMTEST_ALLOW_SKIP:-}" != 1 ]; then
	log "skipped tests fail the run (VMTEST_ALLOW_SKIP=1 allows them)"
	[ $rc != 0 ] || rc=1
fi
if [ "$passed" = 0 ] && [ "$benched" = 0 ] && [ $rc = 0 ]; then
	log "no test passed: nothing ran (a -test.run that matches nothing?)"
	rc=1
fi
log "VM tests finished with exit code $rc after $(($(date +%s) - start))s (logs: $RUN)"
# The plain closing line CI reads (N passed, N failed, N skipped).
nfailed=$(grep -c '^--- FAIL' "$res" || true)
nskipped=$(grep -c '^--- SKIP' "$res" || true)
echo "vmtest: $passed passed, $nfailed failed, $nskipped skipped"
exit $rc
