package settingstest

import (
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/settings"
)

// Contract checks the semantics the agent relies on; the fake passes it in a
// unit test and the real kernel in the VM (agent/settings, vmtest). It
// restores every value it changed.
func Contract(t *testing.T, k settings.Kernel) {
	t.Helper()
	before, err := k.Read()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	t.Cleanup(func() {
		for n, v := range before {
			if err := k.Write(n, v); err != nil {
				t.Errorf("restore %s=%d: %v", n, v, err)
			}
		}
	})
	if id, err := k.BootID(); err != nil || id == "" {
		t.Errorf("BootID = %q, %v", id, err)
	}
	// The settings a DR director relies on are there.
	for _, n := range []settings.Name{settings.ConnReuseMode, settings.ExpireNodestConn,
		settings.ExpireQuiescentTemplate, settings.TimeoutTCP, settings.TimeoutTCPFin, settings.TimeoutUDP} {
		if _, ok := before[n]; !ok {
			t.Errorf("read: no %s in %v", n, before)
		}
	}

	// Each write reads back, and touches nothing else: in particular one
	// timeout written alone leaves the other two as they were (the kernel
	// takes 0 as "unchanged", and Write must rely on that).
	writes := []struct {
		n settings.Name
		v int
	}{
		{settings.ConnReuseMode, 3}, {settings.ExpireNodestConn, 1}, {settings.ExpireQuiescentTemplate, 1},
		{settings.TimeoutTCP, 777}, {settings.TimeoutTCPFin, 33}, {settings.TimeoutUDP, 44},
	}
	want := settings.Values{}
	for n, v := range before {
		want[n] = v
	}
	for _, w := range writes {
		if err := k.Write(w.n, w.v); err != nil {
			t.Fatalf("write %s=%d: %v", w.n, w.v, err)
		}
		want[w.n] = w.v
		got, err := k.Read()
		if err != nil {
			t.Fatalf("read after %s: %v", w.n, err)
		}
		for n, v := range want {
			if got[n] != v {
				t.Errorf("after writing %s=%d: %s is %d, want %d", w.n, w.v, n, got[n], v)
			}
		}
	}
	// A timeout of 0 would be read by the kernel as "no change": refused.
	if err := k.Write(settings.TimeoutTCP, 0); err == nil {
		t.Errorf("write timeout_tcp=0: no error")
	}
}
