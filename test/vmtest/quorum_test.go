//go:build vmtest

package vmtest

import (
	"strings"
	"testing"
	"time"
)

// Issue 15: alpha start and the sorry server following the quorum, with
// real traffic. rs2 is dead from the start: alpha never gives it a weight,
// so no connection is ever scheduled to it; with quorum 2 its failure takes
// the pool below quorum and the sorry server (rs3) comes in; when rs2
// comes back the sorry server stops taking connections but keeps the one it
// has (weight 0), and is deleted once that one has ended.
func TestAlphaAndSorryServer(t *testing.T) {
	resetKernel(t)
	addVIP(t, "192.0.2.97")
	rs2 := reals[1]
	rs2.stop(8080)
	t.Cleanup(func() { rs2.serve(8080) })
	s := newSetup(t)
	s.resync = "2s"
	s.write(`
[[virtual_server]]
name = "pool"
address = "192.0.2.97:8080"
scheduler = "rr"
quorum = 2
sorry_server = "198.18.0.13:8080"
  [virtual_server.check]
  type = "tcp"
  interval = "1s"
  timeout = "1s"
  rise = 1
  fall = 2
  [[virtual_server.real_server]]
  address = "198.18.0.11:8080"
  [[virtual_server.real_server]]
  address = "198.18.0.12:8080"
`)
	a, _, _ := s.startReady()
	sorryIn := lines(`
-A -t 192.0.2.97:8080 -s rr
-a -t 192.0.2.97:8080 -r 198.18.0.11:8080 -g -w 1
-a -t 192.0.2.97:8080 -r 198.18.0.12:8080 -g -w 0
-a -t 192.0.2.97:8080 -r 198.18.0.13:8080 -g -w 1
`)
	waitTable(t, sorryIn, 15*time.Second)
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		name, err := who("192.0.2.97:8080")
		if err != nil {
			t.Fatalf("connection %d below quorum: %v", i, err)
		}
		seen[name]++
	}
	if seen["rs1"] == 0 || seen["rs3"] == 0 || seen["rs2"] != 0 {
		t.Errorf("below quorum, connections went to %v; want rs1 and the sorry server rs3", seen)
	}
	for _, c := range conns(t) {
		if strings.HasPrefix(c.real, "198.18.0.12:") {
			t.Errorf("a connection was scheduled to rs2, which never passed a check: %+v", c)
		}
	}

	// Hold a connection on the sorry server, then bring rs2 back.
	var held interface {
		Close() error
	}
	for i := 0; i < 10 && held == nil; i++ {
		c, err := dial("192.0.2.97:8080")
		if err != nil {
			t.Fatal(err)
		}
		if name, err := ask(c); err == nil && name == "rs3" {
			held = c
			defer c.Close()
			continue
		}
		c.Close()
	}
	if held == nil {
		t.Fatal("no connection reached the sorry server")
	}
	if err := rs2.serve(8080); err != nil {
		t.Fatal(err)
	}
	draining := lines(`
-A -t 192.0.2.97:8080 -s rr
-a -t 192.0.2.97:8080 -r 198.18.0.11:8080 -g -w 1
-a -t 192.0.2.97:8080 -r 198.18.0.12:8080 -g -w 1
-a -t 192.0.2.97:8080 -r 198.18.0.13:8080 -g -w 0
`)
	waitTable(t, draining, 15*time.Second)
	held.Close()
	back := lines(`
-A -t 192.0.2.97:8080 -s rr
-a -t 192.0.2.97:8080 -r 198.18.0.11:8080 -g -w 1
-a -t 192.0.2.97:8080 -r 198.18.0.12:8080 -g -w 1
`)
	waitTable(t, back, 15*time.Second)
	a.stop(10 * time.Second)
}
