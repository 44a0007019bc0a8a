//go:build vmtest

package vmtest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHealthSideBySide (make vmbench) runs keepalived 2.2.7 and
// ipvs-agent one after the other in this VM boot on the same work
// (hcwork_test.go) and prints issue 12's table for both. It measures, it
// does not judge: a wrong table or a reload that writes fails it, a time
// never does.
//
// Per daemon, at N = 100 and N = 1,000 virtual servers x 10:
//   - start on an empty, freshly loaded ip_vs; wait for the whole table and
//     hcSettle more (the first round of checks);
//   - steady window (hcWindow): the daemon's CPU from /proc/PID/stat
//     (utime+stime; keepalived = parent + checker child), its wake-ups
//     (voluntary context switches of all threads), RSS (VmRSS, summed), the
//     checks that reached a real server (handshakes the farm accepted), the
//     VM's busy share (/proc/stat) and the test process's own CPU (farm +
//     sampler, the same for both daemons);
//   - reload after a comment-only edit, under the full check load;
//   - detection: hcKills real servers stopped 250 ms apart (listener
//     closed: the next SYN gets a reset), time until each reaches weight 0;
//   - all along, a sampler of the kernel's weights (/proc/net/ip_vs every
//     hcSample) counts healthy servers at weight 0.
//
// Then cold start with checks configured, 1,000 x 10 (3 trials) and
// 5,000 x 10 (1 trial): exec until the sampler sees the whole table.
const (
	hcSettle = 5 * time.Second
	hcWindow = 20 * time.Second
	hcKills  = 20
	hcSample = 200 * time.Millisecond
)

// hcDaemon is one of the two daemons under comparison.
type hcDaemon struct {
	name     string
	children bool // count descendants (keepalived's checker process)
	start    func(b *testing.B, w *hcWork, dir string) *proc
	// reload edits the file (a comment only), signals, and waits for the
	// daemon's own "done"; it returns the time or ok=false at the limit.
	reload func(b *testing.B, p *proc, w *hcWork, dir string, limit time.Duration) (time.Duration, bool)
	what   string // what the reload time is measured to
}

func keepalivedDaemon() hcDaemon {
	return hcDaemon{
		name:     "keepalived",
		children: true,
		start: func(b *testing.B, w *hcWork, dir string) *proc {
			cfg := filepath.Join(dir, "keepalived.conf")
			writeFile(b, cfg, w.keepalivedConfig("vmbench"))
			// -C checker only, -n no daemon, -l log to stderr, -G no syslog
			// (with no syslog daemon, glibc's LOG_CONS writes every message to
			// /dev/console, the emulated serial port, which blocks keepalived
			// for seconds); its own pid files.
			return startProc(b, "keepalived", nil, keepalivedBin(b), "-C", "-n", "-l", "-G", "-f", cfg,
				"-p", filepath.Join(dir, "keepalived.pid"), "-c", filepath.Join(dir, "checkers.pid"))
		},
		// keepalived's parent logs "Reload complete" once every child
		// process has re-read the configuration (config_notify.c); the
		// checker then diffs the IPVS table and restarts its checks. The
		// probe gap measured next to it shows when checks resumed.
		reload: func(b *testing.B, p *proc, w *hcWork, dir string, limit time.Duration) (time.Duration, bool) {
			writeFile(b, filepath.Join(dir, "keepalived.conf"), w.keepalivedConfig("vmbench, edited"))
			from := p.mark()
			t0 := time.Now()
			syscall.Kill(p.pid(), syscall.SIGHUP)
			l, ok := p.waitLine(from, limit, "Reload complete")
			return l.at.Sub(t0), ok
		},
		what: `SIGHUP to the parent's "Reload complete" line (every child has re-read the file)`,
	}
}

