package agent

import (
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
// Item 1, deletion: a service removed while the file is unwritable is
// deleted (it is ours), and the stale record is rewritten once it can be.
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
	if err := saveOwned(good, map[model.ServiceKey]bool{svcKey("192.0.2.1:80"): true}); err != nil {
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
// Item 13: a verdict of the old check, delivered after a reload changed
// the check, set the weight to 0. Verdicts carry the generation of the
// check that produced them.
