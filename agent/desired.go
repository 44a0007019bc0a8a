package agent

import (
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
	// quorumLost lists virtual servers below their quorum (with
	// hysteresis): one value for the log, status and VIP withdrawal.
	quorumLost map[string]bool
	// quorum is every virtual server's state (true: lost), the next
	// build's previous state.
	quorum  map[string]bool
	healthy map[string]int
	// why says, per real server whose kernel weight differs from its
	// configured one (or that is left out), and for the sorry server and
	// draining real servers, the reasons.
	why map[plan.DestRef][]string
}

// inputs are what the desired state is built from.
type inputs struct {
	cfg      *config.Config
	statuses map[string]health.Status
	drains   map[plan.DestRef]draining
	// observed is the kernel's table as last read (alpha: is the real
	// server there already? the sorry server: does it still carry
	// connections?). Nil before the first read.
	observed model.Table
	// fresh: observed was read from the kernel for this build, so its
	// connection counts are current (not only kept up to date by writes).
	fresh bool
	// lost is each virtual server's quorum state after the previous build
	// (true: lost); hysteresis needs it. A virtual server missing there
	// (the first build after a start, or new in a reload) takes it from
	// the kernel: its sorry server in service means the quorum was lost.
	lost map[string]bool
}

// buildDesired turns the configuration, the health verdicts and the drain
// list into the table the kernel should hold, applying the weight policy
// (weight.go) to each real server, then quorum and the sorry server to each
// virtual server. It is pure.
func buildDesired(in inputs) desired {
	cfg := in.cfg
	d := desired{
		table:      make(model.Table, len(cfg.VirtualServers)),
		keepWeight: map[plan.DestRef]bool{},
		adopt:      map[model.ServiceKey]bool{},
		names:      make(map[model.ServiceKey]string, len(cfg.VirtualServers)),
		quorumLost: map[string]bool{},
		quorum:     make(map[string]bool, len(cfg.VirtualServers)),
		healthy:    make(map[string]int, len(cfg.VirtualServers)),
		why:        map[plan.DestRef][]string{},
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
		var seen *model.VirtualServer
		if in.observed != nil {
			seen = in.observed[key]
		}
		up, pending := 0, 0
		for j := range vs.RealServers {
			rs := &vs.RealServers[j]
			ref := plan.DestRef{Service: key, Dest: rs.Dest.Key}
			var kernel *model.Destination
			if seen != nil {
				if kd, ok := seen.Dests[rs.Dest.Key]; ok {
					kernel = &kd
				}
			}
			var st health.Status
			known := false
			if rs.Check != nil {
				st, known = in.statuses[checkID(vs, rs)]
			}
			dec := decide(vs, rs, st, known, kernel)
			switch {
			case dec.healthy:
				up++
			case dec.pending:
				pending++
			}
			if len(dec.why) > 0 {
				d.why[ref] = dec.why
			}
			if !dec.present {
				continue
			}
			dest := rs.Dest
			dest.Weight = dec.weight
			if dec.keep {
				d.keepWeight[ref] = true
			}
			v.Dests[dest.Key] = dest
		}
		d.healthy[vs.Name] = up

		var sorryThere model.Destination
		sorryInKernel := false
		if s := vs.SorryServer; s != nil && seen != nil {
			sorryThere, sorryInKernel = seen.Dests[s.Key]
		}
		wasLost, known := in.lost[vs.Name]
		if !known {
			wasLost = sorryInKernel && sorryThere.Weight > 0
		}
		lost := quorumLost(vs, up, pending, wasLost)
		d.quorum[vs.Name] = lost
		if lost {
			d.quorumLost[vs.Name] = true
		}
		if s := vs.SorryServer; s != nil {
			ref := plan.DestRef{Service: key, Dest: s.Key}
			switch {
			case lost:
				// As keepalived: below quorum the virtual server is
				// down and the sorry server alone takes new
				// connections; the real servers left keep theirs
				// (weight 0, not deleted). One without a verdict yet
				// keeps its kernel weight: that weight is what says
				// whether it is healthy until its check speaks.
				for dk, dest := range v.Dests {
					rref := plan.DestRef{Service: key, Dest: dk}
					if dest.Weight != 0 && !d.keepWeight[rref] {
						dest.Weight = 0
						v.Dests[dk] = dest
						d.why[rref] = append(d.why[rref], "below quorum: the sorry server takes new connections")
					}
				}
				v.Dests[s.Key] = *s
				d.why[ref] = []string{"sorry server: below quorum"}
			case sorryInKernel && (!in.fresh || sorryThere.ActiveConns > 0):
				// Quorum is back: no new connections, but the ones it
				// took while the pool was down finish (with
				// expire_nodest_conn a delete would cut them off). It
				// is deleted when a read of the kernel (a resync) finds
				// none left: counts kept from writes alone are stale.
				z := *s
				z.Weight = 0
				v.Dests[s.Key] = z
				d.why[ref] = []string{"sorry server draining: quorum is back"}
			}
		}
	}
	for ref, dr := range in.drains {
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
		d.why[ref] = []string{"removed from the file: draining until its connections end or drain_timeout"}
	}
	return d
}

// quorumLost applies the quorum with hysteresis: a virtual server that has
// its quorum loses it when fewer than quorum - hysteresis real servers are
// healthy, and one that lost it regains it at quorum + hysteresis, so a
// pool flapping around its quorum does not flap what hangs on it. Real
// servers still waiting for their first verdict (pending) keep a quorum
// from being lost but do not bring it back.
func quorumLost(vs *config.VirtualServer, healthy, pending int, wasLost bool) bool {
	if vs.Quorum == 0 {
		return false
	}
	if wasLost {
		return healthy < vs.Quorum+vs.Hysteresis
	}
	return healthy+pending < vs.Quorum-vs.Hysteresis
}
