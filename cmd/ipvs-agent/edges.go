package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/control"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// edges are the daemon's outward-facing servers: the control socket and the
// metrics endpoint. They read the agent's snapshot and never hold a lock
// of its loop.
type edges struct {
	wg     sync.WaitGroup
	socket string
}

// startEdges opens the control socket (and metrics) for a, served until ctx
// ends. A socket that cannot be made stops the start: `systemctl reload`
// depends on it (status_socket = "" turns it off).
func startEdges(ctx context.Context, log *slog.Logger, cfg *config.Config, a *agent.Agent, sched *health.Scheduler) (*edges, error) {
	e := &edges{}
	if cfg.StatusSocket != "" {
		l, err := control.Listen(cfg.StatusSocket, cfg.StatusGroup)
		if err != nil {
			return nil, err
		}
		e.socket = cfg.StatusSocket
		srv := &control.Server{Log: log, Reload: a.Reload, Config: cfg.Path}
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
