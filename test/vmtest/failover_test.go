//go:build vmtest

package vmtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// kernelDefaults puts the IPVS sysctls the agent manages back to what a
// freshly loaded ip_vs has, whatever an earlier test's agent left.
func kernelDefaults(t *testing.T) {
	t.Helper()
	for k, v := range map[string]string{"conn_reuse_mode": "1", "expire_nodest_conn": "0", "expire_quiescent_template": "0"} {
		if err := os.WriteFile("/proc/sys/net/ipv4/vs/"+k, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// leaveKernelAlone is an [agent.kernel] table that keeps the agent's hands
// off the settings this file is about: the kernel's defaults then rule.
const leaveKernelAlone = `[agent.kernel]
unmanaged = ["conn_reuse_mode", "expire_nodest_conn", "expire_quiescent_template"]
`

// fetchFrom makes one HTTP request to addr from the client namespace, from
// the given source port, and returns the answering real server's name. The
// real server closes first (HTTP/1.0), so the client's socket ends in CLOSED,
// not TIME_WAIT, and the port can be used again at once, while the director,
// which in direct routing sees only the client's half, keeps its entry for
// the connection in FIN_WAIT (2 minutes).
func fetchFrom(port int, addr string) (string, error) {
	var c net.Conn
	err := client.in(func() error {
		d := net.Dialer{
			Timeout:   3 * time.Second,
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP), Port: port},
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
				if err != nil {
					return err
				}
				return serr
			},
		}
		var err error
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	var name string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return strings.TrimSpace(name), nil // EOF after the body: the server closed first
		}
		name = line
	}
}

// failoverSetup starts an agent for vip (rr over the three real servers on
// port 80, a TCP check with fall 2 (one slow probe on a loaded machine is not a failure)) and waits until every check says up.
func failoverSetup(t *testing.T, vip, extra, onFailure, persistence string) *agent {
	t.Helper()
	resetKernel(t)
	addVIP(t, vip)
	s := newSetup(t)
	s.write(fmt.Sprintf(`%s
[[virtual_server]]
name = "web"
address = "%s:80"
scheduler = "rr"
on_failure = %q
%s
  [virtual_server.check]
  type = "tcp"
  interval = "1s"
  timeout = "1s"
  rise = 1
  fall = 2
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
  [[virtual_server.real_server]]
  address = "198.18.0.13:80"
`, extra, vip, onFailure, persistence))
	a, _, _ := s.startReady()
	for _, r := range reals {
		addr := r.ip4 + ":80"
		a.waitFor(0, "real server health changed", func(e logEntry) bool {
			return e.str("real_server") == addr && e.str("to") == "up"
		}, 15*time.Second)
	}
	return a
}

// kill stops rs's port 80 (new connections are refused) until the test
// ends, and waits until the agent has taken it out of service.
func kill(t *testing.T, rs *node, vip, onFailure string) {
	t.Helper()
	rs.stop(80)
	t.Cleanup(func() {
		if err := rs.serve(80); err != nil {
			t.Errorf("restart %s: %v", rs.name, err)
		}
	})
	dest := rs.ip4 + ":80"
	quiesced := "-a -t " + vip + ":80 -r " + dest + " -g -w 0"
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		tbl := strings.Join(table(t), "\n")
		if onFailure == "quiesce" && strings.Contains(tbl, quiesced) ||
			onFailure == "remove" && !strings.Contains(tbl, dest) {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s not taken out of service (%s) within 15s:\n%s", rs.name, onFailure, tbl)
		}
	}
}

