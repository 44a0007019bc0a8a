package agent

import (
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/health"
)

var writeRE = regexp.MustCompile(`msg="kernel write" reason=reload virtual_server=\S+ op="([^"]+)"`)

// reloadWrites are the ops of the "kernel write" log lines of the last
// reload, sorted: lanes run in parallel, so the log's order is not the plan's.
func reloadWrites(logs string) []string {
	var out []string
	for _, m := range writeRE.FindAllStringSubmatch(logs, -1) {
		out = append(out, m[1])
	}
	sort.Strings(out)
	return out
}

func diffLines(r DiffResult) []string {
	var out []string
	for _, c := range r.Changes {
		out = append(out, c.Op.String())
	}
	sort.Strings(out)
	return out
}

// TestDiffIsTheNextReload: every kind of change a reload makes (weights,
// adds, deletes, a drain of a real server with connections, a check whose
// spec changed losing its verdict, a new virtual server, a removed one, a
// sorry server) is what Diff announced, op for op, and Diff wrote nothing.
func TestDiffIsTheNextReload(t *testing.T) {
	const cfgA = `
[agent]
state_file = "STATE"
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
scheduler = "wrr"
sorry_server = "198.18.0.99:80"
  [virtual_server.check]
  type = "tcp"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  weight = 10
  [[virtual_server.real_server]]
  address = "198.18.0.2:80"
  weight = 20
  [[virtual_server.real_server]]
  address = "198.18.0.3:80"
  weight = 30
  [[virtual_server.real_server]]
  address = "198.18.0.4:80"
  weight = 40
[[virtual_server]]
name = "old"
address = "192.0.2.20:80"
  [[virtual_server.real_server]]
  address = "198.18.0.5:80"
`
	// .1: weight 10 -> 15 (down: stays 0); .2: check port changed (its
	// verdict "down" is forgotten: the kernel weight 0 is kept); .3
	// removed with connections (drained); .4 removed without (deleted);
	// .6 added; "old" removed; "new" added.
	const cfgB = `
[agent]
state_file = "STATE"
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
scheduler = "wrr"
sorry_server = "198.18.0.99:80"
  [virtual_server.check]
  type = "tcp"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  weight = 15
  [[virtual_server.real_server]]
  address = "198.18.0.2:80"
  weight = 20
    [virtual_server.real_server.check]
    port = 8080
  [[virtual_server.real_server]]
  address = "198.18.0.6:80"
  weight = 60
[[virtual_server]]
name = "new"
address = "192.0.2.30:80"
  [[virtual_server.real_server]]
  address = "198.18.0.7:80"
`
	h := newHarness(t, t.TempDir(), nil, cfgA)
	h.reconcile("start", true)
	for _, id := range []string{"web/198.18.0.1:80", "web/198.18.0.2:80", "web/198.18.0.3:80", "web/198.18.0.4:80"} {
		h.agent.OnHealth(health.Status{ID: id, State: health.Down, Factor: 1, Weight: -1, Reason: "refused"})
	}
	h.agent.takeVerdicts()
	h.reconcile("health", false) // all down: the sorry server comes in
	h.fake.SetActiveConns(svcKey("192.0.2.10:80"), dKey("198.18.0.3:80"), 5)

	h.writeConfig(cfgB)
	cfg, err := config.Load(h.path())
	if err != nil {
		t.Fatal(err)
	}
	h.fake.ResetCounts()
	d := h.agent.diff(cfg)
	if d.Err != nil {
		t.Fatal(d.Err)
	}
	if h.fake.Counts.Writes != 0 {
		t.Fatalf("diff wrote to the kernel")
	}
	predicted := diffLines(d)
	h.logs.Reset()
	h.agent.reload()
	done := reloadWrites(h.logs.String())
	if strings.Join(predicted, "\n") != strings.Join(done, "\n") || len(done) == 0 {
		t.Fatalf("diff:\n%s\nreload wrote:\n%s\nlog:\n%s", strings.Join(predicted, "\n"), strings.Join(done, "\n"), h.logs)
	}
	if d.Changes[0].VirtualServer != "old" {
		t.Errorf("a removed virtual server is not named: %+v", d.Changes[0])
	}
	joined := strings.Join(done, "\n")
	for _, want := range []string{
		"delete-service tcp 192.0.2.20:80",
		"delete-real-server tcp 192.0.2.10:80 -> 198.18.0.4:80",
		"add-real-server tcp 192.0.2.10:80 -> 198.18.0.6:80",
		"add-service tcp 192.0.2.30:80",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("reload lacks %q:\n%s", want, joined)
		}
	}
	// .2 has no verdict and weight 0 in the kernel, .6 waits for its first
	// check (alpha): neither brings the quorum back, the sorry server stays.
	if strings.Contains(joined, "198.18.0.99:80") {
		t.Errorf("the sorry server was touched while the quorum is still lost:\n%s", joined)
	}
	if strings.Contains(joined, "198.18.0.3:80") {
		t.Errorf("the real server with connections was not drained (kept at weight 0):\n%s", joined)
	}

	// Right after, the same file: nothing to do.
	if d := h.agent.diff(cfg); len(d.Changes) != 0 {
		t.Fatalf("diff after reload: %v", diffLines(d))
	}
}
