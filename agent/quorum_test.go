package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ipvs-agent/ipvs-agent/health"
)

// fourChecked is a virtual server of four checked real servers.
func fourChecked(extra string) string {
	return fmt.Sprintf(`
[agent]
state_file = "STATE"
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
alpha = false
%s
  [virtual_server.check]
  type = "tcp"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.2:80"
  [[virtual_server.real_server]]
  address = "198.18.0.3:80"
  [[virtual_server.real_server]]
  address = "198.18.0.4:80"
`, extra)
}

func (h *harness) verdict(rs string, s health.State) {
	h.t.Helper()
	h.agent.OnHealth(health.Status{ID: "web/" + rs, State: s, Factor: 1, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)
}

// quorum 2 with hysteresis 1 over four real servers: lost below 1 healthy,
// back at 3; in between it stays as it was.
func TestQuorumHysteresis(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, fourChecked("quorum = 2\nhysteresis = 1"))
	h.reconcile("start", true)
	steps := []struct {
		rs       string
		s        health.State
		wantLost bool
	}{
		{"198.18.0.1:80", health.Down, false}, // 3 healthy
		{"198.18.0.2:80", health.Down, false}, // 2
		{"198.18.0.3:80", health.Down, false}, // 1: not below quorum - hysteresis
		{"198.18.0.4:80", health.Down, true},  // 0: lost
		{"198.18.0.1:80", health.Up, true},    // 1
		{"198.18.0.2:80", health.Up, true},    // 2: at quorum, not yet quorum + hysteresis
		{"198.18.0.3:80", health.Up, false},   // 3: back
		{"198.18.0.3:80", health.Down, false}, // 2
	}
	for i, st := range steps {
		h.verdict(st.rs, st.s)
		if got := h.agent.View().QuorumLost["web"]; got != st.wantLost {
			t.Fatalf("step %d (%s %s, %d healthy): lost = %v, want %v", i, st.rs, st.s, h.agent.View().Healthy["web"], got, st.wantLost)
		}
	}
	if n := strings.Count(h.logs.String(), "below quorum"); n != 1 {
		t.Errorf("%d 'below quorum' lines, want 1:\n%s", n, h.logs)
	}
}

// The sorry server comes in when the quorum is lost (not only when no real
// server is left) and, when the quorum is back, stops taking connections
// but keeps the ones it has (weight 0) until they end.
func TestSorryServerFollowsQuorum(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, fourChecked(`quorum = 3
sorry_server = "198.18.5.5:80"`))
	h.reconcile("start", true)
	web := svcKey("192.0.2.10:80")
	sorry := dKey("198.18.5.5:80")
	h.verdict("198.18.0.1:80", health.Down)
	if _, ok := h.fake.Snapshot()[web].Dests[sorry]; ok {
		t.Fatal("sorry server added with the quorum held (3 of 4 healthy)")
	}
	h.verdict("198.18.0.2:80", health.Down)
	if d, ok := h.fake.Snapshot()[web].Dests[sorry]; !ok || d.Weight != 1 {
		t.Fatalf("quorum lost with 2 of 4 healthy and no sorry server: %s", dump(h.fake.Snapshot()))
	}
	h.fake.SetActiveConns(web, sorry, 3)
	h.reconcile("resync", true) // the agent learns of the connections
	h.verdict("198.18.0.2:80", health.Up)
	if d, ok := h.fake.Snapshot()[web].Dests[sorry]; !ok || d.Weight != 0 {
		t.Fatalf("quorum back: want the sorry server at weight 0 while it has connections: %s", dump(h.fake.Snapshot()))
	}
	h.fake.SetActiveConns(web, sorry, 0)
	h.reconcile("resync", true)
	if _, ok := h.fake.Snapshot()[web].Dests[sorry]; ok {
		t.Fatalf("sorry server not deleted after its connections ended: %s", dump(h.fake.Snapshot()))
	}
}

// outage takes every real server of fourChecked down.
func (h *harness) outage() {
	h.t.Helper()
	for _, rs := range []string{"198.18.0.1:80", "198.18.0.2:80", "198.18.0.3:80", "198.18.0.4:80"} {
		h.verdict(rs, health.Down)
	}
}

