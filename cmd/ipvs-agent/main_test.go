package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[agent]\nresync_interval = \"soon\"\n[[virtual_server]]\nname = \"a\"\naddress = \"192.0.2.1:80\"\nscheduler = \"nope\"\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "-c", bad}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{bad + ":2:1: invalid duration", bad + ":6:1: unknown scheduler"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("missing %q in %q", want, errOut.String())
		}
	}
	out.Reset()
	if code := run([]string{"check", "-c", "../../packaging/ipvs-agent.toml"}, &out, &errOut); code != 0 {
		t.Fatalf("shipped example: exit %d: %s", code, errOut.String())
	}
	if code := run([]string{"version"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "ipvs-agent") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := run([]string{"frobnicate"}, &out, &errOut); code != 2 {
		t.Fatalf("unknown command: exit %d, want 2", code)
	}
}
