package agent

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/plan"
	"github.com/ipvs-agent/ipvs-agent/health"
)

func TestDecide(t *testing.T) {
	checked := func(w int) *config.RealServer {
		return &config.RealServer{Dest: model.Destination{Weight: w}, Check: &health.Spec{}}
	}
	quiesce := &config.VirtualServer{OnFailure: "quiesce", Alpha: true}
	remove := &config.VirtualServer{OnFailure: "remove", Alpha: true}
	presumed := &config.VirtualServer{OnFailure: "quiesce"}
	up := func(f float64, w int) health.Status { return health.Status{State: health.Up, Factor: f, Weight: w} }
	for _, tc := range []struct {
		name     string
		vs       *config.VirtualServer
		rs       *config.RealServer
		st       health.Status
		known    bool
		inKernel bool
		want     decision
	}{
		{"no check: always up", quiesce, &config.RealServer{Dest: model.Destination{Weight: 7}}, health.Status{}, false, false,
			decision{present: true, weight: 7, healthy: true}},
		{"no verdict, in the kernel: keep", quiesce, checked(10), health.Status{}, false, true,
			decision{present: true, keep: true, healthy: true}},
		{"no verdict, new, alpha: weight 0", quiesce, checked(10), health.Status{}, false, false,
			decision{present: true, weight: 0, pending: true}},
		{"no verdict, new, alpha, remove: not added", remove, checked(10), health.Status{}, false, false,
			decision{pending: true}},
		{"no verdict, new, alpha = false: presumed up", presumed, checked(10), health.Status{}, false, false,
			decision{present: true, weight: 10, healthy: true}},
		{"unknown state is no verdict", quiesce, checked(10), health.Status{State: health.Unknown}, true, true,
			decision{present: true, keep: true, healthy: true}},
		{"down, quiesce", quiesce, checked(10), health.Status{State: health.Down}, true, true, decision{present: true}},
		{"down, remove", remove, checked(10), health.Status{State: health.Down}, true, true, decision{}},
		{"drain", remove, checked(10), health.Status{State: health.Drain, Weight: 7}, true, true, decision{present: true}},
		{"up", quiesce, checked(10), up(1, -1), true, true, decision{present: true, weight: 10, healthy: true}},
		{"slow start", quiesce, checked(10), up(0.5, -1), true, true, decision{present: true, weight: 5, healthy: true}},
		{"a tiny factor never drains", quiesce, checked(10), up(0.01, -1), true, true, decision{present: true, weight: 1, healthy: true}},
		{"agent said 0%", quiesce, checked(10), up(0, -1), true, true, decision{present: true, weight: 0, healthy: true}},
		{"file weight wins", quiesce, checked(10), up(1, 42), true, true, decision{present: true, weight: 42, healthy: true}},
		{"slow start scales a file weight", quiesce, checked(10), up(0.1, 40), true, true, decision{present: true, weight: 4, healthy: true}},
		{"configured 0 stays 0", quiesce, checked(0), up(1, -1), true, true, decision{present: true, weight: 0, healthy: true}},
		{"rounding", quiesce, checked(3), up(0.25, -1), true, true, decision{present: true, weight: 1, healthy: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var kernel *model.Destination
			if tc.inKernel {
				kernel = &model.Destination{Weight: tc.rs.Dest.Weight}
			}
			got := decide(tc.vs, tc.rs, tc.st, tc.known, kernel)
			why := got.why
			got.why = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decide = %+v, want %+v", got, tc.want)
			}
			// Every departure from the configured weight says why.
			differs := !got.present || !got.keep && got.weight != tc.rs.Dest.Weight
			if differs && len(why) == 0 {
				t.Errorf("weight differs from configured %d (%+v) without a reason", tc.rs.Dest.Weight, got)
			}
		})
	}
}

// Alpha start: checked real servers that the kernel does not have yet get
// no traffic until their first check passes (weight 0; not added with
// on_failure = "remove"); a real server added by a reload too.
func TestAlphaStart(t *testing.T) {
	web := svcKey("192.0.2.10:80")
	for _, onFailure := range []string{"quiesce", "remove"} {
		t.Run(onFailure, func(t *testing.T) {
			h := newHarness(t, t.TempDir(), nil, checkedConfig(`on_failure = "`+onFailure+`"`, ""))
			h.reconcile("start", true)
			ds := h.fake.Snapshot()[web].Dests
			for _, rs := range []string{"198.18.0.1:80", "198.18.0.2:80"} {
				d, ok := ds[dKey(rs)]
				if onFailure == "remove" && ok || onFailure == "quiesce" && (!ok || d.Weight != 0) {
					t.Fatalf("%s at start: %s", rs, dump(h.fake.Snapshot()))
				}
			}
			if !strings.Contains(strings.Join(h.agent.View().Why[plan.DestRef{Service: web, Dest: dKey("198.18.0.1:80")}], ";"), "alpha") {
				t.Errorf("why: %v", h.agent.View().Why)
			}
			h.agent.OnHealth(health.Status{ID: "web/198.18.0.1:80", State: health.Up, Factor: 1, Weight: -1})
			h.agent.takeVerdicts()
			h.reconcile("health", false)
			if d, ok := h.fake.Snapshot()[web].Dests[dKey("198.18.0.1:80")]; !ok || d.Weight != 10 {
				t.Fatalf("after its first pass: %s", dump(h.fake.Snapshot()))
			}
			// A restart knows no verdict: what is in the kernel keeps its
			// weight, and nothing is written.
			h.fake.ResetCounts()
			h2 := newHarness(t, h.dir, h.fake, checkedConfig(`on_failure = "`+onFailure+`"`, ""))
			if r := h2.reconcile("start", true); r.Writes != 0 {
				t.Errorf("restart wrote %d", r.Writes)
			}
		})
	}
}

// Without a verdict, what the kernel has decides: a weight above 0 is a
// healthy real server (a restart keeps the quorum), 0 is not (a restart
// during an outage keeps it lost), and an alpha server still at 0 says so.
func TestDecideKeepsKernelView(t *testing.T) {
	rs := &config.RealServer{Dest: model.Destination{Weight: 10}, Check: &health.Spec{}}
	vs := &config.VirtualServer{OnFailure: "quiesce", Alpha: true}
	if d := decide(vs, rs, health.Status{}, false, &model.Destination{Weight: 10}); !d.keep || !d.healthy || len(d.why) != 0 {
		t.Errorf("kernel at the configured weight: %+v", d)
	}
	if d := decide(vs, rs, health.Status{}, false, &model.Destination{Weight: 0}); !d.keep || d.healthy || !d.pending || !strings.Contains(strings.Join(d.why, ";"), "alpha") {
		t.Errorf("kernel at 0, alpha: %+v", d)
	}
	vs.Alpha = false
	if d := decide(vs, rs, health.Status{}, false, &model.Destination{Weight: 3}); !d.keep || !d.healthy || !strings.Contains(strings.Join(d.why, ";"), "kept") {
		t.Errorf("kernel at 3: %+v", d)
	}
	if d := decide(vs, rs, health.Status{}, false, &model.Destination{Weight: 0}); !d.keep || d.healthy || d.pending {
		t.Errorf("kernel at 0 without alpha (quiesced before a restart): %+v", d)
	}
}
