package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// noHealth is a HealthChecker that runs nothing; tests feed verdicts with
// OnHealth.
type noHealth struct{ set [][]health.Check }

func (n *noHealth) Set(c []health.Check)          { n.set = append(n.set, c) }
func (n *noHealth) Run(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

type harness struct {
	t      *testing.T
	dir    string
	fake   *kernel.Fake
	agent  *Agent
	logs   *bytes.Buffer
	health *noHealth
	now    time.Time
}

func (h *harness) path() string { return filepath.Join(h.dir, "ipvs-agent.toml") }

func (h *harness) writeConfig(src string) {
	h.t.Helper()
	src = strings.ReplaceAll(src, "STATE", filepath.Join(h.dir, "state.json"))
	if err := os.WriteFile(h.path(), []byte(src), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// newHarness starts an agent on a config against fake (a new one when nil),
// with the state file in dir.
func newHarness(t *testing.T, dir string, fake *kernel.Fake, src string) *harness {
	t.Helper()
	if fake == nil {
		fake = kernel.NewFake()
	}
	h := &harness{t: t, dir: dir, fake: fake, logs: &bytes.Buffer{}, health: &noHealth{}, now: time.Unix(1000, 0)}
	h.writeConfig(src)
	cfg, err := config.Load(h.path())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	a, err := New(cfg, Options{
		Logger:  slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Kernels: []kernel.IPVS{fake, fake},
		Health:  h.health,
		Now:     func() time.Time { return h.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.agent = a
	return h
}

func (h *harness) reconcile(reason string, full bool) ReconcileResult {
	h.t.Helper()
	if err := h.agent.reconcile(reason, full); err != nil {
		h.t.Fatalf("reconcile: %v", err)
	}
	return h.agent.View().LastResult
}

// runThenStop runs the agent until its first reconcile is published, then
// stops it the way SIGTERM does.
func (h *harness) runThenStop() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.agent.Run(ctx, nil) }()
	deadline := time.Now().Add(5 * time.Second)
	for h.agent.View() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		h.t.Fatal(err)
	}
}

func svcKey(s string) model.ServiceKey {
	ap := netip.MustParseAddrPort(s)
	fam := model.FamilyInet
	if ap.Addr().Is6() {
		fam = model.FamilyInet6
	}
	return model.ServiceKey{Family: fam, Protocol: model.ProtoTCP, Addr: ap.Addr(), Port: ap.Port()}
}

func dKey(s string) model.DestKey {
	ap := netip.MustParseAddrPort(s)
	return model.DestKey{Addr: ap.Addr(), Port: ap.Port()}
}

// dump renders a table like `ipvsadm -Sn`, sorted, for comparisons.
func dump(t model.Table) string {
	var b strings.Builder
	for _, k := range t.Keys() {
		v := t[k]
		fmt.Fprintf(&b, "-A %s -s %s flags=%#x timeout=%d\n", k, v.Scheduler, v.Flags, v.Timeout)
		for _, d := range v.SortedDests() {
			fmt.Fprintf(&b, "-a %s -r %s fwd=%d -w %d\n", k, d.Key, d.Forward, d.Weight)
		}
	}
	return b.String()
}

const base = `
[agent]
state_file = "STATE"
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  weight = 1
  [[virtual_server.real_server]]
  address = "198.18.0.2:80"
  weight = 2
  [[virtual_server.real_server]]
  address = "198.18.0.3:80"
  weight = 3
[[virtual_server]]
name = "dns"
address = "192.0.2.53:53"
protocol = "udp"
scheduler = "rr"
  [[virtual_server.real_server]]
  address = "198.18.0.1:53"
`

func TestColdStartThenNoOp(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, base)
	r := h.reconcile("start", true)
	if r.Writes != 6 || r.Errors != 0 {
		t.Fatalf("cold start: %+v", r)
	}
	want := `-A tcp 192.0.2.10:80 -s wrr flags=0x0 timeout=0
-a tcp 192.0.2.10:80 -r 198.18.0.1:80 fwd=3 -w 1
-a tcp 192.0.2.10:80 -r 198.18.0.2:80 fwd=3 -w 2
-a tcp 192.0.2.10:80 -r 198.18.0.3:80 fwd=3 -w 3
-A udp 192.0.2.53:53 -s rr flags=0x0 timeout=0
-a udp 192.0.2.53:53 -r 198.18.0.1:53 fwd=3 -w 1
`
	if got := dump(h.fake.Snapshot()); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
	h.fake.ResetCounts()
	r = h.reconcile("resync", true)
	if r.Writes != 0 || h.fake.Counts.Writes != 0 {
		t.Fatalf("no-op reconcile wrote: %+v %+v", r, h.fake.Counts)
	}
	if c := h.fake.Counts; c.ServiceDumps != 1 || c.DestDumps != 2 {
		t.Fatalf("no-op reconcile reads: %+v, want 1 service dump and 2 destination dumps", c)
	}
	owned, err := loadOwned(h.agent.cfg.StateFile)
	if err != nil || len(owned) != 2 {
		t.Fatalf("state file: %v %v", owned, err)
	}
}

func TestReloadChangesOnlyWhatChanged(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, base)
	h.reconcile("start", true)
	h.fake.ResetCounts()
	// weight 2 -> 20, drop 198.18.0.3 (no connections: deleted at once),
	// add 198.18.0.4, drop the dns service, add a new one.
	h.writeConfig(strings.NewReplacer(
		"weight = 2", "weight = 20",
		"  [[virtual_server.real_server]]\n  address = \"198.18.0.3:80\"\n  weight = 3\n", "  [[virtual_server.real_server]]\n  address = \"198.18.0.4:80\"\n",
		`name = "dns"
address = "192.0.2.53:53"`, `name = "dns2"
address = "192.0.2.54:53"`,
	).Replace(base))
	h.agent.reload()
	if r := h.agent.View().LastResult; r.Writes != 6 || r.Errors != 0 {
		// update weight, delete .3, add .4; delete dns; add dns2 + its real server
		t.Fatalf("reload: %+v\n%s", r, h.logs)
	}
	want := `-A tcp 192.0.2.10:80 -s wrr flags=0x0 timeout=0
-a tcp 192.0.2.10:80 -r 198.18.0.1:80 fwd=3 -w 1
-a tcp 192.0.2.10:80 -r 198.18.0.2:80 fwd=3 -w 20
-a tcp 192.0.2.10:80 -r 198.18.0.4:80 fwd=3 -w 1
-A udp 192.0.2.54:53 -s rr flags=0x0 timeout=0
-a udp 192.0.2.54:53 -r 198.18.0.1:53 fwd=3 -w 1
`
	if got := dump(h.fake.Snapshot()); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestReloadWithBadConfigKeepsRunningTheOldOne(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, base)
	h.reconcile("start", true)
	before := dump(h.fake.Snapshot())
	h.fake.ResetCounts()
	h.writeConfig(strings.Replace(base, "weight = 2", "weight = -2", 1) + "\nbogus = 1\n")
	h.agent.reload()
	if h.fake.Counts.Writes != 0 || dump(h.fake.Snapshot()) != before {
		t.Fatalf("bad reload changed the kernel")
	}
	for _, want := range []string{"reload failed", "weight -2 out of range", `unknown key \"bogus\"`} {
		if !strings.Contains(h.logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, h.logs)
		}
	}
}

