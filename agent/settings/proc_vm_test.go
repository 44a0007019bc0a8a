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
	defer p.Close()
	settingstest.Contract(t, p)
}
