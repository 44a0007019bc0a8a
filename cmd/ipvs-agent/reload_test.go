package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/control"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// slowKernel makes every write take a while, so a reply sent before the
// reconcile finished would be caught with writes still missing.
type slowKernel struct {
	kernel.IPVS
	writes atomic.Int64
}

func (k *slowKernel) AddDestination(s model.ServiceKey, d model.Destination) error {
	time.Sleep(20 * time.Millisecond)
	k.writes.Add(1)
	return k.IPVS.AddDestination(s, d)
}

// daemon is an agent on a fake kernel with its control socket, in-process.
type daemon struct {
	dir, cfg, sock string
	fake           *kernel.Fake
	kern           *slowKernel
	stop           func()
	done           chan struct{}
}

const reloadBase = `[agent]
state_file = "%s/state.json"
status_socket = "%s/ctl.sock"
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
`

func startDaemon(t *testing.T) *daemon {
	t.Helper()
	d := &daemon{dir: t.TempDir(), fake: kernel.NewFake(), done: make(chan struct{})}
	d.kern = &slowKernel{IPVS: d.fake}
	d.cfg = filepath.Join(d.dir, "ipvs-agent.toml")
	d.sock = filepath.Join(d.dir, "ctl.sock")
	d.write(t, strings.ReplaceAll(reloadBase, "%s", d.dir))
	cfg, err := config.Load(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Wired as main wires it, on the fake kernel.
	var a *agent.Agent
	sched := health.NewScheduler(health.Options{Logger: log, OnChange: func(st health.Status) { a.OnHealth(st) }})
	a, err = agent.New(cfg, agent.Options{Logger: log, Kernels: []kernel.IPVS{d.kern}, Health: sched})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e, err := startEdges(ctx, log, cfg, a, sched, d.fake, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { defer close(d.done); a.Run(ctx, nil) }()
	d.stop = func() { cancel(); <-d.done; e.wait() }
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.stop()
		}
	})
	return d
}

