//go:build vmtest

package vmtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipvs-agent/ipvs-agent/health"
)

// Health checks under load, in the VM: the agent's own cost per TCP check
// (CPU of its process, wake-ups as context switches of all its threads,
// RSS), the share of configured checks really done (SYNs accepted by the
// real servers), a no-change reload while the checks run, and a killed real
// server's time to weight 0. Run by make vmbench (not make vmtest):
//
//	test/vm/run-tests.sh -test.run '^$' -test.bench HealthLoad -test.benchtime 1x
//
// The real servers: every address of 198.18.64.0/18 is local in rs1 (an
// AnyIP route on lo), whose listener on :80 answers them all; the director
// routes that range to rs1. Each check probes port 80 (check port), so
// N x 10 real servers are N x 10 distinct probes.

const farmRange = "198.18.64.0/18"

func farmRoutes(b testing.TB) {
	b.Helper()
	sh(b, "ip", "route", "replace", farmRange, "via", reals[0].ip4)
	sh(b, "ip", "netns", "exec", reals[0].name, "ip", "route", "replace", "local", farmRange, "dev", "lo")
}

// farmAddr is the idx-th real server of the farm.
func farmAddr(idx int) string { return fmt.Sprintf("198.18.%d.%d", 64+idx/250, 1+idx%250) }

// healthServices is n virtual servers x 10 real servers with a TCP check
// every interval (timeout 1 s, fall 3), like keepalived's delay_loop 1,
// connect_timeout 1, retry 2.
func healthServices(n int, interval string) string {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		port := 10000 + i%1000
		fmt.Fprintf(&sb, "[[virtual_server]]\nname = \"vs%d\"\naddress = \"198.51.100.%d:%d\"\nscheduler = \"wrr\"\nforwarding = \"dr\"\n", i, 1+i/1000, port)
		fmt.Fprintf(&sb, "  [virtual_server.check]\n  type = \"tcp\"\n  port = 80\n  interval = %q\n  timeout = \"1s\"\n  rise = 2\n  fall = 3\n", interval)
		for j := 0; j < benchReals; j++ {
			fmt.Fprintf(&sb, "  [[virtual_server.real_server]]\n  address = \"%s:%d\"\n  weight = 1\n", farmAddr(i*benchReals+j), port)
		}
	}
	return sb.String()
}

// healthAgent puts a wrapper in VMTEST_AGENT that runs the agent at info
// level with env (e.g. GOMAXPROCS=1) in front.
func healthAgent(b *testing.B, env string) {
	bin := agentBin(b)
	w := filepath.Join(b.TempDir(), "ipvs-agent")
	script := fmt.Sprintf("#!/bin/sh\n%s exec %s \"$@\" -log-level info\n", env, bin)
	if err := os.WriteFile(w, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	b.Setenv("VMTEST_AGENT", w)
}

// procSample is one reading of a process's counters.
type procSample struct {
	at       time.Time
	cpu      time.Duration // user + system
	switches int           // voluntary + involuntary context switches, every thread
	rssKiB   int
	accepted int // TCP passive opens in rs1 (checks that reached a real server)
}

func sample(b testing.TB, pid int) procSample {
	s := procSample{at: time.Now()}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	stt, _ := strconv.Atoi(f[12])
	s.cpu = time.Duration(ut+stt) * 10 * time.Millisecond // USER_HZ 100
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		body, _ := os.ReadFile(t)
		for _, l := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				s.switches += n
			} else if v, ok := strings.CutPrefix(l, "nonvoluntary_ctxt_switches:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				s.switches += n
			}
		}
	}
	body, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			s.rssKiB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	out := sh(b, "ip", "netns", "exec", reals[0].name, "cat", "/proc/net/snmp")
	var hdr []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "Tcp:") {
			continue
		}
		fs := strings.Fields(l)
		if hdr == nil {
			hdr = fs
			continue
		}
		for i, h := range hdr {
			if h == "PassiveOpens" && i < len(fs) {
				s.accepted, _ = strconv.Atoi(fs[i])
			}
		}
	}
	return s
}

// load is what a window of steady checking cost.
type load struct {
	cpuPerCheck, cpuShare, done, checksPerSec, wakeupsPerSec, rssMiB float64
	downs                                                            int
}

