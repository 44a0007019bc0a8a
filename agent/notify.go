package agent

import (
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// Systemd is the Notifier for a Type=notify unit. Outside systemd
// (NOTIFY_SOCKET unset) every call is a no-op.
type Systemd struct{}

func (Systemd) Notify(state string) { _, _ = daemon.SdNotify(false, state) }

func (Systemd) WatchdogInterval() time.Duration {
	iv, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return iv
}

// errnoEINVAL is sent as ERRNO= while the last reload failed: the file is
// invalid. ERRNO=0 clears it once a reload applies.
const errnoEINVAL = 22

// statusNotify is the STATUS= line (plus ERRNO=) systemctl status shows:
//
//	12 virtual servers, 118/120 real servers up, last reload 14:02:11 ok
//
// It reads the published View, so it says what the kernel was last told.
func (a *Agent) statusNotify() string {
	v := a.View()
	vs, up, total := len(a.cfg.VirtualServers), 0, 0
	for i := range a.cfg.VirtualServers {
		total += len(a.cfg.VirtualServers[i].RealServers)
	}
	if v != nil {
		for _, n := range v.Healthy {
			up += n
		}
	}
	line := fmt.Sprintf("STATUS=%d virtual servers, %d/%d real servers up", vs, up, total)
	if a.stateErr != "" {
		line = fmt.Sprintf("STATUS=state file not writable (%s): new virtual servers wait; %d virtual servers, %d/%d real servers up",
			a.stateErr, vs, up, total)
	}
	r := a.LastReload()
	switch {
	case r == nil:
		return line + "\nERRNO=0"
	case !r.OK:
		return fmt.Sprintf("%s, last reload %s FAILED: %d problems in %s (old configuration kept)\nERRNO=%d",
			line, r.Time.Format(time.TimeOnly), len(r.Problems), a.cfg.Path, errnoEINVAL)
	case r.Err != "":
		return fmt.Sprintf("%s, last reload %s FAILED: kernel: %s\nERRNO=%d", line, r.Time.Format(time.TimeOnly), r.Err, errnoEINVAL)
	default:
		return fmt.Sprintf("%s, last reload %s ok\nERRNO=0", line, r.Time.Format(time.TimeOnly))
	}
}

// healthAlive reports whether the health scheduler's dispatch loop turned
// within maxAge. A checker that does not report its loop counts as alive.
func (a *Agent) healthAlive(maxAge time.Duration) bool {
	s, ok := a.health.(interface{ Stats() health.Stats })
	if !ok {
		return true
	}
	last := s.Stats().LastLoop
	if last.IsZero() || a.now().Sub(last) <= maxAge {
		return true // not started yet, or fresh
	}
	a.log.Error("health scheduler stalled: withholding the watchdog ping", "last_loop", last.Format(time.RFC3339Nano))
	return false
}
