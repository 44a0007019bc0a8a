package agent

import (
	"errors"
	"maps"

	"github.com/ipvs-agent/ipvs-agent/agent/model"

	"github.com/ipvs-agent/ipvs-agent/agent/settings"
)

// saveState writes the state file with owned as the ownership record and
// the kernel settings found so far.
func (a *Agent) saveState(owned map[model.ServiceKey]bool) error {
	return saveState(a.cfg.StateFile, record{owned: owned, found: a.found})
}

// keepSettings makes the kernel's IPVS settings what the configuration
// says (start, reload, and every resync, so a value changed behind the
// agent's back is put back and logged). Before it first changes a setting
// it records the kernel's value in the state file, and changes nothing if
// it cannot: cleanup_on_exit must be able to restore what it found.
func (a *Agent) keepSettings(reason string) {
	if a.sysctls == nil {
		return
	}
	have, err := a.sysctls.Read()
	if err != nil {
		a.settingError("read", err)
		return
	}
	changes := settings.Plan(a.cfg.Kernel, have)
	if len(changes) == 0 {
		return
	}
	prev := maps.Clone(a.found)
	for _, c := range changes {
		if _, ok := a.found[c.Name]; !ok && c.From >= 0 {
			a.found[c.Name] = c.From
		}
	}
	if !maps.Equal(prev, a.found) {
		if err := a.saveState(a.owned); err != nil {
			a.found = prev
			a.settingError("record", err)
			return
		}
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
// found them (cleanup_on_exit), and forgets them.
func (a *Agent) restoreSettings() []error {
	if a.sysctls == nil || len(a.found) == 0 {
		return nil
	}
	var errs []error
	for _, n := range settings.All() {
		v, ok := a.found[n]
		if !ok {
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
