//go:build vmtest

package vmtest

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// samplePrefix marks the scraped samples TestMetricsTimeline prints on
// stdout; contrib/grafana/preview extracts them from the run's results.log.
const samplePrefix = "vmtest-sample "

// TestMetricsTimeline runs the agent with metrics on for about a minute
// under steady client traffic through two virtual servers, stops one real
// server at 20 s and starts it again at 40 s, reloads a weight change at
// 50 s, and scrapes /metrics every 2 s. It asserts what the dashboard
// shows: the per-real-server connection counters move for every real
// server, the stopped one's up series and desired weight go to 0 while its
// configured weight stays, and both come back (through slow start) after it
// returns.
//
// It prints every ipvs_agent_ sample that changed since the previous scrape
// as "vmtest-sample <unix ms> <series> <value>" on stdout: the data the
// README's dashboard picture is drawn from (contrib/grafana/preview).
func TestMetricsTimeline(t *testing.T) {
	resetKernel(t)
	addVIP(t, "192.0.2.91")
	s := newSetup(t)
	const metricsAddr = "127.0.0.1:9587"
	s.extra = fmt.Sprintf("metrics_listen = %q\nmetrics_real_servers = true", metricsAddr)
	services := func(apiWeights [3]int) string {
		out := `
[[virtual_server]]
name = "web"
address = "192.0.2.91:80"
scheduler = "wrr"
quorum = 2
  [virtual_server.check]
  type = "tcp"
  interval = "1s"
  timeout = "500ms"
  rise = 1
  fall = 2
  slow_start = "10s"
`
		for _, r := range reals {
			out += fmt.Sprintf("  [[virtual_server.real_server]]\n  address = \"%s:80\"\n  weight = 2\n", r.ip4)
		}
		out += `
[[virtual_server]]
name = "api"
address = "192.0.2.91:8080"
scheduler = "wrr"
  [virtual_server.check]
  type = "tcp"
  interval = "2s"
  timeout = "500ms"
`
		for i, r := range reals {
			out += fmt.Sprintf("  [[virtual_server.real_server]]\n  address = \"%s:8080\"\n  weight = %d\n", r.ip4, apiWeights[i])
		}
		return out
	}
	s.write(services([3]int{3, 2, 1}))
	a, _, _ := s.startReady()
	for _, r := range reals {
		addr := r.ip4 + ":80"
		a.waitFor(0, "real server health changed", func(e logEntry) bool {
			return e.str("real_server") == addr && e.str("to") == "up"
		}, 15*time.Second)
	}

	// Client traffic: new TCP connections, paced, to both virtual servers.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var okN, failN atomic.Int64
	for _, tr := range []struct {
		addr  string
		every time.Duration
	}{{"192.0.2.91:80", 50 * time.Millisecond}, {"192.0.2.91:8080", 100 * time.Millisecond}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(tr.every)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				// Refused while the stopped server still has its weight.
				if _, err := who(tr.addr); err != nil {
					failN.Add(1)
				} else {
					okN.Add(1)
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	rs2 := reals[1]
	key := func(name, vs, rs string) string {
		return fmt.Sprintf(`%s{real_server="%s",virtual_server="%s"}`, name, rs, vs)
	}
	rs2web := rs2.ip4 + ":80"
	prev := map[string]string{}
	var scrapes []map[string]float64
	t0 := time.Now()
	stopped, restarted, reloaded := false, false, false
	for i := 0; i <= 30; i++ {
		time.Sleep(time.Until(t0.Add(time.Duration(i) * 2 * time.Second)))
		el := time.Since(t0)
		switch {
		case !stopped && el >= 20*time.Second:
			rs2.stop(80)
			stopped = true
			t.Cleanup(func() { rs2.serve(80) })
		case !restarted && el >= 40*time.Second:
			if err := rs2.serve(80); err != nil {
				t.Fatalf("restart %s: %v", rs2web, err)
			}
			restarted = true
		case !reloaded && el >= 50*time.Second:
			a.reload(s, services([3]int{1, 2, 3}))
			reloaded = true
		}
		at, text := scrapeText(t, metricsAddr)
		m := map[string]float64{}
		var changed []string
		for _, l := range strings.Split(text, "\n") {
			if !strings.HasPrefix(l, "ipvs_agent_") {
				continue
			}
			j := strings.LastIndexByte(l, ' ')
			v, err := strconv.ParseFloat(l[j+1:], 64)
			if err != nil {
				t.Fatalf("bad sample line %q", l)
			}
			m[l[:j]] = v
			if prev[l[:j]] != l[j+1:] {
				changed = append(changed, fmt.Sprintf("%s%d %s %s", samplePrefix, at.UnixMilli(), l[:j], l[j+1:]))
				prev[l[:j]] = l[j+1:]
			}
		}
		sort.Strings(changed)
		fmt.Println(strings.Join(changed, "\n"))
		scrapes = append(scrapes, m)
	}
	t.Logf("%d connections answered, %d failed (refused before the down verdict)", okN.Load(), failN.Load())

	first, last := scrapes[0], scrapes[len(scrapes)-1]
	for _, vs := range []struct{ name, port string }{{"web", "80"}, {"api", "8080"}} {
		for _, r := range reals {
			k := key("ipvs_agent_real_server_connections_total", vs.name, r.ip4+":"+vs.port)
			if last[k] <= first[k] {
				t.Errorf("%s did not move: %v -> %v", k, first[k], last[k])
			}
		}
	}
	// rs2:80 was down in some scrape between 20 s and 40 s (desired weight
	// 0, configured 2) and up with its full weight again at the end.
	up, des, conf := key("ipvs_agent_real_server_up", "web", rs2web),
		strings.Replace(key("ipvs_agent_real_server_weight", "web", rs2web), "{", `{kind="desired",`, 1),
		strings.Replace(key("ipvs_agent_real_server_weight", "web", rs2web), "{", `{kind="configured",`, 1)
	sawDown := false
	for i, m := range scrapes {
		if m[up] == 0 {
			sawDown = true
			if m[des] != 0 || m[conf] != 2 {
				t.Errorf("scrape %d: %s down with desired weight %v, configured %v", i, rs2web, m[des], m[conf])
			}
		}
	}
	if !sawDown {
		t.Errorf("%s never scraped down while stopped", rs2web)
	}
	if last[up] != 1 || last[des] != 2 {
		t.Errorf("%s at the end: up %v, desired weight %v; want 1 and 2", rs2web, last[up], last[des])
	}
	if k := `ipvs_agent_config_reloads_total{result="success"}`; last[k] < 1 {
		t.Errorf("%s = %v after a reload", k, last[k])
	}
	a.stop(30 * time.Second)
}

// scrapeText fetches the metrics endpoint's text exposition.
func scrapeText(t testing.TB, addr string) (time.Time, string) {
	t.Helper()
	at := time.Now()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return at, string(b)
}
