//go:build vmtest

package vmtest

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Test 5: kill -9 the agent in the middle of a large first apply, then start
// it again: it converges to exactly the configured table.
func TestKillDuringApply(t *testing.T) {
	resetKernel(t)
	const services = 1000 // x 2 real servers: 3000 kernel writes
	cfg, want := bigConfig("198.51.100.50", services)
	s := newSetup(t)
	s.write(cfg)
	a := s.start()

	// Kill as soon as the kernel holds some, but not all, of the services.
	deadline := time.Now().Add(60 * time.Second)
	n := 0
	for n < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("the agent programmed only %d services in 60s", n)
		}
		n = countServices(t)
	}
	a.kill()
	n = countServices(t)
	t.Logf("killed with %d of %d services in the kernel", n, services)
	if n >= services {
		t.Fatalf("the apply finished before the kill (%d services); the test proves nothing: raise the service count", n)
	}
	if b, err := os.ReadFile(s.state); err == nil {
		t.Logf("state file after the kill: %d bytes", len(b))
	}

	start := time.Now()
	b, writes, errs := s.startReady()
	t.Logf("restart: ready after %v with writes=%d errors=%d", time.Since(start).Round(time.Millisecond), writes, errs)
	assertTable(t, want)
	if errs != 0 {
		t.Errorf("restart reconcile had %d errors", errs)
	}
	if max := 3*services - n; writes > max {
		t.Errorf("restart wrote %d times; the missing part is at most %d writes", writes, max)
	}
	b.stop(10 * time.Second)
}

// countServices counts the services in the director's /proc/net/ip_vs
// (cheaper than ipvsadm). Through PID 1, because /proc/net follows the main
// thread, which a namespace switch may have left in a real server's namespace.
func countServices(t testing.TB) int {
	t.Helper()
	n := 0
	for _, l := range strings.Split(readFile(t, "/proc/1/net/ip_vs"), "\n") {
		if strings.HasPrefix(l, "TCP ") || strings.HasPrefix(l, "UDP ") || strings.HasPrefix(l, "FWM ") || strings.HasPrefix(l, "SCTP ") {
			n++
		}
	}
	return n
}

// bigConfig is n virtual servers on vip (ports 10000 up) with two real
// servers each (rs1 weight 1, rs2 weight 2), and the table it makes as
// `ipvsadm -Sn` lines: a first apply long enough to interrupt.
func bigConfig(vip string, n int) (string, []string) {
	var cfg strings.Builder
	var want []string
	for i := 0; i < n; i++ {
		port := 10000 + i
		fmt.Fprintf(&cfg, "[[virtual_server]]\nname = \"s%d\"\naddress = \"%s:%d\"\nscheduler = \"wrr\"\n", i, vip, port)
		want = append(want, fmt.Sprintf("-A -t %s:%d -s wrr", vip, port))
		for j := 1; j <= 2; j++ {
			fmt.Fprintf(&cfg, "  [[virtual_server.real_server]]\n  address = \"198.18.0.1%d:%d\"\n  weight = %d\n", j, port, j)
			want = append(want, fmt.Sprintf("-a -t %s:%d -r 198.18.0.1%d:%d -g -w %d", vip, port, j, port, j))
		}
	}
	return cfg.String(), want
}
