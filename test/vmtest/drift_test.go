//go:build vmtest

package vmtest

import (
	"testing"
	"time"
)

// Test 6: changes made behind the agent's back (ipvsadm -d, -e, -D) are
// repaired within a resync_interval, with one write per repair, and a
// resync that finds nothing to do logs nothing.
func TestDriftRepair(t *testing.T) {
	resetKernel(t)
	addVIP(t, "192.0.2.60")
	s := newSetup(t)
	s.resync = "2s"
	s.write(`
[[virtual_server]]
name = "a"
address = "192.0.2.60:80"
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  weight = 4
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
  weight = 5

[[virtual_server]]
name = "b"
address = "192.0.2.60:443"
scheduler = "rr"
  [[virtual_server.real_server]]
  address = "198.18.0.13:443"
`)
	a, _, _ := s.startReady()
	want := lines(`
-A -t 192.0.2.60:80 -s wrr
-a -t 192.0.2.60:80 -r 198.18.0.11:80 -g -w 4
-a -t 192.0.2.60:80 -r 198.18.0.12:80 -g -w 5
-A -t 192.0.2.60:443 -s rr
-a -t 192.0.2.60:443 -r 198.18.0.13:443 -g -w 1
`)
	assertTable(t, want)

	from := a.mark()
	sh(t, "ipvsadm", "-d", "-t", "192.0.2.60:80", "-r", "198.18.0.12:80")
	sh(t, "ipvsadm", "-e", "-t", "192.0.2.60:80", "-r", "198.18.0.11:80", "-g", "-w", "9")
	sh(t, "ipvsadm", "-D", "-t", "192.0.2.60:443")
	// Bound: one resync_interval (2s) plus 2s for the emulated VM's slowness.
	took := waitTable(t, want, 4*time.Second)
	t.Logf("drift repaired after %v", took.Round(time.Millisecond))
	// add dest 12, edit dest 11, add service b and its real server: one
	// write each. The three ipvsadm commands take a while in the emulated
	// VM, so a resync may fall between them and the repair spread over two
	// resyncs: count the writes of all of them (the last one's log line may
	// trail the table by a moment).
	var writes, errs int
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		writes, errs = 0, 0
		for _, e := range a.entriesSince(from, "reconciled") {
			w, _ := e.num("writes")
			n, _ := e.num("errors")
			writes, errs = writes+w, errs+n
		}
		if writes >= 4 || time.Now().After(end) {
			break
		}
	}
	if writes != 4 || errs != 0 {
		t.Errorf("resyncs: writes=%d errors=%d in total, want 4 and 0", writes, errs)
	}
	if name, err := who("192.0.2.60:443"); err != nil || name != "rs3" {
		t.Errorf("repaired service answered %q, %v; want rs3", name, err)
	}

	// Nothing to repair: two more intervals must log no "reconciled".
	quiet := a.mark()
	time.Sleep(5 * time.Second)
	if r := a.entriesSince(quiet, "reconciled"); len(r) != 0 {
		t.Errorf("a resync with nothing to do logged %s", r[0].raw)
	}
	assertTable(t, want)
	a.stop(10 * time.Second)
}
