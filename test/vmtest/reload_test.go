//go:build vmtest

package vmtest

import (
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Test 3: SIGHUP reload adds, removes and changes real and virtual servers
// with exactly the writes the difference needs; a long-lived connection to a
// real server that did not change keeps working; a bad config is refused and
// changes nothing.
func TestReload(t *testing.T) {
	resetKernel(t)
	for _, v := range []string{"192.0.2.30", "192.0.2.31", "192.0.2.32", "192.0.2.33"} {
		addVIP(t, v)
	}
	s := newSetup(t)
	// "keep" holds the long-lived connection: only rs1 at first, so we know
	// where it lands.
	before := `
[[virtual_server]]
name = "keep"
address = "192.0.2.30:80"
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  weight = 5
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
  weight = 0

[[virtual_server]]
name = "change"
address = "192.0.2.31:80"
scheduler = "rr"
  [[virtual_server.real_server]]
  address = "198.18.0.13:80"
  weight = 1

[[virtual_server]]
name = "gone"
address = "192.0.2.32:80"
  [[virtual_server.real_server]]
  address = "198.18.0.13:80"
`
	s.write(before)
	a, _, _ := s.startReady()
	assertTable(t, lines(`
-A -t 192.0.2.30:80 -s wrr
-a -t 192.0.2.30:80 -r 198.18.0.11:80 -g -w 5
-a -t 192.0.2.30:80 -r 198.18.0.12:80 -g -w 0
-A -t 192.0.2.31:80 -s rr
-a -t 192.0.2.31:80 -r 198.18.0.13:80 -g -w 1
-A -t 192.0.2.32:80 -s wlc
-a -t 192.0.2.32:80 -r 198.18.0.13:80 -g -w 1
`))
	long, err := dial("192.0.2.30:80")
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	if name, err := ask(long); err != nil || name != "rs1" {
		t.Fatalf("long-lived connection answered by %q, %v; want rs1", name, err)
	}
	// The director's connection table: client -> VIP -> rs1, by direct routing.
	wantConn := conn{"TCP", "ESTABLISHED", long.LocalAddr().String(), "192.0.2.30:80", "198.18.0.11:80"}
	if e, ok := findConn(t, wantConn.client); !ok || e != wantConn {
		t.Fatalf("connection entry %+v (found %v), want %+v", e, ok, wantConn)
	}

	// keep: rs1 unchanged, rs2 removed, rs3 added. change: scheduler rr->wlc,
	// weight 1->7. gone: removed. new: added with one real server.
	after := `
[[virtual_server]]
name = "keep"
address = "192.0.2.30:80"
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  weight = 5
  [[virtual_server.real_server]]
  address = "198.18.0.13:80"
  weight = 3

[[virtual_server]]
name = "change"
address = "192.0.2.31:80"
scheduler = "wlc"
  [[virtual_server.real_server]]
  address = "198.18.0.13:80"
  weight = 7

[[virtual_server]]
name = "new"
address = "192.0.2.33:80"
scheduler = "rr"
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
`
	from := a.reload(s, after)
	writes, errs := a.reconciled(from, "reload", 30*time.Second)
	want := lines(`
-A -t 192.0.2.30:80 -s wrr
-a -t 192.0.2.30:80 -r 198.18.0.11:80 -g -w 5
-a -t 192.0.2.30:80 -r 198.18.0.13:80 -g -w 3
-A -t 192.0.2.31:80 -s wlc
-a -t 192.0.2.31:80 -r 198.18.0.13:80 -g -w 7
-A -t 192.0.2.33:80 -s rr
-a -t 192.0.2.33:80 -r 198.18.0.12:80 -g -w 1
`)
	assertTable(t, want)
	// del rs2, add rs3 (keep); edit service, edit dest (change);
	// del service (gone, its real server goes with it); add service + dest (new).
	if writes != 7 || errs != 0 {
		var ops []string
		for _, e := range a.entriesSince(from, "kernel write") {
			ops = append(ops, e.str("op"))
		}
		sort.Strings(ops)
		t.Errorf("reload: writes=%d errors=%d, want 7 and 0; ops logged:\n%s", writes, errs, strings.Join(ops, "\n"))
	}
	if name, err := ask(long); err != nil || name != "rs1" {
		t.Errorf("long-lived connection after reload: %q, %v; want rs1 still answering", name, err)
	}
	if e, ok := findConn(t, wantConn.client); !ok || e != wantConn {
		t.Errorf("connection entry after reload %+v (found %v), want %+v", e, ok, wantConn)
	}
	if name, err := who("192.0.2.33:80"); err != nil || name != "rs2" {
		t.Errorf("new virtual server answered by %q, %v; want rs2", name, err)
	}

	t.Run("bad config keeps the old one", func(t *testing.T) {
		from := a.mark()
		s.write(after + "\n[[virtual_server]]\nname = \"broken\"\naddress = \"192.0.2.300:80\"\n")
		a.signal(syscall.SIGHUP)
		a.waitFor(from, "reload failed", nil, 30*time.Second)
		if r := a.entriesSince(from, "reconciled"); len(r) != 0 {
			t.Errorf("a reconcile followed the bad config: %s", r[0].raw)
		}
		assertTable(t, want)
		if !a.running() {
			t.Fatal("agent exited on a bad config")
		}
		if name, err := ask(long); err != nil || name != "rs1" {
			t.Errorf("long-lived connection: %q, %v", name, err)
		}
	})
}
