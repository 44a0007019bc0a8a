//go:build vmtest

package vmtest

import (
	"net"
	"testing"
)

// TestDirectRouting proves the harness itself, without the agent: IPVS
// programmed by ipvsadm forwards a client's connection to a real server by
// direct routing, the real server answers the client itself, and the
// director's connection table holds the entry.
func TestDirectRouting(t *testing.T) {
	resetKernel(t)
	for _, vip := range []string{"192.0.2.1", "2001:db8:a::1"} {
		addVIP(t, vip)
	}
	sh(t, "ipvsadm", "-A", "-t", "192.0.2.1:80", "-s", "rr")
	sh(t, "ipvsadm", "-a", "-t", "192.0.2.1:80", "-r", "198.18.0.12:80", "-g", "-w", "1")
	sh(t, "ipvsadm", "-A", "-u", "192.0.2.1:80", "-s", "rr")
	sh(t, "ipvsadm", "-a", "-u", "192.0.2.1:80", "-r", "198.18.0.13:80", "-g", "-w", "1")
	sh(t, "ipvsadm", "-A", "-t", "[2001:db8:a::1]:80", "-s", "rr")
	sh(t, "ipvsadm", "-a", "-t", "[2001:db8:a::1]:80", "-r", "[2001:db8:1::11]:80", "-g", "-w", "1")

	t.Run("tcp4", func(t *testing.T) {
		c, err := dial("192.0.2.1:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		name, err := ask(c)
		if err != nil || name != "rs2" {
			t.Fatalf("answer %q, %v; want rs2", name, err)
		}
		e, ok := findConn(t, c.LocalAddr().String())
		if !ok {
			t.Fatalf("no entry for %s in the director's connection table:\n%+v", c.LocalAddr(), conns(t))
		}
		if e.proto != "TCP" || e.vip != "192.0.2.1:80" || e.real != "198.18.0.12:80" || e.state != "ESTABLISHED" {
			t.Fatalf("connection entry %+v", e)
		}
	})
	t.Run("udp4", func(t *testing.T) {
		name, err := whoUDP("192.0.2.1:80")
		if err != nil || name != "rs3" {
			t.Fatalf("answer %q, %v; want rs3", name, err)
		}
		found := false
		for _, e := range conns(t) {
			if e.proto == "UDP" && e.vip == "192.0.2.1:80" && e.real == "198.18.0.13:80" {
				found = true
			}
		}
		if !found {
			t.Fatalf("no UDP entry in the connection table: %+v", conns(t))
		}
	})
	t.Run("tcp6", func(t *testing.T) {
		c, err := dial("[2001:db8:a::1]:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		name, err := ask(c)
		if err != nil || name != "rs1" {
			t.Fatalf("answer %q, %v; want rs1", name, err)
		}
		la := c.LocalAddr().(*net.TCPAddr)
		if _, ok := findConn(t, "["+la.IP.String()+"]:"+itoa(la.Port)); !ok {
			t.Fatalf("no entry for %s: %+v", la, conns(t))
		}
	})
}
