package health

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock moves only when told to.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clk    *fakeClock
	c      chan time.Time
	at     time.Time
	active bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{clk: f, c: make(chan time.Time, 1), at: f.now.Add(d), active: true}
	f.timers = append(f.timers, t)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }
func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := t.active
	t.active = false
	return was
}
func (t *fakeTimer) Reset(d time.Duration) bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := t.active
	t.at, t.active = t.clk.now.Add(d), true
	t.clk.fireLocked()
	return was
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	f.fireLocked()
}

func (f *fakeClock) fireLocked() {
	for _, t := range f.timers {
		if t.active && !t.at.After(f.now) {
			t.active = false
			select {
			case t.c <- f.now:
			default:
			}
		}
	}
}

// fakeChecker answers from a table keyed by probe address and counts calls.
type fakeChecker struct {
	mu      sync.Mutex
	results map[netip.AddrPort]result
	calls   map[netip.AddrPort]int
}

func newFakeChecker() *fakeChecker {
	return &fakeChecker{results: map[netip.AddrPort]result{}, calls: map[netip.AddrPort]int{}}
}

func (f *fakeChecker) set(a netip.AddrPort, r result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results[a] = r
}

func (f *fakeChecker) count(a netip.AddrPort) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[a]
}

func (f *fakeChecker) check(ctx context.Context, p probe) result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[p.addr]++
	if r, ok := f.results[p.addr]; ok {
		return r
	}
	return failed("no result configured")
}

// recorder collects OnChange calls.
type recorder struct {
	mu  sync.Mutex
	got []Status
}

func (r *recorder) add(s Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
}

func (r *recorder) all() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Status(nil), r.got...)
}

func (r *recorder) last(id string) (Status, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.got) - 1; i >= 0; i-- {
		if r.got[i].ID == id {
			return r.got[i], true
		}
	}
	return Status{}, false
}

// harness runs a scheduler on a fake clock with a fake checker.
type harness struct {
	t      *testing.T
	clk    *fakeClock
	fc     *fakeChecker
	rec    *recorder
	s      *Scheduler
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, clk: newFakeClock(), fc: newFakeChecker(), rec: &recorder{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	h.s = NewScheduler(Options{
		Logger:     slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnChange:   h.rec.add,
		Clock:      h.clk,
		Jitter:     -1,
		newChecker: func(Spec) (checker, error) { return h.fc, nil },
	})
	return h
}

func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.s.Run(ctx) }()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

// advanceUntil moves the fake clock in steps until cond holds.
func (h *harness) advanceUntil(step time.Duration, what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		h.clk.Advance(step)
		time.Sleep(time.Millisecond)
	}
}

func stateIs(h *harness, id string, st State) func() bool {
	return func() bool {
		s, ok := h.rec.last(id)
		return ok && s.State == st
	}
}

var (
	rsA = netip.MustParseAddrPort("127.0.0.10:80")
	rsB = netip.MustParseAddrPort("127.0.0.11:80")
)

func tcpSpec() Spec {
	return Spec{Type: "tcp", Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 2}
}

