//go:build vmtest

package vmtest

import (
	"testing"
	"time"
)

// Test 8: a real server whose service stops answering gets weight 0 within
// the detection bound and no new connection reaches it; when it answers
// again its weight comes back.
func TestHealthCheckQuiesce(t *testing.T) {
	resetKernel(t)
	addVIP(t, "192.0.2.80")
	s := newSetup(t)
	const (
		interval = time.Second
		timeout  = 500 * time.Millisecond
		rise     = 2
		fall     = 2
	)
	s.write(`
[[virtual_server]]
name = "checked"
address = "192.0.2.80:8080"
scheduler = "rr"
on_failure = "quiesce"
  [virtual_server.check]
  type = "tcp"
  interval = "1s"
  timeout = "500ms"
  rise = 2
  fall = 2
  [[virtual_server.real_server]]
  address = "198.18.0.11:8080"
  weight = 10
  [[virtual_server.real_server]]
  address = "198.18.0.12:8080"
  weight = 20
  [[virtual_server.real_server]]
  address = "198.18.0.13:8080"
  weight = 30
`)
	a, _, _ := s.startReady()
	up := lines(`
-A -t 192.0.2.80:8080 -s rr
-a -t 192.0.2.80:8080 -r 198.18.0.11:8080 -g -w 10
-a -t 192.0.2.80:8080 -r 198.18.0.12:8080 -g -w 20
-a -t 192.0.2.80:8080 -r 198.18.0.13:8080 -g -w 30
`)
	// No verdict yet: new real servers start at weight 0 (alpha) and get
	// their configured weights when their first check passes.
	// Wait for each check's first verdict, so the failure below is judged
	// against an Up real server (fall counts), not an Unknown one.
	for _, r := range reals {
		addr := r.ip4 + ":8080"
		a.waitFor(0, "real server health changed", func(e logEntry) bool {
			return e.str("real_server") == addr && e.str("to") == "up"
		}, 3*interval+5*time.Second)
	}
	assertTable(t, up)

	rs2 := reals[1]
	rs2.stop(8080)
	stopped := time.Now()
	down := lines(`
-A -t 192.0.2.80:8080 -s rr
-a -t 192.0.2.80:8080 -r 198.18.0.11:8080 -g -w 10
-a -t 192.0.2.80:8080 -r 198.18.0.12:8080 -g -w 0
-a -t 192.0.2.80:8080 -r 198.18.0.13:8080 -g -w 30
`)
	// Detection bound: up to one interval until the next check, fall-1 more
	// intervals, the last check's timeout, plus 1.5 s of slack for the
	// emulated VM and this test's polling of ipvsadm (the agent's own
	// target for jitter is 50 ms, on real hardware).
	bound := fall*interval + timeout + 1500*time.Millisecond
	waitTable(t, down, bound+10*time.Second) // wait longer, then judge the time
	// fall = 2 means two failed checks an interval apart: much sooner than
	// (fall-1) intervals would mean fall is not honoured (200 ms for jitter).
	switch took := time.Since(stopped); {
	case took > bound:
		t.Errorf("weight 0 after %v, bound %v", took.Round(time.Millisecond), bound)
	case took < (fall-1)*interval-200*time.Millisecond:
		t.Errorf("weight 0 after %v: sooner than fall=%d checks %v apart allow", took.Round(time.Millisecond), fall, interval)
	default:
		t.Logf("rs2 quiesced %v after its server stopped (bound %v)", took.Round(time.Millisecond), bound)
	}
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		name, err := who("192.0.2.80:8080")
		if err != nil {
			t.Fatalf("new connection %d while rs2 is down: %v", i, err)
		}
		seen[name]++
	}
	if seen["rs2"] != 0 || seen["rs1"] == 0 || seen["rs3"] == 0 {
		t.Errorf("new connections while rs2 is quiesced: %v", seen)
	}

	if err := rs2.serve(8080); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	waitTable(t, up, rise*interval+10*time.Second)
	t.Logf("rs2 weight restored %v after its server came back", time.Since(restarted).Round(time.Millisecond))
	a.stop(10 * time.Second)
}

// A restart while a real server is down keeps its weight at 0: the new
// process has no verdict yet and must keep what the kernel has, not write
// the configured weight and take it back a check later.
func TestRestartKeepsHealthWeights(t *testing.T) {
	resetKernel(t)
	addVIP(t, "192.0.2.81")
	s := newSetup(t)
	s.write(`
[[virtual_server]]
name = "checked"
address = "192.0.2.81:443"
scheduler = "rr"
  [virtual_server.check]
  type = "tcp"
  interval = "1s"
  timeout = "500ms"
  rise = 2
  fall = 2
  [[virtual_server.real_server]]
  address = "198.18.0.11:443"
  weight = 10
  [[virtual_server.real_server]]
  address = "198.18.0.13:443"
  weight = 30
`)
	rs3 := reals[2]
	rs3.stop(443)
	t.Cleanup(func() { rs3.serve(443) })
	a, _, _ := s.startReady()
	down := lines(`
-A -t 192.0.2.81:443 -s rr
-a -t 192.0.2.81:443 -r 198.18.0.11:443 -g -w 10
-a -t 192.0.2.81:443 -r 198.18.0.13:443 -g -w 0
`)
	waitTable(t, down, 10*time.Second)

	watch := watchTable(t, down)
	a.stop(10 * time.Second)
	b := s.start()
	writes, errs := b.reconciled(0, "start", 60*time.Second)
	// Until the new process's checks have spoken, and a while after.
	b.waitFor(0, "real server health changed", func(e logEntry) bool {
		return e.str("real_server") == "198.18.0.13:443" && e.str("to") == "down"
	}, 10*time.Second)
	time.Sleep(2 * time.Second)
	if dev := watch(); len(dev) > 0 {
		t.Errorf("the table changed across the restart (%d samples), first:\n%s", len(dev), dev[0])
	}
	if writes != 0 || errs != 0 {
		t.Errorf("second start: writes=%d errors=%d, want 0 and 0", writes, errs)
	}
	assertTable(t, down)
	b.stop(10 * time.Second)
}
