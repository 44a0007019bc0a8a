//go:build vmtest

package vmtest

import (
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// table returns the kernel's IPVS table as `ipvsadm -Sn` lines, sorted, so
// tests compare whole tables with an exact, readable expectation.
func table(t testing.TB) []string {
	t.Helper()
	out := sh(t, "ipvsadm", "-Sn")
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return lines
}

func sorted(lines []string) []string {
	s := append([]string(nil), lines...)
	sort.Strings(s)
	return s
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// diff renders the lines only in want (-) and only in got (+).
func diff(want, got []string) string {
	in := func(s []string) map[string]bool {
		m := map[string]bool{}
		for _, l := range s {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range want {
		if !g[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range got {
		if !w[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

func assertTable(t testing.TB, want []string) {
	t.Helper()
	if !checkTable(t, want) {
		t.FailNow()
	}
}

// checkTable is assertTable that lets the test go on after a difference.
func checkTable(t testing.TB, want []string) bool {
	t.Helper()
	want = sorted(want)
	got := table(t)
	if !equal(want, got) {
		t.Errorf("kernel table differs from expected (-want +got):\n%s\nfull table:\n%s", diff(want, got), strings.Join(got, "\n"))
		return false
	}
	return true
}

// waitTable polls until the table equals want; it returns how long that took.
func waitTable(t testing.TB, want []string, limit time.Duration) time.Duration {
	t.Helper()
	want = sorted(want)
	start := time.Now()
	for {
		got := table(t)
		if equal(want, got) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("kernel table not as expected after %v (-want +got):\n%s", limit, diff(want, got))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// conn is one row of `ipvsadm -Lnc`: the director's connection table.
type conn struct{ proto, state, client, vip, real string }

func conns(t testing.TB) []conn {
	t.Helper()
	var cs []conn
	for _, l := range strings.Split(sh(t, "ipvsadm", "-Lnc"), "\n") {
		f := strings.Fields(l)
		// pro expire state source virtual destination
		if len(f) == 6 && (f[0] == "TCP" || f[0] == "UDP") {
			cs = append(cs, conn{f[0], f[2], f[3], f[4], f[5]})
		}
	}
	return cs
}

// findConn returns the connection entry for the given client address:port.
func findConn(t testing.TB, clientAddr string) (conn, bool) {
	t.Helper()
	for _, c := range conns(t) {
		if c.client == clientAddr {
			return c, true
		}
	}
	return conn{}, false
}

// resetKernel removes every IPVS service so each test starts from an empty table.
func resetKernel(t testing.TB) {
	t.Helper()
	sh(t, "ipvsadm", "-C")
	t.Cleanup(func() {
		if _, err := run("ipvsadm", "-C"); err != nil {
			t.Errorf("ipvsadm -C: %v", err)
		}
	})
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func itoa(i int) string { return strconv.Itoa(i) }
