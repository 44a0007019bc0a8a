package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// Regression tests for issue 13 ("fifteen ways to break it today") in the
// agent's main loop.

// breakStateFile makes every later save fail the way a read-only or full
// filesystem does: the rename onto the state file's path cannot succeed.
func breakStateFile(t *testing.T, dir string) (repair func()) {
	t.Helper()
	p := filepath.Join(dir, "state.json")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(p, "blocker"), 0o700); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
}

// Item 1: with the state file unwritable, a reload that adds a virtual
// server made every later reconcile return before applying anything, so a
// dead real server kept its weight. Changes to owned services apply; only
// the new service waits for its record; the failure is loud and retried.
func TestHarden01_UnwritableStateFileKeepsHealthEnforcement(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir, nil, checkedConfig("", ""))
	n := &recordingNotifier{}
	h.agent.notify = n
	h.reconcile("start", true)
	repair := breakStateFile(t, dir)

	added := checkedConfig("", "") + "[[virtual_server]]\nname = \"new\"\naddress = \"192.0.2.99:80\"\n  [[virtual_server.real_server]]\n  address = \"198.18.0.9:80\"\n"
	h.writeConfig(added)
	h.agent.reload()
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.1:80", State: health.Down, Weight: -1})
	h.agent.takeVerdicts()
	if err := h.agent.reconcile("health", false); err != nil {
		t.Fatalf("health reconcile: %v", err)
	}
	snap := h.fake.Snapshot()
	if w := snap[svcKey("192.0.2.10:80")].Dests[dKey("198.18.0.1:80")].Weight; w != 0 {
		t.Fatalf("dead real server kept weight %d with the state file unwritable\n%s", w, h.logs)
	}
	if _, ok := snap[svcKey("192.0.2.99:80")]; ok {
		t.Fatal("a new virtual server was created without its ownership record")
	}
	v := h.agent.View()
	if v.StateFileError == "" {
		t.Fatal("View does not report the state file error")
	}
	if !strings.Contains(n.all(), "STATUS=state file not writable") {
		t.Fatalf("no STATUS about the state file: %q", n.all())
	}
	if !strings.Contains(h.logs.String(), "level=ERROR msg=\"state file not writable") {
		t.Fatalf("not logged:\n%s", h.logs)
	}

	// Retried: once the file can be written the new service is created.
	repair()
	h.reconcile("resync", true)
	if _, ok := h.fake.Snapshot()[svcKey("192.0.2.99:80")]; !ok {
		t.Fatal("new virtual server not created after the state file recovered")
	}
	if v := h.agent.View(); v.StateFileError != "" {
		t.Fatalf("error not cleared: %q", v.StateFileError)
	}
	owned, err := loadOwned(filepath.Join(dir, "state.json"))
	if err != nil || !owned[svcKey("192.0.2.99:80")] || !owned[svcKey("192.0.2.10:80")] {
		t.Fatalf("state file after recovery: %v %v", owned, err)
	}
}

// Item 1, deletion: a service removed while the file is unwritable is
// deleted (it is ours), and the stale record is rewritten once it can be.
func TestHarden01_UnwritableStateFileStillDeletesOwned(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir, nil, base)
	h.reconcile("start", true)
	repair := breakStateFile(t, dir)
	h.writeConfig(strings.SplitN(base, "[[virtual_server]]\nname = \"dns\"", 2)[0])
	h.agent.reload()
	for k := range h.fake.Snapshot() {
		if k.Port == 53 {
			t.Fatalf("owned service not deleted: %s", k)
		}
	}
	repair()
	h.reconcile("resync", true)
	owned, err := loadOwned(filepath.Join(dir, "state.json"))
	if err != nil || len(owned) != 1 {
		t.Fatalf("stale record not rewritten: %v %v", owned, err)
	}
}

