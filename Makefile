# ipvs-agent: the two commands a newcomer needs are `make demo` and `make test`.
GO        ?= go
BIN       := bin/ipvs-agent
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)

.PHONY: all build test unit vmtest vmtest-starve vmbench vmbench-apply demo lint bench clean deb systemtest

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/ipvs-agent

# Everything CI runs: lint, unit tests with the race detector, the
# real-kernel tests in a VM, then the package in a booted Debian.
test: lint unit vmtest systemtest

# ipvs-agent_<version>_amd64.deb (version from git describe), reproducible;
# lintian-clean at the default level.
deb:
	bash packaging/deb/build.sh

# Builds the .deb, installs it with apt in Debian 13 and 12 booted under qemu
# with systemd as PID 1, and runs test/system's assertions there.
systemtest:
	bash test/system/run.sh

unit:
	$(GO) test -race -count=1 ./...

# Boots Debian's cloud kernel under qemu and runs test/vmtest inside it.
vmtest:
	bash test/vm/run-tests.sh

# Health checks side by side with keepalived 2.2.7 in one VM boot (issue 12's
# table; 15-25 minutes, 20 with BASELINE=<rev> at a host load of 7-10, which adds the agent as of
# that commit as a third column); see BENCHMARKS.md. Not part of make test.
vmbench:
	@echo "host before: $$(uptime)"
	VMBENCH_BASELINE=$(BASELINE) VM_KEEPALIVED=1 VM_MEM=$${VM_MEM:-4096} VM_TIMEOUT=$${VM_TIMEOUT:-3600} bash test/vm/run-tests.sh -test.run '^$$' -test.bench 'HealthSideBySide' -test.benchtime 1x
	@echo "host after: $$(uptime)"

# The kernel-apply benchmarks (cold apply, no-change reload, bare moby/ipvs), 5 runs each.
vmbench-apply:
	VM_TIMEOUT=$${VM_TIMEOUT:-1800} bash test/vm/run-tests.sh -test.run '^$$' -test.bench 'Bare|ColdApply|NoopReload' -test.benchtime 1x -test.count 5

# The health-check starvation test with its cpu.max=10% case (issue 12, open:
# that case does not yet meet its detection bound, so make test leaves it out).
vmtest-starve:
	VMTEST_STARVE_QUOTA=1 bash test/vm/run-tests.sh -test.run TestHealthUnderStarvation

# Builds the agent, boots the VM with contrib/demo.toml, shows ipvsadm -Ln and traffic.
demo:
	bash test/vm/demo.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags vmtest ./...
	$(GO) vet -tags systemtest ./...
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; else echo "staticcheck not installed (go install honnef.co/go/tools/cmd/staticcheck@latest); skipped"; fi

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin ipvs-agent_*.deb
