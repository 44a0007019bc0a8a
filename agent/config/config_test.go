package config

import (
	"errors"
	"maps"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/settings"
)

const good = `
[agent]
state_file = "/tmp/state.json"
resync_interval = "5s"
check_budget = 3000

[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
scheduler = "wrr"
persistence = "5m"
persistence_netmask = "255.255.255.0"

  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  weight = 100

  [[virtual_server.real_server]]
  address = "198.18.0.12:8080"
  forwarding = "nat"
  upper_threshold = 10
  lower_threshold = 5

[[virtual_server]]
name = "dns"
address = "[2001:db8::53]:53"
protocol = "udp"
scheduler = "mh"
scheduler_flags = ["mh-port"]
one_packet = true

  [[virtual_server.real_server]]
  address = "[2001:db8:1::1]:53"

[[virtual_server]]
name = "marked"
fwmark = 10
family = "inet"
scheduler = "sh"
scheduler_flags = ["sh-fallback", "sh-port"]
forwarding = "tunnel"

  [[virtual_server.real_server]]
  address = "198.18.1.1"
`

func TestParseGood(t *testing.T) {
	cfg, err := Parse("good.toml", good)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.StateFile != "/tmp/state.json" || cfg.ResyncInterval != 5*time.Second || cfg.CheckBudget != 3000 {
		t.Errorf("agent settings: %+v", cfg)
	}
	if len(cfg.VirtualServers) != 3 {
		t.Fatalf("got %d virtual servers", len(cfg.VirtualServers))
	}
	web := cfg.VirtualServers[0]
	wantKey := model.ServiceKey{Family: model.FamilyInet, Protocol: model.ProtoTCP, Addr: netip.MustParseAddr("192.0.2.10"), Port: 80}
	if web.Service.Key != wantKey {
		t.Errorf("web key = %+v", web.Service.Key)
	}
	if web.Service.Flags != model.FlagPersistent || web.Service.Timeout != 300 || web.Service.Netmask != 0xffffff00 {
		t.Errorf("web persistence: %+v", web.Service)
	}
	if w := web.RealServers[0].Dest; w.Weight != 100 || w.Forward != model.ForwardDR {
		t.Errorf("rs0: %+v", w)
	}
	if n := web.RealServers[1].Dest; n.Forward != model.ForwardNAT || n.Weight != 1 || n.UpperThreshold != 10 || n.LowerThreshold != 5 {
		t.Errorf("rs1: %+v", n)
	}
	dns := cfg.VirtualServers[1]
	if dns.Service.Key.Family != model.FamilyInet6 || dns.Service.Key.Protocol != model.ProtoUDP ||
		dns.Service.Flags != model.FlagSched2|model.FlagOnePacket || dns.Service.Netmask != 128 {
		t.Errorf("dns: %+v", dns.Service)
	}
	m := cfg.VirtualServers[2]
	if m.Service.Key.FWMark != 10 || m.Service.Flags != model.FlagSched1|model.FlagSched2 || m.RealServers[0].Dest.Forward != model.ForwardTunnel || m.RealServers[0].Dest.Key.Port != 0 {
		t.Errorf("fwmark: %+v %+v", m.Service, m.RealServers[0].Dest)
	}
	if web.Service.Scheduler != "wrr" || cfg.VirtualServers[0].OnFailure != "quiesce" {
		t.Errorf("defaults: %+v", web)
	}
}

