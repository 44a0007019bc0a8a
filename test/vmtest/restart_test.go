//go:build vmtest

package vmtest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// traffic makes new client connections to addr back to back until stop is
// called, and counts the failures (a reset, a timeout, a wrong answer).
type traffic struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	done       chan struct{}
	wg         sync.WaitGroup
}

func startTraffic(addr string) *traffic {
	tr := &traffic{done: make(chan struct{})}
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		for {
			select {
			case <-tr.done:
				return
			default:
			}
			name, err := who(addr)
			if err == nil && realByName(name) == nil {
				err = &net.AddrError{Err: "unexpected answer " + name, Addr: addr}
			}
			if err != nil {
				tr.failed.Add(1)
				tr.firstErr.CompareAndSwap(nil, err.Error())
			} else {
				tr.ok.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return tr
}

func (tr *traffic) stop() { close(tr.done); tr.wg.Wait() }

func realByName(n string) *node {
	for _, r := range reals {
		if r.name == n {
			return r
		}
	}
	return nil
}

// watchTable samples the kernel table until stop is called and returns every
// sample that differed from want: a restart must not even briefly change it.
func watchTable(t *testing.T, want []string) (stop func() []string) {
	want = sorted(want)
	done := make(chan struct{})
	var bad []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			out, err := run("ipvsadm", "-Sn")
			if err != nil {
				bad = append(bad, err.Error())
				continue
			}
			if got := sorted(lines(out)); !equal(want, got) {
				bad = append(bad, diff(want, got))
			}
		}
	}()
	return func() []string { close(done); wg.Wait(); return bad }
}

// Test 4: TERM the agent and start it again while clients connect: the
// kernel table stays exactly as it was throughout (no weight change, no
// flush), the second start writes nothing, and no connection fails.
func TestRestartUnderTraffic(t *testing.T) {
	resetKernel(t)
	addVIP(t, "192.0.2.40")
	s := newSetup(t)
	s.write(`
[[virtual_server]]
name = "live"
address = "192.0.2.40:80"
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  weight = 10
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
  weight = 20
  [[virtual_server.real_server]]
  address = "198.18.0.13:80"
  weight = 30

[[virtual_server]]
name = "live-udp"
address = "192.0.2.40:443"
protocol = "udp"
scheduler = "rr"
  [[virtual_server.real_server]]
  address = "198.18.0.11:443"
`)
	a, _, _ := s.startReady()
	want := lines(`
-A -t 192.0.2.40:80 -s wrr
-a -t 192.0.2.40:80 -r 198.18.0.11:80 -g -w 10
-a -t 192.0.2.40:80 -r 198.18.0.12:80 -g -w 20
-a -t 192.0.2.40:80 -r 198.18.0.13:80 -g -w 30
-A -u 192.0.2.40:443 -s rr
-a -u 192.0.2.40:443 -r 198.18.0.11:443 -g -w 1
`)
	assertTable(t, want)

	// Long-lived connections, one per real server, kept open across the restart.
	held := map[string]net.Conn{}
	for i := 0; i < 12 && len(held) < 3; i++ {
		c, err := dial("192.0.2.40:80")
		if err != nil {
			t.Fatal(err)
		}
		name, err := ask(c)
		if err != nil {
			t.Fatal(err)
		}
		if held[name] != nil {
			c.Close()
			continue
		}
		held[name] = c
		defer c.Close()
	}
	if len(held) != 3 {
		t.Fatalf("could not hold a connection to each real server: %v", held)
	}

	tr := startTraffic("192.0.2.40:80")
	watch := watchTable(t, want)
	time.Sleep(time.Second)
	a.stop(10 * time.Second)
	time.Sleep(time.Second) // traffic keeps flowing with no agent at all
	b := s.start()
	writes, errs := b.reconciled(0, "start", 60*time.Second)
	b.waitFor(0, "ready", nil, 10*time.Second)
	time.Sleep(time.Second)
	tr.stop()
	deviations := watch()

	if writes != 0 || errs != 0 {
		t.Errorf("second start: writes=%d errors=%d, want 0 and 0", writes, errs)
	}
	if w := b.entriesSince(0, "kernel write"); len(w) != 0 {
		t.Errorf("second start wrote to the kernel: %s", w[0].raw)
	}
	if len(deviations) > 0 {
		t.Errorf("the kernel table changed during the restart (%d samples), first:\n%s", len(deviations), deviations[0])
	}
	assertTable(t, want)
	if n := tr.failed.Load(); n != 0 || tr.ok.Load() < 10 {
		t.Errorf("traffic across the restart: %d ok, %d failed (first: %v)", tr.ok.Load(), n, tr.firstErr.Load())
	}
	t.Logf("traffic across the restart: %d connections, none failed", tr.ok.Load())
	for name, c := range held {
		if got, err := ask(c); err != nil || got != name {
			t.Errorf("long-lived connection to %s after restart: %q, %v", name, got, err)
		}
	}
	if name, err := whoUDP("192.0.2.40:443"); err != nil || !strings.HasPrefix(name, "rs1") {
		t.Errorf("udp after restart: %q, %v", name, err)
	}
	b.stop(10 * time.Second)
}
