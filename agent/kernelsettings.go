package agent

import (
	"errors"
	"maps"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/settings"
)

// writeState writes the state file with owned as the ownership record and
// the kernel settings found so far.
func (a *Agent) writeState(owned map[model.ServiceKey]bool) error {
	return saveState(a.cfg.StateFile, record{owned: owned, found: a.found, boot: a.foundBoot})
}

// keepSettings makes the kernel's IPVS settings what the configuration
// says (start, reload, and every resync, so a value changed behind the
// agent's back is put back and logged). Before it first changes a setting
// it records the kernel's value in the state file, and changes nothing if
// it cannot: cleanup_on_exit must be able to restore what it found. A
// setting it changed that the configuration no longer names goes back to
// the value found (unless it is now unmanaged: someone else owns it).
//
// With no virtual server configured it writes nothing: a file that
// programs nothing (the package's conffile) leaves the kernel alone.
func (a *Agent) keepSettings(reason string) {
	if a.sysctls == nil || len(a.cfg.VirtualServers) == 0 {
		return
	}
	boot, err := a.sysctls.BootID()
	if err != nil {
		a.settingError("read", err)
		return
	}
	have, err := a.sysctls.Read()
	if err != nil {
		a.settingError("read", err)
		return
	}
	delete(a.setErrs, "read")
	prev, prevBoot := maps.Clone(a.found), a.foundBoot
	if a.foundBoot != boot {
		// Recorded in another boot (reboot, ip_vs reloaded): the kernel
		// started over from its defaults and sysctl.d; what it has now
		// is what was found.
		clear(a.found)
		a.foundBoot = boot
	}
	want := maps.Clone(a.cfg.Kernel)
	var forget []settings.Name
	for n, v := range a.found {
		if _, configured := want[n]; configured {
			continue
		}
		if !a.cfg.KernelUnmanaged[n] {
			want[n] = v // no longer configured: back to what was found
		}
		forget = append(forget, n)
	}
	changes := settings.Plan(want, have)
	for _, c := range changes {
		if _, ok := a.found[c.Name]; !ok && c.From >= 0 && a.cfg.Kernel[c.Name] == c.To {
			a.found[c.Name] = c.From
		}
	}
	for _, n := range forget {
		delete(a.found, n)
	}
	if !maps.Equal(prev, a.found) || prevBoot != a.foundBoot && len(a.found) > 0 {
		if err := a.writeState(a.owned); err != nil {
			a.found, a.foundBoot = prev, prevBoot
			a.settingError("record", err)
			return
		}
		delete(a.setErrs, "record")
	}
	for _, c := range changes {
		if err := a.sysctls.Write(c.Name, c.To); err != nil {
			a.settingError(string(c.Name), err)
			continue
		}
		delete(a.setErrs, string(c.Name))
		a.log.Info("kernel setting changed", "setting", string(c.Name), "from", c.From, "to", c.To, "reason", reason)
	}
}

// settingError logs a failure to read, record or write a setting once per
// distinct error: a kernel that refuses a write refuses it at every resync.
func (a *Agent) settingError(what string, err error) {
	if a.setErrs[what] == err.Error() {
		return
	}
	a.setErrs[what] = err.Error()
	a.log.Error("kernel IPVS setting not kept", "setting", what, "err", err)
}

// restoreSettings puts back the settings the agent changed, as it first
// found them (cleanup_on_exit), and forgets them. Settings now unmanaged
// belong to someone else and are left as they are.
func (a *Agent) restoreSettings() []error {
	if a.sysctls == nil || len(a.found) == 0 {
		return nil
	}
	if boot, err := a.sysctls.BootID(); err != nil || boot != a.foundBoot {
		clear(a.found) // from another boot: nothing of ours to restore
		return nil
	}
	var errs []error
	for _, n := range settings.All() {
		v, ok := a.found[n]
		if !ok {
			continue
		}
		if a.cfg.KernelUnmanaged[n] {
			delete(a.found, n)
			continue
		}
		if err := a.sysctls.Write(n, v); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(a.found, n)
		a.log.Info("kernel setting restored", "setting", string(n), "to", v)
	}
	if len(errs) > 0 {
		return []error{errors.Join(errs...)}
	}
	return nil
}