const withSorry = "quorum = 3\nsorry_server = \"198.18.5.5:80\""

// Below quorum the sorry server alone takes new connections (as
// keepalived): the healthy real servers left go to weight 0, not away.
func TestSorryServerAloneBelowQuorum(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, fourChecked(withSorry))
	h.reconcile("start", true)
	for _, rs := range []string{"198.18.0.1:80", "198.18.0.2:80", "198.18.0.3:80", "198.18.0.4:80"} {
		h.verdict(rs, health.Up)
	}
	h.verdict("198.18.0.1:80", health.Down)
	h.verdict("198.18.0.2:80", health.Down)
	ds := h.fake.Snapshot()[svcKey("192.0.2.10:80")].Dests
	if ds[dKey("198.18.5.5:80")].Weight != 1 || ds[dKey("198.18.0.3:80")].Weight != 0 || ds[dKey("198.18.0.4:80")].Weight != 0 || len(ds) != 5 {
		t.Fatalf("below quorum: %s", dump(h.fake.Snapshot()))
	}
	h.verdict("198.18.0.1:80", health.Up)
	ds = h.fake.Snapshot()[svcKey("192.0.2.10:80")].Dests
	if ds[dKey("198.18.5.5:80")].Weight != 0 || ds[dKey("198.18.0.3:80")].Weight != 1 {
		t.Fatalf("quorum back: %s", dump(h.fake.Snapshot()))
	}
}

// A restart, or a reload that changes the checks (their verdicts are
// forgotten), during an outage keeps the sorry server serving: no verdict
// is not "up" when the kernel says the server is out.
func TestOutageSurvivesRestartAndReload(t *testing.T) {
	web, sorry := svcKey("192.0.2.10:80"), dKey("198.18.5.5:80")
	h := newHarness(t, t.TempDir(), nil, fourChecked(withSorry))
	h.reconcile("start", true)
	h.outage()
	if d, ok := h.fake.Snapshot()[web].Dests[sorry]; !ok || d.Weight != 1 {
		t.Fatalf("no sorry server in the outage: %s", dump(h.fake.Snapshot()))
	}
	h2 := newHarness(t, h.dir, h.fake, fourChecked(withSorry))
	h.fake.ResetCounts()
	if r := h2.reconcile("start", true); r.Writes != 0 {
		t.Errorf("restart during the outage wrote %d: %s", r.Writes, h2.logs)
	}
	h2.writeConfig(strings.Replace(fourChecked(withSorry), `type = "tcp"`, "type = \"tcp\"\n  interval = \"3s\"", 1))
	h2.agent.reload()
	if d, ok := h.fake.Snapshot()[web].Dests[sorry]; !ok || d.Weight != 1 {
		t.Errorf("a reload changing the checks during the outage withdrew the sorry server: %s", dump(h.fake.Snapshot()))
	}
}

// A reload that drops the sorry server while it carries connections drains
// it like a removed real server.
func TestReloadDrainsDroppedSorryServer(t *testing.T) {
	web, sorry := svcKey("192.0.2.10:80"), dKey("198.18.5.5:80")
	h := newHarness(t, t.TempDir(), nil, fourChecked(withSorry))
	h.reconcile("start", true)
	h.outage()
	h.fake.SetActiveConns(web, sorry, 3)
	h.reconcile("resync", true)
	h.writeConfig(fourChecked("quorum = 3"))
	h.agent.reload()
	if d, ok := h.fake.Snapshot()[web].Dests[sorry]; !ok || d.Weight != 0 {
		t.Fatalf("dropped sorry server with 3 connections: %s", dump(h.fake.Snapshot()))
	}
	h.fake.SetActiveConns(web, sorry, 0)
	h.reconcile("resync", true)
	if _, ok := h.fake.Snapshot()[web].Dests[sorry]; ok {
		t.Fatalf("drained sorry server not deleted: %s", dump(h.fake.Snapshot()))
	}
}