func TestDrainRemovedRealServerWithConnections(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, base)
	h.reconcile("start", true)
	web := svcKey("192.0.2.10:80")
	h.fake.SetActiveConns(web, dKey("198.18.0.3:80"), 4)
	h.writeConfig(strings.Replace(base, "  [[virtual_server.real_server]]\n  address = \"198.18.0.3:80\"\n  weight = 3\n", "", 1))
	h.agent.reload()
	d, ok := h.fake.Snapshot()[web].Dests[dKey("198.18.0.3:80")]
	if !ok || d.Weight != 0 {
		t.Fatalf("removed real server with connections should drain at weight 0, got %+v present=%v", d, ok)
	}
	h.fake.SetActiveConns(web, dKey("198.18.0.3:80"), 0)
	h.reconcile("resync", true)
	if _, ok := h.fake.Snapshot()[web].Dests[dKey("198.18.0.3:80")]; ok {
		t.Fatal("drained real server with no connections left should be deleted")
	}
}

func TestDrainTimeout(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, strings.Replace(base, `scheduler = "wrr"`, "scheduler = \"wrr\"\ndrain_timeout = \"1m\"", 1))
	h.reconcile("start", true)
	web := svcKey("192.0.2.10:80")
	h.fake.SetActiveConns(web, dKey("198.18.0.3:80"), 4)
	h.writeConfig(strings.Replace(strings.Replace(base, `scheduler = "wrr"`, "scheduler = \"wrr\"\ndrain_timeout = \"1m\"", 1),
		"  [[virtual_server.real_server]]\n  address = \"198.18.0.3:80\"\n  weight = 3\n", "", 1))
	h.agent.reload()
	h.now = h.now.Add(30 * time.Second)
	h.reconcile("resync", true)
	if _, ok := h.fake.Snapshot()[web].Dests[dKey("198.18.0.3:80")]; !ok {
		t.Fatal("deleted before its drain timeout")
	}
	h.now = h.now.Add(31 * time.Second)
	h.reconcile("resync", true)
	if _, ok := h.fake.Snapshot()[web].Dests[dKey("198.18.0.3:80")]; ok {
		t.Fatal("still there after its drain timeout")
	}
}

