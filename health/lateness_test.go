package health

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A probe whose failure comes back later than its timeout plus LateAfter
// (the agent could not look in time) yields no verdict: with fall 2, any
// number of them leaves an Up server up. A failure on time still counts.
func TestLateProbeYieldsNoVerdict(t *testing.T) {
	h := newHarness(t)
	spec := tcpSpec()     // timeout 500ms, fall 2
	var mode atomic.Int32 // 0 pass, 1 late failure, 2 failure on time
	h.s.newChecker = func(Spec) (checker, error) {
		return checkerFunc(func(ctx context.Context, p probe) result {
			switch mode.Load() {
			case 1:
				// The probe comes back after its timeout and a further
				// LateAfter: the loop was starved meanwhile.
				h.clk.Advance(spec.Timeout + DefaultLateAfter + time.Millisecond)
				return failed("connect: timeout")
			case 2:
				return failed("connect: connection refused")
			}
			return passed("ok")
		}), nil
	}
	h.s.Set([]Check{{ID: "web/a", Service: "web", Target: rsA, Spec: spec}})
	h.run()
	h.advanceUntil(100*time.Millisecond, "up", stateIs(h, "web/a", Up))

	mode.Store(1)
	h.advanceUntil(100*time.Millisecond, "late probes", func() bool { return h.s.Stats().NoVerdict >= 5 })
	if st, _ := h.rec.last("web/a"); st.State != Up {
		t.Fatalf("late failures moved the server: %+v", st)
	}

	mode.Store(2)
	h.advanceUntil(100*time.Millisecond, "down on time", stateIs(h, "web/a", Down))
	if nv := h.s.Stats().NoVerdict; nv < 5 {
		t.Fatalf("NoVerdict = %d", nv)
	}
}

// judgeTimeout: the socket's state decides first; a socket still waiting
// fails after timeout of running time, stalls discounted up to the cap.
func TestJudgeTimeout(t *testing.T) {
	const to = time.Second
	for _, c := range []struct {
		name             string
		elapsed, stalled time.Duration
		soErr            int
		state            uint8
		want             timeoutVerdict
		again            time.Duration
	}{
		{"connected, noticed late", 5 * to, 0, 0, tcpEstablished, verdictPass, 0},
		{"refused", to, 0, 111, 0, verdictRefused, 0},
		{"on time, no answer", to, 0, 0, tcpSynSent, verdictTimeout, 0},
		{"stalled: look again", to, 400 * time.Millisecond, 0, tcpSynSent, verdictTimeout, 400 * time.Millisecond},
		{"stalled past the cap", timeoutCapFactor * to, timeoutCapFactor * to, 0, tcpSynSent, verdictTimeout, 0},
		{"stall longer than the cap allows", 2500 * time.Millisecond, 2 * to, 0, tcpSynSent, verdictTimeout, 500 * time.Millisecond},
	} {
		v, again := judgeTimeout(c.elapsed, c.stalled, to, c.soErr, c.state)
		if v != c.want || again != c.again {
			t.Errorf("%s: got %v, again %v; want %v, %v", c.name, v, again, c.want, c.again)
		}
	}
}

// Issue 13 item 12: reloads that replace checks at interval 1h must not
// leave the replaced checks' items in the queue until they come due.
func TestReplacedChecksLeaveTheQueue(t *testing.T) {
	h := newHarness(t)
	spec := tcpSpec()
	spec.Interval, spec.Timeout = time.Hour, time.Second
	for round := range 200 {
		var checks []Check
		for i := range 50 {
			checks = append(checks, Check{ID: strconv.Itoa(i),
				Target: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1+round*50+i)), Spec: spec})
		}
		h.s.Set(checks)
	}
	h.s.mu.Lock()
	n := h.s.queue.Len()
	h.s.mu.Unlock()
	if n != 50 {
		t.Fatalf("%d queue items after 200 reloads of 50 checks, want 50", n)
	}
}

// Over the budget every interval is stretched by the same factor, the
// stretch is reported in Stats and Timings, and a warning says so.
func TestBudgetStretchesIntervals(t *testing.T) {
	logs := &syncBuffer{}
	s := NewScheduler(Options{
		Logger:     slog.New(slog.NewTextHandler(logs, nil)),
		Budget:     100,
		newChecker: func(Spec) (checker, error) { return newFakeChecker(), nil },
	})
	spec := Spec{Type: "tcp", Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 1, Fall: 3}
	var checks []Check
	for i := range 40 { // 400 probes/s asked
		checks = append(checks, Check{ID: strconv.Itoa(i), Service: "vs" + strconv.Itoa(i%2),
			Target: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1+i)), Spec: spec})
	}
	s.Set(checks)
	st := s.Stats()
	if st.Stretch != 4 || st.ConfiguredRate != 400 || st.Budget != 100 {
		t.Fatalf("stats %+v", st)
	}
	tm := s.Timings()
	if len(tm) != 2 || tm["vs0"].Interval != 100*time.Millisecond || tm["vs0"].Effective != 400*time.Millisecond {
		t.Fatalf("timings %+v", tm)
	}
	// Detection (goroutine path: each probe may take its timeout plus
	// LateAfter): 440ms to the first failing probe, 2 more at max(440,
	// 550)ms, the last 550ms, a tick and LateAfter: 2.6 s.
	if d := tm["vs1"].DetectWithin; d != 2600*time.Millisecond {
		t.Fatalf("DetectWithin %v", d)
	}
	if !strings.Contains(logs.String(), "over budget") || !strings.Contains(logs.String(), "100ms->400ms") {
		t.Fatalf("no budget warning: %s", logs)
	}
	s.Set(checks[:10]) // 100/s: within budget again
	if st := s.Stats(); st.Stretch != 1 {
		t.Fatalf("stretch %v after shrinking to the budget", st.Stretch)
	}
}

// The epoll loop against real sockets: a listener passes, a closed port
// fails, LastLoop stays fresh while idle, and each check is one wake-up
// per tick at most.
func TestPollerChecksRealSockets(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed, _ := net.Listen("tcp4", "127.0.0.1:0")
	closedAddr := netip.MustParseAddrPort(closed.Addr().String())
	closed.Close()
	rec := &recorder{}
	s := NewScheduler(Options{Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), OnChange: rec.add})
	spec := Spec{Type: "tcp", Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 1, Fall: 1}
	s.Set([]Check{
		{ID: "up", Target: netip.MustParseAddrPort(ln.Addr().String()), Spec: spec},
		{ID: "down", Target: closedAddr, Spec: spec},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Checks < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := s.Statuses()
	if st["up"].State != Up || st["down"].State != Down || !strings.Contains(st["down"].Reason, "refused") {
		t.Fatalf("statuses %+v", st)
	}
	s.Set(nil)
	time.Sleep(1500 * time.Millisecond)
	stats := s.Stats()
	if age := time.Since(stats.LastLoop); age > 1200*time.Millisecond {
		t.Fatalf("LastLoop %v old while idle", age)
	}
	if stats.NoVerdict != 0 {
		t.Fatalf("stats %+v", stats)
	}
	cancel()
	<-done
}
