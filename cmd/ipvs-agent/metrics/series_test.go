package metrics

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/health"
)

type noChecks struct{}

func (noChecks) Set([]health.Check)            {}
func (noChecks) Run(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

// TestSeriesAt1000x10 counts the series a 1,000 x 10 director exports (the
// figure docs/metrics.md gives): 8 per virtual server, 8 per real server,
// plus a fixed set. Go runtime and process metrics are not counted.
func TestSeriesAt1000x10(t *testing.T) {
	const nvs, nrs = 1000, 10
	for _, perRS := range []bool{true, false} {
		series := countSeries(t, perRS)
		perObject := 8 * nvs
		if perRS {
			perObject += 8 * nvs * nrs
		}
		// Fixed: 12 agent-wide gauges and counters, the tcp duration
		// histogram (12 buckets + 3), 2 failure classes seen; the
		// observer's reconcile histogram (4 reasons x 18), writes and
		// errors (4 + 4), reloads (2), and the two last-reload gauges.
		fixed := 12 + 15 + 2 + 4*18 + 8 + 2 + 2
		if series != perObject+fixed {
			t.Fatalf("metrics_real_servers = %v: %d series, want %d + %d", perRS, series, perObject, fixed)
		}
		t.Logf("1,000 x 10, metrics_real_servers = %v: %d series (%d per object, %d fixed), plus Go runtime and process metrics", perRS, series, perObject, fixed)
	}
}

func countSeries(t *testing.T, perRS bool) int {
	reg, stop := bigRegistry(t, perRS)
	defer stop()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, f := range fams {
		for _, m := range f.Metric {
			if h := m.Histogram; h != nil {
				series += len(h.Bucket) + 3 // buckets, +Inf, _sum, _count
				continue
			}
			series++
		}
	}
	return series
}

// bigRegistry is a registry with the agent's metrics for an agent running
// 1,000 x 10 with TCP checks on the fake kernel.
func bigRegistry(t testing.TB, perRS bool) (*prometheus.Registry, func()) {
	const nvs, nrs = 1000, 10
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "[agent]\nstate_file = %q\n[defaults.check]\ntype = \"tcp\"\ninterval = \"1s\"\n", filepath.Join(dir, "state.json"))
	for i := 0; i < nvs; i++ {
		fmt.Fprintf(&b, "[[virtual_server]]\nname = \"vs%d\"\naddress = \"192.0.2.%d:%d\"\nscheduler = \"wrr\"\n", i, i%250+1, 1000+i)
		for j := 0; j < nrs; j++ {
			fmt.Fprintf(&b, "  [[virtual_server.real_server]]\n  address = \"198.18.%d.%d:%d\"\n", i/25, (i%25)*10+j+1, 1000+i)
		}
	}
	path := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	fake := kernel.NewFake()
	reg := prometheus.NewRegistry()
	obs := NewObserver(reg)
	a, err := agent.New(cfg, agent.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Kernels: []kernel.IPVS{fake}, Health: noChecks{}, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx, nil) }()
	for a.View() == nil {
		time.Sleep(time.Millisecond)
	}
	ks, _ := fake.ReadStats(nil)
	stats := health.Stats{Probes: []health.TypeStats{{Type: "tcp", Count: 1, Buckets: make([]uint64, 13), Failures: []uint64{1, 1, 0, 0, 0, 0, 0, 0}}}}
	reg.MustRegister(NewCollector("test", func() Snapshot { return Snapshot{View: a.View(), Stats: stats, Kernel: ks, RealServers: perRS} }))
	return reg, func() { cancel(); <-done }
}