func TestSchedulerFanOutAndTransitions(t *testing.T) {
	h := newHarness(t)
	h.fc.set(rsA, passed("ok"))
	h.fc.set(rsB, failed("refused"))
	h.s.Set([]Check{
		{ID: "web/a", Service: "web", Target: rsA, Spec: tcpSpec()},
		{ID: "api/a", Service: "api", Target: rsA, Spec: tcpSpec()}, // same probe: runs once
		{ID: "web/b", Service: "web", Target: rsB, Spec: tcpSpec()},
	})
	if st := h.s.Stats(); st.Runners != 2 || st.Subscribers != 3 {
		t.Fatalf("stats %+v, want 2 runners for 3 checks", st)
	}
	h.run()
	h.advanceUntil(100*time.Millisecond, "first verdicts", func() bool {
		return stateIs(h, "web/a", Up)() && stateIs(h, "api/a", Up)() && stateIs(h, "web/b", Down)()
	})
	// Run a few more rounds: the shared probe is called once per round.
	h.advanceUntil(100*time.Millisecond, "rounds", func() bool { return h.fc.count(rsB) >= 5 })
	if a, b := h.fc.count(rsA), h.fc.count(rsB); a > b+1 || a < b-1 {
		t.Fatalf("shared probe ran %d times, single probe %d: dedupe broken", a, b)
	}
	// Fall = 2: one failure keeps it up, the second takes it down.
	h.fc.set(rsA, failed("HTTP 503"))
	h.advanceUntil(100*time.Millisecond, "web/a down", stateIs(h, "web/a", Down))
	st := h.s.Statuses()["api/a"]
	if st.State != Down || st.Reason != "HTTP 503" {
		t.Fatalf("api/a status %+v", st)
	}
	// Rise = 2 to come back.
	h.fc.set(rsA, passed("ok"))
	h.advanceUntil(100*time.Millisecond, "web/a up", stateIs(h, "web/a", Up))
	h.stop()
	logs := h.logs.String()
	if n := strings.Count(logs, `check=web/a from=up to=down`); n != 1 {
		t.Fatalf("transition up->down logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, `virtual_server=api real_server=127.0.0.10:80 check=api/a from=up to=down reason="HTTP 503"`) {
		t.Fatalf("transition log lacks details:\n%s", logs)
	}
	if strings.Contains(logs, "from=up to=up") {
		t.Fatalf("non-transition logged:\n%s", logs)
	}
}

func TestSchedulerReloadKeepsState(t *testing.T) {
	h := newHarness(t)
	h.fc.set(rsA, passed("ok"))
	h.fc.set(rsB, passed("ok"))
	checks := []Check{
		{ID: "web/a", Target: rsA, Spec: tcpSpec()},
		{ID: "web/b", Target: rsB, Spec: tcpSpec()},
	}
	h.s.Set(checks)
	h.run()
	h.advanceUntil(100*time.Millisecond, "up", func() bool { return stateIs(h, "web/a", Up)() && stateIs(h, "web/b", Up)() })
	before := len(h.rec.all())
	since := h.s.Statuses()["web/a"].Since

	// Reload: web/a unchanged, web/b's spec changed, web/c new on a's probe.
	changed := tcpSpec()
	changed.Rise = 5
	h.s.Set([]Check{
		checks[0],
		{ID: "web/b", Target: rsB, Spec: changed},
		{ID: "api/a", Target: rsA, Spec: tcpSpec()},
	})
	sts := h.s.Statuses()
	if sts["web/a"].State != Up || !sts["web/a"].Since.Equal(since) {
		t.Fatalf("unchanged check lost its state: %+v", sts["web/a"])
	}
	if sts["web/b"].State != Unknown {
		t.Fatalf("changed check kept old state: %+v", sts["web/b"])
	}
	if sts["api/a"].State != Up {
		t.Fatalf("new subscriber of a running probe did not get its state: %+v", sts["api/a"])
	}
	h.advanceUntil(100*time.Millisecond, "api/a delivered", func() bool { _, ok := h.rec.last("api/a"); return ok })
	for _, s := range h.rec.all()[before:] {
		if s.ID == "web/a" {
			t.Fatalf("unchanged check re-emitted: %+v", s)
		}
	}
	// Removing a check drops its status.
	h.s.Set([]Check{checks[0]})
	if _, ok := h.s.Statuses()["web/b"]; ok {
		t.Fatal("removed check still has a status")
	}
	if st := h.s.Stats(); st.Runners != 1 {
		t.Fatalf("stats %+v after removal", st)
	}
}

func TestSchedulerInitialState(t *testing.T) {
	h := newHarness(t)
	h.fc.set(rsA, failed("refused"))
	spec := tcpSpec()
	spec.Fall = 3
	h.s.Set([]Check{{ID: "a", Target: rsA, Spec: spec, Initial: Up}})
	if st := h.s.Statuses()["a"]; st.State != Up {
		t.Fatalf("initial state %+v", st)
	}
	h.run()
	h.advanceUntil(100*time.Millisecond, "two failures", func() bool { return h.fc.count(rsA) >= 2 })
	if st := h.s.Statuses()["a"]; st.State != Up {
		t.Fatalf("went %v before fall failures", st.State)
	}
	h.advanceUntil(100*time.Millisecond, "down", stateIs(h, "a", Down))
}

func TestSchedulerFirstRoundSpread(t *testing.T) {
	h := newHarness(t)
	spec := tcpSpec()
	spec.Interval = 10 * time.Second
	var checks []Check
	for i := range 2000 {
		checks = append(checks, Check{ID: string(rune('a'+i%26)) + "/" + strconv.Itoa(i), Target: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}), 80), Spec: spec})
	}
	h.s.Set(checks)
	now := h.clk.Now()
	buckets := map[int64]int{}
	for _, it := range h.s.queue {
		off := h.s.timeAt(it.at).Sub(now)
		if off < 0 || off >= spec.Interval {
			t.Fatalf("first check %v after set, outside one interval", off)
		}
		buckets[int64(off/(100*time.Millisecond))]++
	}
	// 2000 checks over 100 buckets of 100ms: 20 each on average.
	for b, n := range buckets {
		if n > 50 {
			t.Fatalf("%d checks start in the same 100ms (bucket %d): not spread", n, b)
		}
	}
	if len(buckets) < 95 {
		t.Fatalf("only %d of 100 buckets used", len(buckets))
	}
}

