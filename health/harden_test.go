package health

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Regression tests for issue 13 ("fifteen ways to break it today") in the
// health package.

// Item 13: every status carries the generation of the subscription it was
// made for, so the agent can drop a verdict of a check a reload replaced.
func TestHarden13_VerdictsCarryTheCheckGeneration(t *testing.T) {
	h := newHarness(t)
	h.fc.set(rsA, failed("refused"))
	h.s.Set([]Check{{ID: "web/a", Target: rsA, Spec: tcpSpec(), Gen: 7}})
	h.run()
	h.advanceUntil(100*time.Millisecond, "down", stateIs(h, "web/a", Down))
	if st, _ := h.rec.last("web/a"); st.Gen != 7 {
		t.Fatalf("verdict generation %d, want 7", st.Gen)
	}
	if st := h.s.Statuses()["web/a"]; st.Gen != 7 {
		t.Fatalf("Statuses generation %d, want 7", st.Gen)
	}
	// Same probe, new generation: the state carries over under the new
	// generation at once.
	h.s.Set([]Check{{ID: "web/a", Target: rsA, Spec: tcpSpec(), Gen: 8}})
	h.advanceUntil(100*time.Millisecond, "re-sent", func() bool { st, _ := h.rec.last("web/a"); return st.Gen == 8 })
	if st, _ := h.rec.last("web/a"); st.State != Down {
		t.Fatalf("state lost with the new generation: %+v", st)
	}
}

// Item 5: the header limit was 16 KiB + max_body, so a server sending an
// endless header line cost the agent up to max_body (16 MiB: 38-68 MB) per
// probe. Headers are bounded on their own; max_body is capped; the bodies
// of all probes share one memory budget.
func TestHarden05_HTTPHeaderAndBodyMemoryBounded(t *testing.T) {
	srv := startHostile(t, func(c net.Conn) {
		c.Write([]byte("HTTP/1.1 200 OK\r\nX-Forever: "))
		chunk := []byte(strings.Repeat("a", 4096))
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	defer srv.stop()
	spec := Spec{Type: "http", Interval: 5 * time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 1, ExpectBody: "x", MaxBody: MaxBodyLimit}
	chk, err := newChecker(spec)
	if err != nil {
		t.Fatal(err)
	}
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(sample)
	a0 := sample[0].Value.Uint64()
	ctx, cancel := context.WithTimeout(context.Background(), spec.Timeout)
	r := chk.check(ctx, probe{addr: srv.addr(t), rs: srv.addr(t)})
	cancel()
	metrics.Read(sample)
	if r.outcome != fail {
		t.Fatalf("endless header passed: %+v", r)
	}
	if a := sample[0].Value.Uint64() - a0; a > 256<<10 {
		t.Fatalf("an endless header line cost %d KiB with max_body %d", a>>10, MaxBodyLimit)
	}
	if _, err := newChecker(Spec{Type: "http", Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1, MaxBody: MaxBodyLimit + 1}); err == nil {
		t.Fatal("max_body above the cap accepted")
	}

	// The body budget: a probe waits for its share, within its timeout.
	b := newMemBudget(2 * bodyUnit)
	rel, err := b.acquire(context.Background(), 2*bodyUnit)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	if _, err := b.acquire(ctx, 1); err == nil {
		t.Fatal("budget overdrawn")
	}
	cancel()
	got := make(chan error, 1)
	go func() {
		r2, err := b.acquire(context.Background(), bodyUnit+1) // rounds up to the whole budget
		if err == nil {
			r2()
		}
		got <- err
	}()
	rel()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if _, err := b.acquire(context.Background(), 3*bodyUnit); err == nil {
		t.Fatal("a request larger than the budget must fail, not wait forever")
	}
}

// Item 6: certificate files were read whole with no check: a FIFO hung
// `check` and a reload; /dev/zero ran the agent out of memory.
func TestHarden06_CertificateFilesRegularSizedAndTimed(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "ca.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.pem")
	os.WriteFile(big, nil, 0o600)
	os.Truncate(big, maxPEMFile+1)
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{CAFile: fifo, TLSVerify: true}, "not a regular file"},
		{Spec{CAFile: "/dev/zero", TLSVerify: true}, "not a regular file"},
		{Spec{CAFile: big, TLSVerify: true}, "larger than"},
		{Spec{CertFile: fifo, KeyFile: fifo}, "not a regular file"},
	} {
		tc.spec.Type, tc.spec.Interval, tc.spec.Timeout, tc.spec.Rise, tc.spec.Fall = "https", time.Second, time.Second, 1, 1
		done := make(chan error, 1)
		go func() { _, err := newChecker(tc.spec); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%+v: %v, want %q", tc.spec, err, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%+v: hangs", tc.spec)
		}
	}
}

