package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// TestMetricsEndpoint scrapes the real endpoint of an agent on the fake
// kernel and parses it with the Prometheus text parser.
func TestMetricsEndpoint(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipvs-agent.toml")
	src := strings.ReplaceAll(reloadBase, "%s", dir) + "  [[virtual_server.real_server]]\n  address = \"198.18.0.12:80\"\n  weight = 5\n"
	if err := writeFile(path, src); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.MetricsRealServers = true
	fake := kernel.NewFake()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var a *agent.Agent
	sched := health.NewScheduler(health.Options{Logger: log, OnChange: func(st health.Status) { a.OnHealth(st) }})
	m := newMetrics(cfg)
	a, err = agent.New(cfg, agent.Options{Logger: log, Kernels: []kernel.IPVS{fake}, Health: sched, Observer: m.observer()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e, err := startEdges(ctx, log, cfg, a, sched, fake, m)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx, nil) }()
	defer func() { cancel(); <-done; e.wait() }()
	if _, err := a.Reload(ctx); err != nil { // start reconciled, then one reload
		t.Fatal(err)
	}
	web := svc("192.0.2.10:80")
	fake.SetCounters(web, dest("198.18.0.12:80"), kernel.Counters{Conns: 7, PktsIn: 70, PktsOut: 0, BytesIn: 7000})

	resp, err := http.Get("http://" + e.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(pmodel.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("not parseable Prometheus text: %v", err)
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		f := fams[name]
		if f == nil {
			return 0, false
		}
	next:
		for _, m := range f.Metric {
			have := map[string]string{}
			for _, l := range m.Label {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
		return 0, false
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ipvs_agent_real_server_connections_total", map[string]string{"virtual_server": "web", "real_server": "198.18.0.12:80"}, 7},
		{"ipvs_agent_real_server_bytes_total", map[string]string{"virtual_server": "web", "real_server": "198.18.0.12:80", "direction": "in"}, 7000},
		{"ipvs_agent_real_server_weight", map[string]string{"virtual_server": "web", "real_server": "198.18.0.12:80", "kind": "configured"}, 5},
		{"ipvs_agent_real_server_weight", map[string]string{"virtual_server": "web", "real_server": "198.18.0.12:80", "kind": "desired"}, 5},
		{"ipvs_agent_real_server_up", map[string]string{"virtual_server": "web", "real_server": "198.18.0.11:80"}, 1},
		{"ipvs_agent_virtual_server_up", map[string]string{"virtual_server": "web"}, 1},
		{"ipvs_agent_kernel_writes_total", map[string]string{"reason": "start"}, 3},
		{"ipvs_agent_config_reloads_total", map[string]string{"result": "success"}, 1},
		{"ipvs_agent_reconcile_duration_seconds", map[string]string{"reason": "reload"}, 1},
		{"ipvs_agent_kernel_read_ok", nil, 1},
		{"ipvs_agent_build_info", map[string]string{"version": version}, 1},
	} {
		got, ok := value(c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// Prometheus's own linter, where installed (Debian: prometheus).
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	for name := range fams {
		if !strings.HasPrefix(name, "ipvs_agent_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric without the ipvs_agent_ prefix: %s", name)
		}
	}
}