func TestSchedulerSlowStart(t *testing.T) {
	h := newHarness(t)
	h.fc.set(rsA, passed("ok"))
	spec := tcpSpec()
	spec.Rise = 1
	spec.SlowStart = 10 * time.Second
	spec.Interval = 5 * time.Second
	spec.Timeout = time.Second
	h.s.Set([]Check{{ID: "a", Target: rsA, Spec: spec, Initial: Down}})
	h.run()
	h.advanceUntil(50*time.Millisecond, "up", stateIs(h, "a", Up))
	h.advanceUntil(250*time.Millisecond, "full weight", func() bool {
		s, _ := h.rec.last("a")
		return s.Factor == 1
	})
	var factors []float64
	for _, s := range h.rec.all() {
		if s.ID == "a" && s.State == Up {
			factors = append(factors, s.Factor)
		}
	}
	if factors[0] != 0.1 {
		t.Fatalf("ramp starts at %v, want 0.1 (%v)", factors[0], factors)
	}
	for i := 1; i < len(factors); i++ {
		if factors[i] <= factors[i-1] {
			t.Fatalf("ramp not increasing: %v", factors)
		}
	}
	if len(factors) < 5 {
		t.Fatalf("ramp has only %d steps: %v", len(factors), factors)
	}
}

func TestSchedulerNotify(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "notify.log")
	h := newHarness(t)
	h.fc.set(rsA, failed("refused"))
	spec := tcpSpec()
	spec.Notify = []string{"/bin/sh", "-c", `echo "$IPVS_CHECK_ID $IPVS_VIRTUAL_SERVER $IPVS_RS_IP $IPVS_RS_PORT $IPVS_OLD_STATE $IPVS_NEW_STATE $IPVS_REASON" >> ` + out}
	// web/b's first verdict is "up": logged at debug level, not notified.
	h.fc.set(rsB, passed("ok"))
	h.s.Set([]Check{{ID: "web/a", Service: "web", Target: rsA, Spec: spec}, {ID: "web/b", Service: "web", Target: rsB, Spec: spec}})
	h.run()
	want := "web/a web 127.0.0.10 80 unknown down refused\n"
	defer func() {
		// Recovery notifies; it needs rise = 2 passes.
		h.fc.set(rsA, passed("ok"))
		want += "web/a web 127.0.0.10 80 down up ok\n"
		h.advanceUntil(100*time.Millisecond, "recovery notify", func() bool {
			b, _ := os.ReadFile(out)
			return string(b) == want
		})
	}()
	h.advanceUntil(100*time.Millisecond, "notify ran", func() bool {
		b, _ := os.ReadFile(out)
		return string(b) == want
	})
}

