//go:build vmtest

package vmtest

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// kernelDefaults puts the IPVS settings the agent manages back to what a
// freshly loaded ip_vs has, now and when the test ends, so no test inherits
// an earlier test's agent's values (agents leave them as they set them).
func kernelDefaults(t *testing.T) {
	t.Helper()
	reset := func() error {
		for k, v := range map[string]string{"conn_reuse_mode": "1", "expire_nodest_conn": "0", "expire_quiescent_template": "0"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/vs/"+k, []byte(v), 0); err != nil {
				return err
			}
		}
		_, err := run("ipvsadm", "--set", "900", "120", "300")
		return err
	}
	if err := reset(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := reset(); err != nil {
			t.Errorf("reset IPVS settings: %v", err)
		}
	})
}

// unmanaged is an [agent.kernel] table that keeps the agent's hands off
// the given settings: the kernel's defaults then rule them.
func unmanaged(names ...string) string {
	return "[agent.kernel]\nunmanaged = [\"" + strings.Join(names, `", "`) + "\"]\n"
}

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
		switch {
		case err == io.EOF && name != "":
			return name, nil // the server closed first, after the body
		case err != nil:
			return "", fmt.Errorf("after %q: %w", name, err)
		}
		name = strings.TrimSpace(line)
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
	waitTable(t, lines(fmt.Sprintf(`
-A -t %[1]s:80 -s rr%[2]s
-a -t %[1]s:80 -r 198.18.0.11:80 -g -w 1
-a -t %[1]s:80 -r 198.18.0.12:80 -g -w 1
-a -t %[1]s:80 -r 198.18.0.13:80 -g -w 1
`, vip, persistFlag(persistence))), 15*time.Second)
	return a
}

// persistFlag is how ipvsadm -Sn shows the persistence failoverSetup uses.
func persistFlag(persistence string) string {
	if persistence == "" {
		return ""
	}
	return " -p 300"
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
	// Which setting closes which case: on kernel 5.16+ either
	// conn_reuse_mode 3 (FIN_WAIT entries are rescheduled) or
	// expire_nodest_conn (entries to a weight-0 server are) closes it for
	// quiesce; the agent sets both. Client ports are below the ephemeral
	// range (32768-60999), so no other test's connection holds one.
	cases := []struct {
		name, vip, extra, onFailure string
		firstPort                   int
		wantFailures                bool
	}{
		{"kernel defaults refuse", "192.0.2.87", unmanaged("conn_reuse_mode", "expire_nodest_conn", "expire_quiescent_template"), "quiesce", 20000, true},
		{"quiesce", "192.0.2.92", "", "quiesce", 21000, false},
		{"remove", "192.0.2.93", "", "remove", 22000, false},
		{"conn_reuse_mode alone", "192.0.2.89", unmanaged("expire_nodest_conn"), "quiesce", 23000, false},
		{"expire_nodest_conn alone", "192.0.2.88", unmanaged("conn_reuse_mode"), "quiesce", 24000, false},
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
			failures := 0
			var firstErr error
			for p := tc.firstPort; p < tc.firstPort+ports; p++ {
				if _, err := fetchFrom(p, addr); err != nil {
					failures++
					firstErr = cmp.Or(firstErr, err)
				}
			}
			t.Logf("%d of %d ports had gone to rs2; after its failure %d failed (first: %v)", onRS2, ports, failures, firstErr)
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
		{"kernel defaults pin", "192.0.2.94", unmanaged("conn_reuse_mode", "expire_nodest_conn", "expire_quiescent_template"), true},
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
