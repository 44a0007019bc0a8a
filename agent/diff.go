package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/plan"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// Change is one kernel write a reload would make, named as the agent's
// "kernel write" log lines name it.
type Change struct {
	VirtualServer string
	Op            plan.Op
}

// DiffResult is what a reload to a configuration would do, without doing it.
type DiffResult struct {
	Changes []Change
	// Conflicts are configured virtual servers that exist in the kernel,
	// are not the agent's and would be left untouched.
	Conflicts []Change
	Err       error // the kernel could not be read
}

type diffRequest struct {
	cfg   *config.Config
	reply chan DiffResult
}

// Diff plans a reload to cfg on the running agent's loop, with its health
// verdicts, drains and ownership and a fresh read of the kernel, exactly as
// reload would (the same pure planner), and applies nothing. It costs one
// kernel read on the loop, like a resync.
func (a *Agent) Diff(ctx context.Context, cfg *config.Config) (DiffResult, error) {
	req := diffRequest{cfg: cfg, reply: make(chan DiffResult, 1)}
	select {
	case a.diffReq <- req:
	case <-ctx.Done():
		return DiffResult{}, ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r, nil
	case <-ctx.Done():
		return DiffResult{}, ctx.Err()
	}
}

// diff runs on Run's goroutine. It mirrors reload: the verdicts that
// setChecks keeps, the drains startDrains adds, the full reconcile's
// kernel read and pruneDrains.
func (a *Agent) diff(cfg *config.Config) DiffResult {
	if cfg.Digest == a.cfg.Digest {
		cfg = a.cfg // reload would not parse it again
	}
	statuses := map[string]health.Status{}
	newIDs := map[string]health.Spec{}
	for i := range cfg.VirtualServers {
		vs := &cfg.VirtualServers[i]
		for j := range vs.RealServers {
			if rs := &vs.RealServers[j]; rs.Check != nil {
				newIDs[checkID(vs, rs)] = *rs.Check
			}
		}
	}
	for id, st := range a.statuses {
		old, had := a.checkIDs[id]
		cur, has := newIDs[id]
		if had && has && old.spec.Equal(cur) {
			statuses[id] = st
		}
	}
	drains := maps.Clone(a.drains)
	if cfg != a.cfg {
		addDrains(drains, a.cfg, cfg, a.observed, a.now())
	}
	obs, unread, err := a.observeFor(cfg)
	if err == nil && len(unread) > 0 {
		err = unreadError(unread)
	}
	if err != nil {
		return DiffResult{Err: err}
	}
	pruneDrains(drains, cfg, obs, nil, a.now())
	r := planDiff(cfg, obs, a.owned, statuses, drains, a.quorum)
	// A virtual server leaving the file is named by the running one.
	old := make(map[model.ServiceKey]string, len(a.cfg.VirtualServers))
	for _, vs := range a.cfg.VirtualServers {
		old[vs.Service.Key] = vs.Name
	}
	for i := range r.Changes {
		if c := &r.Changes[i]; c.VirtualServer == "" {
			c.VirtualServer = old[c.Op.Service.Key]
		}
	}
	return r
}

// PlanStart is what `ipvs-agent run` with cfg would write at start, when no
// agent is running: no verdicts (the kernel's weights are kept) and no
// drains. k is read, never written.
func PlanStart(cfg *config.Config, k kernel.IPVS) (DiffResult, error) {
	owned, err := loadOwned(cfg.StateFile)
	if err != nil {
		return DiffResult{}, err
	}
	a := &Agent{kernels: []kernel.IPVS{k}, cfg: cfg, owned: owned}
	obs, unread, err := a.observeFor(cfg)
	if err == nil && len(unread) > 0 {
		err = unreadError(unread)
	}
	if err != nil {
		return DiffResult{Err: err}, nil
	}
	return planDiff(cfg, obs, owned, nil, nil, nil), nil
}

// unreadError names the services whose real servers could not be read: a
// diff against a guess would be wrong.
func unreadError(unread map[model.ServiceKey]error) error {
	errs := make([]error, 0, len(unread))
	for k, err := range unread {
		errs = append(errs, fmt.Errorf("%s: %w", k, err))
	}
	return errors.Join(errs...)
}

func planDiff(cfg *config.Config, obs model.Table, owned map[model.ServiceKey]bool, statuses map[string]health.Status, drains map[plan.DestRef]draining, lost map[string]bool) DiffResult {
	d := buildDesired(inputs{cfg: cfg, statuses: statuses, drains: drains, observed: obs, fresh: true, lost: lost})
	res := plan.Plan(plan.Input{Desired: d.table, Observed: obs, Owned: owned, Adopt: d.adopt, KeepWeight: d.keepWeight})
	out := DiffResult{Changes: make([]Change, 0, len(res.Ops))}
	for _, op := range res.Ops {
		out.Changes = append(out.Changes, Change{VirtualServer: d.names[op.Service.Key], Op: op})
	}
	for _, k := range res.Conflicts {
		out.Conflicts = append(out.Conflicts, Change{VirtualServer: d.names[k], Op: plan.Op{Service: obs[k].Service}})
	}
	return out
}
