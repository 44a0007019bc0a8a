//go:build vmtest

package settings_test

import (
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/settings"
	"github.com/ipvs-agent/ipvs-agent/agent/settings/settingstest"
)

// The real kernel passes the fake's contract (run in the VM by make vmtest).
func TestProcContract(t *testing.T) {
	p, err := settings.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close) // after Contract's own cleanup, which restores the values
	settingstest.Contract(t, p)
}
