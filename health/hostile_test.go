package health

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostile is a TCP server that misbehaves in one way on every connection.
type hostile struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startHostile(t *testing.T, serve func(c net.Conn)) *hostile {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostile{l: l}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			h.wg.Add(1)
			go func() { defer h.wg.Done(); serve(c) }()
		}
	}()
	return h
}

func (h *hostile) addr(t *testing.T) netip.AddrPort { return addrOf(t, h.l.Addr()) }

func (h *hostile) stop() {
	h.l.Close()
	h.mu.Lock()
	for _, c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// settle waits for goroutines and file descriptors to return to a baseline;
// closed sockets and finished goroutines take a moment to be reaped.
func settle(t *testing.T, goroutines, fds int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g, f := runtime.NumGoroutine(), openFDs(t)
		if g <= goroutines && f <= fds {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			n := runtime.Stack(buf, true)
			t.Fatalf("leak: %d goroutines (was %d), %d fds (was %d)\n%s", g, goroutines, f, fds, buf[:n])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHostileTargets(t *testing.T) {
	g0, f0 := runtime.NumGoroutine(), openFDs(t)
	const timeout = 300 * time.Millisecond
	servers := map[string]func(c net.Conn){
		"silent": func(c net.Conn) {
			// accept, then never answer (the stop closes it)
			b := make([]byte, 1)
			c.Read(b)
			for {
				if _, err := c.Read(b); err != nil {
					return
				}
			}
		},
		"firehose": func(c net.Conn) {
			// "answers forever": an endless header, then endless garbage
			c.Write([]byte("HTTP/1.1 200 OK\r\nX-Forever: "))
			chunk := []byte(strings.Repeat("a", 4096))
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		},
		"trickle": func(c net.Conn) {
			for {
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		},
		"garbage": func(c net.Conn) {
			c.Write([]byte("\x16\x03\x01\x00\x05garbage\x00\xff\r\n\r\n"))
			c.Close()
		},
		"reset": func(c net.Conn) {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		},
		"bodyforever": func(c net.Conn) {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"))
			chunk := []byte(strings.Repeat("b", 4096))
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		},
	}
	specs := []Spec{
		{Type: "http", Timeout: timeout},
		{Type: "http", Timeout: timeout, ExpectBody: "never-there"},
		{Type: "https", Timeout: timeout},
		{Type: "https", Timeout: timeout, TLSVerify: true},
		{Type: "agent", Timeout: timeout},
	}
	var hs []*hostile
	for name, serve := range servers {
		h := startHostile(t, serve)
		hs = append(hs, h)
		for _, spec := range specs {
			for range 3 {
				start := time.Now()
				r := runSpec(t, spec, h.addr(t))
				el := time.Since(start)
				// A 200 with an endless body is up unless the body must match.
				legit := name == "bodyforever" && spec.Type == "http" && spec.ExpectBody == ""
				if r.outcome == pass && !legit {
					t.Errorf("%s server, %s check: passed (%s)", name, spec.Type, r.reason)
				}
				if el > timeout+2*time.Second { // bounded, with room for a loaded CI machine
					t.Errorf("%s server, %s check: took %v, timeout %v", name, spec.Type, el, timeout)
				}
			}
		}
	}
	// UDP silence and DNS garbage.
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	go func() {
		b := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			if n > 0 && b[0] == 's' {
				continue // silent for "s..." payloads
			}
			pc.WriteTo([]byte("\xff\xff\xc0\x0c garbage that is not DNS"), from)
		}
	}()
	u := addrOf(t, pc.LocalAddr())
	if r := runSpec(t, Spec{Type: "udp", Send: "s", Timeout: timeout}, u); r.outcome != fail {
		t.Errorf("silent udp: %+v", r)
	}
	if r := runSpec(t, Spec{Type: "dns", QueryName: "example.org", Timeout: timeout}, u); r.outcome != fail {
		t.Errorf("garbage dns: %+v", r)
	}
	pc.Close()
	for _, h := range hs {
		h.stop()
	}
	settle(t, g0, f0)
}

// TestSchedulerHostileNoLeak runs the scheduler itself against hostile
// targets, reloads mid-flight and stops: every socket and goroutine it
// opened must be gone.
func TestSchedulerHostileNoLeak(t *testing.T) {
	g0, f0 := runtime.NumGoroutine(), openFDs(t)
	silent := startHostile(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	firehose := startHostile(t, func(c net.Conn) {
		chunk := []byte(strings.Repeat("z", 4096))
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	spec := Spec{Type: "http", Interval: 60 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 1, Fall: 1}
	tlsSpec := spec
	tlsSpec.Type = "https"
	var checks []Check
	for i, target := range []netip.AddrPort{silent.addr(t), firehose.addr(t)} {
		for j, sp := range []Spec{spec, tlsSpec} {
			checks = append(checks, Check{ID: fmt.Sprint(i, j), Target: target, Spec: sp})
		}
	}
	s := NewScheduler(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.Set(checks)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Checks < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.Set(checks[:1]) // cancels whatever the others have in flight
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	for id, st := range s.Statuses() {
		if st.State == Up {
			t.Errorf("%s is up against a hostile target", id)
		}
	}
	silent.stop()
	firehose.stop()
	settle(t, g0, f0)
}

// TestCheckersStopOnCancel: a probe whose context is cancelled (its check
// removed by a reload, or the agent stopping) returns at once, not when its
// timeout would have ended it. The timeout here is long and the bound
// generous: the test measures "at once" against "after the timeout".
func TestCheckersStopOnCancel(t *testing.T) {
	const timeout = 20 * time.Second
	silent := startHostile(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	defer silent.stop()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close() // bound, never read: every datagram goes unanswered
	udp := addrOf(t, pc.LocalAddr())
	for _, tc := range []struct {
		spec   Spec
		target netip.AddrPort
	}{
		{Spec{Type: "http"}, silent.addr(t)},
		{Spec{Type: "http", ExpectBody: "x"}, silent.addr(t)},
		{Spec{Type: "agent"}, silent.addr(t)},
		{Spec{Type: "udp", Send: "ping"}, udp},
		{Spec{Type: "dns", QueryName: "example.org"}, udp},
	} {
		c, err := newChecker(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		r := c.check(ctx, probe{addr: tc.target, rs: tc.target})
		el := time.Since(start)
		cancel()
		if r.outcome != fail {
			t.Errorf("%s: %+v after cancel", tc.spec.Type, r)
		}
		if el > timeout/4 {
			t.Errorf("%s check ran %v after its context was cancelled at 50ms", tc.spec.Type, el)
		}
	}
}

// TestHTTPDecidesEarly: once the status (and, when asked for, the body
// marker) has arrived the verdict is known; a large or slowly sent rest of
// the body must not hold the probe, and its in-flight slot, until the
// timeout. Long timeout, generous bound: "at once" against "at timeout".
func TestHTTPDecidesEarly(t *testing.T) {
	const timeout = 20 * time.Second
	h := startHostile(t, func(c net.Conn) {
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nstatus: healthy\n"))
		for {
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	defer h.stop()
	for _, spec := range []Spec{
		{Type: "http", Timeout: timeout},
		{Type: "http", Timeout: timeout, ExpectBody: "healthy"},
	} {
		start := time.Now()
		r := runSpec(t, spec, h.addr(t))
		el := time.Since(start)
		if r.outcome != pass {
			t.Errorf("expect_body %q: %+v", spec.ExpectBody, r)
		}
		if el > timeout/4 {
			t.Errorf("expect_body %q: took %v, the verdict was known at once", spec.ExpectBody, el)
		}
	}
}
