//go:build vmtest

package vmtest

import (
	"os"
	"strings"
	"testing"
	"time"
)

// whoMany makes n new connections to addr and counts who answered; a
// failed connection fails the test.
func whoMany(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		name, err := who(addr)
		if err != nil {
			t.Fatalf("connection %d to %s: %v", i, addr, err)
		}
		seen[name]++
	}
	return seen
}

// usersForExec gives the VM (a bare initramfs) the passwd and group entries
// an exec check needs to drop to its user, nobody.
func usersForExec(t *testing.T) {
	t.Helper()
	for f, line := range map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"/etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	} {
		if _, err := os.Stat(f); err == nil {
			continue
		}
		if err := os.WriteFile(f, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(f) })
	}
}

// Issue 15, alpha: a real server added by a reload gets no traffic until
// its first check passes. Its check (exec sleep 3) takes a few seconds to
// speak, and meanwhile it listens and would answer: with alpha = false the
// reload would give it its weight at once and the connections below would
// reach it.
func TestAlphaNewRealServer(t *testing.T) {
	usersForExec(t)
	resetKernel(t)
	addVIP(t, "192.0.2.97")
	s := newSetup(t)
	const base = `
[[virtual_server]]
name = "pool"
address = "192.0.2.97:8080"
scheduler = "rr"
  [[virtual_server.real_server]]
  address = "198.18.0.11:8080"
`
	s.write(base)
	a, _, _ := s.startReady()
	from := a.reload(s, base+`
  [[virtual_server.real_server]]
  address = "198.18.0.12:8080"
    [virtual_server.real_server.check]
    type = "exec"
    command = ["/bin/sleep", "3"]
    user = "root"  # the VM's busybox is not executable by nobody
    interval = "5s"
    timeout = "4s"
`)
	if writes, _ := a.reconciled(from, "reload", 10*time.Second); writes != 1 {
		t.Errorf("reload: %d writes, want 1 (add rs2)", writes)
	}
	alpha := lines(`
-A -t 192.0.2.97:8080 -s rr
-a -t 192.0.2.97:8080 -r 198.18.0.11:8080 -g -w 1
-a -t 192.0.2.97:8080 -r 198.18.0.12:8080 -g -w 0
`)
	assertTable(t, alpha)
	if seen := whoMany(t, "192.0.2.97:8080", 10); seen["rs2"] != 0 {
		t.Errorf("before its first check passed rs2 took %d of 10 new connections", seen["rs2"])
	}
	if len(a.entriesSince(from, "real server health changed")) != 0 {
		t.Fatal("rs2's check spoke before the traffic above: the test proved nothing (its exec check should take 3 s)")
	}
	waitTable(t, lines(`
-A -t 192.0.2.97:8080 -s rr
-a -t 192.0.2.97:8080 -r 198.18.0.11:8080 -g -w 1
-a -t 192.0.2.97:8080 -r 198.18.0.12:8080 -g -w 1
`), 15*time.Second)
	if seen := whoMany(t, "192.0.2.97:8080", 10); seen["rs2"] == 0 {
		t.Errorf("after its check passed rs2 took no new connection: %v", seen)
	}
	a.stop(10 * time.Second)
}

// Issue 15, quorum and sorry server, with real traffic: rs2 dies, the pool
// (quorum 2) goes below quorum and the sorry server (rs3) alone takes new
// connections while rs1 keeps its own; when rs2 comes back the sorry
// server stops taking connections but keeps the one it has (weight 0), and
// is deleted once that one has ended.
func TestSorryServerFollowsQuorum(t *testing.T) {
	resetKernel(t)
	addVIP(t, "192.0.2.98")
	s := newSetup(t)
	s.resync = "2s"
	s.write(`
[[virtual_server]]
name = "pool"
address = "192.0.2.98:8080"
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
	up := lines(`
-A -t 192.0.2.98:8080 -s rr
-a -t 192.0.2.98:8080 -r 198.18.0.11:8080 -g -w 1
-a -t 192.0.2.98:8080 -r 198.18.0.12:8080 -g -w 1
`)
	waitTable(t, up, 15*time.Second)
	held, err := dial("192.0.2.98:8080") // on rs1 or rs2; rs1's must survive
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	first, err := ask(held)
	if err != nil {
		t.Fatal(err)
	}

	rs2 := reals[1]
	rs2.stop(8080)
	t.Cleanup(func() { rs2.serve(8080) })
	sorryIn := lines(`
-A -t 192.0.2.98:8080 -s rr
-a -t 192.0.2.98:8080 -r 198.18.0.11:8080 -g -w 0
-a -t 192.0.2.98:8080 -r 198.18.0.12:8080 -g -w 0
-a -t 192.0.2.98:8080 -r 198.18.0.13:8080 -g -w 1
`)
	waitTable(t, sorryIn, 15*time.Second)
	if seen := whoMany(t, "192.0.2.98:8080", 10); seen["rs3"] != 10 {
		t.Errorf("below quorum new connections went to %v; want all to the sorry server rs3", seen)
	}
	if first == "rs1" {
		if name, err := ask(held); err != nil || name != "rs1" {
			t.Errorf("rs1's connection below quorum: %q, %v (it must keep working)", name, err)
		}
	}

	// Hold a connection on the sorry server, then bring rs2 back.
	onSorry, err := dial("192.0.2.98:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer onSorry.Close()
	if name, err := ask(onSorry); err != nil || name != "rs3" {
		t.Fatalf("below quorum a new connection reached %q, %v", name, err)
	}
	if err := rs2.serve(8080); err != nil {
		t.Fatal(err)
	}
	waitTable(t, lines(`
-A -t 192.0.2.98:8080 -s rr
-a -t 192.0.2.98:8080 -r 198.18.0.11:8080 -g -w 1
-a -t 192.0.2.98:8080 -r 198.18.0.12:8080 -g -w 1
-a -t 192.0.2.98:8080 -r 198.18.0.13:8080 -g -w 0
`), 15*time.Second)
	// A resync with the connection still open keeps the sorry server.
	time.Sleep(3 * time.Second)
	if !strings.Contains(strings.Join(table(t), "\n"), "198.18.0.13:8080") {
		t.Fatal("sorry server deleted while it still had a connection")
	}
	if name, err := ask(onSorry); err != nil || name != "rs3" {
		t.Errorf("the sorry server's connection after the quorum came back: %q, %v", name, err)
	}
	onSorry.Close()
	waitTable(t, up, 15*time.Second)
	a.stop(10 * time.Second)
}