// agentDaemon is the agent under test, or with bin set another build of it
// (make vmbench BASELINE=<rev>).
func agentDaemon(name, bin string) hcDaemon {
	return hcDaemon{
		name: name,
		start: func(b *testing.B, w *hcWork, dir string) *proc {
			cfg := filepath.Join(dir, "agent.toml")
			writeFile(b, cfg, w.agentConfig(filepath.Join(dir, "state.json"), "vmbench"))
			exe := bin
			if exe == "" {
				exe = agentBin(b)
			}
			return startProc(b, name, nil, exe, "run", "-c", cfg, "-log-format", "json", "-log-level", "info")
		},
		reload: func(b *testing.B, p *proc, w *hcWork, dir string, limit time.Duration) (time.Duration, bool) {
			writeFile(b, filepath.Join(dir, "agent.toml"), w.agentConfig(filepath.Join(dir, "state.json"), "vmbench, edited"))
			from := p.mark()
			t0 := time.Now()
			syscall.Kill(p.pid(), syscall.SIGHUP)
			l, ok := p.waitLine(from, limit, `"msg":"reconciled"`, `"reason":"reload"`)
			if ok && !strings.Contains(l.text, `"writes":0,`) {
				b.Errorf("reload after a comment-only edit wrote to the kernel: %s", l.text)
			}
			return l.at.Sub(t0), ok
		},
		what: `SIGHUP to its "reconciled" line with reason reload (writes 0)`,
	}
}

func keepalivedBin(b testing.TB) string {
	const p = "/usr/sbin/keepalived"
	if _, err := os.Stat(p); err != nil {
		b.Fatalf("%s: %v (the VM base with keepalived is built with VM_KEEPALIVED=1: make vmbench)", p, err)
	}
	return p
}

func writeFile(b testing.TB, p, body string) {
	b.Helper()
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
}

// hcResult is one daemon's column at one N.
type hcResult struct {
	startup                   time.Duration
	cpu, window               time.Duration
	wakeups, involuntary      int64
	rssKiB                    int64
	procs                     int
	checks                    int64
	configured                int64
	vmBusy, vmTotal           time.Duration
	selfCPU                   time.Duration
	reload                    time.Duration
	reloadOK                  bool
	reloadGap                 time.Duration
	detect                    []time.Duration
	undetected                int
	detectLimit               time.Duration
	worstFalse, distinctFalse int
	worstFalseAt, sampledSpan time.Duration
	sampleCost                time.Duration
	samples                   int
	stopTook                  time.Duration
	stopKilled                bool
}