func TestForeignServicesAreNeverTouched(t *testing.T) {
	fake := kernel.NewFake()
	foreign := model.Service{Key: svcKey("203.0.113.1:80"), Scheduler: "rr"}
	clash := model.Service{Key: svcKey("192.0.2.10:80"), Scheduler: "lc"}
	for _, s := range []model.Service{foreign, clash} {
		if err := fake.AddService(s); err != nil {
			t.Fatal(err)
		}
		if err := fake.AddDestination(s.Key, model.Destination{Key: dKey("198.18.9.9:80"), Weight: 7, Forward: model.ForwardNAT}); err != nil {
			t.Fatal(err)
		}
	}
	before := fake.Snapshot()
	h := newHarness(t, t.TempDir(), fake, base)
	fake.ResetCounts()
	r := h.reconcile("start", true)
	if r.Writes != 2 || r.Errors != 0 { // only the dns service and its real server
		t.Fatalf("start: %+v\n%s", r, h.logs)
	}
	after := fake.Snapshot()
	for _, k := range []model.ServiceKey{foreign.Key, clash.Key} {
		if dump(model.Table{k: after[k]}) != dump(model.Table{k: before[k]}) {
			t.Errorf("%s was changed", k)
		}
	}
	if c := fake.Counts.DestDumps; c != 0 {
		t.Errorf("read the destinations of %d services that are not ours", c)
	}
	if !strings.Contains(h.logs.String(), "not ours") || !strings.Contains(h.logs.String(), "adopt = true") {
		t.Errorf("conflict not reported:\n%s", h.logs)
	}
	// Removing every virtual server from the config still leaves them alone.
	h.writeConfig("[agent]\nstate_file = \"STATE\"\n")
	h.agent.reload()
	after = fake.Snapshot()
	if len(after) != 2 || after[foreign.Key] == nil || after[clash.Key] == nil {
		t.Fatalf("foreign services gone after emptying the config: %s", dump(after))
	}
}

func TestAdopt(t *testing.T) {
	fake := kernel.NewFake()
	clash := model.Service{Key: svcKey("192.0.2.10:80"), Scheduler: "lc"}
	if err := fake.AddService(clash); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, t.TempDir(), fake, strings.Replace(base, `scheduler = "wrr"`, "scheduler = \"wrr\"\nadopt = true", 1))
	h.reconcile("start", true)
	got := fake.Snapshot()[clash.Key]
	if got.Scheduler != "wrr" || len(got.Dests) != 3 {
		t.Fatalf("adopted service not converged: %s", dump(fake.Snapshot()))
	}
	if !h.agent.owned[clash.Key] {
		t.Fatal("adopted service not recorded as owned")
	}
}

