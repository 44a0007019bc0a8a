package agent

import (
	"context"
	"maps"
	"time"

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
		if had && has && old.Equal(cur) {
			statuses[id] = st
		}
	}
	drains := maps.Clone(a.drains)
	if cfg != a.cfg {
		addDrains(drains, a.cfg, cfg, a.observed, a.now())
	}
	obs, err := a.observeFor(cfg)
	if err != nil {
		return DiffResult{Err: err}
	}
	pruneDrainsIn(drains, cfg, obs, a.now())
	r := planDiff(cfg, obs, a.owned, statuses, drains)
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
	obs, err := a.observeFor(cfg)
	if err != nil {
		return DiffResult{Err: err}, nil
	}
	return planDiff(cfg, obs, owned, nil, nil), nil
}

func planDiff(cfg *config.Config, obs model.Table, owned map[model.ServiceKey]bool, statuses map[string]health.Status, drains map[plan.DestRef]draining) DiffResult {
	d := buildDesired(cfg, statuses, drains)
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

// addDrains is startDrains on a copy: the real servers that leave the
// configuration while their virtual server stays, and are in the kernel.
func addDrains(drains map[plan.DestRef]draining, old, cur *config.Config, observed model.Table, now time.Time) {
	stay := make(map[model.ServiceKey]map[model.DestKey]bool, len(cur.VirtualServers))
	for _, vs := range cur.VirtualServers {
		m := make(map[model.DestKey]bool, len(vs.RealServers))
		for _, rs := range vs.RealServers {
			m[rs.Dest.Key] = true
		}
		stay[vs.Service.Key] = m
	}
	for _, vs := range old.VirtualServers {
		kept := stay[vs.Service.Key]
		if kept == nil || observed[vs.Service.Key] == nil {
			continue
		}
		for _, rs := range vs.RealServers {
			ref := plan.DestRef{Service: vs.Service.Key, Dest: rs.Dest.Key}
			if kept[rs.Dest.Key] {
				continue
			}
			if d, ok := observed[ref.Service].Dests[ref.Dest]; ok {
				if _, already := drains[ref]; !already {
					drains[ref] = draining{dest: d, since: now}
				}
			}
		}
	}
}

// pruneDrainsIn is pruneDrains on a copy.
func pruneDrainsIn(drains map[plan.DestRef]draining, cfg *config.Config, observed model.Table, now time.Time) {
	timeouts := make(map[model.ServiceKey]time.Duration, len(cfg.VirtualServers))
	for _, vs := range cfg.VirtualServers {
		timeouts[vs.Service.Key] = vs.DrainTimeout
	}
	for ref, dr := range drains {
		v := observed[ref.Service]
		var d model.Destination
		ok := v != nil
		if ok {
			d, ok = v.Dests[ref.Dest]
		}
		if !ok || d.ActiveConns == 0 || now.Sub(dr.since) >= timeouts[ref.Service] {
			delete(drains, ref)
		}
	}
}
