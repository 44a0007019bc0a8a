// Package vmtest holds the real-kernel tests of ipvs-agent. They need a kernel
// with IPVS and rebuild its network configuration, so they are built only with
// the vmtest tag and run only inside the VM that test/vm/run-tests.sh boots
// (make vmtest). See test/vm/README.md.
package vmtest
