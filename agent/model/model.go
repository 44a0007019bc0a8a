// Package model is the desired-state model: the kernel IPVS table the agent
// wants, in plain Go values that the planner compares with what the kernel
// reports. It knows nothing of TOML, netlink or health checks.
package model

import (
	"fmt"
	"net/netip"
	"sort"
)

// Address families and protocols, numerically equal to the kernel's so the
// kernel adapter can pass them through unchanged.
const (
	FamilyInet  uint16 = 2  // AF_INET
	FamilyInet6 uint16 = 10 // AF_INET6

	ProtoTCP  uint16 = 6
	ProtoUDP  uint16 = 17
	ProtoSCTP uint16 = 132
)

// Service flags (include/uapi/linux/ip_vs.h, IP_VS_SVC_F_*). moby/ipvs does
// not export them.
const (
	FlagPersistent uint32 = 0x1
	FlagHashed     uint32 = 0x2 // set by the kernel on every service it reports
	FlagOnePacket  uint32 = 0x4
	FlagSched1     uint32 = 0x8  // sh-fallback / mh-fallback
	FlagSched2     uint32 = 0x10 // sh-port / mh-port
	FlagSched3     uint32 = 0x20
)

// Forwarding methods (IP_VS_CONN_F_*), the low bits of a destination's
// connection flags.
const (
	ForwardNAT    uint32 = 0 // masquerading
	ForwardTunnel uint32 = 2
	ForwardDR     uint32 = 3 // direct routing ("gatewaying")
	ForwardMask   uint32 = 7
)

// ServiceKey identifies a virtual server the way the kernel does: either
// protocol+address+port, or a firewall mark (with its family).
type ServiceKey struct {
	Family   uint16
	Protocol uint16 // 0 for fwmark services
	Addr     netip.Addr
	Port     uint16
	FWMark   uint32
}

// String renders the key the way ipvsadm names a service: "tcp 192.0.2.10:80",
// "udp [2001:db8::1]:53", "fwmark 10 inet".
func (k ServiceKey) String() string {
	if k.FWMark != 0 {
		fam := "inet"
		if k.Family == FamilyInet6 {
			fam = "inet6"
		}
		return fmt.Sprintf("fwmark %d %s", k.FWMark, fam)
	}
	return ProtocolName(k.Protocol) + " " + netip.AddrPortFrom(k.Addr, k.Port).String()
}

// ProtocolName returns "tcp", "udp", "sctp" or the number.
func ProtocolName(p uint16) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto-%d", p)
}

// Service is one virtual server's kernel attributes, without its destinations.
type Service struct {
	Key       ServiceKey
	Scheduler string
	Flags     uint32 // IP_VS_SVC_F_*; never FlagHashed
	Timeout   uint32 // persistence timeout in seconds; 0 = not persistent
	Netmask   uint32 // persistence netmask: IPv4 mask, or IPv6 prefix length
}

// SameAttrs reports whether two services need no update to match.
func (s Service) SameAttrs(o Service) bool {
	return s.Scheduler == o.Scheduler && s.Flags == o.Flags && s.Timeout == o.Timeout && s.Netmask == o.Netmask
}

// DestKey identifies a real server within one service.
type DestKey struct {
	Addr netip.Addr
	Port uint16
}

func (k DestKey) String() string { return netip.AddrPortFrom(k.Addr, k.Port).String() }

// Destination is one real server as the kernel holds it.
type Destination struct {
	Key            DestKey
	Family         uint16 // address family of the real server (may differ from the service's for tunnels)
	Weight         int
	Forward        uint32 // ForwardNAT, ForwardTunnel or ForwardDR
	UpperThreshold uint32
	LowerThreshold uint32

	// Read-only counters, filled in by the kernel adapter when reading.
	ActiveConns   uint32
	InactiveConns uint32
}

// SameAttrs reports whether two destinations need no update to match.
func (d Destination) SameAttrs(o Destination) bool {
	return d.Weight == o.Weight && d.Forward == o.Forward &&
		d.UpperThreshold == o.UpperThreshold && d.LowerThreshold == o.LowerThreshold
}

// VirtualServer is a service together with its destinations.
type VirtualServer struct {
	Service
	Dests map[DestKey]Destination
}

// Table is a set of virtual servers: the desired state, or what the kernel
// holds.
type Table map[ServiceKey]*VirtualServer

// Keys returns the table's service keys in a stable order, so that plans and
// logs are deterministic.
func (t Table) Keys() []ServiceKey {
	keys := make([]ServiceKey, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	SortServiceKeys(keys)
	return keys
}

// SortServiceKeys orders keys by fwmark, family, protocol, address, port.
func SortServiceKeys(keys []ServiceKey) {
	sort.Slice(keys, func(i, j int) bool { return keys[i].Less(keys[j]) })
}

// Less orders service keys.
func (k ServiceKey) Less(o ServiceKey) bool {
	if k.FWMark != o.FWMark {
		return k.FWMark < o.FWMark
	}
	if k.Family != o.Family {
		return k.Family < o.Family
	}
	if k.Protocol != o.Protocol {
		return k.Protocol < o.Protocol
	}
	if c := k.Addr.Compare(o.Addr); c != 0 {
		return c < 0
	}
	return k.Port < o.Port
}

// SortedDests returns a virtual server's destinations in address order.
func (v *VirtualServer) SortedDests() []Destination {
	out := make([]Destination, 0, len(v.Dests))
	for _, d := range v.Dests {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Key.Addr.Compare(out[j].Key.Addr); c != 0 {
			return c < 0
		}
		return out[i].Key.Port < out[j].Key.Port
	})
	return out
}

// DefaultNetmask is the persistence netmask the kernel uses when none is
// configured: a full IPv4 mask, or a /128 prefix for IPv6.
func DefaultNetmask(family uint16) uint32 {
	if family == FamilyInet6 {
		return 128
	}
	return 0xffffffff
}

// AddrPort returns the key as a netip.AddrPort.
func (k DestKey) AddrPort() netip.AddrPort { return netip.AddrPortFrom(k.Addr, k.Port) }
