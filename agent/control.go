package agent

import (
	"context"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
)

// ReloadResult is what one reload did: either the new (or unchanged) file
// was reconciled, with that reconcile's writes and errors, or the file was
// refused and nothing changed.
type ReloadResult struct {
	OK bool
	// Unchanged: the file's bytes were the running ones; the kernel was
	// still re-read and repaired.
	Unchanged bool
	Writes    int
	Errors    int
	// Problems are the file's problems as "file:line:col: message" when OK
	// is false; Err is the reconcile's error when the kernel could not be
	// read (OK is then true: the file was taken, the kernel was not).
	Problems []string
	Err      string
	Time     time.Time
	Duration time.Duration
}

// Observer hears of each reconcile and reload, on the agent's loop, so it
// must return at once (metrics count them; they must not hold the loop).
type Observer interface {
	Reconciled(ReconcileResult)
	Reloaded(ReloadResult)
}

type reloadRequest struct {
	reply chan ReloadResult
}

// Reload asks the running agent to reload its configuration file, through
// the same path as SIGHUP, and waits until that reload's reconcile finished.
// It fails only when ctx ends first (the agent is stopping or not running
// Run); the reload itself may still happen then.
func (a *Agent) Reload(ctx context.Context) (ReloadResult, error) {
	req := reloadRequest{reply: make(chan ReloadResult, 1)}
	select {
	case a.reloadReq <- req:
	case <-ctx.Done():
		return ReloadResult{}, ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r, nil
	case <-ctx.Done():
		return ReloadResult{}, ctx.Err()
	}
}

// Reloading reports whether a reload is running now: status and metrics
// wait for its end before their heavier work, so they do not take CPU from
// it.
func (a *Agent) Reloading() bool { return a.reloading.Load() }

// LastReload is the last reload's result, nil before the first one.
func (a *Agent) LastReload() *ReloadResult { return a.lastReload.Load() }

// reloaded is the result of a reload whose file was taken.
func (a *Agent) reloaded(unchanged bool, err error) ReloadResult {
	r := ReloadResult{OK: true, Unchanged: unchanged}
	if err != nil {
		r.Errors, r.Err = 1, err.Error()
		return r
	}
	if v := a.view.Load(); v != nil {
		r.Writes, r.Errors = v.LastResult.Writes, v.LastResult.Errors
	}
	return r
}

// reloadFailed is the result of a refused file.
func reloadFailed(err error, ps config.Problems) ReloadResult {
	r := ReloadResult{}
	if len(ps) == 0 {
		r.Problems = []string{err.Error()} // unreadable file: no position to give
		return r
	}
	for _, p := range ps {
		r.Problems = append(r.Problems, p.String())
	}
	return r
}

// noteReload stamps a reload's result and keeps it for LastReload.
func (a *Agent) noteReload(start time.Time, r *ReloadResult) {
	r.Time = start
	r.Duration = a.now().Sub(start)
	c := *r
	a.lastReload.Store(&c)
	if a.observer != nil {
		a.observer.Reloaded(c)
	}
}

// CheckID is the health check ID of a real server of a virtual server, the
// key of View.Statuses.
func CheckID(vs *config.VirtualServer, rs *config.RealServer) string { return checkID(vs, rs) }

// ReadOwned reads a state file: the virtual servers an agent owns (for
// `ipvs-agent status` when the agent is not running).
func ReadOwned(path string) (map[model.ServiceKey]bool, error) { return loadOwned(path) }
