package kernel

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/moby/ipvs"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
)

// procIPVS exists exactly when the ip_vs module is loaded (or built in) in
// the current network namespace's kernel.
const procIPVS = "/proc/net/ip_vs"

// Netlink is the IPVS implementation that talks to the kernel over generic
// netlink through moby/ipvs. One Netlink owns one netlink socket: moby/ipvs
// matches replies by sequence number and drops the others, so two goroutines
// sharing a handle can lose each other's answers. Open one per goroutine.
type Netlink struct {
	h *ipvs.Handle
}

// Open connects to the kernel's IPVS in the current network namespace. It
// fails with ErrNotLoaded, before touching netlink, when ip_vs is missing:
// moby/ipvs would otherwise try modprobe itself (which fails under a
// hardened unit) and then report an unrelated errno on the first request.
func Open() (*Netlink, error) {
	if _, err := os.Stat(procIPVS); err != nil {
		return nil, ErrNotLoaded
	}
	h, err := ipvs.New("")
	if err != nil {
		return nil, fmt.Errorf("open IPVS netlink socket: %w", err)
	}
	return &Netlink{h: h}, nil
}

// Close releases the netlink socket.
func (n *Netlink) Close() { n.h.Close() }

func (n *Netlink) Services() ([]model.Service, error) {
	svcs, err := n.h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("list virtual servers: %w", mapErrno(err, false))
	}
	out := make([]model.Service, 0, len(svcs))
	for _, s := range svcs {
		out = append(out, fromIPVSService(s))
	}
	return out, nil
}

func (n *Netlink) Destinations(key model.ServiceKey) ([]model.Destination, error) {
	ds, err := n.h.GetDestinations(toIPVSService(model.Service{Key: key}))
	if err != nil {
		return nil, fmt.Errorf("list real servers of %s: %w", key, mapErrno(err, false))
	}
	out := make([]model.Destination, 0, len(ds))
	for _, d := range ds {
		out = append(out, fromIPVSDest(d))
	}
	return out, nil
}

func (n *Netlink) AddService(s model.Service) error {
	if err := n.h.NewService(toIPVSService(s)); err != nil {
		err = mapErrno(err, false)
		if errors.Is(err, ErrNoDest) {
			// On a service add, ENOENT means the scheduler module could not be found.
			err = fmt.Errorf("scheduler %q: %w (is the ip_vs_%s module available?)", s.Scheduler, ErrUnsupported, s.Scheduler)
		}
		return fmt.Errorf("add virtual server %s: %w", s.Key, err)
	}
	return nil
}

func (n *Netlink) UpdateService(s model.Service) error {
	if err := n.h.UpdateService(toIPVSService(s)); err != nil {
		err = mapErrno(err, false)
		if errors.Is(err, ErrNoDest) {
			err = fmt.Errorf("scheduler %q: %w (is the ip_vs_%s module available?)", s.Scheduler, ErrUnsupported, s.Scheduler)
		}
		return fmt.Errorf("update virtual server %s: %w", s.Key, err)
	}
	return nil
}

func (n *Netlink) DeleteService(key model.ServiceKey) error {
	if err := n.h.DelService(toIPVSService(model.Service{Key: key})); err != nil {
		return fmt.Errorf("delete virtual server %s: %w", key, mapErrno(err, false))
	}
	return nil
}

func (n *Netlink) AddDestination(key model.ServiceKey, d model.Destination) error {
	if err := n.h.NewDestination(toIPVSService(model.Service{Key: key}), toIPVSDest(key, d)); err != nil {
		err = mapErrno(err, true)
		if errors.Is(err, syscall.EINVAL) {
			// Seen in the VM: with no local address at all (lo down) the
			// kernel has no local FIB table and refuses every destination.
			err = fmt.Errorf("%w (the kernel refused the address: is it unicast, and does this host have a local address, e.g. is lo up?)", err)
		}
		return fmt.Errorf("add real server %s to %s: %w", d.Key, key, err)
	}
	return nil
}

func (n *Netlink) UpdateDestination(key model.ServiceKey, d model.Destination) error {
	if err := n.h.UpdateDestination(toIPVSService(model.Service{Key: key}), toIPVSDest(key, d)); err != nil {
		return fmt.Errorf("update real server %s in %s: %w", d.Key, key, mapErrno(err, true))
	}
	return nil
}

