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

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/control"
	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/report"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// edges are the daemon's outward-facing servers: the control socket and the
// metrics endpoint. They read the agent's snapshot (View, LastReload), the
// scheduler's counters and the kernel through a netlink socket of their
// own; they never hold a lock of the agent's loop.
type edges struct {
	wg     sync.WaitGroup
	socket string
	src    *snapshotSource
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

	rate atomic.Uint64 // checks done per second, float64 bits
}

// readKernel reads the kernel's table with counters: every service, and
// the real servers of the configured and owned ones.
func (s *snapshotSource) readKernel(v *agent.View) ([]kernel.ServiceStats, error) {
	if s.kern == nil {
		return nil, errors.New("no IPVS netlink socket for the status reader")
	}
	only := map[model.ServiceKey]bool{}
	if v != nil {
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
func (s *snapshotSource) input(live bool) report.Input {
	v := s.agent.View()
	st := s.sched.Stats()
	in := report.Input{Now: time.Now(), Version: version, PID: os.Getpid(), Started: s.started, View: v,
		LastReload: s.agent.LastReload(), Stats: &st}
	in.DoneRate = math.Float64frombits(s.rate.Load())
	if live {
		in.Live = s.sched.Statuses()
	}
	in.Kernel, in.KernelErr = s.readKernel(v)
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

// status serves GET /v1/status.
func (s *snapshotSource) status(_ context.Context, name string) (any, error) {
	doc, ok := report.Build(s.input(true), name)
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
func startEdges(ctx context.Context, log *slog.Logger, cfg *config.Config, a *agent.Agent, sched scheduler, kern kernel.StatsReader) (*edges, error) {
	e := &edges{src: &snapshotSource{agent: a, sched: sched, started: time.Now(), kern: kern}}
	e.wg.Add(1)
	go func() { defer e.wg.Done(); e.src.sampleRate(ctx) }()
	if cfg.StatusSocket != "" {
		l, err := control.Listen(cfg.StatusSocket, cfg.StatusGroup)
		if err != nil {
			return nil, err
		}
		e.socket = cfg.StatusSocket
		srv := &control.Server{Log: log, Reload: a.Reload, Config: cfg.Path, Status: e.src.status}
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
