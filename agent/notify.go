package agent

import (
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
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