func (n *Netlink) DeleteDestination(key model.ServiceKey, dk model.DestKey) error {
	d := model.Destination{Key: dk}
	if err := n.h.DelDestination(toIPVSService(model.Service{Key: key}), toIPVSDest(key, d)); err != nil {
		return fmt.Errorf("delete real server %s from %s: %w", dk, key, mapErrno(err, true))
	}
	return nil
}

// mapErrno turns the kernel's errno into the package's sentinel errors,
// keeping the errno in the chain for callers that want it.
func mapErrno(err error, dest bool) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err
	}
	switch errno {
	case syscall.EEXIST:
		return errors.Join(ErrExists, errno)
	case syscall.ESRCH:
		return errors.Join(ErrNoService, errno)
	case syscall.ENOENT:
		return errors.Join(ErrNoDest, errno)
	case syscall.EOPNOTSUPP:
		return errors.Join(ErrUnsupported, errno)
	}
	return err
}

func toIPVSService(s model.Service) *ipvs.Service {
	out := &ipvs.Service{
		AddressFamily: s.Key.Family,
		FWMark:        s.Key.FWMark,
		SchedName:     s.Scheduler,
		Flags:         s.Flags &^ model.FlagHashed,
		Timeout:       s.Timeout,
		Netmask:       s.Netmask,
	}
	if s.Key.FWMark == 0 {
		out.Protocol = s.Key.Protocol
		out.Address = net.IP(s.Key.Addr.AsSlice())
		out.Port = s.Key.Port
	}
	if out.Netmask == 0 {
		out.Netmask = model.DefaultNetmask(s.Key.Family)
	}
	out.Netmask = netmaskWire(out.Netmask, s.Key.Family)
	return out
}

// netmaskWire converts a persistence netmask between the model's form (an
// IPv4 mask in host order, 0xffffff00 for /24; an IPv6 prefix length) and
// the kernel's: the kernel reads an IPv4 mask as __be32 while moby/ipvs
// sends and reads the attribute in host order, so IPv4 masks are
// byte-swapped both ways. The prefix length of IPv6 is a plain number.
// (Found in the VM: without it ipvsadm showed -M 0.255.255.255 for a /24.)
func netmaskWire(m uint32, family uint16) uint32 {
	if family == model.FamilyInet6 {
		return m
	}
	return bits.ReverseBytes32(m)
}

func fromIPVSService(s *ipvs.Service) model.Service {
	key := model.ServiceKey{Family: s.AddressFamily, FWMark: s.FWMark}
	if s.FWMark == 0 {
		key.Protocol = s.Protocol
		key.Addr = ipToAddr(s.Address)
		key.Port = s.Port
	}
	return model.Service{
		Key:       key,
		Scheduler: s.SchedName,
		Flags:     s.Flags &^ model.FlagHashed,
		Timeout:   s.Timeout,
		Netmask:   netmaskWire(s.Netmask, s.AddressFamily),
	}
}

func toIPVSDest(key model.ServiceKey, d model.Destination) *ipvs.Destination {
	fam := d.Family
	if fam == 0 {
		fam = key.Family
	}
	return &ipvs.Destination{
		Address:         net.IP(d.Key.Addr.AsSlice()),
		Port:            d.Key.Port,
		Weight:          d.Weight,
		ConnectionFlags: d.Forward & model.ForwardMask,
		AddressFamily:   fam,
		UpperThreshold:  d.UpperThreshold,
		LowerThreshold:  d.LowerThreshold,
	}
}

func fromIPVSDest(d *ipvs.Destination) model.Destination {
	return model.Destination{
		Key:            model.DestKey{Addr: ipToAddr(d.Address), Port: d.Port},
		Family:         d.AddressFamily,
		Weight:         d.Weight,
		Forward:        d.ConnectionFlags & model.ForwardMask,
		UpperThreshold: d.UpperThreshold,
		LowerThreshold: d.LowerThreshold,
		ActiveConns:    uint32(d.ActiveConnections),
		InactiveConns:  uint32(d.InactiveConnections),
	}
}

// ipToAddr converts without the IPv4-in-IPv6 form, so keys compare equal to
// the ones parsed from the config.
func ipToAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
