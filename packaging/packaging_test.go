// Package packaging holds what the .deb installs (packaging/deb/build.sh);
// these tests keep the shipped files true to the code and the README.
package packaging

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
)

// The conffile /etc/ipvs-agent.toml is valid and programs nothing as
// shipped; uncommenting its example gives a valid configuration too.
func TestConffileIsValidAndEmpty(t *testing.T) {
	cfg, err := config.Load("deb/ipvs-agent.toml")
	if err != nil {
		t.Fatalf("the packaged /etc/ipvs-agent.toml does not pass check: %v", err)
	}
	if n := len(cfg.VirtualServers); n != 0 {
		t.Fatalf("the packaged /etc/ipvs-agent.toml programs %d virtual servers; it must program nothing until edited", n)
	}
	src, err := os.ReadFile("deb/ipvs-agent.toml")
	if err != nil {
		t.Fatal(err)
	}
	// Commented TOML lines ("#[agent]", "#  weight = 100"); prose stays a comment.
	code := regexp.MustCompile(`^(\s*)#(\s*(\[.*\]|[a-z_.]+ = .*))$`)
	var out []string
	for _, l := range strings.Split(string(src), "\n") {
		out = append(out, code.ReplaceAllString(l, "$1$2"))
	}
	p := filepath.Join(t.TempDir(), "uncommented.toml")
	if err := os.WriteFile(p, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err = config.Load(p)
	if err != nil {
		t.Fatalf("the packaged file's example, uncommented, is not valid: %v", err)
	}
	if len(cfg.VirtualServers) == 0 {
		t.Fatal("uncommenting the packaged example gives no virtual server: the example is missing")
	}
}

// Every key in README.md's configuration tables is documented in
// ipvs-agent.toml(5), and the man page documents no key the README lacks.
func TestManPageKeysMatchREADME(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	sec := string(readme)
	i := strings.Index(sec, "\n## Configuration")
	if i < 0 {
		t.Fatal("README.md has no ## Configuration section")
	}
	sec = sec[i+1:]
	if j := strings.Index(sec[3:], "\n## "); j >= 0 {
		sec = sec[:j+3]
	}
	tick := regexp.MustCompile("`([a-z_]+)`")
	fromREADME := map[string]bool{}
	for _, l := range strings.Split(sec, "\n") {
		if !strings.HasPrefix(l, "| `") {
			continue
		}
		first := strings.Split(l, "|")[1] // the key column
		for _, m := range tick.FindAllStringSubmatch(first, -1) {
			fromREADME[m[1]] = true
		}
	}
	man, err := os.ReadFile("man/ipvs-agent.toml.5")
	if err != nil {
		t.Fatal(err)
	}
	bold := regexp.MustCompile(`\\fB([a-z_]+)\\fR`)
	fromMan := map[string]bool{}
	lines := strings.Split(string(man), "\n")
	for k, l := range lines {
		if l == ".TP" && k+1 < len(lines) { // the tag line of a key's paragraph
			for _, m := range bold.FindAllStringSubmatch(lines[k+1], -1) {
				fromMan[m[1]] = true
			}
		}
	}
	if len(fromREADME) < 20 || len(fromMan) < 20 {
		t.Fatalf("found %d keys in README and %d in the man page: the parsers no longer match the files", len(fromREADME), len(fromMan))
	}
	if d := missing(fromREADME, fromMan); len(d) > 0 {
		t.Errorf("keys in README.md's tables but not in packaging/man/ipvs-agent.toml.5: %v", d)
	}
	if d := missing(fromMan, fromREADME); len(d) > 0 {
		t.Errorf("keys in packaging/man/ipvs-agent.toml.5 but not in README.md's tables: %v", d)
	}
}

func missing(want, have map[string]bool) []string {
	var out []string
	for k := range want {
		if !have[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// The unit keeps the promises the README and the system tests rely on.
func TestUnit(t *testing.T) {
	src, err := os.ReadFile("ipvs-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]string{}
	for _, l := range strings.Split(string(src), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			set[k] = v
		}
	}
	for k, v := range map[string]string{
		"Type":                 "notify",
		"ExecStartPre":         "/usr/sbin/ipvs-agent check -c /etc/ipvs-agent.toml",
		"ExecStart":            "/usr/sbin/ipvs-agent run -c /etc/ipvs-agent.toml",
		"ExecReload":           "/usr/sbin/ipvs-agent reload -c /etc/ipvs-agent.toml",
		"Restart":              "on-failure",
		"StateDirectory":       "ipvs-agent",
		"RuntimeDirectory":     "ipvs-agent",
		"ProtectKernelModules": "yes",
		"NoNewPrivileges":      "yes",
		"ProtectSystem":        "strict",
	} {
		if set[k] != v {
			t.Errorf("unit: %s=%q, want %q", k, set[k], v)
		}
	}
	if set["WatchdogSec"] == "" {
		t.Error("unit: no WatchdogSec")
	}
	for _, c := range []string{"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"} {
		if !strings.Contains(set["CapabilityBoundingSet"], c) {
			t.Errorf("unit: CapabilityBoundingSet lacks %s", c)
		}
	}
}
