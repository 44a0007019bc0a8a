package agent

import (
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/plan"
)

// draining is a real server that left the configuration while its virtual
// server stayed: it keeps weight 0 until its connections end or its drain
// timeout passes, then it is deleted.
type draining struct {
	dest  model.Destination
	since time.Time
}

// addDrains adds to drains the real servers (and the sorry server) of old
// that cur no longer has while their virtual server stays, and that the
// kernel has (observed): they are drained rather than cut off. Used by a
// reload and, on a copy, by diff.
func addDrains(drains map[plan.DestRef]draining, old, cur *config.Config, observed model.Table, now time.Time) {
	stay := make(map[model.ServiceKey]map[model.DestKey]bool, len(cur.VirtualServers))
	for _, vs := range cur.VirtualServers {
		m := make(map[model.DestKey]bool, len(vs.RealServers)+1)
		for _, rs := range vs.RealServers {
			m[rs.Dest.Key] = true
		}
		if vs.SorryServer != nil {
			m[vs.SorryServer.Key] = true
		}
		stay[vs.Service.Key] = m
	}
	for _, vs := range old.VirtualServers {
		kept := stay[vs.Service.Key]
		seen := observed[vs.Service.Key]
		if kept == nil || seen == nil {
			continue
		}
		leaving := make([]model.DestKey, 0, len(vs.RealServers)+1)
		for _, rs := range vs.RealServers {
			leaving = append(leaving, rs.Dest.Key)
		}
		if vs.SorryServer != nil {
			// A sorry server dropped or replaced by the reload may
			// carry the connections it took while the pool was down.
			leaving = append(leaving, vs.SorryServer.Key)
		}
		for _, dk := range leaving {
			ref := plan.DestRef{Service: vs.Service.Key, Dest: dk}
			if kept[dk] {
				continue
			}
			if d, ok := seen.Dests[dk]; ok {
				if _, already := drains[ref]; !already {
					drains[ref] = draining{dest: d, since: now}
				}
			}
		}
	}
}

// pruneDrains ends the drains whose real server has no active connection
// left (as observed), has gone, or has drained for longer than its drain
// timeout; it returns those ended by the timeout with their connection
// counts. Services in unread were not read: nothing is known of them.
func pruneDrains(drains map[plan.DestRef]draining, cfg *config.Config, observed model.Table, unread map[model.ServiceKey]error, now time.Time) map[plan.DestRef]uint32 {
	timeouts := make(map[model.ServiceKey]time.Duration, len(cfg.VirtualServers))
	for _, vs := range cfg.VirtualServers {
		timeouts[vs.Service.Key] = vs.DrainTimeout
	}
	var timedOut map[plan.DestRef]uint32
	for ref, dr := range drains {
		if _, ok := unread[ref.Service]; ok {
			continue
		}
		v := observed[ref.Service]
		var d model.Destination
		ok := v != nil
		if ok {
			d, ok = v.Dests[ref.Dest]
		}
		switch {
		case !ok, d.ActiveConns == 0:
			delete(drains, ref)
		case now.Sub(dr.since) >= timeouts[ref.Service]:
			if timedOut == nil {
				timedOut = map[plan.DestRef]uint32{}
			}
			timedOut[ref] = d.ActiveConns
			delete(drains, ref)
		}
	}
	return timedOut
}
