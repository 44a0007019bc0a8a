//go:build vmtest

package vmtest

import (
	"testing"
	"time"
)

// A real server removed from the config while it still carries a
// connection is drained, not cut off: weight 0 (no new connections), the
// open connection keeps working, and once it has ended the real server is
// deleted at the next resync. The agent learns about the connection from the
// kernel's ActiveConn counter, which this test exercises for real.
func TestDrainRemovedRealServer(t *testing.T) {
	resetKernel(t)
	addVIP(t, "192.0.2.40")
	s := newSetup(t)
	s.resync = "1s"
	s.write(`
[[virtual_server]]
name = "drain"
address = "192.0.2.40:80"
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  weight = 1
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
  weight = 0
`)
	a, _, _ := s.startReady()
	long, err := dial("192.0.2.40:80")
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	if name, err := ask(long); err != nil || name != "rs1" {
		t.Fatalf("long-lived connection answered by %q, %v; want rs1", name, err)
	}

	// rs1 leaves the config; rs2 takes the traffic.
	from := a.reload(s, `
[[virtual_server]]
name = "drain"
address = "192.0.2.40:80"
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
  weight = 1
`)
	if writes, errs := a.reconciled(from, "reload", 30*time.Second); writes != 2 || errs != 0 {
		t.Errorf("reload: writes=%d errors=%d, want 2 (rs1 weight 0, rs2 weight 1) and 0", writes, errs)
	}
	assertTable(t, lines(`
-A -t 192.0.2.40:80 -s wrr
-a -t 192.0.2.40:80 -r 198.18.0.11:80 -g -w 0
-a -t 192.0.2.40:80 -r 198.18.0.12:80 -g -w 1
`))
	for i := 0; i < 5; i++ {
		if name, err := who("192.0.2.40:80"); err != nil || name != "rs2" {
			t.Fatalf("new connection %d answered by %q, %v; want rs2 only while rs1 drains", i, name, err)
		}
	}
	// Resyncs come and go; rs1 stays while its connection is open.
	time.Sleep(3 * time.Second)
	if name, err := ask(long); err != nil || name != "rs1" {
		t.Fatalf("draining connection: %q, %v; want rs1 still answering", name, err)
	}
	assertTable(t, lines(`
-A -t 192.0.2.40:80 -s wrr
-a -t 192.0.2.40:80 -r 198.18.0.11:80 -g -w 0
-a -t 192.0.2.40:80 -r 198.18.0.12:80 -g -w 1
`))

	long.Close()
	took := waitTable(t, lines(`
-A -t 192.0.2.40:80 -s wrr
-a -t 192.0.2.40:80 -r 198.18.0.12:80 -g -w 1
`), 20*time.Second)
	t.Logf("drained real server deleted %v after its last connection closed", took.Round(100*time.Millisecond))
}