func TestSchedulerStopsCleanly(t *testing.T) {
	g0, f0 := runtime.NumGoroutine(), openFDs(t)
	s := NewScheduler(Options{Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
	spec := Spec{Type: "tcp", Interval: 50 * time.Millisecond, Timeout: 20 * time.Millisecond, Rise: 1, Fall: 1}
	var checks []Check
	for i := range 50 {
		checks = append(checks, Check{ID: strconv.Itoa(i), Target: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1+i)), Spec: spec})
	}
	s.Set(checks)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Checks < 100 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Stats().Checks < 100 {
		t.Fatalf("stats %+v", s.Stats())
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run returned %v", err)
	}
	settle(t, g0, f0)
	for id, st := range s.Statuses() {
		if st.State != Down {
			t.Fatalf("%s: %+v (port should be closed)", id, st)
		}
	}
}

func TestSchedulerFallingBehind(t *testing.T) {
	logs := &syncBuffer{}
	slow := checkerFunc(func(ctx context.Context, p probe) result {
		time.Sleep(30 * time.Millisecond)
		return passed("ok")
	})
	s := NewScheduler(Options{
		Logger:      slog.New(slog.NewTextHandler(logs, nil)),
		MaxInFlight: 1,
		LateAfter:   20 * time.Millisecond,
		newChecker:  func(Spec) (checker, error) { return slow, nil },
	})
	spec := Spec{Type: "tcp", Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 1, Fall: 1}
	var checks []Check
	for i := range 20 {
		checks = append(checks, Check{ID: strconv.Itoa(i), Target: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1+i)), Spec: spec})
	}
	s.Set(checks)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.Run(ctx)
	st := s.Stats()
	if st.Late == 0 || st.Saturated == 0 || st.MaxLag < 20*time.Millisecond {
		t.Fatalf("an overloaded scheduler did not notice: %+v", st)
	}
	if n := strings.Count(logs.String(), "falling behind"); n != 1 {
		t.Fatalf("falling-behind warning logged %d times in 1s, want once (rate-limited):\n%s", n, logs)
	}
}

type checkerFunc func(ctx context.Context, p probe) result

func (f checkerFunc) check(ctx context.Context, p probe) result { return f(ctx, p) }

func TestSchedulerConfigErrorIsDown(t *testing.T) {
	h := newHarness(t)
	h.s.newChecker = newChecker
	h.s.Set([]Check{{ID: "a", Target: rsA, Spec: Spec{Type: "bogus", Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1}}})
	h.run()
	h.advanceUntil(100*time.Millisecond, "down", stateIs(h, "a", Down))
	if st, _ := h.rec.last("a"); !strings.Contains(st.Reason, "unknown check type") {
		t.Fatalf("reason %q", st.Reason)
	}
}

