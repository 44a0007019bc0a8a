package agent

import (
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/plan"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// checkID names the health subscription of one real server of one virtual
// server; statuses come back keyed by it.
func checkID(vs *config.VirtualServer, rs *config.RealServer) string {
	return vs.Name + "/" + rs.Dest.Key.String()
}

// desired is what one build of the desired state produced.
type desired struct {
	table      model.Table
	keepWeight map[plan.DestRef]bool
	adopt      map[model.ServiceKey]bool
	names      map[model.ServiceKey]string // for log lines
	// quorumLost lists virtual servers with fewer healthy real servers than
	// their quorum: exported for VIP withdrawal.
	quorumLost map[string]bool
	healthy    map[string]int
}

// draining is a real server that left the configuration while its virtual
// server stayed: it keeps weight 0 until its connections end or its drain
// timeout passes, then it is deleted.
type draining struct {
	dest  model.Destination
	since time.Time
}

// buildDesired turns the configuration, the health verdicts and the drain
// list into the table the kernel should hold. A real server without a
// check is always up; with a check and no verdict yet its kernel weight is
// kept (no flap on restart or reload).
func buildDesired(cfg *config.Config, statuses map[string]health.Status, drains map[plan.DestRef]draining) desired {
	d := desired{
		table:      make(model.Table, len(cfg.VirtualServers)),
		keepWeight: map[plan.DestRef]bool{},
		adopt:      map[model.ServiceKey]bool{},
		names:      make(map[model.ServiceKey]string, len(cfg.VirtualServers)),
		quorumLost: map[string]bool{},
		healthy:    make(map[string]int, len(cfg.VirtualServers)),
	}
	for i := range cfg.VirtualServers {
		vs := &cfg.VirtualServers[i]
		key := vs.Service.Key
		v := &model.VirtualServer{Service: vs.Service, Dests: make(map[model.DestKey]model.Destination, len(vs.RealServers))}
		d.table[key] = v
		d.names[key] = vs.Name
		if vs.Adopt {
			d.adopt[key] = true
		}
		up := 0
		for j := range vs.RealServers {
			rs := &vs.RealServers[j]
			dest := rs.Dest
			if rs.Check == nil {
				up++
				v.Dests[dest.Key] = dest
				continue
			}
			st, ok := statuses[checkID(vs, rs)]
			if !ok || st.State == health.Unknown {
				// No verdict yet: presumed up, so a restart neither adds
				// the sorry server nor reports a lost quorum.
				up++
				d.keepWeight[plan.DestRef{Service: key, Dest: dest.Key}] = true
				v.Dests[dest.Key] = dest
				continue
			}
			if st.State == health.Up {
				up++
			}
			if st.State == health.Down && vs.OnFailure == "remove" {
				continue
			}
			dest.Weight = st.EffectiveWeight(rs.Dest.Weight)
			v.Dests[dest.Key] = dest
		}
		d.healthy[vs.Name] = up
		if up < vs.Quorum {
			d.quorumLost[vs.Name] = true
		}
		if vs.SorryServer != nil && up == 0 && len(vs.RealServers) > 0 {
			if _, clash := v.Dests[vs.SorryServer.Key]; !clash {
				v.Dests[vs.SorryServer.Key] = *vs.SorryServer
			}
		}
	}
	for ref, dr := range drains {
		v := d.table[ref.Service]
		if v == nil {
			continue // the whole virtual server went away: it is deleted
		}
		if _, configured := v.Dests[ref.Dest]; configured {
			continue // it came back
		}
		dest := dr.dest
		dest.Weight = 0
		v.Dests[ref.Dest] = dest
	}
	return d
}
