//go:build vmtest

package vmtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The topology, built once per VM boot in TestMain:
//
//	client (ns)  198.18.0.100  2001:db8:1::100 --+
//	rs1    (ns)  198.18.0.11   2001:db8:1::11  --+-- br0 (director = the VM's root
//	rs2    (ns)  198.18.0.12   2001:db8:1::12  --+   namespace) 198.18.0.1 2001:db8:1::1
//	rs3    (ns)  198.18.0.13   2001:db8:1::13  --+   VIPs on dummy ipvs0; the agent runs here
//
// The client routes the VIP ranges via the director. Real servers treat every
// VIP range as local (a "local" route on lo, ARP for it suppressed by
// arp_ignore=1/arp_announce=2), so with direct routing the director only
// rewrites the destination MAC and the real server answers the client itself.
var vipRanges = []string{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8:a::/64"}

const (
	directorIP  = "198.18.0.1"
	directorIP6 = "2001:db8:1::1"
	clientIP    = "198.18.0.100"
)

// Ports every real server listens on (TCP and UDP, IPv4 and IPv6).
var servicePorts = []int{80, 443, 8080}

type node struct {
	name string
	ip4  string
	ip6  string
	ns   netns.NsHandle

	mu        sync.Mutex
	listeners map[int][]func() // port -> closers of that port's sockets
}

var (
	client *node
	reals  []*node
)

// sh runs a command line in the director's namespace and fails the test on error.
func sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := run(args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

func setupTopology() error {
	steps := [][]string{
		{"sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"},
		{"sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"},
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "addr", "add", directorIP + "/24", "dev", "br0"},
		{"ip", "addr", "add", directorIP6 + "/64", "dev", "br0", "nodad"},
		{"ip", "link", "set", "br0", "up"},
		{"ip", "link", "add", "ipvs0", "type", "dummy"},
		{"ip", "link", "set", "ipvs0", "up"},
	}
	mk := func(name, ip4, ip6 string) *node {
		n := &node{name: name, ip4: ip4, ip6: ip6, listeners: map[int][]func(){}}
		in := func(a ...string) []string { return append([]string{"ip", "netns", "exec", name}, a...) }
		steps = append(steps,
			[]string{"ip", "netns", "add", name},
			[]string{"ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name},
			[]string{"ip", "link", "set", name, "master", "br0", "up"},
			in("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"),
			in("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"),
			in("ip", "link", "set", "lo", "up"),
			in("ip", "addr", "add", ip4+"/24", "dev", "eth0"),
			in("ip", "addr", "add", ip6+"/64", "dev", "eth0", "nodad"),
			in("ip", "link", "set", "eth0", "up"),
		)
		return n
	}
	client = mk("client", clientIP, "2001:db8:1::100")
	for _, r := range vipRanges {
		via := directorIP
		if strings.Contains(r, ":") {
			via = directorIP6
		}
		steps = append(steps, []string{"ip", "netns", "exec", "client", "ip", "route", "add", r, "via", via})
	}
	for i := 1; i <= 3; i++ {
		r := mk(fmt.Sprintf("rs%d", i), fmt.Sprintf("198.18.0.1%d", i), fmt.Sprintf("2001:db8:1::1%d", i))
		reals = append(reals, r)
		for _, s := range []string{"all", "eth0"} {
			steps = append(steps,
				[]string{"ip", "netns", "exec", r.name, "sysctl", "-qw", "net.ipv4.conf." + s + ".arp_ignore=1"},
				[]string{"ip", "netns", "exec", r.name, "sysctl", "-qw", "net.ipv4.conf." + s + ".arp_announce=2"})
		}
		for _, v := range vipRanges {
			steps = append(steps, []string{"ip", "netns", "exec", r.name, "ip", "route", "add", "local", v, "dev", "lo"})
		}
		// Tunnel real servers decapsulate on the ipip/ip6tnl fallback devices.
		// NAT real servers would answer through the director.
		steps = append(steps,
			[]string{"ip", "netns", "exec", r.name, "ip", "link", "set", "tunl0", "up"},
			[]string{"ip", "netns", "exec", r.name, "ip", "link", "set", "ip6tnl0", "up"},
			[]string{"ip", "netns", "exec", r.name, "ip", "route", "add", "default", "via", directorIP},
			[]string{"ip", "netns", "exec", r.name, "ip", "-6", "route", "add", "default", "via", directorIP6})
	}
	for _, s := range steps {
		if out, err := run(s...); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	for _, n := range append([]*node{client}, reals...) {
		h, err := netns.GetFromName(n.name)
		if err != nil {
			return err
		}
		n.ns = h
	}
	for _, r := range reals {
		for _, p := range servicePorts {
			if err := r.serve(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// in runs f on an OS thread switched into n's namespace. Sockets keep the
// namespace they were created in, so f only needs to create them; the thread
// is never unlocked, so the runtime discards it rather than reuse it elsewhere.
func (n *node) in(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(n.ns); err != nil {
			ch <- err
			return
		}
		ch <- f()
	}()
	return <-ch
}

// serve starts the real server's TCP and UDP answerers on port (IPv4 and IPv6).
// TCP: for each line received, reply with the server's name; a line starting
// with "GET " gets a minimal HTTP/1.0 answer instead and the connection closes.
// UDP: every datagram is answered with the name, from the address it was sent
// to (the VIP), which is what a DR real server must do.
func (n *node) serve(port int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.listeners[port]) > 0 {
		return nil
	}
	var closers []func()
	err := n.in(func() error {
		for _, fam := range []string{"4", "6"} {
			ln, err := net.Listen("tcp"+fam, fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			closers = append(closers, func() { ln.Close() })
			go n.acceptLoop(ln)
			pc, err := net.ListenPacket("udp"+fam, fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			uc := pc.(*net.UDPConn)
			if err := setPktinfo(uc, fam == "6"); err != nil {
				return err
			}
			closers = append(closers, func() { uc.Close() })
			go n.udpLoop(uc)
		}
		return nil
	})
	if err != nil {
		for _, c := range closers {
			c()
		}
		return fmt.Errorf("%s: serve %d: %w", n.name, port, err)
	}
	n.listeners[port] = closers
	return nil
}

// stop closes the listeners on port (established connections stay up).
func (n *node) stop(port int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.listeners[port] {
		c()
	}
	delete(n.listeners, port)
}

func (n *node) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if strings.HasPrefix(line, "GET ") {
					for {
						h, err := br.ReadString('\n')
						if err != nil || strings.TrimSpace(h) == "" {
							break
						}
					}
					fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s\n", len(n.name)+1, n.name)
					return
				}
				if _, err := fmt.Fprintf(c, "%s\n", n.name); err != nil {
					return
				}
			}
		}()
	}
}

func setPktinfo(c *net.UDPConn, v6 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// udpLoop answers from the datagram's destination address: the received
// PKTINFO control message, sent back, makes the kernel use it as the source.
func (n *node) udpLoop(c *net.UDPConn) {
	buf := make([]byte, 2048)
	oob := make([]byte, 512)
	for {
		_, oobn, _, from, err := c.ReadMsgUDP(buf, oob)
		if err != nil {
			return
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			continue
		}
		var reply []byte
		for _, m := range msgs {
			switch {
			case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO:
				// struct in_pktinfo: ifindex(4) spec_dst(4) addr(4); answer from addr.
				var pi unix.Inet4Pktinfo
				copy(pi.Spec_dst[:], m.Data[8:12])
				reply = unix.PktInfo4(&pi)
			case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO:
				// struct in6_pktinfo: addr(16) ifindex(4).
				var pi unix.Inet6Pktinfo
				copy(pi.Addr[:], m.Data[0:16])
				reply = unix.PktInfo6(&pi)
			}
		}
		c.WriteMsgUDP([]byte(n.name+"\n"), reply, from)
	}
}

// dial opens a TCP connection from the client namespace.
func dial(addr string) (net.Conn, error) {
	var c net.Conn
	err := client.in(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	return c, err
}

// ask sends one line on c and returns the answering server's name.
func ask(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("who\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// who makes one new TCP connection to addr and returns who answered.
func who(addr string) (string, error) {
	c, err := dial(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return ask(c)
}

// whoUDP sends one datagram to addr from the client and returns who answered.
func whoUDP(addr string) (string, error) {
	var c net.Conn
	if err := client.in(func() error {
		var err error
		c, err = net.Dial("udp", addr)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("who\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}

// addVIP makes addr (no port) local on the director's dummy interface.
func addVIP(t testing.TB, ip string) {
	t.Helper()
	plen := "/32"
	if strings.Contains(ip, ":") {
		plen = "/128"
	}
	sh(t, "ip", "addr", "replace", ip+plen, "dev", "ipvs0")
}

// The main goroutine keeps the main thread, so no namespace switch (node.in)
// ever lands on it: /proc/net and friends follow the main thread.
func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) {
	if os.Getenv("VMTEST_IN_VM") != "1" {
		fmt.Fprintln(os.Stderr, "vmtest: these tests rebuild the kernel's network setup; run them in the VM: make vmtest")
		os.Exit(1)
	}
	if err := setupTopology(); err != nil {
		fmt.Fprintln(os.Stderr, "vmtest: topology:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
