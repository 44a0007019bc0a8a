//go:build vmtest

package vmtest

import (
	"strings"
	"testing"
	"time"
)

// coldConfig has every kind of virtual server the agent must program:
// tcp, udp, sctp, fwmark, IPv6, persistence with netmask or prefix length,
// scheduler flags, one-packet scheduling, thresholds, and dr, tunnel and nat
// real servers.
const coldConfig = `
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
protocol = "tcp"
scheduler = "wrr"
forwarding = "dr"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  weight = 100
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
  weight = 50
  forwarding = "tunnel"

[[virtual_server]]
name = "nat"
address = "192.0.2.12:8080"
scheduler = "rr"
  [[virtual_server.real_server]]
  address = "198.18.0.13:8080"
  weight = 10
  forwarding = "nat"
  upper_threshold = 20
  lower_threshold = 5

[[virtual_server]]
name = "dns"
address = "198.51.100.10:443"
protocol = "udp"
scheduler = "sh"
scheduler_flags = ["sh-port"]
one_packet = true
  [[virtual_server.real_server]]
  address = "198.18.0.11:443"
  [[virtual_server.real_server]]
  address = "198.18.0.12:443"

[[virtual_server]]
name = "marked"
fwmark = 10
family = "inet"
scheduler = "rr"
persistence = "5m"
forwarding = "tunnel"
  [[virtual_server.real_server]]
  address = "198.18.0.11"
  [[virtual_server.real_server]]
  address = "198.18.0.12"

[[virtual_server]]
name = "web6"
address = "[2001:db8:a::10]:80"
scheduler = "mh"
scheduler_flags = ["mh-port"]
persistence = "1m"
persistence_netmask = 64
  [[virtual_server.real_server]]
  address = "[2001:db8:1::11]:80"
  [[virtual_server.real_server]]
  address = "[2001:db8:1::12]:80"
  weight = 2

[[virtual_server]]
name = "sctp"
address = "192.0.2.13:3868"
protocol = "sctp"
scheduler = "lc"
  [[virtual_server.real_server]]
  address = "198.18.0.11:3868"

[[virtual_server]]
name = "sticky"
address = "203.0.113.10:443"
scheduler = "wlc"
persistence = "5m"
persistence_netmask = "255.255.255.0"
  [[virtual_server.real_server]]
  address = "198.18.0.13:443"
`

var coldTable = lines(`
-A -t 192.0.2.10:80 -s wrr
-a -t 192.0.2.10:80 -r 198.18.0.11:80 -g -w 100
-a -t 192.0.2.10:80 -r 198.18.0.12:80 -i -w 50 --tun-type ipip
-A -t 192.0.2.12:8080 -s rr
-a -t 192.0.2.12:8080 -r 198.18.0.13:8080 -m -w 10
-A -u 198.51.100.10:443 -s sh -o -b sh-port
-a -u 198.51.100.10:443 -r 198.18.0.11:443 -g -w 1
-a -u 198.51.100.10:443 -r 198.18.0.12:443 -g -w 1
-A -f 10 -s rr -p 300
-a -f 10 -r 198.18.0.11:0 -i -w 1 --tun-type ipip
-a -f 10 -r 198.18.0.12:0 -i -w 1 --tun-type ipip
-A -t [2001:db8:a::10]:80 -s mh -p 60 -M 64 -b mh-port
-A --sctp-service 192.0.2.13:3868 -s lc
-a --sctp-service 192.0.2.13:3868 -r 198.18.0.11:3868 -g -w 1
-a -t [2001:db8:a::10]:80 -r [2001:db8:1::11]:80 -g -w 1
-a -t [2001:db8:a::10]:80 -r [2001:db8:1::12]:80 -g -w 2
-A -t 203.0.113.10:443 -s wlc -p 300 -M 255.255.255.0
-a -t 203.0.113.10:443 -r 198.18.0.13:443 -g -w 1
`)

// Test 1: a cold start programs exactly the configured table, in one
// reconcile with one write per service and per real server, and the
// services carry traffic.
func TestColdStart(t *testing.T) {
	resetKernel(t)
	for _, v := range []string{"192.0.2.10", "192.0.2.12", "198.51.100.10", "203.0.113.10", "2001:db8:a::10"} {
		addVIP(t, v)
	}
	s := newSetup(t)
	s.write(coldConfig)
	if out, err := run(agentBin(t), "check", "-c", s.cfg); err != nil {
		t.Fatalf("ipvs-agent check rejects the config: %v\n%s", err, out)
	}
	start := time.Now()
	_, writes, errs := s.startReady()
	t.Logf("cold start: ready after %v", time.Since(start).Round(time.Millisecond))
	checkTable(t, coldTable)
	if want := 7 + 11; writes != want || errs != 0 {
		t.Errorf("start reconcile: writes=%d errors=%d, want writes=%d errors=0", writes, errs, want)
	}
	// Thresholds are not in ipvsadm -S output; read them from -L --thresholds.
	th := sh(t, "ipvsadm", "-Ln", "--thresholds", "-t", "192.0.2.12:8080")
	if !strings.Contains(strings.Join(strings.Fields(th), " "), "198.18.0.13:8080 20 5") {
		t.Errorf("thresholds of 198.18.0.13:8080 not 20/5:\n%s", th)
	}

	t.Run("traffic", func(t *testing.T) {
		// wrr 100:50 over a direct-routing and a tunnel real server: 2:1.
		seen := map[string]int{}
		for i := 0; i < 6; i++ {
			name, err := who("192.0.2.10:80")
			if err != nil {
				t.Fatalf("connection %d to web: %v", i, err)
			}
			seen[name]++
		}
		if seen["rs1"] != 4 || seen["rs2"] != 2 {
			t.Errorf("web answers %v, want rs1:4 rs2:2 (wrr 100:50)", seen)
		}
		for _, c := range []struct{ addr, want string }{
			{"[2001:db8:a::10]:80", "rs1 rs2"},
			{"203.0.113.10:443", "rs3"},
		} {
			name, err := who(c.addr)
			if err != nil || name == "" || !strings.Contains(c.want, name) {
				t.Errorf("%s answered %q, %v; want one of %s", c.addr, name, err, c.want)
			}
		}
		name, err := whoUDP("198.51.100.10:443")
		if err != nil || (name != "rs1" && name != "rs2") {
			t.Errorf("udp 198.51.100.10:443 answered %q, %v; want rs1 or rs2", name, err)
		}
	})
}
