package health

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// timedChecker takes 30 ms of the fake clock per probe and passes or fails
// as told.
type timedChecker struct {
	clk  *fakeClock
	fail atomic.Bool
}

func (c *timedChecker) check(ctx context.Context, p probe) result {
	c.clk.Advance(30 * time.Millisecond)
	if c.fail.Load() {
		return failed("connect: connection refused")
	}
	return passed("connected")
}

func TestStatusesCarryTheLastProbe(t *testing.T) {
	h := newHarness(t)
	tc := &timedChecker{clk: h.clk}
	h.s.newChecker = func(Spec) (checker, error) { return tc, nil }
	h.s.Set([]Check{{ID: "web/a", Service: "web", Target: rsA, Spec: tcpSpec()}})
	h.run()
	h.advanceUntil(100*time.Millisecond, "two probes", func() bool { return h.s.Stats().Checks >= 2 })
	st := h.s.Statuses()["web/a"]
	if !st.LastOK || st.LastReason != "connected" || st.LastLatency != 30*time.Millisecond || st.LastCheck.IsZero() {
		t.Fatalf("last probe: %+v", st)
	}
	// Interval 1 s, no jitter: results arrive one interval apart.
	if st.EffectiveInterval < 900*time.Millisecond || st.EffectiveInterval > 1200*time.Millisecond {
		t.Errorf("effective interval %v, want about 1s", st.EffectiveInterval)
	}
	tc.fail.Store(true)
	n := h.s.Stats().Checks
	h.advanceUntil(100*time.Millisecond, "a failed probe", func() bool { return h.s.Stats().Checks > n })
	st = h.s.Statuses()["web/a"]
	if st.LastOK || st.LastReason != "connect: connection refused" {
		t.Fatalf("after a failure: %+v", st)
	}
	h.stop()
	ps := h.s.Stats().Probes
	if len(ps) != 1 || ps[0].Type != "tcp" {
		t.Fatalf("probe stats: %+v", ps)
	}
	p := ps[0]
	var sum uint64
	for _, b := range p.Buckets {
		sum += b
	}
	if p.Count != sum || p.Count < 3 || p.Buckets[5] != p.Count { // 30 ms: the 25..50 ms bucket, index 5
		t.Errorf("buckets %v count %d", p.Buckets, p.Count)
	}
	if p.Failures[1] == 0 || p.Failures[1] != p.Count-2 && p.Failures[1] != p.Count-3 {
		t.Errorf("refused failures %v of %d probes", p.Failures, p.Count)
	}
}

func TestFailureClasses(t *testing.T) {
	for reason, want := range map[string]string{
		"connect: timeout":                        "timeout",
		"exec: timeout, process group killed":     "timeout",
		"connect: connection refused":             "refused",
		"udp: ICMP port unreachable":              "refused",
		"connect: no route to host":               "unreachable",
		"http: read: connection reset by peer":    "reset",
		"HTTP 503":                                "response",
		"dns: rcode SERVFAIL, want NOERROR":       "response",
		"internal error: checker panic: boom":     "error",
		"configuration: unknown user \"nobody2\"": "error",
	} {
		if got := FailureClasses[failureClass(failed(reason))]; got != want {
			t.Errorf("%q: %s, want %s", reason, got, want)
		}
	}
	if got := FailureClasses[failureClass(result{outcome: drain, reason: "agent: drain"})]; got != "drain" {
		t.Errorf("drain: %s", got)
	}
}
