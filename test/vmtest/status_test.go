//go:build vmtest

package vmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// agentCmd runs an ipvs-agent client command (reload, status, diff) and
// returns its stdout, stderr and exit code.
func agentCmd(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(agentBin(t), args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// scrape fetches the metrics endpoint and returns sample lines by name and
// labels ("name{labels}" -> value).
func scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", l)
		}
		out[l[:i]] = v
	}
	return out
}

type statusDoc struct {
	VirtualServers []struct {
		Name   string
		Quorum struct {
			Healthy int
			OK      bool
		}
		RealServers []struct {
			Address string
			Why     []string
			Weight  struct{ Configured, Desired, Kernel int }
			Health  *struct {
				State  string
				Reason string
			}
		} `json:"real_servers"`
	} `json:"virtual_servers"`
}

// TestStatusMetricsDiff drives the introspection commands against the real
// kernel: `ipvs-agent reload` waits for the reconcile, the per-real-server
// kernel counters move with traffic, a killed real server is shown down
// with its reason within one check interval of the agent's verdict,
// `-quorum` follows it, `diff` announces exactly the writes the following
// reload logs, and with the agent stopped `status` says so and still shows
// the kernel's table.
func TestStatusMetricsDiff(t *testing.T) {
	resetKernel(t)
	addVIP(t, "192.0.2.90")
	s := newSetup(t)
	sock := filepath.Join(s.dir, "ctl.sock")
	const metricsAddr = "127.0.0.1:9587"
	s.extra = fmt.Sprintf("status_socket = %q\nmetrics_listen = %q\nmetrics_real_servers = true", sock, metricsAddr)
	const interval = time.Second
	vs := func(quorum int, weights [3]int, extra string) string {
		out := fmt.Sprintf(`
[[virtual_server]]
name = "web"
address = "192.0.2.90:80"
scheduler = "rr"
quorum = %d
  [virtual_server.check]
  type = "tcp"
  interval = "1s"
  timeout = "500ms"
  rise = 1
  fall = 2
`, quorum)
		for i, w := range weights {
			out += fmt.Sprintf("  [[virtual_server.real_server]]\n  address = \"%s:80\"\n  weight = %d\n", reals[i].ip4, w)
		}
		return out + extra
	}
	s.write(vs(3, [3]int{1, 1, 1}, ""))
	a, _, _ := s.startReady()
	for _, r := range reals {
		addr := r.ip4 + ":80"
		a.waitFor(0, "real server health changed", func(e logEntry) bool {
			return e.str("real_server") == addr && e.str("to") == "up"
		}, 3*interval+5*time.Second)
	}

	// reload through the socket: returns after the reconcile.
	out, errOut, code := agentCmd(t, "reload", "-c", s.cfg)
	if code != 0 || !strings.Contains(out, "unchanged, kernel re-checked: 0 writes, 0 errors") {
		t.Fatalf("reload: exit %d\n%s%s", code, out, errOut)
	}
	if _, _, code := agentCmd(t, "status", "-c", s.cfg, "-quorum", "web"); code != 0 {
		t.Fatalf("status -quorum web with 3 of 3 up: exit %d", code)
	}

	// Counters move when traffic flows.
	conns := func(m map[string]float64) (sum float64) {
		for _, r := range reals {
			sum += m[fmt.Sprintf(`ipvs_agent_real_server_connections_total{real_server="%s:80",virtual_server="web"}`, r.ip4)]
		}
		return sum
	}
	before := scrape(t, metricsAddr)
	const n = 30
	for i := 0; i < n; i++ {
		if _, err := who("192.0.2.90:80"); err != nil {
			t.Fatalf("request %d through the VIP: %v", i, err)
		}
	}
	// The kernel folds its per-CPU counters into the totals it reports
	// every 2 s (its rate estimator's timer): poll.
	var after map[string]float64
	for deadline := time.Now().Add(6 * time.Second); ; {
		after = scrape(t, metricsAddr)
		if conns(after)-conns(before) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if got := conns(after) - conns(before); got < n {
		t.Fatalf("real server connection counters moved by %v after %d connections", got, n)
	}
	pk := `ipvs_agent_virtual_server_packets_total{direction="in",virtual_server="web"}`
	if after[pk] <= before[pk] {
		t.Fatalf("%s did not move: %v -> %v", pk, before[pk], after[pk])
	}
	t.Logf("%d connections: counters +%v, packets in +%v", n, conns(after)-conns(before), after[pk]-before[pk])

	// Kill a real server: status shows it down, with its reason, within
	// one check interval of the agent's verdict.
	from := a.mark()
	rs2 := reals[1]
	rs2.stop(80)
	stopped := time.Now()
	t.Cleanup(func() {
		if err := rs2.serve(80); err != nil {
			t.Errorf("restart %s:80: %v", rs2.ip4, err)
		}
	})
	addr2 := rs2.ip4 + ":80"
	verdict := a.waitFor(from, "real server health changed", func(e logEntry) bool {
		return e.str("real_server") == addr2 && e.str("to") == "down"
	}, 2*interval+10*time.Second)
	seenVerdict := time.Now()
	var shown time.Duration
	for {
		// Judged by when the call was made: exec'ing the client costs a
		// few hundred milliseconds under emulation.
		asked := time.Now()
		out, _, code := agentCmd(t, "status", "-c", s.cfg, "-json", "web")
		if code != 0 {
			t.Fatalf("status -json web: exit %d", code)
		}
		var doc statusDoc
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("status -json: %v\n%s", err, out)
		}
		rs := doc.VirtualServers[0].RealServers[1]
		if rs.Health != nil && rs.Health.State == "down" && len(rs.Why) > 0 && strings.HasPrefix(rs.Why[0], "down: ") && rs.Weight.Kernel == 0 {
			shown = asked.Sub(seenVerdict)
			if doc.VirtualServers[0].Quorum.OK || doc.VirtualServers[0].Quorum.Healthy != 2 {
				t.Errorf("quorum 3 with 2 up: %+v", doc.VirtualServers[0].Quorum)
			}
			t.Logf("down in a status call made %v after the verdict (%q), %v after the stop: %q",
				shown.Round(time.Millisecond), verdict.str("reason"), asked.Sub(stopped).Round(time.Millisecond), rs.Why)
			break
		}
		if asked.Sub(seenVerdict) > interval {
			t.Fatalf("status does not show %s down %v after the agent's verdict: %+v", addr2, interval, rs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	table, _, _ := agentCmd(t, "status", "-c", s.cfg)
	if !regexp.MustCompile(`-> ` + regexp.QuoteMeta(addr2) + ` +Route +1->0 .* down \d+s .*FAIL .*down: connect: `).MatchString(table) {
		t.Errorf("status table does not show %s down with its reason:\n%s", addr2, table)
	}
	if _, _, code := agentCmd(t, "status", "-c", s.cfg, "-quorum", "web"); code != 1 {
		t.Errorf("status -quorum web with 2 of 3 up and quorum 3: exit %d, want 1", code)
	}

	// diff shows exactly the writes the following reload makes: a weight
	// change, a real server removed (no connections left: deleted), a new
	// virtual server.
	newVS := `
[[virtual_server]]
name = "api"
address = "192.0.2.90:8080"
  [[virtual_server.real_server]]
  address = "198.18.0.11:8080"
`
	s.write(vs(2, [3]int{5, 1, 1}, newVS))
	// remove rs3 from the file
	cfg := strings.Replace(readFile(t, s.cfg), "  [[virtual_server.real_server]]\n  address = \""+reals[2].ip4+":80\"\n  weight = 1\n", "", 1)
	writeText(t, s.cfg, cfg)
	out, errOut, code = agentCmd(t, "diff", "-c", s.cfg)
	if code != 1 {
		t.Fatalf("diff: exit %d, want 1\n%s%s", code, out, errOut)
	}
	var predicted []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if i := strings.Index(l, ": "); i > 0 && !strings.HasSuffix(l, "kernel writes") {
			predicted = append(predicted, l[i+2:])
		}
	}
	sort.Strings(predicted)
	from = a.mark()
	out, errOut, code = agentCmd(t, "reload", "-c", s.cfg)
	if code != 0 {
		t.Fatalf("reload: exit %d\n%s%s", code, out, errOut)
	}
	var done []string
	for _, e := range a.entriesSince(from, "kernel write") {
		if e.str("reason") == "reload" {
			done = append(done, e.str("op"))
		}
	}
	sort.Strings(done)
	if strings.Join(predicted, "\n") != strings.Join(done, "\n") || len(done) != 4 {
		t.Fatalf("diff predicted:\n%s\nthe reload wrote:\n%s", strings.Join(predicted, "\n"), strings.Join(done, "\n"))
	}
	t.Logf("diff = reload's writes:\n%s", strings.Join(done, "\n"))
	if out, _, code := agentCmd(t, "diff", "-c", s.cfg); code != 0 || strings.TrimSpace(out) != "no changes" {
		t.Fatalf("diff after the reload: exit %d %q", code, out)
	}
	// A refused file: exit 1, problems with positions, nothing changes.
	writeText(t, s.cfg, cfg+"\nbogus = 1\n")
	_, errOut, code = agentCmd(t, "reload", "-c", s.cfg)
	if code != 1 || !strings.Contains(errOut, s.cfg+":") || !strings.Contains(errOut, `unknown key "bogus"`) {
		t.Fatalf("bad file: exit %d: %s", code, errOut)
	}

	// Agent stopped: status says so (exit 2) and shows the kernel's table.
	a.stop(30 * time.Second)
	out, errOut, code = agentCmd(t, "status", "-c", s.cfg)
	if code != 2 || !strings.Contains(out, "ipvs-agent is NOT RUNNING") || !strings.Contains(out, "TCP 192.0.2.90:80 rr") ||
		!strings.Contains(out, "-> "+reals[0].ip4+":80") {
		t.Fatalf("status with the agent stopped: exit %d\n%s%s", code, out, errOut)
	}
	if _, _, code := agentCmd(t, "reload", "-c", s.cfg); code != 2 {
		t.Fatalf("reload with the agent stopped: exit %d, want 2", code)
	}
}

func writeText(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkReloadUnderScrape1000x10 times reloads of 1,000 x 10 that
// rewrite every real server's weight (10,000 writes after a full kernel
// read), alone and with one metrics scrape and one status call started at
// the same instant, alternating, and reports both and their ratio.
func BenchmarkReloadUnderScrape1000x10(b *testing.B) {
	benchAgent(b, "-log-level", "info")
	reloadIPVS(b)
	s := newSetup(b)
	s.resync = "1h"
	sock := filepath.Join(s.dir, "ctl.sock")
	const metricsAddr = "127.0.0.1:9588"
	s.extra = fmt.Sprintf("status_socket = %q\nmetrics_listen = %q", sock, metricsAddr)
	variants := [2]string{benchServices(1000), strings.ReplaceAll(benchServices(1000), "weight = ", "weight = 1")}
	s.write(variants[0])
	a := s.start()
	if w, errs := a.reconciled(0, "start", 10*time.Minute); w != 11000 || errs != 0 {
		b.Fatalf("start: writes=%d errors=%d", w, errs)
	}
	a.waitFor(0, "ready", nil, time.Minute)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	get := func(c *http.Client, url string) (time.Duration, int) {
		t0 := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			b.Fatalf("GET %s: %v", url, err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(t0), int(n)
	}
	// Alone, for the record: what one scrape and one status call cost.
	d, size := get(http.DefaultClient, "http://"+metricsAddr+"/metrics")
	b.Logf("one scrape, idle: %v, %d bytes", d.Round(time.Millisecond), size)
	d, size = get(hc, "http://agent/v1/status")
	b.Logf("one status call, idle: %v, %d bytes", d.Round(time.Millisecond), size)
	d, size = get(hc, "http://agent/v1/status?name=vs500")
	b.Logf("one status call for one virtual server, idle: %v, %d bytes", d.Round(time.Millisecond), size)
	time.Sleep(5 * time.Second) // let the agent's GC settle before timing reloads

	var quiet, loaded, quietWall, loadedWall, scrapeD, statusD phase
	flip := 0 // variants[flip%2] is applied
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, withLoad := range []bool{false, true} {
			// Every reload flips the weights: 10,000 writes.
			flip++
			s.write(variants[flip%2])
			from := a.mark()
			t0 := time.Now()
			a.signal(syscall.SIGHUP)
			doneLoad := make(chan struct{})
			if withLoad {
				go func() {
					defer close(doneLoad)
					sd, _ := get(http.DefaultClient, "http://"+metricsAddr+"/metrics")
					scrapeD.add(sd)
					st, _ := get(hc, "http://agent/v1/status")
					statusD.add(st)
				}()
			} else {
				close(doneLoad)
			}
			e := a.waitFor(from, "reconciled", func(e logEntry) bool { return e.str("reason") == "reload" }, 10*time.Minute)
			el := time.Since(t0)
			<-doneLoad
			if w, _ := e.num("writes"); w != 10000 {
				b.Fatalf("reload: %d writes, want 10000: %s", w, e.raw)
			}
			if withLoad {
				loaded.add(entryDuration(b, e))
				loadedWall.add(el)
			} else {
				quiet.add(entryDuration(b, e))
				quietWall.add(el)
			}
		}
	}
	b.StopTimer()
	quiet.report(b, "agent-s/reload")
	loaded.report(b, "agent-s/reload-scraped")
	quietWall.report(b, "s/reload")
	loadedWall.report(b, "s/reload-scraped")
	scrapeD.report(b, "s/scrape-during")
	statusD.report(b, "s/status-during")
	if quiet.n > 0 && loaded.n > 0 {
		r := float64(loaded.sum/time.Duration(loaded.n)) / float64(quiet.sum/time.Duration(quiet.n))
		b.ReportMetric(r, "scraped/quiet")
		b.Logf("reload with a scrape and a status call / reload alone: %.3f", r)
	}
	a.stop(time.Minute)
	reloadIPVS(b)
}