// Each class of bad input is reported with its position, and all problems
// of a file come at once.
func TestParseProblems(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string // "line:col: substring"
	}{
		{"syntax error", "[agent]\nstate_file = \n", []string{"2:"}},
		{"unknown key", "[agent]\nstate_fil = \"/x\"\n", []string{`2:1: unknown key "state_fil"`}},
		{"unknown key in the second real server", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.2:80"
  wieght = 3
`, []string{`9:3: unknown key "wieght"`}},
		{"duplicate names and addresses", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
`, []string{`6:1: duplicate virtual server name "a" (also at line 3)`, `5:3: duplicate virtual server tcp 192.0.2.1:80 (also at line 2)`}},
		{"same address, other protocol is fine; duplicate real server is not", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:53"
protocol = "udp"
[[virtual_server]]
name = "b"
address = "192.0.2.1:53"
  [[virtual_server.real_server]]
  address = "198.18.0.1:53"
  [[virtual_server.real_server]]
  address = "198.18.0.1:53"
`, []string{`12:3: duplicate real server 198.18.0.1:53 in virtual server "b" (also at line 10)`}},
		{"invalid addresses and ports", `
[[virtual_server]]
name = "a"
address = "192.0.2.300:80"
[[virtual_server]]
name = "b"
address = "192.0.2.1"
[[virtual_server]]
name = "c"
address = "192.0.2.2:80"
  [[virtual_server.real_server]]
  address = "198.18.0.1:99999"
`, []string{`4:1: invalid address "192.0.2.300:80"`, `7:1: address "192.0.2.1" needs a port`, `12:3: invalid address "198.18.0.1:99999"`}},
		{"weight out of range", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  weight = 70000
`, []string{`7:3: weight 70000 out of range 0..65535`}},
		{"unknown scheduler and flags", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
scheduler = "fastest"
[[virtual_server]]
name = "b"
address = "192.0.2.2:80"
scheduler = "wrr"
scheduler_flags = ["sh-port", "turbo"]
`, []string{`5:1: unknown scheduler "fastest"`, `10:1: scheduler flag "sh-port" needs scheduler "sh", not "wrr"`, `10:1: unknown scheduler flag "turbo"`}},
		{"address and fwmark both, or neither", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
fwmark = 3
[[virtual_server]]
name = "b"
`, []string{`5:1: set either address or fwmark, not both`, `6:3: virtual server "b" needs an address`}},
		{"protocol with fwmark", `
[[virtual_server]]
name = "a"
fwmark = 3
protocol = "udp"
`, []string{`5:1: protocol cannot be set on a fwmark virtual server`}},
		{"DR port mismatch", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.1:8080"
  [[virtual_server.real_server]]
  address = "198.18.0.2:8080"
  forwarding = "nat"
`, []string{`6:3: real server port 8080 differs from the virtual server's port 80: with dr forwarding`}},
		{"mixed families", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
forwarding = "tunnel"
  [[virtual_server.real_server]]
  address = "[2001:db8::1]:80"
`, []string{`7:3: real server [2001:db8::1]:80 is IPv6 but the virtual server is IPv4: families cannot be mixed`}},
		{"invalid durations", `
[agent]
resync_interval = "often"
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
persistence = "5 minutes"
`, []string{`3:1: invalid duration "often"`, `7:1: invalid duration "5 minutes"`}},
		{"check_budget out of range", "[agent]\ncheck_budget = 0\n", []string{`2:1: check_budget 0 out of range`}},
		{"kernel settings out of range", `
[agent.kernel]
conn_reuse_mode = 4
tcp_timeout = "1500ms"
udp_timeout = "800h"
tcpfin_timeout = "0s"
unmanaged = ["conn_reuse", "conntrack"]
`, []string{`3:1: conn_reuse_mode 4 out of range 0..3`, `4:1: tcp_timeout 1.5s: the kernel counts whole seconds`,
			`5:1: udp_timeout 800h0m0s is above the kernel's maximum`, `6:1: duration 0s is below the minimum 1s`,
			`7:1: unmanaged[0]: unknown setting "conn_reuse"`}},
		{"hysteresis out of range", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
quorum = 2
hysteresis = 2
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.2:80"
[[virtual_server]]
name = "b"
address = "192.0.2.2:80"
quorum = 2
hysteresis = 1
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.2:80"
`, []string{`6:1: hysteresis 2 out of range 0..1`, `15:1: quorum 2 + hysteresis 1 is more than the 2 real servers`}},
		{"sorry server that could never be used", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
quorum = 0
sorry_server = "198.18.0.9:80"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
`, []string{`6:1: sorry_server with quorum = 0 would never be used`}},
		{"one_packet on tcp", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
one_packet = true
`, []string{`5:1: one_packet (one-packet scheduling) is for UDP virtual servers only`}},
		{"a broken shared check is reported once, at its table", `
[defaults.check]
type = "tcp"
interval = "1x"
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.2:80"
    [virtual_server.real_server.check]
    type = "nosuch"
    interval = "2s"
`, []string{`2:2: check of virtual server "a"`, `12:6: check for real server 198.18.0.2:80`}},
		{"wrong TOML type", `
[[virtual_server]]
name = "a"
address = "192.0.2.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
  weight = "heavy"
`, []string{`7:`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.toml", tc.src)
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want Problems, got %v", err)
			}
			if len(ps) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n%v", len(ps), len(tc.want), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), "f.toml:"+w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
		})
	}
}

// The example shipped in packaging/ must always pass `ipvs-agent check`.
func TestShippedExampleIsValid(t *testing.T) {
	for _, f := range []string{"../../packaging/ipvs-agent.toml"} {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// Without [agent.kernel] the agent keeps the direct-routing defaults; keys
// override them, timeouts are managed only when set, and unmanaged settings
// are left out entirely.
func TestKernelSettings(t *testing.T) {
	cfg, err := Parse("k.toml", "")
	if err != nil {
		t.Fatal(err)
	}
	want := settings.Values{settings.ConnReuseMode: 3, settings.ExpireNodestConn: 1, settings.ExpireQuiescentTemplate: 1}
	if !maps.Equal(cfg.Kernel, want) {
		t.Errorf("defaults: %v, want %v", cfg.Kernel, want)
	}
	cfg, err = Parse("k.toml", `
[agent.kernel]
conn_reuse_mode = 0
conntrack = true
tcp_timeout = "15m"
unmanaged = ["expire_nodest_conn", "sloppy_sctp", "timeout_udp"]
`)
	if err != nil {
		t.Fatal(err)
	}
	want = settings.Values{settings.ConnReuseMode: 0, settings.ExpireQuiescentTemplate: 1,
		settings.Conntrack: 1, settings.TimeoutTCP: 900}
	if !maps.Equal(cfg.Kernel, want) {
		t.Errorf("set: %v, want %v", cfg.Kernel, want)
	}
	if !cfg.KernelUnmanaged[settings.SloppySCTP] || len(cfg.KernelUnmanaged) != 3 {
		t.Errorf("unmanaged: %v", cfg.KernelUnmanaged)
	}
}
