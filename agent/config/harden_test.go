package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Regression tests for issue 13 ("fifteen ways to break it today"), one per
// item that lives in the configuration layer.

func problemsOf(t *testing.T, src string) Problems {
	t.Helper()
	_, err := Parse("f.toml", src)
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %v", err)
	}
	return ps
}

func wantProblem(t *testing.T, src, want string) {
	t.Helper()
	_, err := Parse("f.toml", src)
	if err == nil {
		t.Fatalf("accepted; want a problem containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("problem %q missing in:\n%v", want, err)
	}
}

// Item 2: the same unknown key in N virtual servers is N problems, not N^2
// (it was, on the whole-file decode path).
func TestHarden02_UnknownKeyReportedOncePerOccurrence(t *testing.T) {
	var sb strings.Builder
	const n = 300
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "[[virtual_server]]\nname = \"vs%d\"\naddress = \"192.0.2.%d:%d\"\nsheduler = \"rr\"\n", i, i%250+1, 80+i)
	}
	ps := problemsOf(t, sb.String())
	if len(ps) != n {
		t.Fatalf("%d problems for %d typos", len(ps), n)
	}
	seen := map[int]bool{}
	for _, p := range ps {
		if seen[p.Line] {
			t.Fatalf("line %d reported twice", p.Line)
		}
		seen[p.Line] = true
	}
}

const checked = `
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
  [virtual_server.check]
  type = "tcp"
  %s
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
`

// Item 3: timings that make no sense (a probe storm, a check that can never
// pass, a rise or fall that wraps) are refused with their bounds.
func TestHarden03_NonsenseTimingsRejected(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{`interval = "1ns"`, "interval 1ns out of range 100ms..24h0m0s"},
		{`interval = "48h"`, "interval 48h0m0s out of range"},
		{"interval = \"1s\"\n  timeout = \"1ns\"", "timeout 1ns out of range 10ms.."},
		{`rise = 4294967296`, "rise 4294967296 out of range 1..1000"},
		{`fall = 1001`, "fall 1001 out of range 1..1000"},
		{`fall = 0`, "fall 0 out of range 1..1000"},
		{`slow_start = "200h"`, "slow_start 200h0m0s out of range 0s..24h0m0s"},
	} {
		wantProblem(t, fmt.Sprintf(checked, tc.key), tc.want)
	}
	if _, err := Parse("f.toml", fmt.Sprintf(checked, "interval = \"100ms\"\n  timeout = \"10ms\"\n  rise = 1000\n  fall = 1000")); err != nil {
		t.Fatalf("bounds themselves refused: %v", err)
	}
}

