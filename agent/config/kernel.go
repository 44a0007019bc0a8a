package config

import (
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent/settings"
)

// rawKernel is [agent.kernel] as decoded: every key optional.
type rawKernel struct {
	ConnReuseMode           *int64   `toml:"conn_reuse_mode"`
	ExpireNodestConn        *bool    `toml:"expire_nodest_conn"`
	ExpireQuiescentTemplate *bool    `toml:"expire_quiescent_template"`
	SloppyTCP               *bool    `toml:"sloppy_tcp"`
	SloppySCTP              *bool    `toml:"sloppy_sctp"`
	Conntrack               *bool    `toml:"conntrack"`
	TCPTimeout              *string  `toml:"tcp_timeout"`
	TCPFinTimeout           *string  `toml:"tcpfin_timeout"`
	UDPTimeout              *string  `toml:"udp_timeout"`
	Unmanaged               []string `toml:"unmanaged"`
}

// Defaults of [agent.kernel], chosen for direct routing:
//
//   - conn_reuse_mode 3: a new connection from a client port whose old entry
//     is in FIN_WAIT (all a DR director ever sees of a closed connection) is
//     scheduled afresh instead of following the old entry to its real server,
//     which may be the one that just died (the kernel's 1 does this only for
//     TIME_WAIT/CLOSE, which DR rarely reaches: only after a reset).
//   - expire_nodest_conn 1: the entries of a deleted real server's
//     connections expire (the client's next packet gets a reset, it
//     reconnects) instead of their packets being dropped until the entries
//     time out; and (kernel 5.16+) a new connection whose port's old entry
//     points at a real server at weight 0 is scheduled afresh.
//   - expire_quiescent_template 1: a persistence template pointing at a real
//     server at weight 0 (quiesced because it failed) expires, so persistent
//     clients move instead of being pinned to a dead server.
//   - sloppy_tcp, sloppy_sctp, conntrack and the timeouts: left as they are
//     (the kernel's, or what sysctl.d or a firewall's owner set) unless set
//     here.
func defaultKernel() settings.Values {
	return settings.Values{settings.ConnReuseMode: 3, settings.ExpireNodestConn: 1, settings.ExpireQuiescentTemplate: 1}
}

// maxTimeout is what the kernel accepts for a connection timeout: it keeps
// them in jiffies in an int (HZ up to 1000), so about 24 days.
const maxTimeout = 24 * 24 * time.Hour

// kernel validates [agent.kernel] into the values the agent keeps and the
// settings it must leave alone.
func (v *validator) kernel(r *rawKernel) (settings.Values, map[settings.Name]bool) {
	unmanaged := map[settings.Name]bool{}
	want := defaultKernel()
	if m := r.ConnReuseMode; m != nil {
		if *m < 0 || *m > 3 {
			v.problem("agent.kernel.conn_reuse_mode", "conn_reuse_mode %d out of range 0..3 (bit 1: reschedule on TIME_WAIT/CLOSE reuse, bit 2: also on FIN_WAIT of DR/tunnel real servers)", *m)
		} else {
			want[settings.ConnReuseMode] = int(*m)
		}
	}
	for _, b := range []struct {
		n settings.Name
		p *bool
	}{
		{settings.ExpireNodestConn, r.ExpireNodestConn}, {settings.ExpireQuiescentTemplate, r.ExpireQuiescentTemplate},
		{settings.SloppyTCP, r.SloppyTCP}, {settings.SloppySCTP, r.SloppySCTP}, {settings.Conntrack, r.Conntrack},
	} {
		if b.p != nil {
			want[b.n] = 0
			if *b.p {
				want[b.n] = 1
			}
		}
	}
	for _, d := range []struct {
		key string
		n   settings.Name
		p   *string
	}{
		{"tcp_timeout", settings.TimeoutTCP, r.TCPTimeout}, {"tcpfin_timeout", settings.TimeoutTCPFin, r.TCPFinTimeout},
		{"udp_timeout", settings.TimeoutUDP, r.UDPTimeout},
	} {
		if d.p == nil {
			continue
		}
		path := "agent.kernel." + d.key
		t := v.duration(path, d.p, 0, time.Second)
		switch {
		case t == 0: // already reported
		case t > maxTimeout:
			v.problem(path, "%s %s is above the kernel's maximum %s", d.key, t, maxTimeout)
		case t%time.Second != 0:
			v.problem(path, "%s %s: the kernel counts whole seconds", d.key, t)
		default:
			want[d.n] = int(t / time.Second)
		}
	}
	for i, name := range r.Unmanaged {
		n := settings.Name(name)
		if !settings.Known(n) {
			v.problem("agent.kernel.unmanaged", "unmanaged[%d]: unknown setting %q (known: conn_reuse_mode, expire_nodest_conn, expire_quiescent_template, sloppy_tcp, sloppy_sctp, conntrack, timeout_tcp, timeout_tcpfin, timeout_udp)", i, name)
			continue
		}
		delete(want, n)
		unmanaged[n] = true
	}
	return want, unmanaged
}
