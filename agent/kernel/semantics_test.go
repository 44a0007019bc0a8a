package kernel

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
)

// testErrorSemantics is run against the Fake here and against the real
// kernel in the VM (netlink_vm_test.go), which is what makes the fake's
// answers trustworthy in the agent's unit tests.
func testErrorSemantics(t *testing.T, k IPVS) {
	keys := errorSemanticsKeys()
	s := model.Service{Key: keys[0], Scheduler: "rr"}
	d := model.Destination{Key: model.DestKey{Addr: netip.MustParseAddr("198.18.7.9"), Port: 80}, Weight: 1, Forward: model.ForwardDR}

	if err := k.DeleteService(s.Key); !errors.Is(err, ErrNoService) {
		t.Errorf("delete missing service: %v, want ErrNoService", err)
	}
	if err := k.AddDestination(s.Key, d); !errors.Is(err, ErrNoService) {
		t.Errorf("add destination to missing service: %v, want ErrNoService", err)
	}
	if err := k.AddService(s); err != nil {
		t.Fatal(err)
	}
	if err := k.AddService(s); !errors.Is(err, ErrExists) {
		t.Errorf("add service twice: %v, want ErrExists", err)
	}
	if err := k.DeleteDestination(s.Key, d.Key); !errors.Is(err, ErrNoDest) {
		t.Errorf("delete missing destination: %v, want ErrNoDest", err)
	}
	if err := k.UpdateDestination(s.Key, d); !errors.Is(err, ErrNoDest) {
		t.Errorf("update missing destination: %v, want ErrNoDest", err)
	}
	if err := k.AddDestination(s.Key, d); err != nil {
		t.Fatal(err)
	}
	if err := k.AddDestination(s.Key, d); !errors.Is(err, ErrExists) {
		t.Errorf("add destination twice: %v, want ErrExists", err)
	}
	ds, err := k.Destinations(s.Key)
	if err != nil || len(ds) != 1 || ds[0].Key != d.Key {
		t.Errorf("destinations: %v %+v", err, ds)
	}
	if err := k.DeleteService(s.Key); err != nil {
		t.Errorf("delete service with a destination: %v", err)
	}
	// Not an error: the kernel answers with an empty dump.
	if ds, err := k.Destinations(s.Key); err != nil || len(ds) != 0 {
		t.Errorf("destinations of a deleted service: %v %+v, want none and no error", err, ds)
	}
	bad := model.Service{Key: keys[1], Scheduler: "nosuch"}
	if err := k.AddService(bad); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown scheduler: %v, want ErrUnsupported", err)
	}
}

func errorSemanticsKeys() []model.ServiceKey {
	a := netip.MustParseAddr("203.0.113.81")
	return []model.ServiceKey{
		{Family: model.FamilyInet, Protocol: model.ProtoTCP, Addr: a, Port: 80},
		{Family: model.FamilyInet, Protocol: model.ProtoTCP, Addr: a, Port: 81},
	}
}

func TestFakeErrorSemantics(t *testing.T) { testErrorSemantics(t, NewFake()) }