func measure(b *testing.B, a *agent, configured float64, window time.Duration) load {
	pid := a.cmd.Process.Pid
	from := a.mark()
	s0 := sample(b, pid)
	peak := s0.rssKiB
	for time.Since(s0.at) < window {
		time.Sleep(time.Second)
		peak = max(peak, sample(b, pid).rssKiB)
	}
	s1 := sample(b, pid)
	el := s1.at.Sub(s0.at).Seconds()
	checks := float64(s1.accepted - s0.accepted)
	l := load{
		cpuShare:      (s1.cpu - s0.cpu).Seconds() / el,
		checksPerSec:  checks / el,
		wakeupsPerSec: float64(s1.switches-s0.switches) / el,
		rssMiB:        float64(peak) / 1024,
	}
	l.done = l.checksPerSec / configured
	if checks > 0 {
		l.cpuPerCheck = (s1.cpu - s0.cpu).Seconds() * 1000 / checks
	}
	for _, e := range a.entriesSince(from, "real server health changed") {
		if e.str("to") == "down" {
			l.downs++
		}
	}
	return l
}

func (l load) report(b *testing.B, prefix string) {
	b.ReportMetric(l.cpuPerCheck, prefix+"ms-CPU/check")
	b.ReportMetric(l.cpuShare*100, prefix+"%vCPU")
	b.ReportMetric(l.done*100, prefix+"%done")
	b.ReportMetric(l.wakeupsPerSec, prefix+"switches/s")
	b.ReportMetric(l.rssMiB, prefix+"RSS-MiB")
	b.ReportMetric(float64(l.downs), prefix+"false-downs")
	b.Logf("%s: %.0f checks/s (%.0f%% of configured), %.3f ms CPU per check, %.1f%% of a vCPU, %.0f context switches/s, RSS %.1f MiB, %d marked down",
		strings.TrimSuffix(prefix, "-"), l.checksPerSec, l.done*100, l.cpuPerCheck, l.cpuShare*100, l.wakeupsPerSec, l.rssMiB, l.downs)
}

func startHealthLoad(b *testing.B, n int, env string) (*setup, *agent) {
	healthAgent(b, env)
	resetKernel(b)
	farmRoutes(b)
	s := newSetup(b)
	s.resync = "1h"
	s.write(healthServices(n, "1s"))
	a := s.start()
	if w, errs := a.reconciled(0, "start", 10*time.Minute); w != n*(1+benchReals) || errs != 0 {
		b.Fatalf("start: writes=%d errors=%d", w, errs)
	}
	a.waitFor(0, "ready", nil, time.Minute)
	return s, a
}

// BenchmarkHealthLoad100x10: 1,000 TCP checks/s configured.
func BenchmarkHealthLoad100x10(b *testing.B) {
	_, a := startHealthLoad(b, 100, "")
	time.Sleep(5 * time.Second) // first round spread over 1 s, then steady
	measure(b, a, 1000, 20*time.Second).report(b, "")
	a.stop(time.Minute)
}

