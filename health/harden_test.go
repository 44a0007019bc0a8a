package health

import (
	"context"
	"net"
	"net/netip"
	"os"
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
// Item 11: notify commands ran as root while exec checks ran as nobody,
// and a real server's reply "down \x00" put a NUL into IPVS_REASON, which
// made the notify command fail to start: the page was silenced.
