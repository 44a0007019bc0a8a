package agent

import (
	"errors"
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/settings"
	"github.com/ipvs-agent/ipvs-agent/agent/settings/settingstest"
)

const oneService = `
[agent]
state_file = "STATE"
%s
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
`

func settingsHarness(t *testing.T, dir string, fk *settingstest.Fake, agentKeys string) *harness {
	t.Helper()
	h := newHarness(t, dir, nil, strings.Replace(oneService, "%s", agentKeys, 1))
	h.agent.sysctls = fk
	return h
}

// Start sets the direct-routing defaults, records what it found first, and
// a resync puts back a value changed behind its back, with one log line per
// change; a resync with nothing to change writes nothing.
func TestKernelSettingsKeptAndRecorded(t *testing.T) {
	dir := t.TempDir()
	fk := settingstest.NewFake()
	h := settingsHarness(t, dir, fk, "")
	h.reconcile("start", true)
	want := maps.Clone(settingstest.KernelDefaults())
	want[settings.ConnReuseMode], want[settings.ExpireNodestConn], want[settings.ExpireQuiescentTemplate] = 3, 1, 1
	if !maps.Equal(fk.Values, want) || fk.Writes != 3 {
		t.Fatalf("after start: %v in %d writes, want %v in 3", fk.Values, fk.Writes, want)
	}
	if n := strings.Count(h.logs.String(), `msg="kernel setting changed"`); n != 3 {
		t.Errorf("%d change lines, want 3:\n%s", n, h.logs)
	}
	rec, err := loadState(h.agent.cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	found := settings.Values{settings.ConnReuseMode: 1, settings.ExpireNodestConn: 0, settings.ExpireQuiescentTemplate: 0}
	if !maps.Equal(rec.found, found) {
		t.Errorf("recorded %v, want %v", rec.found, found)
	}

	fk.Writes = 0
	h.reconcile("resync", true)
	if fk.Writes != 0 {
		t.Errorf("idle resync wrote %d settings", fk.Writes)
	}
	fk.Values[settings.ConnReuseMode] = 0 // someone else's sysctl -w
	h.reconcile("resync", true)
	if fk.Values[settings.ConnReuseMode] != 3 || fk.Writes != 1 {
		t.Errorf("drift: conn_reuse_mode %d after %d writes, want 3 after 1", fk.Values[settings.ConnReuseMode], fk.Writes)
	}
	// The record keeps the value found before the agent's first change, not
	// the drifted one.
	rec, _ = loadState(h.agent.cfg.StateFile)
	if rec.found[settings.ConnReuseMode] != 1 {
		t.Errorf("record after drift: %v", rec.found)
	}

	// A new process (restart) reads the record and restores those values
	// with cleanup_on_exit, not its own.
	h2 := settingsHarness(t, dir, fk, "cleanup_on_exit = true")
	h2.runThenStop()
	if !maps.Equal(fk.Values, settingstest.KernelDefaults()) {
		t.Errorf("after cleanup_on_exit: %v, want the kernel's %v", fk.Values, settingstest.KernelDefaults())
	}
	rec, _ = loadState(h.agent.cfg.StateFile)
	if len(rec.found) != 0 {
		t.Errorf("record after restore: %v", rec.found)
	}
}

// Unmanaged settings and keys the user sets are honoured.
func TestKernelSettingsConfigured(t *testing.T) {
	fk := settingstest.NewFake()
	fk.Values[settings.Conntrack] = 1 // set by the firewall's owner
	h := settingsHarness(t, t.TempDir(), fk, `
[agent.kernel]
conn_reuse_mode = 2
tcp_timeout = "10m"
unmanaged = ["conntrack", "expire_quiescent_template"]
`)
	h.reconcile("start", true)
	if v := fk.Values; v[settings.Conntrack] != 1 || v[settings.ExpireQuiescentTemplate] != 0 ||
		v[settings.ConnReuseMode] != 2 || v[settings.TimeoutTCP] != 600 || v[settings.TimeoutUDP] != 300 {
		t.Errorf("settings: %v", v)
	}
}

// A setting is never changed when the value found cannot be recorded, and
// the table is programmed all the same; a write the kernel refuses is
// logged once, not at every resync.
func TestKernelSettingsFailures(t *testing.T) {
	dir := t.TempDir()
	fk := settingstest.NewFake()
	h := settingsHarness(t, dir, fk, "")
	h.agent.cfg.StateFile = dir + "/missing-dir/sub/state.json"
	if err := os.WriteFile(dir+"/missing-dir", nil, 0o644); err != nil { // a file where a directory should be
		t.Fatal(err)
	}
	h.agent.reconcile("start", true)
	if fk.Writes != 0 {
		t.Errorf("%d settings written without a record of the old values", fk.Writes)
	}
	if !strings.Contains(h.logs.String(), "kernel IPVS setting not kept") {
		t.Errorf("no error logged:\n%s", h.logs)
	}

	fk2 := settingstest.NewFake()
	fk2.FailWrite = errors.New("set net.ipv4.vs.conn_reuse_mode: read-only file system")
	h2 := settingsHarness(t, t.TempDir(), fk2, "")
	for range 3 {
		h2.reconcile("resync", true)
	}
	// Three settings to change, each refused: three lines, not nine.
	if n := strings.Count(h2.logs.String(), "kernel IPVS setting not kept"); n != 3 {
		t.Errorf("refused writes logged %d times over 3 resyncs, want once per setting (3):\n%s", n, h2.logs)
	}
	if got := h2.fake.Snapshot(); len(got) != 1 {
		t.Errorf("table not programmed: %v", got)
	}
}

// A setting the configuration stops naming goes back to the value found;
// one it now lists as unmanaged is left to its new owner, also at
// cleanup_on_exit.
func TestKernelSettingsLeaveConfig(t *testing.T) {
	dir := t.TempDir()
	fk := settingstest.NewFake()
	h := settingsHarness(t, dir, fk, "[agent.kernel]\ntcp_timeout = \"60s\"")
	h.reconcile("start", true)
	if fk.Values[settings.TimeoutTCP] != 60 {
		t.Fatalf("tcp timeout %d, want 60", fk.Values[settings.TimeoutTCP])
	}
	h.writeConfig(strings.Replace(oneService, "%s", "cleanup_on_exit = true\n[agent.kernel]\nunmanaged = [\"conn_reuse_mode\"]", 1))
	h.agent.reload()
	if fk.Values[settings.TimeoutTCP] != 900 {
		t.Errorf("tcp timeout %d after its key was removed, want the 900 found", fk.Values[settings.TimeoutTCP])
	}
	fk.Values[settings.ConnReuseMode] = 0 // its new owner's value
	h2 := settingsHarness(t, dir, fk, "cleanup_on_exit = true\n[agent.kernel]\nunmanaged = [\"conn_reuse_mode\"]")
	h2.runThenStop()
	if fk.Values[settings.ConnReuseMode] != 0 || fk.Values[settings.ExpireNodestConn] != 0 {
		t.Errorf("after cleanup: %v (conn_reuse_mode must stay its owner's 0, expire_nodest_conn back to 0)", fk.Values)
	}
}

// Values recorded in another boot are not restored: after a reboot the
// kernel's own values are what the agent found.
func TestKernelSettingsRecordIsPerBoot(t *testing.T) {
	dir := t.TempDir()
	fk := settingstest.NewFake()
	h := settingsHarness(t, dir, fk, "")
	h.reconcile("start", true)
	// Reboot: fresh kernel, with sysctl.d setting conn_reuse_mode 2.
	fk2 := settingstest.NewFake()
	fk2.Boot = "boot-2"
	fk2.Values[settings.ConnReuseMode] = 2
	h2 := settingsHarness(t, dir, fk2, "cleanup_on_exit = true")
	h2.runThenStop()
	if fk2.Values[settings.ConnReuseMode] != 2 {
		t.Errorf("cleanup restored conn_reuse_mode %d from the earlier boot, want this boot's 2", fk2.Values[settings.ConnReuseMode])
	}
}

// A file with no virtual server programs nothing: no setting is written.
func TestKernelSettingsNotWithoutVirtualServers(t *testing.T) {
	fk := settingstest.NewFake()
	h := newHarness(t, t.TempDir(), nil, "[agent]\nstate_file = \"STATE\"\n")
	h.agent.sysctls = fk
	h.reconcile("start", true)
	if fk.Writes != 0 {
		t.Errorf("%d settings written with no virtual server configured", fk.Writes)
	}
}