func TestDriftIsRepaired(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, base)
	h.reconcile("start", true)
	want := dump(h.fake.Snapshot())
	web := svcKey("192.0.2.10:80")
	// Someone runs ipvsadm -d, -e and -D behind the agent's back.
	_ = h.fake.DeleteDestination(web, dKey("198.18.0.2:80"))
	_ = h.fake.UpdateDestination(web, model.Destination{Key: dKey("198.18.0.1:80"), Weight: 9, Forward: model.ForwardDR})
	dns := svcKey("192.0.2.53:53")
	dns.Protocol = model.ProtoUDP
	if err := h.fake.DeleteService(dns); err != nil {
		t.Fatal(err)
	}
	r := h.reconcile("resync", true)
	if r.Writes != 4 {
		t.Errorf("repair writes = %d, want 4", r.Writes)
	}
	if got := dump(h.fake.Snapshot()); got != want {
		t.Fatalf("not repaired:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(h.logs.String(), "reason=resync") {
		t.Errorf("repairs not logged:\n%s", h.logs)
	}
}

const checked = `
[agent]
state_file = "STATE"
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
scheduler = "wrr"
ON_FAILURE
SORRY
  [virtual_server.check]
  type = "tcp"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  weight = 10
  [[virtual_server.real_server]]
  address = "198.18.0.2:80"
  weight = 20
`

func checkedConfig(onFailure, sorry string) string {
	return strings.NewReplacer("ON_FAILURE", onFailure, "SORRY", sorry).Replace(checked)
}

func TestHealthVerdictsDriveWeights(t *testing.T) {
	// alpha = false: both start at their configured weight, so each
	// verdict below is one write.
	h := newHarness(t, t.TempDir(), nil, checkedConfig("alpha = false", ""))
	h.reconcile("start", true)
	web := svcKey("192.0.2.10:80")
	if n := len(h.health.set); n != 0 {
		t.Fatalf("checks set before Run: %d", n)
	}
	h.fake.ResetCounts()
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.1:80", State: health.Down, Factor: 1, Weight: -1})
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.2:80", State: health.Up, Factor: 0.5, Weight: -1})
	h.agent.takeVerdicts()
	r := h.reconcile("health", false)
	if r.Writes != 2 {
		t.Fatalf("health writes = %d, want 2\n%s", r.Writes, h.logs)
	}
	if c := h.fake.Counts; c.ServiceDumps != 0 || c.DestDumps != 0 {
		t.Errorf("a health change read the kernel: %+v", c)
	}
	got := h.fake.Snapshot()[web].Dests
	if got[dKey("198.18.0.1:80")].Weight != 0 || got[dKey("198.18.0.2:80")].Weight != 10 {
		t.Fatalf("weights: %s", dump(h.fake.Snapshot()))
	}
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.1:80", State: health.Up, Factor: 1, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)
	if w := h.fake.Snapshot()[web].Dests[dKey("198.18.0.1:80")].Weight; w != 10 {
		t.Fatalf("recovered weight = %d, want 10", w)
	}
}

func TestUnknownHealthKeepsKernelWeightAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir, nil, checkedConfig("", ""))
	h.reconcile("start", true)
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.1:80", State: health.Down, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)

	// A new agent (a restart) knows no verdict yet: it must not flap the
	// downed real server back to full weight, nor write anything.
	h2 := newHarness(t, dir, h.fake, checkedConfig("", ""))
	h.fake.ResetCounts()
	r := h2.reconcile("start", true)
	if r.Writes != 0 || h.fake.Counts.Writes != 0 {
		t.Fatalf("restart wrote %d ops", r.Writes)
	}
	if w := h.fake.Snapshot()[svcKey("192.0.2.10:80")].Dests[dKey("198.18.0.1:80")].Weight; w != 0 {
		t.Fatalf("weight changed on restart: %d", w)
	}
}

