// Package settingstest holds the in-memory settings.Kernel for unit tests
// and the contract test that the fake and the real kernel both pass.
package settingstest

import (
	"fmt"

	"github.com/ipvs-agent/ipvs-agent/agent/settings"
)

// KernelDefaults are the values a freshly loaded ip_vs module has (6.1).
func KernelDefaults() settings.Values {
	return settings.Values{
		settings.ConnReuseMode: 1, settings.ExpireNodestConn: 0, settings.ExpireQuiescentTemplate: 0,
		settings.SloppyTCP: 0, settings.SloppySCTP: 0, settings.Conntrack: 0,
		settings.TimeoutTCP: 900, settings.TimeoutTCPFin: 120, settings.TimeoutUDP: 300,
	}
}

// Fake is an in-memory settings.Kernel that counts writes.
type Fake struct {
	Values settings.Values
	Writes int
	// FailWrite, when set, is returned by every Write.
	FailWrite error
	// Boot is the boot ID; change it to simulate a reboot.
	Boot string
}

// NewFake starts with the kernel's defaults.
func NewFake() *Fake { return &Fake{Values: KernelDefaults(), Boot: "boot-1"} }

func (f *Fake) BootID() (string, error) { return f.Boot, nil }

func (f *Fake) Read() (settings.Values, error) {
	out := make(settings.Values, len(f.Values))
	for k, v := range f.Values {
		out[k] = v
	}
	return out, nil
}

func (f *Fake) Write(n settings.Name, v int) error {
	if f.FailWrite != nil {
		return f.FailWrite
	}
	if _, ok := f.Values[n]; !ok {
		return fmt.Errorf("set net.ipv4.vs.%s: not present in this kernel", n)
	}
	if n.IsTimeout() && v < 1 {
		return fmt.Errorf("set IPVS %s: %d s (a timeout is at least 1 s)", n, v)
	}
	f.Values[n] = v
	f.Writes++
	return nil
}