// BenchmarkHealthLoad1000x10: 10,000 TCP checks/s configured (over the
// default budget on 2 vCPUs: intervals stretch), a no-change reload under
// that load, and a real server whose service is killed.
func BenchmarkHealthLoad1000x10(b *testing.B) {
	s, a := startHealthLoad(b, 1000, "")
	time.Sleep(5 * time.Second)
	if e := a.entriesSince(0, "health checks over budget: every interval stretched to fit; raise [agent] check_budget or intervals"); len(e) > 0 {
		b.Logf("budget: %s", e[len(e)-1].raw)
	}
	measure(b, a, 10000, 20*time.Second).report(b, "")

	var wall, agentDur phase
	for i := 0; i < 3; i++ {
		from := a.mark()
		t0 := time.Now()
		a.signal(syscall.SIGHUP)
		e := a.waitFor(from, "reconciled", func(e logEntry) bool { return e.str("reason") == "reload" }, 5*time.Minute)
		wall.add(time.Since(t0))
		agentDur.add(entryDuration(b, e))
		if w, _ := e.num("writes"); w != 0 {
			b.Fatalf("no-change reload wrote: %s", e.raw)
		}
	}
	wall.report(b, "s/reload-under-checks")
	agentDur.report(b, "agent-s/reload-under-checks")

	// Kill: a reload adds a virtual server whose one real server is
	// rs2:8080 (checked on its own port), then rs2 stops listening there.
	cfg := healthServices(1000, "1s") + `[[virtual_server]]
name = "killed"
address = "198.51.100.200:8080"
scheduler = "wrr"
forwarding = "dr"
  [virtual_server.check]
  type = "tcp"
  interval = "1s"
  timeout = "1s"
  rise = 2
  fall = 3
  [[virtual_server.real_server]]
  address = "198.18.0.12:8080"
  weight = 1
`
	from := a.mark()
	s.write(cfg)
	a.signal(syscall.SIGHUP)
	a.reconciled(from, "reload", 5*time.Minute)
	a.waitFor(from, "real server health changed", func(e logEntry) bool {
		return e.str("real_server") == "198.18.0.12:8080" && e.str("to") == "up"
	}, time.Minute)
	t0 := time.Now()
	reals[1].stop(8080)
	defer reals[1].serve(8080)
	for {
		out := sh(b, "ipvsadm", "-Sn", "-t", "198.51.100.200:8080")
		if strings.Contains(out, "-r 198.18.0.12:8080 -g -w 0") {
			break
		}
		if time.Since(t0) > 2*time.Minute {
			b.Fatalf("killed real server still weighted after 2 min:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.ReportMetric(time.Since(t0).Seconds(), "s-kill-to-weight-0")
	b.Logf("killed real server at weight 0 after %v", time.Since(t0).Round(100*time.Millisecond))
	a.stop(time.Minute)
}

// BenchmarkHealthStarved: 1,000 checks/s with the agent on GOMAXPROCS=1
// and two CPU hogs (one per vCPU) next to it for 2 minutes: no healthy
// real server may be marked down.
func BenchmarkHealthStarved(b *testing.B) {
	_, a := startHealthLoad(b, 100, "GOMAXPROCS=1")
	time.Sleep(5 * time.Second)
	var hogs []*exec.Cmd
	for i := 0; i < 2; i++ {
		h := exec.Command("sh", "-c", "while :; do :; done")
		if err := h.Start(); err != nil {
			b.Fatal(err)
		}
		hogs = append(hogs, h)
	}
	l := measure(b, a, 1000, 2*time.Minute)
	for _, h := range hogs {
		h.Process.Kill()
		h.Wait()
	}
	l.report(b, "starved-")
	if l.downs > 0 {
		b.Errorf("%d healthy real servers marked down under CPU starvation", l.downs)
	}
	a.stop(time.Minute)
}

// BenchmarkHealthProfile runs the health scheduler in this process against
// the farm (N=100, 1,000 checks/s) for 15 s under the CPU profiler and
// prints the profile base64-encoded between markers, for go tool pprof on
// the host (profiles carry their symbols). The real servers' listener runs
// in this process too: read the profile by function.
func BenchmarkHealthProfile(b *testing.B) {
	resetKernel(b)
	farmRoutes(b)
	var checks []health.Check
	for i := 0; i < 1000; i++ {
		t := netip.MustParseAddrPort(farmAddr(i) + ":80")
		checks = append(checks, health.Check{ID: t.String(), Target: t,
			Spec: health.Spec{Type: "tcp", Interval: time.Second, Timeout: time.Second, Rise: 2, Fall: 3}})
	}
	logs := &strings.Builder{}
	var mu sync.Mutex
	s := health.NewScheduler(health.Options{Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	s.Set(checks)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	time.Sleep(3 * time.Second)
	var prof bytes.Buffer
	st0, t0 := s.Stats(), time.Now()
	pprof.StartCPUProfile(&prof)
	time.Sleep(15 * time.Second)
	pprof.StopCPUProfile()
	st1 := s.Stats()
	cancel()
	<-done
	el := time.Since(t0).Seconds()
	b.Logf("in-process: %.0f checks/s, %.1f wake-ups/s, no verdict %d, late %d, saturated %d, stalled %v, max lag %v",
		float64(st1.Checks-st0.Checks)/el, float64(st1.Wakeups-st0.Wakeups)/el, st1.NoVerdict, st1.Late, st1.Saturated, st1.Stalled, st1.MaxLag)
	down := 0
	for _, v := range s.Statuses() {
		if v.State != health.Up {
			down++
		}
	}
	b.Logf("not up: %d", down)
	mu.Lock()
	if l := logs.String(); len(l) > 4000 {
		b.Logf("log tail: %s", l[len(l)-4000:])
	} else {
		b.Logf("log: %s", l)
	}
	mu.Unlock()
	fmt.Printf("PROFILE-BEGIN\n%s\nPROFILE-END\n", base64.StdEncoding.EncodeToString(prof.Bytes()))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
