package report

import (
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/plan"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// Input is one snapshot of everything the document shows.
type Input struct {
	Now     time.Time
	Version string
	PID     int
	Started time.Time
	// View is the agent's snapshot (nil before the first reconcile).
	View       *agent.View
	LastReload *agent.ReloadResult
	// Live are the scheduler's current statuses, for the last probe; the
	// verdicts the weights follow are View.Statuses. Optional.
	Live  map[string]health.Status
	Stats *health.Stats
	// DoneRate is checks done per second, measured by the caller.
	DoneRate float64
	// Kernel is one read of the kernel's table with counters, or
	// KernelErr.
	Kernel    []kernel.ServiceStats
	KernelErr error
}

// Build makes the document for every configured virtual server, or only the
// one called name (ok false when there is none).
func Build(in Input, name string) (doc *Doc, ok bool) {
	doc = &Doc{Schema: Schema, Time: in.Now, Agent: Agent{Running: true, Version: in.Version, PID: in.PID}}
	if !in.Started.IsZero() {
		t := in.Started
		doc.Agent.Started = &t
	}
	if in.KernelErr != nil {
		doc.Agent.KernelError = in.KernelErr.Error()
	}
	if r := in.LastReload; r != nil {
		doc.Agent.LastReload = &Reload{Time: r.Time, OK: r.OK, Unchanged: r.Unchanged, Writes: r.Writes, Errors: r.Errors,
			Problems: r.Problems, Error: r.Err, Seconds: r.Duration.Seconds()}
	}
	doc.VirtualServers = []VirtualServer{}
	v := in.View
	if v == nil || v.Config == nil {
		return doc, name == ""
	}
	cfg := v.Config
	doc.Agent.Config = cfg.Path
	doc.Agent.ConfigSHA256 = hex.EncodeToString(cfg.Digest[:])
	doc.Agent.StateFile = cfg.StateFile
	doc.Agent.LastReconcile = &Reconcile{Time: v.LastReconcile, Reason: v.LastResult.Reason, Writes: v.LastResult.Writes,
		Errors: v.LastResult.Errors, Seconds: v.LastResult.Duration.Seconds()}
	doc.Agent.Checks = checks(cfg, in.Stats, in.DoneRate)

	kern := indexKernel(in.Kernel)
	conflicts := make(map[model.ServiceKey]bool, len(v.Conflicts))
	for _, k := range v.Conflicts {
		conflicts[k] = true
	}
	found := name == ""
	for i := range cfg.VirtualServers {
		vs := &cfg.VirtualServers[i]
		if name != "" && vs.Name != name {
			continue
		}
		found = true
		doc.VirtualServers = append(doc.VirtualServers, virtualServer(in, vs, kern, conflicts))
	}
	return doc, found
}

func checks(cfg *config.Config, st *health.Stats, rate float64) *Checks {
	c := &Checks{DonePerSecond: round3(rate)}
	for _, vs := range cfg.VirtualServers {
		for _, rs := range vs.RealServers {
			if rs.Check != nil && rs.Check.Interval > 0 {
				c.Configured++
				c.ConfiguredPerSecond += 1 / rs.Check.Interval.Seconds()
			}
		}
	}
	c.ConfiguredPerSecond = round3(c.ConfiguredPerSecond)
	if st != nil {
		c.Probes = st.Runners
		c.DoneTotal, c.LateTotal, c.SaturatedTotal = st.Checks, st.Late, st.Saturated
		c.MaxLagSeconds = round3(st.MaxLag.Seconds())
		c.InFlight = st.InFlight
	}
	return c
}

type kernelEntry struct {
	svc   *kernel.ServiceStats
	dests map[model.DestKey]*kernel.DestStats
}

func indexKernel(ks []kernel.ServiceStats) map[model.ServiceKey]kernelEntry {
	if ks == nil {
		return nil
	}
	out := make(map[model.ServiceKey]kernelEntry, len(ks))
	for i := range ks {
		s := &ks[i]
		e := kernelEntry{svc: s, dests: make(map[model.DestKey]*kernel.DestStats, len(s.Dests))}
		for j := range s.Dests {
			e.dests[s.Dests[j].Dest.Key] = &s.Dests[j]
		}
		out[s.Service.Key] = e
	}
	return out
}

func virtualServer(in Input, vs *config.VirtualServer, kern map[model.ServiceKey]kernelEntry, conflicts map[model.ServiceKey]bool) VirtualServer {
	v := in.View
	key := vs.Service.Key
	out := VirtualServer{
		Name: vs.Name, Service: key.String(), Scheduler: vs.Service.Scheduler, Flags: flagString(vs.Service),
		Quorum:      Quorum{Required: vs.Quorum, Healthy: v.Healthy[vs.Name], OK: !v.QuorumLost[vs.Name]},
		RealServers: []RealServer{},
	}
	ke, inKernel := kern[key]
	switch {
	case conflicts[key]:
		out.Ownership = "conflict"
	case v.Owned[key]:
		out.Ownership = "owned"
	case vs.Adopt && inKernel:
		out.Ownership = "adopt"
	default:
		out.Ownership = "pending"
	}
	if kern != nil {
		out.Kernel = &ServiceKernel{Present: inKernel}
		if inKernel {
			out.Kernel.Counters = counters(ke.svc.Counters)
		}
	}
	desired := v.Desired[key]
	wanted := func(dk model.DestKey) (model.Destination, bool) {
		if desired == nil {
			return model.Destination{}, false
		}
		d, ok := desired.Dests[dk]
		return d, ok
	}
	seen := map[model.DestKey]bool{}
	for j := range vs.RealServers {
		rs := &vs.RealServers[j]
		seen[rs.Dest.Key] = true
		r := RealServer{Address: rs.Dest.Key.String(), Role: "real", Forwarding: forwardName(rs.Dest.Forward),
			Weight: Weight{Configured: rs.Dest.Weight, Desired: -1, Kernel: -1}}
		id := agent.CheckID(vs, rs)
		st, hasVerdict := v.Statuses[id]
		if hasVerdict && st.State == health.Unknown {
			hasVerdict = false
		}
		d, want := wanted(rs.Dest.Key)
		if want && (rs.Check == nil || hasVerdict) {
			r.Weight.Desired = d.Weight
		} else if !want {
			r.Weight.Desired = 0
		}
		if rs.Check != nil {
			r.Health = healthOf(rs.Check, st, hasVerdict, in.Live, id)
		}
		r.Kernel = kernelDest(kern != nil, ke, rs.Dest.Key, &r.Weight)
		if out.Ownership == "conflict" {
			r.Weight.Desired = -1
			r.Why = []string{"not applied: the virtual server is not the agent's (adopt = true takes it over)"}
		} else {
			r.Why = slices.Clone(v.Why[plan.DestRef{Service: key, Dest: rs.Dest.Key}])
			r.Why = append(r.Why, kernelWhy(r.Weight, kern != nil && inKernel, want)...)
		}
		if r.Why == nil {
			r.Why = []string{}
		}
		out.RealServers = append(out.RealServers, r)
	}
	// The sorry server and real servers draining out of the file.
	if desired != nil {
		for _, d := range desired.SortedDests() {
			if seen[d.Key] {
				continue
			}
			seen[d.Key] = true
			r := RealServer{Address: d.Key.String(), Forwarding: forwardName(d.Forward),
				Weight: Weight{Configured: d.Weight, Desired: d.Weight, Kernel: -1}}
			if vs.SorryServer != nil && d.Key == vs.SorryServer.Key {
				r.Role = "sorry"
			} else {
				r.Role = "draining"
				r.Weight.Configured = 0
			}
			r.Why = slices.Clone(v.Why[plan.DestRef{Service: key, Dest: d.Key}])
			r.Kernel = kernelDest(kern != nil, ke, d.Key, &r.Weight)
			r.Why = append(r.Why, kernelWhy(r.Weight, kern != nil && inKernel, true)...)
			out.RealServers = append(out.RealServers, r)
		}
	}
	// What the kernel has and the agent does not want: a removal that is
	// pending or failed (or, for a conflict, someone else's real servers).
	if inKernel && ke.svc.Dests != nil {
		var extra []*kernel.DestStats
		for dk, d := range ke.dests {
			if !seen[dk] {
				extra = append(extra, d)
			}
		}
		sort.Slice(extra, func(i, j int) bool {
			return extra[i].Dest.Key.Addr.Less(extra[j].Dest.Key.Addr) || extra[i].Dest.Key.Addr == extra[j].Dest.Key.Addr && extra[i].Dest.Key.Port < extra[j].Dest.Key.Port
		})
		for _, d := range extra {
			r := RealServer{Address: d.Dest.Key.String(), Role: "kernel", Forwarding: forwardName(d.Dest.Forward),
				Weight: Weight{Configured: -1, Desired: -1, Kernel: d.Dest.Weight}}
			if out.Ownership == "conflict" {
				r.Why = []string{"not the agent's virtual server"}
			} else {
				r.Why = []string{"in the kernel, not wanted: removal pending or failed"}
			}
			r.Kernel = kernelDest(true, ke, d.Dest.Key, &r.Weight)
			out.RealServers = append(out.RealServers, r)
		}
	}
	return out
}

func kernelDest(read bool, ke kernelEntry, dk model.DestKey, w *Weight) *Kernel {
	if !read {
		return nil
	}
	k := &Kernel{}
	if d := ke.dests[dk]; d != nil {
		k.Present = true
		k.Weight = d.Dest.Weight
		k.ActiveConnections, k.InactiveConnections = d.Dest.ActiveConns, d.Dest.InactiveConns
		k.Counters = counters(d.Counters)
		w.Kernel = d.Dest.Weight
	}
	return k
}

func counters(c kernel.Counters) Counters {
	return Counters{ConnectionsTotal: c.Conns, PacketsInTotal: c.PktsIn, PacketsOutTotal: c.PktsOut, BytesInTotal: c.BytesIn, BytesOutTotal: c.BytesOut,
		CPS: c.CPS, PPSIn: c.PPSIn, PPSOut: c.PPSOut, BPSIn: c.BPSIn, BPSOut: c.BPSOut}
}

func healthOf(spec *health.Spec, st health.Status, verdict bool, live map[string]health.Status, id string) *Health {
	h := &Health{Type: spec.Type, State: health.Unknown.String(), IntervalSeconds: spec.Interval.Seconds(), Reason: "no verdict yet"}
	if verdict {
		h.State, h.Reason = st.State.String(), st.Reason
		h.Since = &st.Since
	}
	last := st
	if l, ok := live[id]; ok {
		last = l
		if !verdict && l.State != health.Unknown {
			// The verdict is on its way to the agent's loop.
			h.State, h.Reason = l.State.String(), l.Reason
			h.Since = &l.Since
		}
	}
	if !last.LastCheck.IsZero() {
		t := last.LastCheck
		h.LastCheck = &t
		h.LastOK, h.LastResult = last.LastOK, last.LastReason
		h.LatencySeconds = round6(last.LastLatency.Seconds())
		h.EffectiveIntervalSeconds = round3(last.EffectiveInterval.Seconds())
	}
	return h
}

// kernelWhy explains a kernel that differs from the agent's wish.
func kernelWhy(w Weight, svcInKernel, want bool) []string {
	switch {
	case !svcInKernel:
		return nil // said at the virtual server
	case want && w.Kernel < 0:
		return []string{"not in the kernel: add pending or failed"}
	case want && w.Desired >= 0 && w.Kernel != w.Desired:
		return []string{fmt.Sprintf("kernel has weight %d: write pending or failed", w.Kernel)}
	case !want && w.Kernel >= 0:
		return []string{"still in the kernel: removal pending or failed"}
	}
	return nil
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
func round6(f float64) float64 { return math.Round(f*1e6) / 1e6 }

func forwardName(f uint32) string {
	switch f & model.ForwardMask {
	case model.ForwardDR:
		return "dr"
	case model.ForwardTunnel:
		return "tunnel"
	case model.ForwardNAT:
		return "nat"
	}
	return fmt.Sprintf("forward-%d", f)
}

// flagString renders a service's options as ipvsadm words.
func flagString(s model.Service) string {
	var w []string
	if s.Flags&model.FlagPersistent != 0 || s.Timeout != 0 {
		w = append(w, fmt.Sprintf("persistent %d", s.Timeout))
	}
	if s.Flags&model.FlagOnePacket != 0 {
		w = append(w, "ops")
	}
	prefix := s.Scheduler
	if s.Flags&model.FlagSched1 != 0 {
		w = append(w, prefix+"-fallback")
	}
	if s.Flags&model.FlagSched2 != 0 {
		w = append(w, prefix+"-port")
	}
	return strings.Join(w, " ")
}

// Offline is the document when the agent does not answer: the kernel's
// view of the virtual servers the state file lists.
func Offline(now time.Time, reason error, stateFile string, owned map[model.ServiceKey]bool, ownedErr error, ks []kernel.ServiceStats, kernelErr error) *Doc {
	doc := &Doc{Schema: Schema, Time: now, Agent: Agent{Running: false, Error: reason.Error(), StateFile: stateFile}}
	if ownedErr != nil {
		doc.Agent.Error += "; state file: " + ownedErr.Error()
	}
	if kernelErr != nil {
		doc.Agent.KernelError = kernelErr.Error()
	}
	doc.VirtualServers = []VirtualServer{}
	keys := make([]model.ServiceKey, 0, len(owned))
	for k := range owned {
		keys = append(keys, k)
	}
	model.SortServiceKeys(keys)
	kern := indexKernel(ks)
	for _, k := range keys {
		vs := VirtualServer{Name: k.String(), Service: k.String(), Ownership: "owned", RealServers: []RealServer{}}
		ke, ok := kern[k]
		if kern != nil {
			vs.Kernel = &ServiceKernel{Present: ok}
		}
		if ok {
			vs.Scheduler, vs.Flags = ke.svc.Service.Scheduler, flagString(ke.svc.Service)
			vs.Kernel.Counters = counters(ke.svc.Counters)
			for _, d := range ke.svc.Dests {
				r := RealServer{Address: d.Dest.Key.String(), Role: "kernel", Forwarding: forwardName(d.Dest.Forward),
					Weight: Weight{Configured: -1, Desired: -1, Kernel: d.Dest.Weight}, Why: []string{}}
				r.Kernel = kernelDest(true, ke, d.Dest.Key, &r.Weight)
				vs.RealServers = append(vs.RealServers, r)
			}
		}
		doc.VirtualServers = append(doc.VirtualServers, vs)
	}
	return doc
}