func TestOnFailureRemoveAndSorryServer(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, checkedConfig(`on_failure = "remove"`, `sorry_server = "198.18.5.5:80"`))
	h.reconcile("start", true)
	web := svcKey("192.0.2.10:80")
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.1:80", State: health.Down, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)
	ds := h.fake.Snapshot()[web].Dests
	if _, ok := ds[dKey("198.18.0.1:80")]; ok {
		t.Fatal("on_failure=remove kept the failed real server")
	}
	if _, ok := ds[dKey("198.18.5.5:80")]; ok {
		t.Fatal("sorry server added while a real server is still up (unknown)")
	}
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.2:80", State: health.Down, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)
	ds = h.fake.Snapshot()[web].Dests
	if len(ds) != 1 || ds[dKey("198.18.5.5:80")].Weight != 1 {
		t.Fatalf("want only the sorry server: %s", dump(h.fake.Snapshot()))
	}
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.2:80", State: health.Up, Factor: 1, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)
	ds = h.fake.Snapshot()[web].Dests
	if ds[dKey("198.18.5.5:80")].Weight != 0 || ds[dKey("198.18.0.2:80")].Weight != 20 {
		t.Fatalf("sorry server not quiesced on recovery: %s", dump(h.fake.Snapshot()))
	}
	// The next read of the kernel finds no connection left on it: deleted.
	h.reconcile("resync", true)
	if _, ok := h.fake.Snapshot()[web].Dests[dKey("198.18.5.5:80")]; ok {
		t.Fatalf("sorry server not withdrawn at the resync after recovery: %s", dump(h.fake.Snapshot()))
	}
}

// A crash in the middle of a large apply leaves services the state file
// already claims; the next start finishes the job instead of treating them
// as foreign.
func TestCrashMidApplyConverges(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("[agent]\nstate_file = \"STATE\"\n")
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&b, "[[virtual_server]]\nname = \"s%d\"\naddress = \"192.0.2.%d:80\"\n  [[virtual_server.real_server]]\n  address = \"198.18.1.%d:80\"\n", i, i+1, i+1)
	}
	fake := kernel.NewFake()
	writes := 0
	crashed := errors.New("crash")
	fake.FailOn = func(string, model.ServiceKey, *model.DestKey) error {
		writes++
		if writes > 37 {
			return crashed // everything after the 37th write is lost
		}
		return nil
	}
	h := newHarness(t, dir, fake, b.String())
	_ = h.agent.reconcile("start", true)
	fake.FailOn = nil
	if n := len(fake.Snapshot()); n == 0 || n == 50 {
		t.Fatalf("test setup: %d services after the crash", n)
	}
	h2 := newHarness(t, dir, fake, b.String())
	r := h2.reconcile("start", true)
	if r.Errors != 0 {
		t.Fatalf("restart: %+v\n%s", r, h2.logs)
	}
	snap := fake.Snapshot()
	if len(snap) != 50 {
		t.Fatalf("%d services after restart, want 50", len(snap))
	}
	for _, v := range snap {
		if len(v.Dests) != 1 {
			t.Fatalf("%s has %d real servers", v.Key, len(v.Dests))
		}
	}
	if strings.Contains(h2.logs.String(), "not ours") {
		t.Fatalf("restart treated its own half-applied services as foreign:\n%s", h2.logs)
	}
}

func TestCleanupOnExit(t *testing.T) {
	fake := kernel.NewFake()
	foreign := model.Service{Key: svcKey("203.0.113.1:80"), Scheduler: "rr"}
	_ = fake.AddService(foreign)
	h := newHarness(t, t.TempDir(), fake, strings.Replace(base, "[agent]\n", "[agent]\ncleanup_on_exit = true\n", 1))
	h.runThenStop()
	snap := fake.Snapshot()
	if len(snap) != 1 || snap[foreign.Key] == nil {
		t.Fatalf("cleanup_on_exit: %s", dump(snap))
	}
}

func TestLeaveStateOnExitByDefault(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, base)
	h.runThenStop()
	if len(h.fake.Snapshot()) != 2 {
		t.Fatal("kernel state removed on exit")
	}
}