func (d *daemon) write(t *testing.T, src string) {
	t.Helper()
	if err := os.WriteFile(d.cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReloadCommand(t *testing.T) {
	d := startDaemon(t)
	var out, errOut bytes.Buffer
	// Wait for the start's reconcile (the socket answers before Run).
	if code := run([]string{"reload", "-socket", d.sock}, &out, &errOut); code != 0 {
		t.Fatalf("first reload: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "unchanged") {
		t.Errorf("unchanged file: %q", out.String())
	}

	// Five new real servers, 20 ms per write: the reply must come after
	// all five are in the kernel.
	src := strings.ReplaceAll(reloadBase, "%s", d.dir)
	for i := 12; i < 17; i++ {
		src += "  [[virtual_server.real_server]]\n  address = \"198.18.0." + strconv.Itoa(i) + ":80\"\n"
	}
	d.write(t, src)
	out.Reset()
	before := d.kern.writes.Load()
	if code := run([]string{"reload", "-c", d.cfg}, &out, &errOut); code != 0 {
		t.Fatalf("reload: exit %d: %s", code, errOut.String())
	}
	if got := d.kern.writes.Load() - before; got != 5 {
		t.Fatalf("reload returned after %d of 5 writes", got)
	}
	if v := d.fake.Snapshot()[svc("192.0.2.10:80")]; v == nil || len(v.Dests) != 6 {
		t.Fatalf("kernel after reload: %+v", v)
	}
	if !strings.Contains(out.String(), "reloaded: 5 writes, 0 errors") {
		t.Errorf("output %q", out.String())
	}

	// A bad file: exit 1, every problem with its position, nothing changes.
	d.write(t, src+"[[virtual_server]]\nname = \"web\"\naddress = \"192.0.2.11:80\"\nscheduler = \"nope\"\n")
	snap := d.fake.Snapshot()
	out.Reset()
	errOut.Reset()
	if code := run([]string{"reload", "-c", d.cfg}, &out, &errOut); code != 1 {
		t.Fatalf("bad file: exit %d, want 1: %s", code, errOut.String())
	}
	for _, want := range []string{d.cfg + ":20:1: duplicate virtual server name", d.cfg + ":22:1: unknown scheduler", "running configuration is unchanged"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
	if got := d.fake.Snapshot(); len(got) != len(snap) || len(got[svc("192.0.2.10:80")].Dests) != 6 {
		t.Fatalf("a refused file changed the kernel: %v", got)
	}

	// The agent stops: exit 2 and a message that says it is not running.
	d.stop()
	errOut.Reset()
	if code := run([]string{"reload", "-c", d.cfg}, &out, &errOut); code != 2 {
		t.Fatalf("stopped agent: exit %d, want 2", code)
	}
	if !strings.Contains(errOut.String(), "the agent is not running") {
		t.Errorf("stderr %q", errOut.String())
	}
}

func TestReloadReplyStatusCodes(t *testing.T) {
	d := startDaemon(t)
	c := control.NewClient(d.sock)
	ctx := context.Background()
	if r, err := c.Reload(ctx); err != nil || !r.OK {
		t.Fatalf("%+v %v", r, err)
	}
	d.write(t, "[agent]\nresync_interval = \"soon\"\n")
	r, err := c.Reload(ctx)
	if err != nil || r.OK || len(r.Problems) != 1 || !strings.HasPrefix(r.Problems[0], d.cfg+":2:") {
		t.Fatalf("bad file: %+v %v", r, err)
	}
}

func TestReloadNoSocket(t *testing.T) {
	var out, errOut bytes.Buffer
	sock := filepath.Join(t.TempDir(), "none.sock")
	if code := run([]string{"reload", "-socket", sock}, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(errOut.String(), "the agent is not running (nothing listens on "+sock+")") {
		t.Errorf("stderr %q", errOut.String())
	}
}

func svc(s string) model.ServiceKey {
	ap := netip.MustParseAddrPort(s)
	return model.ServiceKey{Family: model.FamilyInet, Protocol: model.ProtoTCP, Addr: ap.Addr(), Port: ap.Port()}
}

func TestStatusCommand(t *testing.T) {
	d := startDaemon(t)
	var out, errOut bytes.Buffer
	if code := run([]string{"reload", "-socket", d.sock}, &out, &errOut); code != 0 { // start reconciled
		t.Fatalf("reload: %d %s", code, errOut.String())
	}
	out.Reset()
	if code := run([]string{"status", "-c", d.cfg}, &out, &errOut); code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"TCP 192.0.2.10:80 wlc  [web] owned", "  -> 198.18.0.11:80", "last reload", "unchanged"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"status", "web", "-json", "-socket", d.sock}, &out, &errOut); code != 0 {
		t.Fatalf("status web -json: exit %d: %s", code, errOut.String())
	}
	var doc struct {
		Schema         int
		VirtualServers []struct {
			Name        string
			RealServers []struct{ Address string } `json:"real_servers"`
		} `json:"virtual_servers"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.Schema != 1 || len(doc.VirtualServers) != 1 || doc.VirtualServers[0].RealServers[0].Address != "198.18.0.11:80" {
		t.Fatalf("json: %v %+v", err, doc)
	}
	if code := run([]string{"status", "-socket", d.sock, "nope"}, &out, &errOut); code != 3 {
		t.Errorf("unknown name: exit %d, want 3", code)
	}
	out.Reset()
	if code := run([]string{"status", "-quorum", "-socket", d.sock, "web"}, &out, &errOut); code != 0 || out.Len() != 0 {
		t.Errorf("quorum: exit %d, output %q", code, out.String())
	}

	d.stop()
	out.Reset()
	errOut.Reset()
	if code := run([]string{"status", "-c", d.cfg}, &out, &errOut); code != 2 {
		t.Fatalf("stopped: exit %d, want 2", code)
	}
	if !strings.Contains(out.String(), "ipvs-agent is NOT RUNNING: the agent is not running") ||
		!strings.Contains(out.String(), "state file "+d.dir+"/state.json") || !strings.Contains(out.String(), "[tcp 192.0.2.10:80] owned") {
		t.Errorf("offline status:\n%s", out.String())
	}
	if code := run([]string{"status", "-quorum", "-c", d.cfg, "web"}, &out, &errOut); code != 2 {
		t.Errorf("quorum with the agent stopped: exit %d, want 2", code)
	}
}

func TestDiffCommand(t *testing.T) {
	d := startDaemon(t)
	var out, errOut bytes.Buffer
	if code := run([]string{"reload", "-socket", d.sock}, &out, &errOut); code != 0 {
		t.Fatalf("reload: %d %s", code, errOut.String())
	}
	out.Reset()
	if code := run([]string{"diff", "-c", d.cfg}, &out, &errOut); code != 0 || out.String() != "no changes\n" {
		t.Fatalf("unchanged: exit %d, %q %s", code, out.String(), errOut.String())
	}
	src := strings.ReplaceAll(reloadBase, "%s", d.dir) + "  [[virtual_server.real_server]]\n  address = \"198.18.0.12:80\"\n  weight = 3\n"
	src = strings.Replace(src, "address = \"198.18.0.11:80\"\n", "address = \"198.18.0.11:80\"\n  weight = 2\n", 1)
	d.write(t, src)
	out.Reset()
	writes := d.kern.writes.Load()
	if code := run([]string{"diff", "-c", d.cfg}, &out, &errOut); code != 1 {
		t.Fatalf("changed: exit %d: %s", code, errOut.String())
	}
	want := "web: update-real-server tcp 192.0.2.10:80 -> 198.18.0.11:80 weight 1 -> 2\n" +
		"web: add-real-server tcp 192.0.2.10:80 -> 198.18.0.12:80\n2 kernel writes\n"
	if out.String() != want {
		t.Fatalf("diff:\n%s\nwant:\n%s", out.String(), want)
	}
	if d.kern.writes.Load() != writes || len(d.fake.Snapshot()[svc("192.0.2.10:80")].Dests) != 1 {
		t.Fatal("diff changed the kernel")
	}
	if code := run([]string{"reload", "-c", d.cfg}, &out, &errOut); code != 0 {
		t.Fatalf("reload: %d", code)
	}
	out.Reset()
	if code := run([]string{"diff", "-c", d.cfg}, &out, &errOut); code != 0 {
		t.Fatalf("after reload: exit %d: %s", code, out.String())
	}
	d.write(t, src+"bogus = 1\n")
	errOut.Reset()
	if code := run([]string{"diff", "-c", d.cfg}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), d.cfg+":13:1: unknown key \"bogus\"") {
		t.Fatalf("bad file: exit %d: %s", code, errOut.String())
	}
}

func dest(s string) model.DestKey {
	ap := netip.MustParseAddrPort(s)
	return model.DestKey{Addr: ap.Addr(), Port: ap.Port()}
}

func writeFile(path, src string) error { return os.WriteFile(path, []byte(src), 0o644) }