func TestSchedulerReloadCancelsInFlight(t *testing.T) {
	started := make(chan struct{}, 1)
	block := checkerFunc(func(ctx context.Context, p probe) result {
		started <- struct{}{}
		<-ctx.Done()
		return failed("cancelled")
	})
	h := newHarness(t)
	h.s.newChecker = func(Spec) (checker, error) { return block, nil }
	// The probe's timeout is real time (10 s); the schedule is fake.
	spec := Spec{Type: "tcp", Interval: 10 * time.Second, Timeout: 10 * time.Second, Rise: 1, Fall: 1}
	h.s.Set([]Check{{ID: "a", Target: rsA, Spec: spec}})
	h.run()
	h.advanceUntil(100*time.Millisecond, "probe start", func() bool { return len(started) > 0 })
	h.s.Set(nil)
	deadline := time.Now().Add(2 * time.Second)
	for h.s.Stats().InFlight != 0 {
		if time.Now().After(deadline) {
			t.Fatal("removed check's probe still in flight")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if len(h.s.Statuses()) != 0 || len(h.rec.all()) != 0 {
		t.Fatalf("removed check reported: %v %v", h.s.Statuses(), h.rec.all())
	}
}

// TestSchedulerConcurrentUse reloads and reads while probes run, for the
// race detector.
func TestSchedulerConcurrentUse(t *testing.T) {
	l := acceptAndClose(t)
	port := addrOf(t, l.Addr()).Port()
	s := NewScheduler(Options{Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), OnChange: func(Status) {}})
	mk := func(n int, rise int) []Check {
		var cs []Check
		for i := range n {
			cs = append(cs, Check{ID: "vs/" + strconv.Itoa(i), Target: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
				Spec: Spec{Type: "tcp", Interval: 10 * time.Millisecond, Timeout: 5 * time.Millisecond, Rise: rise, Fall: 1}})
		}
		return cs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	for i := 0; ctx.Err() == nil; i++ {
		s.Set(mk(10+i%7, 1+i%2))
		_ = s.Statuses()
		_ = s.Stats()
		// Longer than the loop's tick (10 ms), which may hold a new
		// check's first start back by that much.
		time.Sleep(20 * time.Millisecond)
	}
	<-done
	if s.Stats().Checks == 0 {
		t.Fatal("no checks ran")
	}
}

func TestSchedulerInvalidSpecDoesNotSpin(t *testing.T) {
	rec := &recorder{}
	s := NewScheduler(Options{Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), OnChange: rec.add})
	s.Set([]Check{{ID: "a", Target: rsA, Spec: Spec{Type: "tcp"}}}) // no interval, timeout, rise, fall
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	s.Run(ctx)
	if n := s.Stats().Checks; n > 2 {
		t.Fatalf("%d checks in 300ms for an invalid spec: spinning", n)
	}
	if st := s.Statuses()["a"]; st.State == Up {
		t.Fatalf("invalid spec is up: %+v", st)
	}
	if st, ok := rec.last("a"); ok && !strings.Contains(st.Reason, "interval must be positive") {
		t.Fatalf("reason %q", st.Reason)
	}
}

// jump moves the fake clock without firing timers: time passes while the
// scheduler's loop sleeps, as it does for a loop busy elsewhere.
func (f *fakeClock) jump(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// TestSchedulerSlowStartEndsAtOne: a probe that completes after the last
// ramp step is due, but before the loop has emitted it, must not swallow
// the final factor-1 update.
func TestSchedulerSlowStartEndsAtOne(t *testing.T) {
	h := newHarness(t)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	h.s.newChecker = func(Spec) (checker, error) {
		return checkerFunc(func(ctx context.Context, p probe) result {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			if n == 2 {
				started <- struct{}{}
				<-release
			}
			return passed("ok")
		}), nil
	}
	spec := tcpSpec()
	spec.Rise = 1
	spec.SlowStart = 20 * time.Second // steps every 2 s
	spec.Interval = 15 * time.Second
	spec.Timeout = time.Second
	h.s.Set([]Check{{ID: "a", Target: rsA, Spec: spec, Initial: Down}})
	h.run()
	h.advanceUntil(50*time.Millisecond, "up", stateIs(h, "a", Up))
	h.advanceUntil(50*time.Millisecond, "second probe", func() bool { return len(started) > 0 })
	<-started
	if s, _ := h.rec.last("a"); s.Factor >= 1 {
		t.Fatalf("ramp already over at the second probe: %+v", s)
	}
	// The probe finishes after the ramp's end; the loop has not woken.
	h.clk.jump(6 * time.Second)
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		// complete() has run once it queued the next probe (the one in
		// flight was popped).
		h.s.mu.Lock()
		queued := false
		for _, it := range h.s.queue {
			queued = queued || !it.ramp
		}
		h.s.mu.Unlock()
		if queued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("probe did not complete")
		}
		time.Sleep(time.Millisecond)
	}
	h.advanceUntil(100*time.Millisecond, "factor 1 delivered", func() bool {
		s, _ := h.rec.last("a")
		return s.State == Up && s.Factor == 1
	})
}