// Item 7: file checks followed symlinks as root, opened whatever was there
// before checking it was a regular file, and put the first 256 bytes of an
// unrecognised file into logs and IPVS_REASON.
func TestHarden07_FileCheckNoSymlinksNoContentInReasons(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("down\n"), 0o600)
	link := filepath.Join(dir, "198.18.0.1")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	rs := netip.MustParseAddrPort("198.18.0.1:80")
	chk, err := newChecker(Spec{Type: "file", Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1, File: filepath.Join(dir, "{ip}")})
	if err != nil {
		t.Fatal(err)
	}
	r := chk.check(context.Background(), probe{addr: rs, rs: rs})
	if r.outcome != fail || !strings.Contains(r.reason, "symlink") {
		t.Fatalf("symlink followed: %+v", r)
	}
	os.Remove(link)
	if err := os.Symlink("/dev/zero", link); err != nil {
		t.Fatal(err)
	}
	if r := chk.check(context.Background(), probe{addr: rs, rs: rs}); r.outcome != fail {
		t.Fatalf("symlink to a device: %+v", r)
	}
	os.Remove(link)
	os.WriteFile(link, []byte("password=hunter2\n"), 0o600)
	r = chk.check(context.Background(), probe{addr: rs, rs: rs})
	if r.outcome != fail || strings.Contains(r.reason, "hunter2") {
		t.Fatalf("unparsed content in the reason: %+v", r)
	}
	os.WriteFile(link, []byte("drain\n"), 0o600)
	if r := chk.check(context.Background(), probe{addr: rs, rs: rs}); r.outcome != drain {
		t.Fatalf("a regular file no longer read: %+v", r)
	}
}

// Item 9: exit 0 counted as down when a background child kept stdout open
// ("WaitDelay expired"), and a child that called setsid outlived the check.
func TestHarden09_ExecJudgedByExitStatusAndEscapeesKilled(t *testing.T) {
	target := netip.MustParseAddrPort("127.0.0.2:8080")
	start := time.Now()
	wantPass(t, runSpec(t, Spec{Type: "exec", Shell: true, Timeout: 3 * time.Second, Command: []string{"sleep 30 & exit 0"}}, target))
	t.Logf("background child holding stdout: judged in %v", time.Since(start))

	for _, tc := range []struct {
		name, script string
		pass         bool
	}{
		{"success", "setsid sleep 30 >/dev/null 2>&1 < /dev/null & echo $! > PID; exit 0", true},
		{"timeout", "setsid sleep 30 >/dev/null 2>&1 < /dev/null & echo $! > PID; sleep 30", false},
	} {
		pidFile := filepath.Join(t.TempDir(), "pid")
		r := runSpec(t, Spec{Type: "exec", Shell: true, Timeout: 500 * time.Millisecond, Command: []string{strings.ReplaceAll(tc.script, "PID", pidFile)}}, target)
		if (r.outcome == pass) != tc.pass {
			t.Fatalf("%s: %+v", tc.name, r)
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		fmt.Sscan(string(b), &pid)
		deadline := time.Now().Add(3 * time.Second)
		for processAlive(pid) {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("%s: a child in its own session (%d) outlived the check", tc.name, pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Item 11: notify commands ran as root while exec checks ran as nobody,
// and a real server's reply "down \x00" put a NUL into IPVS_REASON, which
// made the notify command fail to start: the page was silenced.
func TestHarden11_NotifyAsCheckUserWithSanitizedReason(t *testing.T) {
	if r := parseAgentReply("down \x00\x1b[2J"); strings.ContainsAny(r.reason, "\x00\x1b") {
		t.Fatalf("control bytes in the reason: %q", r.reason)
	}
	dir, err := os.MkdirTemp("", "harden11-") // t.TempDir's parent is 0700: nobody could not write
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	out := filepath.Join(dir, "notify.log")
	h := newHarness(t)
	h.fc.set(rsA, failed("refused \x00 by peer"))
	spec := tcpSpec()
	spec.Notify = []string{"/bin/sh", "-c", `echo "$(id -u) $IPVS_REASON" >> ` + out}
	want := fmt.Sprint(os.Getuid())
	if os.Geteuid() == 0 {
		spec.User = "nobody"
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Skip("no user nobody")
		}
		want = u.Uid
	}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	h.s.Set([]Check{{ID: "web/a", Service: "web", Target: rsA, Spec: spec}})
	h.run()
	h.advanceUntil(100*time.Millisecond, "notify ran", func() bool {
		b, _ := os.ReadFile(out)
		return len(b) > 0
	})
	b, _ := os.ReadFile(out)
	if got := string(b); got != want+" refused ? by peer\n" {
		t.Fatalf("notify wrote %q, want uid %s and a sanitized reason", got, want)
	}
	if _, err := (Spec{Type: "tcp", Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1, Notify: []string{"/bin/true"}, User: "no-such-user-xyz"}).prepare(); err == nil {
		t.Fatal("unknown notify user accepted")
	}
}
