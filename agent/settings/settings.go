// Package settings owns the kernel's IPVS settings that live outside the
// virtual server table: the net.ipv4.vs sysctls that decide what happens to
// connections when a real server fails or a client reuses a port, and the
// connection timeouts. They are per network namespace; the agent manages
// those of its own.
//
// Like the table, they go desired -> plan -> apply: the configuration says
// which values the agent keeps, Kernel reads what the kernel has, Plan is the
// pure difference, and the agent writes it (at start, on reload, and at every
// resync, so a value changed behind its back is put back).
package settings

import (
	"fmt"
	"slices"
)

// Name is a setting's name: the sysctl's file name under
// /proc/sys/net/ipv4/vs, or timeout_tcp / timeout_tcpfin / timeout_udp for
// the connection timeouts (seconds) that ipvsadm --set reads and writes.
type Name string

// The settings the agent knows. Each one's effect is described in the
// README and ipvs-agent.toml(5).
const (
	ConnReuseMode           Name = "conn_reuse_mode"
	ExpireNodestConn        Name = "expire_nodest_conn"
	ExpireQuiescentTemplate Name = "expire_quiescent_template"
	SloppyTCP               Name = "sloppy_tcp"
	SloppySCTP              Name = "sloppy_sctp"
	Conntrack               Name = "conntrack"
	TimeoutTCP              Name = "timeout_tcp"
	TimeoutTCPFin           Name = "timeout_tcpfin"
	TimeoutUDP              Name = "timeout_udp"
)

// All lists every setting in a fixed order (the order of logs and plans).
func All() []Name {
	return []Name{ConnReuseMode, ExpireNodestConn, ExpireQuiescentTemplate, SloppyTCP, SloppySCTP,
		Conntrack, TimeoutTCP, TimeoutTCPFin, TimeoutUDP}
}

// IsTimeout tells the timeouts (set over netlink, in seconds, never 0: the
// kernel reads 0 as "leave unchanged") from the sysctls.
func (n Name) IsTimeout() bool { return n == TimeoutTCP || n == TimeoutTCPFin || n == TimeoutUDP }

// Known reports whether n is one of All.
func Known(n Name) bool { return slices.Contains(All(), n) }

// Values maps settings to values. Desired values list only the settings the
// agent manages; observed values list what the kernel has (a setting the
// kernel lacks, e.g. sloppy_sctp without SCTP support, is absent).
type Values map[Name]int

// Kernel reads and writes one network namespace's settings. Implementations
// are not safe for concurrent use; the agent's main loop is their only user.
type Kernel interface {
	Read() (Values, error)
	Write(n Name, v int) error
	// BootID names this boot of the kernel: values recorded in an earlier
	// boot say nothing of this one (a reboot or reloaded module starts
	// from its own defaults and sysctl.d).
	BootID() (string, error)
}

// Change is one write the plan asks for. From is the kernel's value, or -1
// when the kernel does not have the setting (the write will fail and say so).
type Change struct {
	Name     Name
	From, To int
}

func (c Change) String() string {
	if c.From < 0 {
		return fmt.Sprintf("%s -> %d (not present in this kernel)", c.Name, c.To)
	}
	return fmt.Sprintf("%s %d -> %d", c.Name, c.From, c.To)
}

// Plan returns the writes that make have equal want for every setting want
// names, in All's order. It is pure: no I/O, no clock.
func Plan(want, have Values) []Change {
	var out []Change
	for _, n := range All() {
		w, ok := want[n]
		if !ok {
			continue
		}
		h, present := have[n]
		if !present {
			h = -1
		}
		if h != w {
			out = append(out, Change{Name: n, From: h, To: w})
		}
	}
	return out
}
