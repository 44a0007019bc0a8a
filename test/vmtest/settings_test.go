//go:build vmtest

package vmtest

import (
	"os"
	"strings"
	"testing"
	"time"
)

func sysctlVS(t *testing.T, name string) string {
	t.Helper()
	return strings.TrimSpace(readFile(t, "/proc/sys/net/ipv4/vs/"+name))
}

// The agent sets its [agent.kernel] values at start, puts back a value
// changed behind its back at the next resync (logging it), and with
// cleanup_on_exit restores what it found.
func TestKernelSettingsLifecycle(t *testing.T) {
	resetKernel(t)
	kernelDefaults(t)
	addVIP(t, "192.0.2.96")
	s := newSetup(t)
	s.resync = "2s"
	s.cleanup = true
	s.write(`
[agent.kernel]
tcpfin_timeout = "30s"

[[virtual_server]]
name = "web"
address = "192.0.2.96:80"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
`)
	a, _, _ := s.startReady()
	for name, want := range map[string]string{"conn_reuse_mode": "3", "expire_nodest_conn": "1", "expire_quiescent_template": "1"} {
		if got := sysctlVS(t, name); got != want {
			t.Errorf("after start %s = %s, want %s", name, got, want)
		}
	}
	if out := sh(t, "ipvsadm", "-L", "--timeout"); !strings.Contains(out, "900 30 300") {
		t.Errorf("timeouts after start: %s, want tcp 900 tcpfin 30 udp 300", out)
	}

	from := a.mark()
	if err := os.WriteFile("/proc/sys/net/ipv4/vs/conn_reuse_mode", []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	e := a.waitFor(from, "kernel setting changed", nil, 6*time.Second)
	if e.str("setting") != "conn_reuse_mode" || e.str("reason") != "resync" {
		t.Errorf("repair logged as %s", e.raw)
	}
	if got := sysctlVS(t, "conn_reuse_mode"); got != "3" {
		t.Errorf("conn_reuse_mode after resync = %s, want 3", got)
	}

	a.stop(10 * time.Second)
	for name, want := range map[string]string{"conn_reuse_mode": "1", "expire_nodest_conn": "0", "expire_quiescent_template": "0"} {
		if got := sysctlVS(t, name); got != want {
			t.Errorf("after cleanup_on_exit %s = %s, want the kernel's %s", name, got, want)
		}
	}
	if out := sh(t, "ipvsadm", "-L", "--timeout"); !strings.Contains(out, "900 120 300") {
		t.Errorf("timeouts after cleanup_on_exit: %s, want 900 120 300", out)
	}
}
