//go:build vmtest

package vmtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// agentBin is the ipvs-agent binary under test (built on the host, CGO off).
func agentBin(t testing.TB) string {
	t.Helper()
	p := os.Getenv("VMTEST_AGENT")
	if p == "" {
		t.Fatal("VMTEST_AGENT is not set: the path of the ipvs-agent binary under test")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("agent binary: %v", err)
	}
	return p
}

// setup is one agent installation: a config file and a state file that
// survive restarts of the agent process within a test.
type setup struct {
	t       testing.TB
	dir     string
	cfg     string
	state   string
	resync  string
	cleanup bool   // cleanup_on_exit
	extra   string // more [agent] keys, one per line
}

func newSetup(t testing.TB) *setup {
	dir := t.TempDir()
	return &setup{t: t, dir: dir, cfg: filepath.Join(dir, "agent.toml"), state: filepath.Join(dir, "state.json"), resync: "30s"}
}

// write replaces the config with the [agent] section plus the given virtual servers.
func (s *setup) write(services string) {
	s.t.Helper()
	body := fmt.Sprintf("[agent]\nstate_file = %q\nresync_interval = %q\ncleanup_on_exit = %v\n%s\n%s", s.state, s.resync, s.cleanup, s.extra, services)
	if err := os.WriteFile(s.cfg, []byte(body), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// agent is one running ipvs-agent process; its JSON log lines are collected.
type agent struct {
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid after done

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every new log line
	entries []logEntry
}

type logEntry struct {
	raw    string
	fields map[string]any // nil when the line is not JSON
}

func (e logEntry) msg() string { s, _ := e.fields["msg"].(string); return s }
func (e logEntry) str(k string) string {
	s, _ := e.fields[k].(string)
	return s
}

// num returns an integer field; ok is false if it is missing or not a number.
func (e logEntry) num(k string) (int, bool) {
	f, ok := e.fields[k].(float64)
	return int(f), ok
}

func (s *setup) start() *agent {
	s.t.Helper()
	a := &agent{t: s.t, done: make(chan struct{}), changed: make(chan struct{})}
	a.cmd = exec.Command(agentBin(s.t), "run", "-c", s.cfg, "-log-format", "json", "-log-level", "debug")
	a.cmd.Stdout = os.Stdout
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			e := logEntry{raw: sc.Text()}
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				e.fields = m
			}
			a.mu.Lock()
			a.entries = append(a.entries, e)
			close(a.changed)
			a.changed = make(chan struct{})
			a.mu.Unlock()
		}
		a.err = a.cmd.Wait()
		close(a.done)
	}()
	s.t.Cleanup(func() {
		if a.running() {
			a.cmd.Process.Kill()
			<-a.done
		}
		if s.t.Failed() {
			a.dump()
		}
	})
	return a
}

func (a *agent) running() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

func (a *agent) dump() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.t.Logf("agent log (%d lines):", len(a.entries))
	for i, e := range a.entries {
		// Long logs (big applies): the first and last lines tell the story.
		if n := len(a.entries); n > 150 && i >= 30 && i < n-100 {
			if i == 30 {
				a.t.Logf("  ... %d lines left out ...", n-130)
			}
			continue
		}
		a.t.Logf("  %s", e.raw)
	}
}

// mark returns a position in the log; waitFor looks at lines after it.
func (a *agent) mark() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}

// waitFor returns the first log entry after position from with the message
// msg for which ok (if not nil) is true. It fails the test on timeout or exit.
func (a *agent) waitFor(from int, msg string, ok func(logEntry) bool, limit time.Duration) logEntry {
	a.t.Helper()
	deadline := time.After(limit)
	for {
		a.mu.Lock()
		for i := from; i < len(a.entries); i++ {
			if e := a.entries[i]; e.msg() == msg && (ok == nil || ok(e)) {
				a.mu.Unlock()
				return e
			}
		}
		from = len(a.entries)
		changed := a.changed
		a.mu.Unlock()
		select {
		case <-changed:
		case <-a.done:
			a.t.Fatalf("agent exited (%v) while waiting for %q", a.err, msg)
		case <-deadline:
			a.t.Fatalf("no %q log message within %v", msg, limit)
		}
	}
}

// entriesSince returns the entries with message msg after position from.
func (a *agent) entriesSince(from int, msg string) []logEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []logEntry
	for _, e := range a.entries[from:] {
		if e.msg() == msg {
			out = append(out, e)
		}
	}
	return out
}

// reconciled waits for the "reconciled" message with the given reason and
// returns its writes and errors fields (a missing field fails the test).
func (a *agent) reconciled(from int, reason string, limit time.Duration) (writes, errs int) {
	a.t.Helper()
	e := a.waitFor(from, "reconciled", func(e logEntry) bool { return e.str("reason") == reason }, limit)
	w, ok1 := e.num("writes")
	n, ok2 := e.num("errors")
	if !ok1 || !ok2 {
		a.t.Fatalf("reconciled message without integer writes/errors: %s", e.raw)
	}
	return w, n
}

// startReady starts the agent and waits for its first reconcile ("ready").
func (s *setup) startReady() (*agent, int, int) {
	s.t.Helper()
	a := s.start()
	w, n := a.reconciled(0, "start", 60*time.Second)
	a.waitFor(0, "ready", nil, 10*time.Second)
	return a, w, n
}

func (a *agent) signal(sig os.Signal) {
	a.t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		a.t.Fatalf("signal %v: %v", sig, err)
	}
}

// stop sends SIGTERM and requires a clean exit (status 0) within limit.
func (a *agent) stop(limit time.Duration) {
	a.t.Helper()
	a.signal(syscall.SIGTERM)
	select {
	case <-a.done:
		if a.err != nil {
			a.t.Fatalf("agent exited with %v after SIGTERM", a.err)
		}
	case <-time.After(limit):
		a.t.Fatalf("agent still running %v after SIGTERM", limit)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (a *agent) kill() {
	a.t.Helper()
	a.cmd.Process.Kill()
	<-a.done
	var ee *exec.ExitError
	if !errors.As(a.err, &ee) {
		a.t.Logf("agent after SIGKILL: %v", a.err)
	}
}

// reload writes a new config and sends SIGHUP.
func (a *agent) reload(s *setup, services string) int {
	a.t.Helper()
	from := a.mark()
	s.write(services)
	a.signal(syscall.SIGHUP)
	return from
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
