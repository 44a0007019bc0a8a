package main

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/control"
	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/metrics"
	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/report"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// edges are the daemon's outward-facing servers: the control socket and the
// metrics endpoint. They read the agent's snapshot (View, LastReload), the
// scheduler's counters and the kernel through a netlink socket of their
// own; they never hold a lock of the agent's loop.
type edges struct {
	wg          sync.WaitGroup
	socket      string
	metricsAddr string
	src         *snapshotSource
}

// scheduler is what the edges read of the health scheduler.
type scheduler interface {
	Stats() health.Stats
	Statuses() map[string]health.Status
}

// snapshotSource takes the snapshots status and metrics are built from.
type snapshotSource struct {
	agent   *agent.Agent
	sched   scheduler
	started time.Time

	kmu  sync.Mutex // one request at a time on the edges' netlink socket
	kern kernel.StatsReader

	realServers bool // metrics_real_servers

	rate atomic.Uint64 // checks done per second, float64 bits
}

// yieldMax bounds how long status and metrics wait for a reload to end.
const yieldMax = 20 * time.Second

// yield waits while the agent reloads, at most yieldMax in all for one
// request (deadline): a reload of a large file is the agent's heaviest work
// and the one an operator waits for, and on a small director a scrape or a
// status call of a large table competes with it for the CPU.
func (s *snapshotSource) yield(deadline time.Time) {
	for s.agent.Reloading() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// readKernel reads the kernel's table with counters: every service, and
// the real servers of the configured and owned ones.
// With name set, only that virtual server's real servers are read: a VRRP
// track script asks `status -quorum NAME` every few seconds.
func (s *snapshotSource) readKernel(v *agent.View, name string) ([]kernel.ServiceStats, error) {
	if s.kern == nil {
		return nil, errors.New("no IPVS netlink socket for the status reader")
	}
	only := map[model.ServiceKey]bool{}
	if v != nil && v.Config != nil && name != "" {
		for _, vs := range v.Config.VirtualServers {
			if vs.Name == name {
				only[vs.Service.Key] = true
			}
		}
	} else if v != nil {
		for k := range v.Owned {
			only[k] = true
		}
		if v.Config != nil {
			for _, vs := range v.Config.VirtualServers {
				only[vs.Service.Key] = true
			}
		}
	}
	s.kmu.Lock()
	defer s.kmu.Unlock()
	return s.kern.ReadStats(only)
}

// input is one snapshot for the report; live adds the scheduler's current
// statuses (a walk under its lock, so only status asks for it).
func (s *snapshotSource) input(live bool, name string) report.Input {
	s.yield(time.Now().Add(yieldMax))
	v := s.agent.View()
	st := s.sched.Stats()
	in := report.Input{Now: time.Now(), Version: version, PID: os.Getpid(), Started: s.started, View: v,
		LastReload: s.agent.LastReload(), Stats: &st}
	in.DoneRate = math.Float64frombits(s.rate.Load())
	if live {
		in.Live = s.sched.Statuses()
	}
	in.Kernel, in.KernelErr = s.readKernel(v, name)
	return in
}

// sampleRate measures checks done per second over 10 s windows.
func (s *snapshotSource) sampleRate(ctx context.Context) {
	const every = 10 * time.Second
	t := time.NewTicker(every)
	defer t.Stop()
	last, at := s.sched.Stats().Checks, time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n := s.sched.Stats().Checks
			s.rate.Store(math.Float64bits(float64(n-last) / now.Sub(at).Seconds()))
			last, at = n, now
		}
	}
}

// metricsSnapshot is what a scrape reads: no walk under the scheduler's
// lock (the View carries the verdicts), one kernel read.
func (s *snapshotSource) metricsSnapshot() metrics.Snapshot {
	deadline := time.Now().Add(yieldMax)
	s.yield(deadline)
	v := s.agent.View()
	ms := metrics.Snapshot{View: v, Stats: s.sched.Stats(), Yield: func() { s.yield(deadline) },
		RealServers: s.realServers}
	ms.Kernel, ms.KernelErr = s.readKernel(v, "")
	return ms
}

// metricsEdge holds the registry when metrics_listen is set.
type metricsEdge struct {
	reg *prometheus.Registry
	obs *metrics.Observer
}

func newMetrics(cfg *config.Config) *metricsEdge {
	if cfg.MetricsListen == "" {
		return &metricsEdge{}
	}
	reg := metrics.NewRegistry()
	return &metricsEdge{reg: reg, obs: metrics.NewObserver(reg)}
}

// observer is the agent.Observer, nil when metrics are off.
func (m *metricsEdge) observer() agent.Observer {
	if m == nil || m.obs == nil {
		return nil
	}
	return m.obs
}

// status serves GET /v1/status. light answers from the View alone, without
// waiting for a reload: a VRRP track script must get its answer in time.
func (s *snapshotSource) status(_ context.Context, name string, light bool) (any, error) {
	var in report.Input
	if light {
		st := s.sched.Stats()
		in = report.Input{Now: time.Now(), Version: version, PID: os.Getpid(), Started: s.started, View: s.agent.View(),
			LastReload: s.agent.LastReload(), Stats: &st}
	} else {
		in = s.input(true, name)
	}
	doc, ok := report.Build(in, name)
	if !ok {
		return nil, control.ErrNotFound
	}
	return doc, nil
}

// openStatsReader opens the edges' own netlink socket (closed when ctx
// ends and the edges stopped), or nil with a warning.
func openStatsReader(ctx context.Context, log *slog.Logger) (kernel.StatsReader, func()) {
	k, err := kernel.Open()
	if err != nil {
		log.Warn("status and metrics will not show the kernel's table and counters", "err", err)
		return nil, func() {}
	}
	return k, k.Close
}

// startEdges opens the control socket (and metrics) for a, served until ctx
// ends. A socket that cannot be made stops the start: `systemctl reload`
// depends on it (status_socket = "" turns it off). kern may be nil.
func startEdges(ctx context.Context, log *slog.Logger, cfg *config.Config, a *agent.Agent, sched scheduler, kern kernel.StatsReader, m *metricsEdge) (*edges, error) {
	e := &edges{src: &snapshotSource{agent: a, sched: sched, started: time.Now(), kern: kern, realServers: cfg.MetricsRealServers}}
	if m != nil && m.reg != nil {
		l, err := metrics.Listen(cfg.MetricsListen)
		if err != nil {
			return nil, err
		}
		m.reg.MustRegister(metrics.NewCollector(version, e.src.metricsSnapshot))
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := metrics.Serve(ctx, l, m.reg, log); err != nil {
				log.Error("metrics endpoint stopped", "err", err)
			}
		}()
		e.metricsAddr = l.Addr().String()
		log.Info("metrics endpoint", "listen", e.metricsAddr)
	}
	e.wg.Add(1)
	go func() { defer e.wg.Done(); e.src.sampleRate(ctx) }()
	if cfg.StatusSocket != "" {
		l, err := control.Listen(cfg.StatusSocket, cfg.StatusGroup)
		if err != nil {
			return nil, err
		}
		e.socket = cfg.StatusSocket
		srv := &control.Server{Log: log, Reload: a.Reload, Config: cfg.Path, Status: e.src.status, Diff: serveDiff(a)}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := control.Serve(ctx, l, srv.Handler(), log); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("control socket stopped", "err", err)
			}
		}()
	}
	return e, nil
}

// wait waits for the servers to stop (ctx ended) and removes the socket.
func (e *edges) wait() {
	e.wg.Wait()
	if e.socket != "" {
		os.Remove(e.socket)
	}
}