// Benchmarks at 1,000 virtual servers x 10 real servers against the fake:
// the cost of a no-op reconcile (and its writes, which must be 0) and of a
// cold apply.
func bigConfig(nvs, nrs int) string {
	var b strings.Builder
	b.WriteString("[agent]\nstate_file = \"STATE\"\n")
	for i := 0; i < nvs; i++ {
		fmt.Fprintf(&b, "[[virtual_server]]\nname = \"vs%d\"\naddress = \"198.51.%d.%d:80\"\nscheduler = \"wrr\"\n", i, i/250, i%250+1)
		for j := 0; j < nrs; j++ {
			fmt.Fprintf(&b, "  [[virtual_server.real_server]]\n  address = \"198.18.%d.%d:80\"\n  weight = %d\n", j, i%250+1, j+1)
		}
	}
	return b.String()
}

func benchHarness(b *testing.B) *harness {
	t := &testing.T{}
	h := newHarness(t, b.TempDir(), nil, bigConfig(1000, 10))
	h.agent.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	return h
}

func BenchmarkReconcileNoop1000x10(b *testing.B) {
	h := benchHarness(b)
	if err := h.agent.reconcile("start", true); err != nil {
		b.Fatal(err)
	}
	h.fake.ResetCounts()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := h.agent.reconcile("resync", true); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if h.fake.Counts.Writes != 0 {
		b.Fatalf("no-op reconcile wrote %d times", h.fake.Counts.Writes)
	}
	b.ReportMetric(float64(h.fake.Counts.Writes)/float64(b.N), "writes/op")
	b.ReportMetric(float64(h.fake.Counts.DestDumps)/float64(b.N), "dest-dumps/op")
}

func BenchmarkColdApply1000x10(b *testing.B) {
	src := bigConfig(1000, 10)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		t := &testing.T{}
		h := newHarness(t, b.TempDir(), nil, src)
		h.agent.log = slog.New(slog.NewTextHandler(io.Discard, nil))
		b.StartTimer()
		if err := h.agent.reconcile("start", true); err != nil {
			b.Fatal(err)
		}
	}
}

func TestQuorum(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, checkedConfig("quorum = 2\nalpha = false", ""))
	h.reconcile("start", true)
	if h.agent.View().QuorumLost["web"] {
		t.Fatal("quorum lost at start, before any verdict")
	}
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.1:80", State: health.Down, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)
	if v := h.agent.View(); !v.QuorumLost["web"] || v.Healthy["web"] != 1 {
		t.Fatalf("quorum: lost=%v healthy=%d", v.QuorumLost, v.Healthy["web"])
	}
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.1:80", State: health.Up, Factor: 1, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)
	if h.agent.View().QuorumLost["web"] {
		t.Fatal("quorum not restored")
	}
	for _, want := range []string{"below quorum", "quorum restored"} {
		if strings.Count(h.logs.String(), want) != 1 {
			t.Errorf("want one %q line:\n%s", want, h.logs)
		}
	}
}

type recordingNotifier struct {
	mu     sync.Mutex
	states []string
}

func (r *recordingNotifier) Notify(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, s)
}
func (r *recordingNotifier) WatchdogInterval() time.Duration { return 0 }
func (r *recordingNotifier) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.states, "|")
}

// The systemd protocol: READY=1 after the first reconcile, RELOADING=1 with
// MONOTONIC_USEC then READY=1 around a reload, STOPPING=1 on the way out.
func TestSystemdNotifications(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, base)
	n := &recordingNotifier{}
	h.agent.notify = n
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{})
	done := make(chan error)
	go func() { done <- h.agent.Run(ctx, reload) }()
	reload <- struct{}{} // accepted only once Run's loop is listening, after READY=1
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(n.all(), "READY=1") < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := n.all()
	re := regexp.MustCompile(`^READY=1\|STATUS=2 virtual servers, 4/4 real servers up\nERRNO=0\|RELOADING=1\nMONOTONIC_USEC=\d+\|READY=1\nSTATUS=2 virtual servers, 4/4 real servers up, last reload \d\d:\d\d:\d\d ok\nERRNO=0\|STOPPING=1$`)
	if !re.MatchString(got) {
		t.Fatalf("notifications: %q", got)
	}
}