// Item 15: a FIFO as state file hung start-up; a state file owned by
// another user, or writable by others, was believed.
func TestHarden15_StateFileMustBeOursAndRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := loadOwned(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("fifo: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("loadOwned hangs on a FIFO")
	}

	good := filepath.Join(dir, "state.json")
	if err := saveState(good, record{owned: map[model.ServiceKey]bool{svcKey("192.0.2.1:80"): true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOwned(good); err != nil {
		t.Fatalf("own file refused: %v", err)
	}
	if err := os.Chmod(good, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOwned(good); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("world-writable: %v", err)
	}
	if err := os.Chmod(good, 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(good, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := loadOwned(good); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("foreign owner: %v", err)
		}
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOwned(link); err == nil {
		t.Fatal("symlink followed")
	}
}

// failingReads is a kernel whose destination dumps fail for one service.
type failingReads struct {
	*kernel.Fake
	bad model.ServiceKey
}

func (f failingReads) Destinations(k model.ServiceKey) ([]model.Destination, error) {
	if k == f.bad {
		return nil, errors.New("netlink: message truncated")
	}
	return f.Fake.Destinations(k)
}

// Also seen: a Destinations read error on one service aborted the whole
// reconcile. The others are repaired; the failing one is reported and left
// alone (not deleted, not re-added).
func TestHardenDestinationsReadErrorRepairsTheOthers(t *testing.T) {
	h := newHarness(t, t.TempDir(), nil, checkedConfig("", "")+"[[virtual_server]]\nname = \"two\"\naddress = \"192.0.2.20:80\"\n  [[virtual_server.real_server]]\n  address = \"198.18.0.7:80\"\n")
	h.reconcile("start", true)
	web, two := svcKey("192.0.2.10:80"), svcKey("192.0.2.20:80")
	bad := failingReads{Fake: h.fake, bad: web}
	h.agent.kernels = []kernel.IPVS{bad, bad}
	_ = h.fake.DeleteDestination(two, dKey("198.18.0.7:80"))
	before := h.fake.Snapshot()[web]
	if err := h.agent.reconcile("resync", true); err != nil {
		t.Fatalf("reconcile aborted: %v", err)
	}
	snap := h.fake.Snapshot()
	if _, ok := snap[two].Dests[dKey("198.18.0.7:80")]; !ok {
		t.Fatalf("the healthy service was not repaired\n%s", h.logs)
	}
	if dump(model.Table{web: snap[web]}) != dump(model.Table{web: before}) {
		t.Fatal("the unreadable service was changed")
	}
	if r := h.agent.View().LastResult; r.Errors == 0 {
		t.Fatalf("read error not counted: %+v", r)
	}
	if !strings.Contains(h.logs.String(), "192.0.2.10:80") || !strings.Contains(h.logs.String(), "message truncated") {
		t.Fatalf("failing service not named in the log:\n%s", h.logs)
	}
	if !h.agent.owned[web] {
		t.Fatal("ownership of the unreadable service dropped")
	}
	// A health verdict for it meanwhile is not planned against a guess.
	h.agent.OnHealth(health.Status{ID: "web/198.18.0.1:80", State: health.Down, Weight: -1})
	h.agent.takeVerdicts()
	if err := h.agent.reconcile("health", false); err != nil {
		t.Fatal(err)
	}
	// Once readable again, it converges.
	h.agent.kernels = []kernel.IPVS{h.fake, h.fake}
	h.reconcile("resync", true)
	if w := h.fake.Snapshot()[web].Dests[dKey("198.18.0.1:80")].Weight; w != 0 {
		t.Fatalf("weight %d after the service became readable", w)
	}
}

// slowKernel makes every write take a while, like a kernel busy with a
// large apply.
type slowKernel struct {
	*kernel.Fake
	writes atomic.Int64
}

func (s *slowKernel) slow() { s.writes.Add(1); time.Sleep(200 * time.Microsecond) }
func (s *slowKernel) AddService(v model.Service) error {
	s.slow()
	return s.Fake.AddService(v)
}
func (s *slowKernel) AddDestination(k model.ServiceKey, d model.Destination) error {
	s.slow()
	return s.Fake.AddDestination(k, d)
}

// Also seen: SIGTERM during a long reconcile waited for all of it. The
// apply stops between kernel writes and the ownership record matches the
// kernel: every service it created is recorded, none it did not.
func TestHardenStopDuringLongApplyIsPromptAndConsistent(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir, nil, bigConfig(500, 10)) // 5,500 writes, > 1 s
	sk := &slowKernel{Fake: h.fake}
	h.agent.kernels = []kernel.IPVS{sk, sk}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.agent.Run(ctx, nil) }()
	for sk.writes.Load() < 100 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if n := sk.writes.Load(); n >= 5500 {
		t.Fatalf("the whole apply ran (%d writes) after the stop", n)
	}
	owned, err := loadOwned(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	snap := h.fake.Snapshot()
	for k := range snap {
		if !owned[k] {
			t.Errorf("service %s in the kernel but not recorded", k)
		}
	}
	for k := range owned {
		if snap[k] == nil {
			t.Errorf("service %s recorded but never created", k)
		}
	}
}

// Item 13: a verdict of the old check, delivered after a reload changed
// the check, set the weight to 0. Verdicts carry the generation of the
// check that produced them.
func TestHarden13_StaleVerdictAfterCheckChangeIgnored(t *testing.T) {
	// alpha = false: the real servers start at their configured weight.
	h := newHarness(t, t.TempDir(), nil, checkedConfig("alpha = false", ""))
	h.reconcile("start", true)
	id := "web/198.18.0.1:80"
	var gen0 uint64
	for _, c := range h.agent.checks() {
		if c.ID == id {
			gen0 = c.Gen
		}
	}
	h.writeConfig(strings.Replace(checkedConfig("alpha = false", ""), `type = "tcp"`, "type = \"tcp\"\n  port = 8080", 1))
	h.agent.reload()
	var gen1 uint64
	for _, c := range h.health.set[len(h.health.set)-1] {
		if c.ID == id {
			gen1 = c.Gen
		}
	}
	if gen1 == gen0 {
		t.Fatalf("changed check kept generation %d", gen0)
	}
	// The old check's Down arrives after the reload.
	h.agent.OnHealth(health.Status{ID: id, Gen: gen0, State: health.Down, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)
	if w := h.fake.Snapshot()[svcKey("192.0.2.10:80")].Dests[dKey("198.18.0.1:80")].Weight; w != 10 {
		t.Fatalf("stale verdict applied: weight %d", w)
	}
	h.agent.OnHealth(health.Status{ID: id, Gen: gen1, State: health.Down, Weight: -1})
	h.agent.takeVerdicts()
	h.reconcile("health", false)
	if w := h.fake.Snapshot()[svcKey("192.0.2.10:80")].Dests[dKey("198.18.0.1:80")].Weight; w != 0 {
		t.Fatalf("current verdict not applied: weight %d", w)
	}
	// An unchanged check keeps its generation across a reload.
	h.writeConfig(strings.Replace(checkedConfig("", ""), `type = "tcp"`, "type = \"tcp\"\n  port = 8080", 1) + "\n")
	h.agent.reload()
	for _, c := range h.health.set[len(h.health.set)-1] {
		if c.ID == id && c.Gen != gen1 {
			t.Fatalf("unchanged check got a new generation %d (was %d)", c.Gen, gen1)
		}
	}
}