// TestSchedulerCheckerPanic: a panicking probe is a failed check, is
// rescheduled, and does not take the daemon down.
func TestSchedulerCheckerPanic(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	calls := 0
	h.s.newChecker = func(Spec) (checker, error) {
		return checkerFunc(func(ctx context.Context, p probe) result {
			mu.Lock()
			calls++
			mu.Unlock()
			panic("boom")
		}), nil
	}
	h.s.Set([]Check{{ID: "a", Target: rsA, Spec: tcpSpec()}})
	h.run()
	h.advanceUntil(100*time.Millisecond, "down", stateIs(h, "a", Down))
	if st, _ := h.rec.last("a"); !strings.Contains(st.Reason, "panic") || !strings.Contains(st.Reason, "boom") {
		t.Fatalf("reason %q", st.Reason)
	}
	h.advanceUntil(100*time.Millisecond, "rescheduled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls >= 3
	})
	if st := h.s.Stats(); st.InFlight != 0 {
		t.Fatalf("in-flight count leaked: %+v", st)
	}
}

// TestSchedulerInvalidSpecFirstCheckSoon: an invalid spec runs on the
// default schedule from its first check, not on the interval it gave.
func TestSchedulerInvalidSpecFirstCheckSoon(t *testing.T) {
	h := newHarness(t)
	h.s.newChecker = Spec.prepare
	// Timeout longer than interval: invalid, and the interval is huge.
	h.s.Set([]Check{{ID: "a", Target: rsA, Spec: Spec{Type: "tcp", Interval: 1000 * time.Hour, Timeout: 2000 * time.Hour, Rise: 1, Fall: 1}}})
	now := h.clk.Now()
	for _, it := range h.s.queue {
		if off := h.s.timeAt(it.at).Sub(now); off >= DefaultInterval {
			t.Fatalf("first check of an invalid spec %v after set, want within %v", off, DefaultInterval)
		}
	}
	h.run()
	h.advanceUntil(100*time.Millisecond, "down", stateIs(h, "a", Down))
}

// TestSchedulerCoalescesAfterReAdd: an ID removed and added back before
// delivery is still delivered once (coalesced), not once per re-add.
func TestSchedulerCoalescesAfterReAdd(t *testing.T) {
	h := newHarness(t)
	a := Check{ID: "a", Target: rsA, Spec: tcpSpec(), Initial: Up}
	b := Check{ID: "b", Target: rsA, Spec: tcpSpec()} // joins a's probe, gets "up"
	h.fc.set(rsA, passed("ok"))
	h.s.Set([]Check{a, b})
	h.s.Set([]Check{a})
	h.s.Set([]Check{a, b})
	h.run()
	h.advanceUntil(100*time.Millisecond, "b delivered", func() bool { _, ok := h.rec.last("b"); return ok })
	h.stop()
	n := 0
	for _, s := range h.rec.all() {
		if s.ID == "b" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("b delivered %d times, want once: %+v", n, h.rec.all())
	}
}