func runHC(b *testing.B, d hcDaemon, w *hcWork, f *farm) hcResult {
	var r hcResult
	reloadIPVS(b)
	f.serve(b, w.targets)
	dir := b.TempDir()
	s := newWeightSampler(w, hcSample)
	defer s.close()
	t0 := time.Now()
	p := d.start(b, w, dir)
	full, ok := s.waitFull(coldLimit)
	if !ok {
		p.dump(40)
		b.Fatalf("%s: the table of %d x %d was not complete within %v: nothing to measure", d.name, w.n, hcReals, coldLimit)
	}
	r.startup = full.Sub(t0)
	time.Sleep(hcSettle)

	// Steady window.
	self := []int{os.Getpid()}
	u0, s0, a0 := usage([]int{p.pid()}, d.children), usage(self, false), f.total.Load()
	busy0, tot0 := vmBusy()
	var rss int64
	for end := time.Now().Add(hcWindow); time.Now().Before(end); {
		time.Sleep(time.Second)
		if u := usage([]int{p.pid()}, d.children); u.rssKiB > rss {
			rss = u.rssKiB
		}
	}
	u1, s1, a1 := usage([]int{p.pid()}, d.children), usage(self, false), f.total.Load()
	busy1, tot1 := vmBusy()
	r.window = u1.at.Sub(u0.at)
	r.cpu = u1.cpu - u0.cpu
	r.wakeups = u1.voluntary - u0.voluntary
	r.involuntary = u1.involunt - u0.involunt
	r.rssKiB = rss
	r.procs = u1.procs
	r.checks = a1 - a0
	r.configured = int64(float64(len(w.targets)) * r.window.Seconds()) // interval 1 s
	r.vmBusy, r.vmTotal = busy1-busy0, tot1-tot0
	r.selfCPU = s1.cpu - s0.cpu

	// Reload under load, and the longest stretch without a probe reaching
	// the farm while it runs.
	gapDone := make(chan time.Duration)
	stopGap := make(chan struct{})
	go func() {
		last, lastN, worst := time.Now(), f.total.Load(), time.Duration(0)
		for {
			select {
			case <-stopGap:
				if g := time.Since(last); g > worst {
					worst = g
				}
				gapDone <- worst
				return
			case <-time.After(20 * time.Millisecond):
			}
			if n := f.total.Load(); n != lastN {
				if g := time.Since(last); g > worst {
					worst = g
				}
				last, lastN = time.Now(), n
			}
		}
	}()
	const reloadLimit = 60 * time.Second
	r.reload, r.reloadOK = d.reload(b, p, w, dir, reloadLimit)
	time.Sleep(2 * time.Second) // let checks resume inside the gap watch
	close(stopGap)
	r.reloadGap = <-gapDone

	// Detection.
	ks := w.spreadTargets(hcKills)
	for _, k := range ks {
		f.stop(w.targets[k])
		s.stopped(k, time.Now())
		time.Sleep(250 * time.Millisecond)
	}
	r.detectLimit = 60 * time.Second
	if w.n >= 1000 {
		r.detectLimit = 120 * time.Second
	}
	s.waitDetected(ks, r.detectLimit)
	r.detect, r.undetected = s.detections(ks)

	r.worstFalse, r.distinctFalse, r.worstFalseAt = s.falseDowns()
	s.mu.Lock()
	r.sampledSpan = time.Since(s.fullAt)
	r.sampleCost = s.readCost
	r.samples = s.samples
	errs := append([]string(nil), s.errs...)
	s.mu.Unlock()
	r.stopTook, r.stopKilled = p.stop(2 * time.Minute)
	for _, k := range ks {
		f.serve(b, []netip.AddrPort{w.targets[k]})
	}
	if len(errs) > 0 {
		b.Errorf("%s at %d x %d: the kernel table was wrong: %s", d.name, w.n, hcReals, strings.Join(errs, "; "))
	}
	return r
}

// coldLimit bounds one cold start; a daemon that takes longer is reported
// as such (a time is never a failure here).
const coldLimit = 6 * time.Minute

// coldStart times exec to the whole n x 10 table in the kernel, checks
// configured and every real server up; ok is false at coldLimit.
func coldStart(b *testing.B, d hcDaemon, w *hcWork, f *farm) (took time.Duration, ok bool) {
	reloadIPVS(b)
	dir := b.TempDir()
	s := newWeightSampler(w, 100*time.Millisecond)
	defer s.close()
	t0 := time.Now()
	p := d.start(b, w, dir)
	full, ok := s.waitFull(coldLimit)
	if !ok {
		p.dump(20)
		if !p.running() {
			b.Fatalf("%s exited during a cold start of %d x %d: %v", d.name, w.n, hcReals, p.err)
		}
	}
	p.stop(3 * time.Minute)
	return full.Sub(t0), ok
}

