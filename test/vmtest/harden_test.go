//go:build vmtest

package vmtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 13, also seen: SIGTERM in the middle of a large apply against the
// real kernel stops within the stop bound (10 s) with a clean exit, and the
// ownership record lists exactly the services the kernel holds.
func TestStopDuringApply(t *testing.T) {
	resetKernel(t)
	const services = 1000 // x 2 real servers: 3000 kernel writes
	cfg, want := bigConfig("198.51.100.51", services)
	s := newSetup(t)
	s.write(cfg)
	a := s.start()
	deadline := time.Now().Add(60 * time.Second)
	for n := 0; n < 20; n = countServices(t) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent programmed only %d services in 60s", n)
		}
	}
	start := time.Now()
	a.stop(10 * time.Second)
	n := countServices(t)
	t.Logf("stopped %v after SIGTERM with %d of %d services in the kernel", time.Since(start).Round(time.Millisecond), n, services)
	if n >= services {
		t.Fatalf("the apply finished before the stop (%d services); the test proves nothing: raise the service count", n)
	}
	var sf struct {
		Services []json.RawMessage `json:"services"`
	}
	if err := json.Unmarshal([]byte(readFile(t, s.state)), &sf); err != nil {
		t.Fatal(err)
	}
	if len(sf.Services) != n {
		t.Fatalf("state file records %d services, the kernel holds %d", len(sf.Services), n)
	}
	if len(a.entriesSince(0, "apply stopped: the agent is stopping")) == 0 {
		t.Error("no log line says the apply was stopped")
	}
	b, _, errs := s.startReady()
	assertTable(t, want)
	if errs != 0 {
		t.Errorf("restart reconcile had %d errors", errs)
	}
	b.stop(10 * time.Second)
}

// Issue 13 item 1 against the real kernel: with the state file unwritable,
// a reload's change to an owned virtual server applies, a new virtual
// server waits, and both converge once the file can be written.
func TestUnwritableStateFile(t *testing.T) {
	resetKernel(t)
	s := newSetup(t)
	s.resync = "1s"
	one := `
[[virtual_server]]
name = "owned"
address = "192.0.2.40:80"
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  weight = 5
`
	s.write(one)
	a, _, _ := s.startReady()
	// A directory in the file's place: every rename onto it fails.
	if err := os.Remove(s.state); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.state, "blocker"), 0o700); err != nil {
		t.Fatal(err)
	}
	from := a.reload(s, strings.Replace(one, "weight = 5", "weight = 7", 1)+`
[[virtual_server]]
name = "new"
address = "192.0.2.41:80"
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
`)
	a.waitFor(from, "state file not writable: new virtual servers wait until it is; owned ones and health keep being applied", nil, 30*time.Second)
	a.reconciled(from, "reload", 30*time.Second)
	assertTable(t, lines(`
-A -t 192.0.2.40:80 -s wrr
-a -t 192.0.2.40:80 -r 198.18.0.11:80 -g -w 7
`))
	from = a.mark()
	if err := os.RemoveAll(s.state); err != nil {
		t.Fatal(err)
	}
	a.waitFor(from, "state file writable again", nil, 30*time.Second)
	if w, _ := a.reconciled(from, "resync", 30*time.Second); w != 2 {
		t.Errorf("the retry wrote %d times, want 2 (the new service and its real server)", w)
	}
	assertTable(t, lines(`
-A -t 192.0.2.40:80 -s wrr
-a -t 192.0.2.40:80 -r 198.18.0.11:80 -g -w 7
-A -t 192.0.2.41:80 -s wlc
-a -t 192.0.2.41:80 -r 198.18.0.12:80 -g -w 1
`))
	a.stop(10 * time.Second)
}