// TestSchedulerStopIsNotAFailure: a probe cut short because Run is
// stopping says nothing about the server; it must not count as a failure
// (with fall = 1 it would turn the server down on every shutdown).
func TestSchedulerStopIsNotAFailure(t *testing.T) {
	started := make(chan struct{}, 1)
	block := checkerFunc(func(ctx context.Context, p probe) result {
		started <- struct{}{}
		<-ctx.Done()
		return failed("cancelled")
	})
	h := newHarness(t)
	h.s.newChecker = func(Spec) (checker, error) { return block, nil }
	spec := Spec{Type: "tcp", Interval: 10 * time.Second, Timeout: 10 * time.Second, Rise: 1, Fall: 1}
	h.s.Set([]Check{{ID: "a", Target: rsA, Spec: spec, Initial: Up}})
	h.run()
	h.advanceUntil(100*time.Millisecond, "probe start", func() bool { return len(started) > 0 })
	h.stop()
	if st := h.s.Statuses()["a"]; st.State != Up {
		t.Fatalf("stopping turned the server %v: %+v", st.State, st)
	}
	if len(h.rec.all()) != 0 {
		t.Fatalf("stopping reported %+v", h.rec.all())
	}
	if logs := h.logs.String(); strings.Contains(logs, "to=down") {
		t.Fatalf("stopping logged a transition:\n%s", logs)
	}
}

// TestSchedulerWeightFilePerPort: a weight_file template naming the port
// makes the probe per real server even when a check port would otherwise
// merge real servers on one host: each must read its own file.
func TestSchedulerWeightFilePerPort(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	seen := map[netip.AddrPort]bool{}
	h.s.newChecker = func(Spec) (checker, error) {
		return checkerFunc(func(ctx context.Context, p probe) result {
			mu.Lock()
			seen[p.rs] = true
			mu.Unlock()
			return passed("ok")
		}), nil
	}
	rs80, rs81 := netip.MustParseAddrPort("127.0.0.10:80"), netip.MustParseAddrPort("127.0.0.10:81")
	for _, tc := range []struct {
		tmpl    string
		runners int
	}{
		{"/run/w/{port}", 2},
		{"/run/w/{addr}", 2},
		{"/run/w/{ip}", 1}, // one file per host: one probe is right
	} {
		spec := tcpSpec()
		spec.Port = 9000
		spec.WeightFile = tc.tmpl
		h.s.Set([]Check{{ID: "web/80", Target: rs80, Spec: spec}, {ID: "api/81", Target: rs81, Spec: spec}})
		if n := h.s.Stats().Runners; n != tc.runners {
			t.Errorf("weight_file %s: %d probes, want %d", tc.tmpl, n, tc.runners)
		}
	}
	spec := tcpSpec()
	spec.Port = 9000
	spec.WeightFile = "/run/w/{port}"
	h.s.Set([]Check{{ID: "web/80", Target: rs80, Spec: spec}, {ID: "api/81", Target: rs81, Spec: spec}})
	h.run()
	h.advanceUntil(100*time.Millisecond, "both real servers probed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[rs80] && seen[rs81]
	})
}

// TestSchedulerRampQueueBounded: during slow start each probe result must
// not leave one more ramp item in the queue: with a short interval and a
// long ramp, a mass recovery would grow the queue by (step / interval)
// items per real server.
func TestSchedulerRampQueueBounded(t *testing.T) {
	h := newHarness(t)
	h.fc.set(rsA, passed("ok"))
	spec := tcpSpec()
	spec.Rise = 1
	spec.Interval = time.Second
	spec.SlowStart = 100 * time.Second // a step every 10 s: ~10 probes per step
	h.s.Set([]Check{{ID: "a", Target: rsA, Spec: spec, Initial: Down}})
	h.run()
	h.advanceUntil(50*time.Millisecond, "up", stateIs(h, "a", Up))
	n0 := h.fc.count(rsA)
	h.advanceUntil(50*time.Millisecond, "25 more probes", func() bool { return h.fc.count(rsA) >= n0+25 })
	h.s.mu.Lock()
	n := h.s.queue.Len()
	h.s.mu.Unlock()
	if n > 2 {
		t.Fatalf("%d queue items for one check (a probe and a ramp step expected)", n)
	}
	h.advanceUntil(time.Second, "full weight", func() bool { s, _ := h.rec.last("a"); return s.Factor == 1 })
}