// Item 4: persistence wrapped around uint32 seconds ("1193047h" became
// 1904 s); it is bounded to what the kernel and keepalived accept.
func TestHarden04_PersistenceBounded(t *testing.T) {
	src := "[[virtual_server]]\nname = \"a\"\naddress = \"192.0.2.1:80\"\npersistence = %q\n"
	wantProblem(t, fmt.Sprintf(src, "1193047h"), "persistence 1193047h0m0s out of range 1s..744h0m0s")
	wantProblem(t, fmt.Sprintf(src, "1500ms"), "persistence 1.5s is not a whole number of seconds")
	cfg, err := Parse("f.toml", fmt.Sprintf(src, "744h"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.VirtualServers[0].Service.Timeout; got != 744*3600 {
		t.Fatalf("timeout %d", got)
	}
}

// Item 8: a sorry server that is also a real server would be re-added at
// weight 1 while that very server is down (remove), or never added
// (quiesce).
func TestHarden08_SorryServerEqualToRealServerRejected(t *testing.T) {
	wantProblem(t, `
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
sorry_server = "198.18.0.1:80"
  [[virtual_server.real_server]]
  address = "198.18.0.1:80"
`, `5:1: sorry_server 198.18.0.1:80 is also a real server of "web"`)
}

// Item 10: relative commands ran from "/" though "check" resolved them from
// its own directory, and NUL passed validation then failed every probe.
func TestHarden10_ExecAbsolutePathsAndNoNUL(t *testing.T) {
	exe := fmt.Sprintf(checked, "")
	exe = strings.Replace(exe, `type = "tcp"`, "type = \"exec\"\n  %s", 1)
	for _, tc := range []struct{ key, want string }{
		{`command = ["./check.sh"]`, `command "./check.sh" must be an absolute path`},
		{`command = ["true"]`, `command "true" must be an absolute path`},
		{`command = ["/bin/true", "a\u0000b"]`, "command contains a NUL byte"},
		{"command = [\"/bin/true\"]\n  notify = [\"/bin/true\\u0000\"]", "notify contains a NUL byte"},
		{"command = [\"/bin/true\"]\n  notify = [\"logger\"]", `notify command "logger" must be an absolute path`},
	} {
		wantProblem(t, fmt.Sprintf(exe, tc.key), tc.want)
	}
	file := strings.Replace(fmt.Sprintf(checked, `file = "/run/x\u0000/{ip}"`), `type = "tcp"`, `type = "file"`, 1)
	wantProblem(t, file, "file contains a NUL byte")
	// A shell script is a script, not a path.
	if _, err := Parse("f.toml", fmt.Sprintf(exe, "shell = true\n  command = [\"exit 0\"]")); err != nil {
		t.Fatalf("shell command refused: %v", err)
	}
}

// Also seen: a deeply dotted key or nested value costs the TOML library
// memory quadratic in its depth (877 MB RSS for 40 KB); it is refused with
// its position before decoding.
func TestHardenNesting_DeepKeysAndValuesRefusedBeforeDecoding(t *testing.T) {
	deepKey := "[agent]\nx" + strings.Repeat(".a", 20000) + " = 1\n"
	deepHeader := "[a" + strings.Repeat(".a", 20000) + "]\n"
	deepArray := "[agent]\nx = " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n"
	deepInline := "[agent]\nx = " + strings.Repeat("{a=", 20000) + "1" + strings.Repeat("}", 20000) + "\n"
	for name, src := range map[string]string{"key": deepKey, "header": deepHeader, "array": deepArray, "inline": deepInline} {
		start := time.Now()
		_, err := Parse("f.toml", src)
		if err == nil || !strings.Contains(err.Error(), "nested") {
			t.Errorf("%s: want a nesting problem, got %v", name, err)
		}
		if !strings.HasPrefix(err.Error(), "f.toml:2:") && !strings.HasPrefix(err.Error(), "f.toml:1:") {
			t.Errorf("%s: no position: %v", name, err)
		}
		t.Logf("%s: %v in %v", name, err, time.Since(start))
	}
	// Dots in strings, numbers and quoted keys are not nesting.
	ok := "[agent]\nstate_file = \"/a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s\"\n" +
		"[[virtual_server]]\nname = \"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t\"\naddress = \"192.0.2.1:80\"\n" +
		"  [virtual_server.check]\n  type = \"http\"\n  expect_body_regex = '''a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u'''\n" +
		"  [[virtual_server.real_server]]\n  address = \"198.18.0.1:80\"\n  check.type = \"tcp\"\n"
	if _, err := Parse("f.toml", ok); err != nil {
		t.Fatalf("plain file refused: %v", err)
	}
}

// Also seen: Load read any file whole (a FIFO hangs, /dev/zero eats
// memory); it takes regular files up to MaxFileSize.
func TestHardenConfigFileSizeAndType(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.toml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Load(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("fifo: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Load hangs on a FIFO")
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, MaxFileSize+1); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("big: %v", err)
	}
	if _, err := Parse("f.toml", strings.Repeat("#", MaxFileSize+1)); err == nil {
		t.Fatal("Parse took an oversized text")
	}
}