// A reload of a bad file ends with READY=1 (the old configuration runs on)
// but must not read as success: STATUS= says it failed and ERRNO= is set,
// until a later reload applies.
func TestFailedReloadIsNotReportedAsSuccess(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, base)
	n := &recordingNotifier{}
	h.agent.notify = n
	h.reconcile("start", true)
	h.writeConfig(base + "\n[[virtual_server]]\nname = 1\n")
	h.agent.reload()
	got := n.all()
	if !regexp.MustCompile(`READY=1\nSTATUS=2 virtual servers, [0-9/]+ real servers up, last reload \d\d:\d\d:\d\d FAILED: \d+ problems in \S+ \(old configuration kept\)\nERRNO=22$`).MatchString(got) {
		t.Fatalf("failed reload notified as %q", got)
	}
	h.writeConfig(base)
	h.agent.reload()
	if got := n.all(); !strings.HasSuffix(got, " ok\nERRNO=0") {
		t.Fatalf("a good reload after a bad one must clear the failure: %q", got)
	}
}

type stalledHealth struct{ last time.Time }

func (stalledHealth) Set([]health.Check)            {}
func (stalledHealth) Run(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
func (s stalledHealth) Stats() health.Stats         { return health.Stats{LastLoop: s.last} }

// The watchdog is petted only while the health scheduler's loop turns.
func TestWatchdogNeedsALiveHealthScheduler(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, base)
	h.agent.health = stalledHealth{last: h.agent.now()}
	if !h.agent.healthAlive(time.Minute) {
		t.Fatal("a scheduler that turned just now counts as stalled")
	}
	h.agent.health = stalledHealth{last: h.agent.now().Add(-time.Hour)}
	if h.agent.healthAlive(time.Minute) {
		t.Fatal("a scheduler silent for an hour still gets the watchdog petted")
	}
}

// A verdict for a check that a reload removed is dropped, and a check whose
// spec changed starts over without a verdict (the kernel weight is kept).
func TestReloadForgetsVerdictsOfRemovedAndChangedChecks(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, checkedConfig("", ""))
	h.reconcile("start", true)
	web := svcKey("192.0.2.10:80")
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.1:80", State: health.Down, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)

	// The check changes (another port): the old "down" no longer counts,
	// but the kernel keeps weight 0 until the new check's first verdict.
	h.writeConfig(strings.Replace(checkedConfig("", ""), `type = "tcp"`, "type = \"tcp\"\n  port = 8080", 1))
	h.agent.reload()
	if _, ok := h.agent.statuses["web/198.18.0.1:80"]; ok {
		t.Fatal("verdict of a changed check kept")
	}
	if w := h.fake.Snapshot()[web].Dests[dKey("198.18.0.1:80")].Weight; w != 0 {
		t.Fatalf("weight %d after the check changed, want the kernel's 0 kept", w)
	}

	// The real server's check goes away; a late verdict for it is dropped.
	h.writeConfig(strings.Replace(checkedConfig("", ""), "  [[virtual_server.real_server]]\n  address = \"198.18.0.2:80\"\n  weight = 20\n", "", 1))
	h.agent.reload()
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.2:80", State: health.Down, Weight: -1})
	h.agent.takeVerdicts()
	if _, ok := h.agent.statuses["web/198.18.0.2:80"]; ok {
		t.Fatal("late verdict for a removed check accepted")
	}
}

// A reload of an unchanged file does not parse it again but still re-reads
// the kernel and repairs it.
func TestUnchangedReloadSkipsParsingButRepairs(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, base)
	h.reconcile("start", true)
	h.agent.load = func(string) (*config.Config, error) {
		t.Fatal("unchanged file parsed again")
		return nil, nil
	}
	web := svcKey("192.0.2.10:80")
	_ = h.fake.DeleteDestination(web, dKey("198.18.0.2:80"))
	h.agent.reload()
	if r := h.agent.View().LastResult; r.Reason != "reload" || r.Writes != 1 {
		t.Fatalf("reload: %+v", r)
	}
	if _, ok := h.fake.Snapshot()[web].Dests[dKey("198.18.0.2:80")]; !ok {
		t.Fatal("not repaired")
	}
}
