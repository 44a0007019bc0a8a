package health

import (
	"testing"
	"time"
)

// Regression tests for issue 13 ("fifteen ways to break it today") in the
// health package.

// Item 13: every status carries the generation of the subscription it was
// made for, so the agent can drop a verdict of a check a reload replaced.
func TestHarden13_VerdictsCarryTheCheckGeneration(t *testing.T) {
	h := newHarness(t)
	h.fc.set(rsA, failed("refused"))
	h.s.Set([]Check{{ID: "web/a", Target: rsA, Spec: tcpSpec(), Gen: 7}})
	h.run()
	h.advanceUntil(100*time.Millisecond, "down", stateIs(h, "web/a", Down))
	if st, _ := h.rec.last("web/a"); st.Gen != 7 {
		t.Fatalf("verdict generation %d, want 7", st.Gen)
	}
	if st := h.s.Statuses()["web/a"]; st.Gen != 7 {
		t.Fatalf("Statuses generation %d, want 7", st.Gen)
	}
	// Same probe, new generation: the state carries over under the new
	// generation at once.
	h.s.Set([]Check{{ID: "web/a", Target: rsA, Spec: tcpSpec(), Gen: 8}})
	h.advanceUntil(100*time.Millisecond, "re-sent", func() bool { st, _ := h.rec.last("web/a"); return st.Gen == 8 })
	if st, _ := h.rec.last("web/a"); st.State != Down {
		t.Fatalf("state lost with the new generation: %+v", st)
	}
}
