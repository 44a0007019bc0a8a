package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this command as a child process (the signal
// tests need a process of their own).
func TestMain(m *testing.M) {
	if os.Getenv("IPVS_AGENT_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// bytesRead is how much a process has read (rchar in /proc/PID/io).
func bytesRead(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "rchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// Item 14: SIGHUP during start-up (while a large file parses) killed the
// daemon with the default action (exit 129). The handlers are installed
// before the file is read; a SIGTERM then stops it cleanly, before it
// touches the kernel.
func TestHarden14_SignalsDuringStartUpAreHandled(t *testing.T) {
	dir := t.TempDir()
	var sb strings.Builder
	fmt.Fprintf(&sb, "[agent]\nstate_file = %q\n[defaults.check]\ntype = \"tcp\"\n", filepath.Join(dir, "state.json"))
	for i := 0; i < 4000; i++ {
		fmt.Fprintf(&sb, "[[virtual_server]]\nname = \"vs%d\"\naddress = \"198.51.%d.%d:80\"\n", i, i/250, i%250+1)
		for j := 0; j < 10; j++ {
			fmt.Fprintf(&sb, "  [[virtual_server.real_server]]\n  address = \"198.18.%d.%d:80\"\n  weight = %d\n", j, i%250+1, j+1)
		}
	}
	cfg := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(cfg, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "run", "-c", cfg)
	cmd.Env = append(os.Environ(), "IPVS_AGENT_TEST_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Once the file has been read the process is parsing it.
	deadline := time.Now().Add(60 * time.Second)
	for bytesRead(cmd.Process.Pid) < int64(sb.Len()) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the child never read its configuration")
		}
		time.Sleep(time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("killed by %v during start-up\n%s", ws.Signal(), stderr.String())
		}
	}
	if err != nil || !strings.Contains(stderr.String(), "stopped during start-up") {
		t.Fatalf("exit %v, want a clean stop during start-up:\n%s", err, stderr.String())
	}
}
