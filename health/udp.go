package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// maxDatagram bounds a UDP or DNS reply read.
const maxDatagram = 4096

// exchangeUDP sends one datagram on a connected socket and waits for one
// reply. A connected socket is what makes the kernel hand us an ICMP port
// unreachable as ECONNREFUSED on read.
func exchangeUDP(ctx context.Context, p probe, payload []byte) ([]byte, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", p.addr.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(deadlineOf(ctx))
	defer abortOnCancel(ctx, c)()
	if _, err := c.Write(payload); err != nil {
		return nil, err
	}
	buf := make([]byte, maxDatagram)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func udpReason(prefix string, err error) string {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return prefix + ": ICMP port unreachable"
	}
	return errReason(prefix, err)
}

// udpChecker sends a payload and expects a reply, optionally containing
// expect. Silence until the timeout and ICMP port unreachable both fail.
type udpChecker struct{ send, expect []byte }

func (u udpChecker) check(ctx context.Context, p probe) result {
	reply, err := exchangeUDP(ctx, p, u.send)
	if err != nil {
		return failed(udpReason("udp", err))
	}
	if len(u.expect) > 0 && !bytes.Contains(reply, u.expect) {
		return failed(fmt.Sprintf("udp: reply (%d bytes) lacks expected %q", len(reply), u.expect))
	}
	return passed(fmt.Sprintf("udp: %d-byte reply", len(reply)))
}