func BenchmarkHealthSideBySide(b *testing.B) {
	if got := strings.TrimSpace(readFile(b, "/sys/devices/system/clocksource/clocksource0/current_clocksource")); got != "tsc" {
		b.Fatalf("clocksource %q, want tsc: the figures would measure emulated clock reads", got)
	}
	f := getFarm(b)
	daemons := []hcDaemon{keepalivedDaemon()}
	if bl := os.Getenv("VMBENCH_BASELINE_AGENT"); bl != "" {
		daemons = append(daemons, agentDaemon("ipvs-agent "+os.Getenv("VMBENCH_BASELINE_REV"), bl))
	}
	daemons = append(daemons, agentDaemon("ipvs-agent "+os.Getenv("VMBENCH_AGENT_REV"), ""))
	began := time.Now()
	sizes, coldSizes := []int{100, 1000}, []int{1000, 5000}
	if os.Getenv("VMBENCH_QUICK") == "1" { // a smoke run of the harness itself
		sizes, coldSizes = []int{100}, []int{1000}
	}
	results := map[string]map[int]hcResult{}
	for _, n := range sizes {
		w := newHCWork(n)
		for _, d := range daemons {
			t0 := time.Now()
			r := runHC(b, d, w, f)
			if results[d.name] == nil {
				results[d.name] = map[int]hcResult{}
			}
			results[d.name][n] = r
			fmt.Printf("vmbench: %s at %d x 10 done in %v\n", d.name, n, time.Since(t0).Round(time.Second))
		}
	}
	f.stopAll()
	cold := map[string]map[int][]time.Duration{}
	for _, n := range coldSizes {
		w := newHCWork(n)
		t0 := time.Now()
		f.serve(b, w.targets)
		fmt.Printf("vmbench: %d listeners up in %v\n", len(w.targets), time.Since(t0).Round(100*time.Millisecond))
		trials := 3
		if n >= 5000 || os.Getenv("VMBENCH_QUICK") == "1" {
			trials = 1
		}
		for i := 0; i < trials; i++ {
			for _, d := range daemons {
				if cold[d.name] == nil {
					cold[d.name] = map[int][]time.Duration{}
				}
				el, ok := coldStart(b, d, w, f)
				if !ok {
					el = -coldLimit // printed as "> limit"
				}
				cold[d.name][n] = append(cold[d.name][n], el)
				fmt.Printf("vmbench: cold start %s %d x 10: %v (complete: %v)\n", d.name, n, el.Round(10*time.Millisecond), ok)
			}
		}
		f.stopAll()
	}
	reloadIPVS(b)
	printHCTable(daemons, results, cold)
	fmt.Printf("vmbench: side by side took %v\n", time.Since(began).Round(time.Second))
	ka, ag := results["keepalived"][100], results[daemons[len(daemons)-1].name][100]
	if ka.checks > 0 && ag.checks > 0 {
		b.ReportMetric(msPerCheck(ka), "keepalived-ms/check")
		b.ReportMetric(msPerCheck(ag), "agent-ms/check")
	}
}

func msPerCheck(r hcResult) float64 {
	if r.checks == 0 {
		return 0
	}
	return float64(r.cpu.Microseconds()) / 1000 / float64(r.checks)
}

