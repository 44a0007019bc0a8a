package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/health"
)

var update = flag.Bool("update", false, "rewrite the golden files")

type noChecks struct{}

func (noChecks) Set([]health.Check)            {}
func (noChecks) Run(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

const goldenConfig = `[agent]
state_file = "DIR/state.json"
[defaults.check]
type = "tcp"
interval = "2s"

[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
scheduler = "wrr"
persistence = "5m"
quorum = 3
  [virtual_server.check]
  slow_start = "30s"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  weight = 100
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
  weight = 100
    [virtual_server.real_server.check]
    type = "agent"
    port = 8888
  [[virtual_server.real_server]]
  address = "198.18.0.13:80"
  weight = 100
  [[virtual_server.real_server]]
  address = "198.18.0.14:80"
  weight = 50
    [virtual_server.real_server.check]
    weight_file = "/run/ipvs-agent/w-{ip}"
  [[virtual_server.real_server]]
  address = "198.18.0.15:80"
  weight = 10
    [virtual_server.real_server.check]
    type = "file"
    file = "/run/ipvs-agent/{ip}"
  [[virtual_server.real_server]]
  address = "198.18.0.16:80"
  weight = 10

[[virtual_server]]
name = "api"
address = "192.0.2.20:443"
quorum = 1
sorry_server = "198.18.0.99:443"
  [[virtual_server.real_server]]
  address = "198.18.0.21:443"

[[virtual_server]]
name = "dns"
address = "192.0.2.53:53"
protocol = "udp"
scheduler = "sh"
scheduler_flags = ["sh-port"]
one_packet = true
  [[virtual_server.real_server]]
  address = "198.18.0.31:53"
    [virtual_server.real_server.check]
    type = "udp"
    send = "ping"

[[virtual_server]]
name = "foreign"
address = "192.0.2.30:80"
  [[virtual_server.real_server]]
  address = "198.18.0.41:80"
`

var t0 = time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)

func svcKey(proto uint16, s string) model.ServiceKey {
	ap := netip.MustParseAddrPort(s)
	return model.ServiceKey{Family: model.FamilyInet, Protocol: proto, Addr: ap.Addr(), Port: ap.Port()}
}

func destKey(s string) model.DestKey {
	ap := netip.MustParseAddrPort(s)
	return model.DestKey{Addr: ap.Addr(), Port: ap.Port()}
}