// Issue 15: a client that reconnects from a port whose last connection went
// to a real server that has since failed must not be sent to that server.
// The director still has the old connection's entry (FIN_WAIT in direct
// routing) and, with the kernel's defaults, IPVS follows it for the new SYN:
// the connection is refused. The agent's [agent.kernel] defaults
// (conn_reuse_mode 3, expire_nodest_conn 1) reschedule it instead; the
// first subtest shows the hole with the kernel's defaults, so the others
// prove something.
func TestPortReuseAfterFailure(t *testing.T) {
	cases := []struct {
		name, vip, extra, onFailure string
		firstPort                   int
		wantFailures                bool
	}{
		{"kernel defaults refuse", "192.0.2.91", leaveKernelAlone, "quiesce", 40000, true},
		{"quiesce", "192.0.2.92", "", "quiesce", 41000, false},
		{"remove", "192.0.2.93", "", "remove", 42000, false},
	}
	const ports = 30
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kernelDefaults(t)
			a := failoverSetup(t, tc.vip, tc.extra, tc.onFailure, "")
			if tc.extra == "" {
				if got := strings.TrimSpace(readFile(t, "/proc/sys/net/ipv4/vs/conn_reuse_mode")); got != "3" {
					t.Errorf("conn_reuse_mode = %s after start, want the agent's default 3", got)
				}
			}
			addr := tc.vip + ":80"
			first := map[int]string{}
			for p := tc.firstPort; p < tc.firstPort+ports; p++ {
				name, err := fetchFrom(p, addr)
				if err != nil {
					t.Fatalf("first request from port %d: %v", p, err)
				}
				first[p] = name
			}
			onRS2 := 0
			for p, name := range first {
				if name != "rs2" {
					continue
				}
				onRS2++
				c, ok := findConn(t, fmt.Sprintf("%s:%d", clientIP, p))
				if !ok || c.state != "FIN_WAIT" {
					t.Errorf("port %d: director's entry %+v (found %v), want FIN_WAIT", p, c, ok)
				}
			}
			if onRS2 == 0 {
				t.Fatalf("no first request reached rs2: %v", first)
			}

			kill(t, reals[1], tc.vip, tc.onFailure)
			failures, toRS2 := 0, 0
			for p := tc.firstPort; p < tc.firstPort+ports; p++ {
				name, err := fetchFrom(p, addr)
				switch {
				case err != nil:
					failures++
				case name == "rs2":
					toRS2++
				}
			}
			t.Logf("%d of %d ports had gone to rs2; after its failure: %d failed, %d reached rs2", onRS2, ports, failures, toRS2)
			if toRS2 > 0 {
				t.Errorf("%d new connections reached the failed rs2", toRS2)
			}
			switch {
			case tc.wantFailures && failures == 0:
				t.Errorf("with the kernel's defaults no connection failed: the test does not reproduce the hole")
			case !tc.wantFailures && failures > 0:
				t.Errorf("%d of %d new connections failed after rs2 failed, want 0", failures, ports)
			}
			a.stop(10 * time.Second)
		})
	}
}

// Issue 15: with persistence and on_failure = "quiesce", a persistent
// client pinned to a real server that fails moves to another one: the
// template pointing at a weight-0 server expires (expire_quiescent_template)
// instead of pinning the client to a dead server for the persistence time.
func TestPersistenceMovesOffQuiescedServer(t *testing.T) {
	cases := []struct {
		name, vip, extra string
		wantFailures     bool
	}{
		{"kernel defaults pin", "192.0.2.94", leaveKernelAlone, true},
		{"agent defaults move", "192.0.2.95", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kernelDefaults(t)
			a := failoverSetup(t, tc.vip, tc.extra, "quiesce", `persistence = "5m"`)
			addr := tc.vip + ":80"
			pinned, err := who(addr)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 5; i++ {
				if name, err := who(addr); err != nil || name != pinned {
					t.Fatalf("persistence: request %d went to %q (%v), first to %q", i, name, err, pinned)
				}
			}
			kill(t, realByName(pinned), tc.vip, "quiesce")
			failures := 0
			for i := 0; i < 5; i++ {
				name, err := who(addr)
				if err != nil || name == pinned {
					failures++
				}
			}
			t.Logf("client pinned to %s; after it was quiesced %d of 5 requests failed", pinned, failures)
			switch {
			case tc.wantFailures && failures == 0:
				t.Errorf("with the kernel's defaults the client moved: the test does not reproduce the pinning")
			case !tc.wantFailures && failures > 0:
				t.Errorf("%d of 5 requests of the persistent client failed after its server was quiesced, want 0", failures)
			}
			a.stop(10 * time.Second)
		})
	}
}