func printHCTable(daemons []hcDaemon, res map[string]map[int]hcResult, cold map[string]map[int][]time.Duration) {
	var sb strings.Builder
	row := func(label string, cell func(hcResult) string, n int) {
		fmt.Fprintf(&sb, "| %s |", label)
		for _, d := range daemons {
			fmt.Fprintf(&sb, " %s |", cell(res[d.name][n]))
		}
		// The last column: each agent's CPU per check against keepalived's.
		var ratios []string
		if ka := res["keepalived"][n]; label == "CPU per completed check" && msPerCheck(ka) > 0 {
			for _, d := range daemons[1:] {
				ratios = append(ratios, fmt.Sprintf("%.2fx", msPerCheck(res[d.name][n])/msPerCheck(ka)))
			}
		}
		fmt.Fprintf(&sb, " %s |\n", strings.Join(ratios, " / "))
	}
	pct := func(a, b time.Duration) float64 { return 100 * a.Seconds() / b.Seconds() }
	sb.WriteString("\nHealth checks side by side (same VM boot, same work; vmbench)\n\n")
	if up, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&sb, "VM load average at the end: %s(the host's uptime is printed by make vmbench)\n\n", up)
	}
	fmt.Fprintf(&sb, "| work |")
	for _, d := range daemons {
		fmt.Fprintf(&sb, " %s |", d.name)
	}
	sb.WriteString(" agent/keepalived |\n|---|" + strings.Repeat("---|", len(daemons)+1) + "\n")
	for _, n := range []int{100, 1000} {
		label := fmt.Sprintf("N=%d (%d checks/s configured)", n, n*hcReals)
		row(label+": daemon CPU, % of one vCPU", func(r hcResult) string {
			return fmt.Sprintf("%.0f %% (VM %.0f %% busy)", pct(r.cpu, r.window), pct(r.vmBusy, r.vmTotal))
		}, n)
		row("checks done (handshakes at the real servers / configured)", func(r hcResult) string {
			return fmt.Sprintf("%.0f %% (%d/s)", 100*float64(r.checks)/float64(r.configured), int64(float64(r.checks)/r.window.Seconds()))
		}, n)
		row("CPU per completed check", func(r hcResult) string { return fmt.Sprintf("%.3f ms", msPerCheck(r)) }, n)
		row("wake-ups/s (voluntary ctx switches, all threads)", func(r hcResult) string {
			return fmt.Sprintf("%.0f (+%.0f involuntary)", float64(r.wakeups)/r.window.Seconds(), float64(r.involuntary)/r.window.Seconds())
		}, n)
		row("RSS (max in window)", func(r hcResult) string {
			return fmt.Sprintf("%.1f MiB (%d proc)", float64(r.rssKiB)/1024, r.procs)
		}, n)
		row("healthy servers at weight 0: worst moment / distinct", func(r hcResult) string {
			return fmt.Sprintf("%d / %d (over %v)", r.worstFalse, r.distinctFalse, r.sampledSpan.Round(time.Second))
		}, n)
		row(fmt.Sprintf("detection of a stopped real server (%d), p50 / p99 / max", hcKills), func(r hcResult) string {
			s := fmt.Sprintf("%.1f / %.1f / %.1f s", percentile(r.detect, .5).Seconds(), percentile(r.detect, .99).Seconds(), percentile(r.detect, 1).Seconds())
			if r.undetected > 0 {
				s += fmt.Sprintf(", **%d not within %v**", r.undetected, r.detectLimit)
			}
			return s
		}, n)
		row("reload after a comment-only edit, under check load", func(r hcResult) string {
			if !r.reloadOK {
				return fmt.Sprintf("**not done within 60 s** (probe gap %.1f s)", r.reloadGap.Seconds())
			}
			return fmt.Sprintf("%.2f s (longest probe gap %.2f s)", r.reload.Seconds(), r.reloadGap.Seconds())
		}, n)
		row("start to whole table (checks on)", func(r hcResult) string { return fmt.Sprintf("%.2f s", r.startup.Seconds()) }, n)
		row("test process CPU (farm + sampler) in the window", func(r hcResult) string {
			return fmt.Sprintf("%.0f %% of one vCPU", pct(r.selfCPU, r.window))
		}, n)
	}
	for _, n := range []int{1000, 5000} {
		fmt.Fprintf(&sb, "| cold start %d x 10, checks on (exec to whole table) |", n)
		for _, d := range daemons {
			ts := append([]time.Duration(nil), cold[d.name][n]...)
			sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
			var parts []string
			for _, t := range ts {
				if t < 0 {
					parts = append(parts, fmt.Sprintf("**> %.0f**", -t.Seconds()))
					continue
				}
				parts = append(parts, fmt.Sprintf("%.2f", t.Seconds()))
			}
			fmt.Fprintf(&sb, " %s s |", strings.Join(parts, ", "))
		}
		var ratios []string
		if ka := cold["keepalived"][n]; len(ka) > 0 && median(ka) > 0 {
			for _, d := range daemons[1:] {
				if ag := cold[d.name][n]; len(ag) > 0 && median(ag) > 0 {
					ratios = append(ratios, fmt.Sprintf("%.2fx", median(ag).Seconds()/median(ka).Seconds()))
				}
			}
		}
		fmt.Fprintf(&sb, " %s (medians) |\n", strings.Join(ratios, " / "))
	}
	sb.WriteString("\nReload observables: ")
	for _, d := range daemons {
		fmt.Fprintf(&sb, "%s: %s. ", d.name, d.what)
	}
	fmt.Fprintf(&sb, "Weights sampled from /proc/net/ip_vs every %v (detection resolution).\n", hcSample)
	fmt.Print(sb.String())
}

func median(ts []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ts...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
