package kernel

import (
	"fmt"

	"github.com/moby/ipvs"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
)

// Counters are the kernel's traffic counters of a virtual or real server
// (ipvsadm -Ln --stats / --rate). The totals count since the object was
// created; moby/ipvs reads the 32-bit connection and packet counters, which
// wrap (a Prometheus rate() treats a wrap as a reset). The rates are the
// kernel's own estimates, averaged over a few seconds.
type Counters struct {
	Conns, PktsIn, PktsOut, BytesIn, BytesOut uint64
	CPS, PPSIn, PPSOut, BPSIn, BPSOut         uint64
}

// ServiceStats is one virtual server with its real servers and counters.
type ServiceStats struct {
	Service  model.Service
	Counters Counters
	Dests    []DestStats
}

// DestStats is one real server as the kernel holds it, with its counters.
type DestStats struct {
	Dest     model.Destination
	Counters Counters
}

// StatsReader reads the kernel's table with its counters, for status and
// metrics. Read-only: the agent's single writer is untouched by it.
type StatsReader interface {
	// ReadStats dumps every virtual server and, for those in only (all
	// when only is nil), their real servers.
	ReadStats(only map[model.ServiceKey]bool) ([]ServiceStats, error)
}

// ReadStats implements StatsReader with one service dump and one
// destination dump per selected service.
func (n *Netlink) ReadStats(only map[model.ServiceKey]bool) ([]ServiceStats, error) {
	svcs, err := n.h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("list virtual servers: %w", mapErrno(err, false))
	}
	out := make([]ServiceStats, 0, len(svcs))
	for _, s := range svcs {
		ss := ServiceStats{Service: fromIPVSService(s), Counters: counters(s.Stats)}
		if only == nil || only[ss.Service.Key] {
			ds, err := n.h.GetDestinations(s)
			if err != nil {
				return nil, fmt.Errorf("list real servers of %s: %w", ss.Service.Key, mapErrno(err, false))
			}
			ss.Dests = make([]DestStats, 0, len(ds))
			for _, d := range ds {
				ss.Dests = append(ss.Dests, DestStats{Dest: fromIPVSDest(d), Counters: counters(ipvs.SvcStats(d.Stats))})
			}
		}
		out = append(out, ss)
	}
	return out, nil
}

func counters(s ipvs.SvcStats) Counters {
	return Counters{
		Conns: uint64(s.Connections), PktsIn: uint64(s.PacketsIn), PktsOut: uint64(s.PacketsOut),
		BytesIn: s.BytesIn, BytesOut: s.BytesOut,
		CPS: uint64(s.CPS), PPSIn: uint64(s.PPSIn), PPSOut: uint64(s.PPSOut), BPSIn: uint64(s.BPSIn), BPSOut: uint64(s.BPSOut),
	}
}

// ReadStats implements StatsReader for tests: the table with the counters
// SetCounters gave (zero otherwise).
func (f *Fake) ReadStats(only map[model.ServiceKey]bool) ([]ServiceStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]ServiceStats, 0, len(f.order))
	for _, k := range f.order {
		vs := f.table[k]
		if vs == nil {
			continue
		}
		ss := ServiceStats{Service: vs.Service, Counters: f.counters[counterKey{svc: k}]}
		if only == nil || only[k] {
			for _, d := range vs.SortedDests() {
				ss.Dests = append(ss.Dests, DestStats{Dest: d, Counters: f.counters[counterKey{svc: k, dest: d.Key}]})
			}
		}
		out = append(out, ss)
	}
	return out, nil
}

type counterKey struct {
	svc  model.ServiceKey
	dest model.DestKey
}

// SetCounters sets the counters ReadStats reports for a virtual server
// (dest zero) or one of its real servers.
func (f *Fake) SetCounters(svc model.ServiceKey, dest model.DestKey, c Counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.counters == nil {
		f.counters = map[counterKey]Counters{}
	}
	f.counters[counterKey{svc, dest}] = c
}

var (
	_ StatsReader = (*Fake)(nil)
	_ StatsReader = (*Netlink)(nil)
)