// goldenInput runs a real agent on a fake kernel, feeds it verdicts and
// returns a snapshot as the daemon would take it.
func goldenInput(t *testing.T) Input {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipvs-agent.toml")
	src := bytes.ReplaceAll([]byte(goldenConfig), []byte("DIR"), []byte("/var/lib/ipvs-agent"))
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateFile = filepath.Join(dir, "state.json")
	fake := kernel.NewFake()
	// Someone else's service, with a real server of its own.
	foreign := model.Service{Key: svcKey(model.ProtoTCP, "192.0.2.30:80"), Scheduler: "rr"}
	fake.AddService(foreign)
	fake.AddDestination(foreign.Key, model.Destination{Key: destKey("198.18.0.50:80"), Weight: 1, Forward: model.ForwardNAT})

	now := t0.Add(-time.Minute)
	a, err := agent.New(cfg, agent.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Kernels: []kernel.IPVS{fake}, Health: noChecks{}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx, nil) }()
	defer func() { cancel(); <-done }()
	for a.View() == nil { // the start's reconcile
		time.Sleep(time.Millisecond)
	}
	since := t0.Add(-10 * time.Minute)
	sts := []health.Status{
		{ID: "web/198.18.0.11:80", State: health.Up, Factor: 0.4, RampFactor: 0.4, Weight: -1, Reason: "connected", Since: t0.Add(-12 * time.Second)},
		{ID: "web/198.18.0.12:80", State: health.Up, Factor: 0.75, RampFactor: 1, Weight: -1, Reason: "agent: 75%", Since: since},
		{ID: "web/198.18.0.13:80", State: health.Down, Factor: 1, RampFactor: 1, Weight: -1, Reason: "connect: connection refused", Since: t0.Add(-5 * time.Second)},
		{ID: "web/198.18.0.14:80", State: health.Up, Factor: 1, RampFactor: 1, Weight: 20, Reason: "connected", Since: since},
		{ID: "web/198.18.0.15:80", State: health.Drain, Factor: 1, RampFactor: 1, Weight: -1, Reason: "file: drain", Since: since},
		{ID: "api/198.18.0.21:443", State: health.Down, Factor: 1, RampFactor: 1, Weight: -1, Reason: "connect: timeout", Since: since},
		{ID: "dns/198.18.0.31:53", State: health.Up, Factor: 1, RampFactor: 1, Weight: -1, Reason: "udp: reply", Since: since},
	}
	for _, st := range sts {
		a.OnHealth(st)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if v := a.View(); v != nil && len(v.Statuses) == len(sts) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("verdicts never reached the view")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A reload of the unchanged file makes the last reconcile the same
	// whatever batches the verdicts came in.
	if _, err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	// Some traffic, and a write the kernel has not taken yet: the dns real
	// server's weight is changed behind the agent's back.
	webKey := svcKey(model.ProtoTCP, "192.0.2.10:80")
	fake.SetCounters(webKey, model.DestKey{}, kernel.Counters{Conns: 5000, PktsIn: 40000, PktsOut: 0, BytesIn: 4_000_000, CPS: 12, PPSIn: 90, BPSIn: 9000})
	fake.SetCounters(webKey, destKey("198.18.0.12:80"), kernel.Counters{Conns: 3000, PktsIn: 24000, BytesIn: 2_400_000, CPS: 7, PPSIn: 50, BPSIn: 5000})
	fake.SetActiveConns(webKey, destKey("198.18.0.12:80"), 42)
	dnsKey := svcKey(model.ProtoUDP, "192.0.2.53:53")
	fake.UpdateDestination(dnsKey, model.Destination{Key: destKey("198.18.0.31:53"), Weight: 7, Forward: model.ForwardDR})

	ks, err := fake.ReadStats(nil)
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]health.Status{
		"web/198.18.0.11:80": {State: health.Up, LastCheck: t0.Add(-800 * time.Millisecond), LastLatency: 1200 * time.Microsecond, LastOK: true, LastReason: "connected", EffectiveInterval: 2010 * time.Millisecond},
		"web/198.18.0.13:80": {State: health.Down, LastCheck: t0.Add(-1500 * time.Millisecond), LastLatency: 300 * time.Microsecond, LastOK: false, LastReason: "connect: connection refused", EffectiveInterval: 1990 * time.Millisecond},
		"web/198.18.0.16:80": {State: health.Unknown},
	}
	stats := health.Stats{Checks: 123456, Late: 3, MaxLag: 620 * time.Millisecond, Saturated: 0, InFlight: 2, Runners: 8, Subscribers: 8}
	reload := &agent.ReloadResult{OK: true, Writes: 12, Errors: 0, Time: t0.Add(-2 * time.Minute), Duration: 35 * time.Millisecond}
	return Input{Now: t0, Version: "1.0.0", PID: 4242, Started: t0.Add(-3 * time.Hour), View: a.View(), LastReload: reload,
		Live: live, Stats: &stats, DoneRate: 3.9, Kernel: ks}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update to accept):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestStatusGolden(t *testing.T) {
	in := goldenInput(t)
	doc, ok := Build(in, "")
	if !ok {
		t.Fatal("not found")
	}
	doc.Agent.Config = "/etc/ipvs-agent.toml" // a temporary directory in the test
	var table bytes.Buffer
	if err := Render(&table, doc); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.txt", table.Bytes())
	doc.Agent.StateFile = "/var/lib/ipvs-agent/state.json" // a temporary directory in the test
	js, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "status.json", append(js, '\n'))

	one, ok := Build(in, "api")
	if !ok || len(one.VirtualServers) != 1 || one.VirtualServers[0].Name != "api" {
		t.Fatalf("status api: %+v", one.VirtualServers)
	}
	if _, ok := Build(in, "nope"); ok {
		t.Fatal("an unknown name was found")
	}

	// A refused reload lists its problems.
	in.LastReload = &agent.ReloadResult{Problems: []string{"/etc/ipvs-agent.toml:7:1: unknown scheduler \"nope\""}, Time: t0.Add(-time.Second)}
	doc, _ = Build(in, "dns")
	table.Reset()
	Render(&table, doc)
	if !bytes.Contains(table.Bytes(), []byte("FAILED, 1 problems, old configuration kept\n               /etc/ipvs-agent.toml:7:1: unknown scheduler")) {
		t.Errorf("failed reload:\n%s", table.String())
	}
}

func TestStatusOfflineGolden(t *testing.T) {
	fake := kernel.NewFake()
	k := svcKey(model.ProtoTCP, "192.0.2.10:80")
	fake.AddService(model.Service{Key: k, Scheduler: "wrr"})
	fake.AddDestination(k, model.Destination{Key: destKey("198.18.0.11:80"), Weight: 100, Forward: model.ForwardDR})
	fake.SetCounters(k, destKey("198.18.0.11:80"), kernel.Counters{Conns: 10, CPS: 1})
	ks, _ := fake.ReadStats(nil)
	owned := map[model.ServiceKey]bool{k: true, svcKey(model.ProtoTCP, "192.0.2.11:80"): true}
	doc := Offline(t0, errors.New("the agent is not running (nothing listens on /run/ipvs-agent/status.sock)"),
		"/var/lib/ipvs-agent/state.json", owned, nil, ks, nil)
	var table bytes.Buffer
	if err := Render(&table, doc); err != nil {
		t.Fatal(err)
	}
	golden(t, "offline.txt", table.Bytes())
}
