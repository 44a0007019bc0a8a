//go:build vmtest

package vmtest

import (
	"strings"
	"testing"
	"time"
)

// foreignSetup creates services with ipvsadm, as another tool would, and
// returns their `ipvsadm -Sn` lines.
func foreignSetup(t *testing.T) []string {
	for _, c := range []string{
		"-A -t 203.0.113.70:80 -s rr",
		"-a -t 203.0.113.70:80 -r 198.18.0.11:80 -g -w 7",
		"-A -u 203.0.113.70:443 -s sh -b sh-port",
		"-a -u 203.0.113.70:443 -r 198.18.0.12:443 -g -w 3",
		"-A -f 77 -s wlc",
		"-a -f 77 -r 198.18.0.13:0 -m -w 2",
	} {
		sh(t, append([]string{"ipvsadm"}, strings.Fields(c)...)...)
	}
	return table(t)
}

const ownedService = `
[[virtual_server]]
name = "mine"
address = "203.0.113.71:80"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
`

var ownedTable = lines(`
-A -t 203.0.113.71:80 -s wlc
-a -t 203.0.113.71:80 -r 198.18.0.11:80 -g -w 1
`)

// Test 7: services that existed before the agent started are never touched:
// not at start, reload, resync, exit (even with cleanup_on_exit), and not when
// the config names the same service without adopt = true.
func TestForeignServicesUntouched(t *testing.T) {
	resetKernel(t)
	foreign := foreignSetup(t)
	s := newSetup(t)
	s.resync = "2s"
	// "clash" has the key of a foreign service but does not adopt it.
	clash := `
[[virtual_server]]
name = "clash"
address = "203.0.113.70:80"
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.0.13:80"
  weight = 1
`
	s.write(ownedService + clash)
	a := s.start()
	_, errs := a.reconciled(0, "start", 60*time.Second)
	t.Logf("start with a clashing unowned service: errors=%d", errs)
	assertTable(t, append(append([]string{}, foreign...), ownedTable...))

	// Reload with a change, then a resync that has work to do.
	from := a.reload(s, strings.Replace(ownedService, `"198.18.0.11:80"`, `"198.18.0.12:80"`, 1)+clash)
	a.reconciled(from, "reload", 30*time.Second)
	mine := lines(`
-A -t 203.0.113.71:80 -s wlc
-a -t 203.0.113.71:80 -r 198.18.0.12:80 -g -w 1
`)
	assertTable(t, append(append([]string{}, foreign...), mine...))
	from = a.mark()
	sh(t, "ipvsadm", "-D", "-t", "203.0.113.71:80")
	a.reconciled(from, "resync", 10*time.Second)
	assertTable(t, append(append([]string{}, foreign...), mine...))

	// Exit with cleanup_on_exit: the agent removes its own services only.
	s.cleanup = true
	from = a.reload(s, strings.Replace(ownedService, `"198.18.0.11:80"`, `"198.18.0.12:80"`, 1)+clash)
	a.reconciled(from, "reload", 30*time.Second)
	a.stop(10 * time.Second)
	assertTable(t, foreign)
}

// adopt = true takes over an existing unowned service with the same key and
// makes it match the config; the other foreign services stay as they were.
func TestAdopt(t *testing.T) {
	resetKernel(t)
	foreign := foreignSetup(t)
	s := newSetup(t)
	s.write(`
[[virtual_server]]
name = "taken"
address = "203.0.113.70:80"
scheduler = "wrr"
adopt = true
  [[virtual_server.real_server]]
  address = "198.18.0.13:80"
  weight = 4
`)
	_, _, errs := s.startReady()
	if errs != 0 {
		t.Errorf("start: errors=%d", errs)
	}
	var want []string
	for _, l := range foreign {
		if !strings.Contains(l, "203.0.113.70:80") {
			want = append(want, l)
		}
	}
	want = append(want,
		"-A -t 203.0.113.70:80 -s wrr",
		"-a -t 203.0.113.70:80 -r 198.18.0.13:80 -g -w 4")
	assertTable(t, want)
	addVIP(t, "203.0.113.70")
	if name, err := who("203.0.113.70:80"); err != nil || name != "rs3" {
		t.Errorf("adopted service answered %q, %v; want rs3", name, err)
	}
}
