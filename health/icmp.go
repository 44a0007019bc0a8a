package health

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"syscall"
)

// errNoICMP explains what an icmp check needs when neither socket kind can
// be opened; it becomes the down reason, so it is what operators read.
var errNoICMP = errors.New("icmp: cannot open a socket: give the agent CAP_NET_RAW " +
	"(AmbientCapabilities=CAP_NET_RAW) or include its group in sysctl net.ipv4.ping_group_range; " +
	"until then icmp checks report down")

// openICMP prefers the kernel's unprivileged "ping" datagram socket (allowed
// by net.ipv4.ping_group_range, which also covers IPv6) and falls back to a
// raw socket, which needs CAP_NET_RAW. It reports whether the socket is a
// datagram one: there the kernel owns the echo identifier.
func openICMP(v6 bool) (net.PacketConn, bool, error) {
	family, proto, network := syscall.AF_INET, syscall.IPPROTO_ICMP, "ip4:icmp"
	if v6 {
		family, proto, network = syscall.AF_INET6, syscall.IPPROTO_ICMPV6, "ip6:ipv6-icmp"
	}
	fd, err := syscall.Socket(family, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, proto)
	if err == nil {
		f := os.NewFile(uintptr(fd), "icmp")
		pc, ferr := net.FilePacketConn(f)
		f.Close()
		if ferr == nil {
			return pc, true, nil
		}
	}
	pc, rerr := net.ListenPacket(network, "")
	if rerr != nil {
		if errors.Is(rerr, syscall.EPERM) || errors.Is(rerr, syscall.EACCES) {
			return nil, false, errNoICMP
		}
		return nil, false, fmt.Errorf("icmp: %w", rerr)
	}
	return pc, false, nil
}

type icmpChecker struct{}

func (icmpChecker) check(ctx context.Context, p probe) result {
	dst := p.addr.Addr()
	v6 := dst.Is6() && !dst.Is4In6()
	pc, dgram, err := openICMP(v6)
	if err != nil {
		return failed(err.Error())
	}
	defer pc.Close()
	_ = pc.SetDeadline(deadlineOf(ctx))
	defer abortOnCancel(ctx, pc)()

	id, seq := uint16(rand.Uint32()), uint16(rand.Uint32())
	token := make([]byte, 16)
	binary.BigEndian.PutUint64(token, rand.Uint64())
	binary.BigEndian.PutUint64(token[8:], rand.Uint64())
	reqType, replyType := byte(8), byte(0)
	if v6 {
		reqType, replyType = 128, 129
	}
	msg := make([]byte, 8, 8+len(token))
	msg[0] = reqType
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	msg = append(msg, token...)
	if !v6 { // the kernel computes ICMPv6 checksums itself
		binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
	}
	ip := dst.Unmap()
	var to net.Addr = &net.IPAddr{IP: ip.AsSlice(), Zone: ip.Zone()}
	if dgram {
		to = &net.UDPAddr{IP: ip.AsSlice(), Zone: ip.Zone()}
	}
	if _, err := pc.WriteTo(msg, to); err != nil {
		return failed(errReason("icmp send", err))
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return failed(errReason("icmp", err))
		}
		if !sameIP(from, ip) || n < 8+len(token) {
			continue
		}
		r := buf[:n]
		// Raw sockets see every ICMP packet on the host (including our own
		// request on loopback); match type, identifier (raw only: a
		// datagram socket's kernel rewrites it), sequence and payload.
		if r[0] != replyType || binary.BigEndian.Uint16(r[6:]) != seq ||
			(!dgram && binary.BigEndian.Uint16(r[4:]) != id) || !bytes.Equal(r[8:8+len(token)], token) {
			continue
		}
		return passed("icmp: echo reply")
	}
}

func sameIP(a net.Addr, ip netip.Addr) bool {
	var s []byte
	switch v := a.(type) {
	case *net.IPAddr:
		s = v.IP
	case *net.UDPAddr:
		s = v.IP
	default:
		return false
	}
	got, ok := netip.AddrFromSlice(s)
	return ok && got.Unmap() == ip
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
