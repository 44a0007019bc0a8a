//go:build vmtest

// These tests run inside the test VM against the real ip_vs module (make
// vmtest). They pin down what the fake must imitate: the kernel's answers
// and the round trip of every attribute the agent sets.
package kernel

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
)

func openForTest(t *testing.T) *Netlink {
	t.Helper()
	n, err := Open()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(n.Close)
	return n
}

func cleanup(t *testing.T, n *Netlink, keys ...model.ServiceKey) {
	t.Cleanup(func() {
		for _, k := range keys {
			_ = n.DeleteService(k)
		}
	})
}

func TestNetlinkRoundTrip(t *testing.T) {
	n := openForTest(t)
	v4 := model.Service{
		Key:       model.ServiceKey{Family: model.FamilyInet, Protocol: model.ProtoTCP, Addr: netip.MustParseAddr("203.0.113.80"), Port: 80},
		Scheduler: "sh", Flags: model.FlagPersistent | model.FlagSched1 | model.FlagSched2, Timeout: 300, Netmask: 0xffffff00,
	}
	v6 := model.Service{
		Key:       model.ServiceKey{Family: model.FamilyInet6, Protocol: model.ProtoUDP, Addr: netip.MustParseAddr("2001:db8::80"), Port: 53},
		Scheduler: "mh", Flags: model.FlagOnePacket, Netmask: 128,
	}
	fw := model.Service{Key: model.ServiceKey{Family: model.FamilyInet, FWMark: 77}, Scheduler: "wrr", Netmask: 0xffffffff}
	cleanup(t, n, v4.Key, v6.Key, fw.Key)
	for _, s := range []model.Service{v4, v6, fw} {
		if err := n.AddService(s); err != nil {
			t.Fatalf("AddService %s: %v", s.Key, err)
		}
	}
	dests := map[model.ServiceKey]model.Destination{
		v4.Key: {Key: model.DestKey{Addr: netip.MustParseAddr("198.18.7.1"), Port: 80}, Weight: 65535, Forward: model.ForwardDR, UpperThreshold: 100, LowerThreshold: 10},
		v6.Key: {Key: model.DestKey{Addr: netip.MustParseAddr("2001:db8:7::1"), Port: 5353}, Weight: 3, Forward: model.ForwardNAT},
		fw.Key: {Key: model.DestKey{Addr: netip.MustParseAddr("198.18.7.2"), Port: 0}, Weight: 0, Forward: model.ForwardTunnel},
	}
	for k, d := range dests {
		if err := n.AddDestination(k, d); err != nil {
			t.Fatalf("AddDestination %s %s: %v", k, d.Key, err)
		}
	}

	got, err := n.Services()
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, s := range got {
		for _, want := range []model.Service{v4, v6, fw} {
			if s.Key == want.Key {
				found++
				// The kernel adds IP_VS_SVC_F_HASHED; the adapter must hide it,
				// or every reconcile would see a difference.
				if s != want {
					t.Errorf("service read back as %+v, want %+v", s, want)
				}
			}
		}
	}
	if found != 3 {
		t.Fatalf("found %d of 3 services in %+v", found, got)
	}
	for k, want := range dests {
		ds, err := n.Destinations(k)
		if err != nil || len(ds) != 1 {
			t.Fatalf("Destinations %s: %v %+v", k, err, ds)
		}
		d := ds[0]
		d.Family = 0
		if !d.SameAttrs(want) || d.Key != want.Key {
			t.Errorf("%s: destination read back as %+v, want %+v", k, d, want)
		}
	}

	// ipvsadm, which reads the kernel on its own, must see what we meant:
	// a round trip through our own adapter cannot catch a byte-order slip.
	out, err := exec.Command("ipvsadm", "-Sn").CombinedOutput()
	if err != nil {
		t.Fatalf("ipvsadm -Sn: %v\n%s", err, out)
	}
	for _, want := range []string{
		"-A -t 203.0.113.80:80 -s sh -p 300 -M 255.255.255.0 -b sh-fallback,sh-port",
		"-a -t 203.0.113.80:80 -r 198.18.7.1:80 -g -w 65535", // ipvsadm -S omits thresholds; read back above
		"-A -u [2001:db8::80]:53 -s mh -o",
		"-a -u [2001:db8::80]:53 -r [2001:db8:7::1]:5353 -m -w 3",
		"-A -f 77 -s wrr",
	} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("ipvsadm -Sn lacks %q:\n%s", want, out)
		}
	}

	// In-place updates keep the service (and its connections).
	v4.Scheduler, v4.Flags, v4.Timeout = "wrr", 0, 0
	v4.Netmask = 0xffffffff
	if err := n.UpdateService(v4); err != nil {
		t.Fatal(err)
	}
	d := dests[v4.Key]
	d.Weight = 7
	if err := n.UpdateDestination(v4.Key, d); err != nil {
		t.Fatal(err)
	}
	ds, _ := n.Destinations(v4.Key)
	if len(ds) != 1 || ds[0].Weight != 7 {
		t.Fatalf("update weight: %+v", ds)
	}
}

func TestNetlinkErrors(t *testing.T) {
	n := openForTest(t)
	t.Cleanup(func() {
		for _, k := range errorSemanticsKeys() {
			_ = n.DeleteService(k)
		}
	})
	testErrorSemantics(t, n)
}
