//go:build systemtest

package system

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

// The topology, built at the start of each phase (a reboot removes it):
//
//	client (ns) 198.18.0.100 --+
//	rs1    (ns) 198.18.0.11  --+-- br0 198.18.0.1 (director: the VM's root
//	rs2    (ns) 198.18.0.12  --+   namespace; VIPs 192.0.2.10/11 on dummy ipvs0)
//
// Direct routing: real servers hold 192.0.2.0/24 as local on lo (ARP for it
// suppressed) and answer the client themselves. Each serves HTTP on :80
// (the body is its name) and a line service on :9000 (each line is answered
// with its name), in-process from a thread switched into its namespace.
const (
	vipWeb   = "192.0.2.10:80"
	vipLines = "192.0.2.11:9000"
)

type node struct {
	name string
	ip   string
	ns   netns.NsHandle
}

var client *node

func cmd(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

func setupTopology() error {
	steps := [][]string{
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "addr", "add", "198.18.0.1/24", "dev", "br0"},
		{"ip", "link", "set", "br0", "up"},
		{"ip", "link", "add", "ipvs0", "type", "dummy"},
		{"ip", "addr", "add", "192.0.2.10/32", "dev", "ipvs0"},
		{"ip", "addr", "add", "192.0.2.11/32", "dev", "ipvs0"},
		{"ip", "link", "set", "ipvs0", "up"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	in := func(ns string, a ...string) []string { return append([]string{"ip", "netns", "exec", ns}, a...) }
	for _, n := range []node{{name: "client", ip: "198.18.0.100"}, {name: "rs1", ip: "198.18.0.11"}, {name: "rs2", ip: "198.18.0.12"}} {
		steps = append(steps,
			[]string{"ip", "netns", "add", n.name},
			[]string{"ip", "link", "add", n.name, "type", "veth", "peer", "name", "eth0", "netns", n.name},
			[]string{"ip", "link", "set", n.name, "master", "br0", "up"},
			in(n.name, "ip", "link", "set", "lo", "up"),
			in(n.name, "ip", "addr", "add", n.ip+"/24", "dev", "eth0"),
			in(n.name, "ip", "link", "set", "eth0", "up"),
		)
		if n.name == "client" {
			steps = append(steps, in(n.name, "ip", "route", "add", "192.0.2.0/24", "via", "198.18.0.1"))
			continue
		}
		for _, s := range []string{"all", "eth0"} {
			steps = append(steps,
				in(n.name, "sysctl", "-qw", "net.ipv4.conf."+s+".arp_ignore=1"),
				in(n.name, "sysctl", "-qw", "net.ipv4.conf."+s+".arp_announce=2"))
		}
		steps = append(steps,
			in(n.name, "ip", "route", "add", "local", "192.0.2.0/24", "dev", "lo"),
			in(n.name, "ip", "route", "add", "default", "via", "198.18.0.1"))
	}
	for _, s := range steps {
		if out, err := cmd(s...); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	for _, name := range []string{"client", "rs1", "rs2"} {
		h, err := netns.GetFromName(name)
		if err != nil {
			return err
		}
		n := &node{name: name, ns: h}
		if name == "client" {
			client = n
			go dialer()
			continue
		}
		if err := n.serve(); err != nil {
			return err
		}
	}
	return nil
}

// in runs f on an OS thread switched into n's namespace; sockets created
// there stay in it. The thread is never unlocked, so the runtime retires it.
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

func (n *node) serve() error {
	return n.in(func() error {
		web, err := net.Listen("tcp4", ":80")
		if err != nil {
			return err
		}
		lines, err := net.Listen("tcp4", ":9000")
		if err != nil {
			return err
		}
		go accept(web, func(c net.Conn) {
			r := bufio.NewReader(c)
			for { // read the request head, answer once, close
				l, err := r.ReadString('\n')
				if err != nil || strings.TrimSpace(l) == "" {
					break
				}
			}
			fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(n.name), n.name)
		})
		go accept(lines, func(c net.Conn) {
			s := bufio.NewScanner(c)
			for s.Scan() {
				fmt.Fprintf(c, "%s\n", n.name)
			}
		})
		return nil
	})
}

func accept(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); handle(c) }()
	}
}

type dialReq struct {
	addr  string
	reply chan dialRes
}
type dialRes struct {
	c   net.Conn
	err error
}

var dials = make(chan dialReq)

// dialer serves dial from one thread that stays in the client namespace.
func dialer() {
	runtime.LockOSThread()
	if err := netns.Set(client.ns); err != nil {
		panic(err)
	}
	for r := range dials {
		c, err := net.DialTimeout("tcp4", r.addr, 3*time.Second)
		r.reply <- dialRes{c, err}
	}
}

// dial connects from the client namespace.
func dial(addr string) (net.Conn, error) {
	r := dialReq{addr, make(chan dialRes, 1)}
	dials <- r
	res := <-r.reply
	return res.c, res.err
}

// get makes one HTTP/1.0 request to the web VIP from the client namespace
// and returns the real server's name.
func get() (string, error) {
	c, err := dial(vipWeb)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	status, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.Contains(status, " 200 ") {
		return "", fmt.Errorf("status %q", status)
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if strings.TrimSpace(l) == "" {
			break
		}
	}
	body, _ := r.ReadString(0)
	return body, nil
}
