//go:build vmtest

package vmtest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/ipvs"
)

// Benchmarks of the agent binary against the VM's real IPVS: cold apply and
// no-change reload at the sizes the targets in BENCHMARKS.md are set for.
// They measure, they do not judge: no bound on time fails them; a wrong
// table or a write count other than the expected one does. make vmtest
// does not run them (no -test.bench); make vmbench does.
//
// Metrics, per apply or reload:
//
//	s/apply, s/reload    wall time seen by the test: exec (or SIGHUP) to the "reconciled" line
//	agent-s/...          the agent's own "duration" field of that line (read the kernel, plan, write)
//	startup-s/apply      exec to the "starting" line (process start, config parse, netlink open)
//	check-s/apply        ipvs-agent check -c on the same file (exec, parse, validate), timed apart
//	read+plan-s, writing-s  (Debug only) the reconcile split at the first and last "kernel write" line
//	writes/...           the "writes" field
//
// The agent runs at -log-level info (the production default) unless the
// benchmark's name says Debug: the vmtest helper start() asks for debug,
// which at a cold start logs one line per kernel write.

const benchReals = 10 // real servers per virtual server

// benchServices is n virtual servers x 10 real servers, wrr, DR, no health
// checks: VIPs 198.51.100.1, .2, ... with ports 10000-10999 (1,000 per
// address), real servers 198.18.1-10.x on the VIP's port (DR keeps it).
func benchServices(n int) string {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		port := 10000 + i%1000
		fmt.Fprintf(&sb, "[[virtual_server]]\nname = \"vs%d\"\naddress = \"198.51.100.%d:%d\"\nscheduler = \"wrr\"\nforwarding = \"dr\"\n", i, 1+i/1000, port)
		for j := 0; j < benchReals; j++ {
			fmt.Fprintf(&sb, "  [[virtual_server.real_server]]\n  address = \"198.18.%d.%d:%d\"\n  weight = %d\n", 1+j, 1+i%250, port, 1+j%3)
		}
	}
	return sb.String()
}

// The limit, measured in the same VM boot: moby/ipvs alone, no agent, adds
// n x 10 with one or two handles (one goroutine each), then reads the table
// back with one handle as the agent does before every reconcile (one
// service dump, one destination dump per service). Each run works in a new
// network namespace, which starts with an empty IPVS table and trash list.
// These must run before anything in this process reloads ip_vs: moby/ipvs
// looks up the generic netlink family ID once per process, and a reloaded
// ip_vs registers under a new one. Go runs benchmarks in source order and
// they come first.
func benchBare(b *testing.B, n, handles int) {
	if ipvsReloaded {
		b.Fatal("ip_vs was reloaded earlier in this process: moby/ipvs would use a stale family ID (run the Bare benchmarks first)")
	}
	var apply, read phase
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		ns := fmt.Sprintf("vmbench%d", i)
		sh(b, "ip", "netns", "add", ns)
		sh(b, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
		var hs []*ipvs.Handle
		for j := 0; j < handles; j++ {
			h, err := ipvs.New("/run/netns/" + ns)
			if err != nil {
				b.Fatal(err)
			}
			hs = append(hs, h)
		}
		errc := make(chan error, handles)
		b.StartTimer()
		t0 := time.Now()
		for j, h := range hs {
			go func(lane int, h *ipvs.Handle) {
				for k := lane; k < n; k += handles {
					port := uint16(10000 + k%1000)
					svc := &ipvs.Service{AddressFamily: syscall.AF_INET, Protocol: syscall.IPPROTO_TCP,
						Address: net.IPv4(198, 51, 100, byte(1+k/1000)).To4(), Port: port, SchedName: "wrr", Netmask: 0xffffffff}
					if err := h.NewService(svc); err != nil {
						errc <- err
						return
					}
					for r := 0; r < benchReals; r++ {
						d := &ipvs.Destination{AddressFamily: syscall.AF_INET, Address: net.IPv4(198, 18, byte(1+r), byte(1+k%250)).To4(),
							Port: port, Weight: 1 + r%3, ConnectionFlags: ipvs.ConnectionFlagDirectRoute}
						if err := h.NewDestination(svc, d); err != nil {
							errc <- err
							return
						}
					}
				}
				errc <- nil
			}(j, h)
		}
		for range hs {
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		}
		el := time.Since(t0)
		t1 := time.Now()
		svcs, err := hs[0].GetServices()
		if err != nil {
			b.Fatal(err)
		}
		dests := 0
		for _, s := range svcs {
			ds, err := hs[0].GetDestinations(s)
			if err != nil {
				b.Fatal(err)
			}
			dests += len(ds)
		}
		rd := time.Since(t1)
		b.StopTimer()
		if len(svcs) != n || dests != n*benchReals {
			b.Fatalf("read back %d services and %d real servers, want %d and %d", len(svcs), dests, n, n*benchReals)
		}
		apply.add(el)
		read.add(rd)
		for _, h := range hs {
			h.Close()
		}
		sh(b, "ip", "netns", "del", ns)
	}
	apply.report(b, "s/apply")
	read.report(b, "read-s/apply")
	b.ReportMetric(float64(n*(1+benchReals))/(apply.sum/time.Duration(apply.n)).Seconds(), "writes/s")
}

func BenchmarkBare1000x10Handles1(b *testing.B) { benchBare(b, 1000, 1) }
func BenchmarkBare1000x10Handles2(b *testing.B) { benchBare(b, 1000, 2) }
func BenchmarkBare5000x10Handles2(b *testing.B) { benchBare(b, 5000, 2) }

// ipvsReloaded is set once reloadIPVS has run in this process.
var ipvsReloaded bool

// reloadIPVS empties IPVS by unloading and reloading ip_vs and its
// schedulers. ipvsadm -C is not enough: deleted real servers stay in the
// kernel's trash list for a minute or more, every real server add walks that
// list, and a match is revived rather than created, so a cold apply after
// ipvsadm -C would not be cold.
func reloadIPVS(b *testing.B) {
	b.Helper()
	sh(b, "ipvsadm", "-C")
	var scheds []string
	for _, l := range strings.Split(readFile(b, "/proc/modules"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "ip_vs_") {
			scheds = append(scheds, f[0])
		}
	}
	for _, m := range scheds {
		sh(b, "rmmod", m)
	}
	sh(b, "rmmod", "ip_vs")
	ipvsReloaded = true
	sh(b, "modprobe", "ip_vs")
	for _, m := range scheds { // loaded again as the VM's /init left them
		sh(b, "modprobe", m)
	}
	if n := countServices(b); n != 0 {
		b.Fatalf("%d services left after reloading ip_vs", n)
	}
}

// countDests counts the real servers in the director's /proc/net/ip_vs.
func countDests(b testing.TB) int {
	n := 0
	for _, l := range strings.Split(readFile(b, "/proc/1/net/ip_vs"), "\n") {
		if strings.HasPrefix(l, "  -> ") && !strings.Contains(l, "RemoteAddress") {
			n++
		}
	}
	return n
}

// benchAgent makes start() run the agent under test with extra flags, through
// a wrapper script named by VMTEST_AGENT (start() fixes the arguments; a later
// -log-level overrides its debug). The wrapper's cost (a busybox sh and an
// exec) is measured and logged: it is in the wall times, a few milliseconds.
func benchAgent(b *testing.B, flags ...string) (bin string) {
	b.Helper()
	bin = agentBin(b)
	w := filepath.Join(b.TempDir(), "ipvs-agent")
	script := fmt.Sprintf("#!/bin/sh\nexec %s \"$@\" %s\n", bin, strings.Join(flags, " "))
	if err := os.WriteFile(w, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	best := func(p string) time.Duration {
		min := time.Hour
		for i := 0; i < 5; i++ {
			t0 := time.Now()
			if out, err := run(p, "version"); err != nil {
				b.Fatalf("%s version: %v\n%s", p, err, out)
			}
			if d := time.Since(t0); d < min {
				min = d
			}
		}
		return min
	}
	b.Logf("agent flags %q; exec of the wrapper costs %v more than of the agent (best of 5)", flags, (best(w) - best(bin)).Round(100*time.Microsecond))
	b.Setenv("VMTEST_AGENT", w)
	return bin
}

func entryTime(b testing.TB, e logEntry) time.Time {
	t, err := time.Parse(time.RFC3339Nano, e.str("time"))
	if err != nil {
		b.Fatalf("log line without a time: %s", e.raw)
	}
	return t
}

func entryDuration(b testing.TB, e logEntry) time.Duration {
	d, err := time.ParseDuration(e.str("duration"))
	if err != nil {
		b.Fatalf("reconciled line without a duration: %s", e.raw)
	}
	return d
}

// phase is a running sum for one metric, reported as its mean and logged
// with its range.
type phase struct {
	sum, min, max time.Duration
	n             int
}

func (p *phase) add(d time.Duration) {
	if p.n == 0 || d < p.min {
		p.min = d
	}
	if d > p.max {
		p.max = d
	}
	p.sum += d
	p.n++
}

func (p *phase) report(b *testing.B, unit string) {
	if p.n == 0 {
		return
	}
	b.ReportMetric((p.sum / time.Duration(p.n)).Seconds(), unit)
	b.Logf("%-18s mean %v  min %v  max %v  (%d runs)", unit, (p.sum / time.Duration(p.n)).Round(time.Millisecond),
		p.min.Round(time.Millisecond), p.max.Round(time.Millisecond), p.n)
}

// benchColdApply starts the agent on n x 10 against a freshly loaded ip_vs
// and times it to its first "reconciled" line.
func benchColdApply(b *testing.B, n int, flags ...string) {
	b.StopTimer()
	bin := benchAgent(b, flags...)
	body := benchServices(n)
	want := n * (1 + benchReals)
	var wall, agentDur, startup, check, toWrite, writing phase
	for i := 0; i < b.N; i++ {
		reloadIPVS(b)
		s := newSetup(b)
		s.resync = "1h" // no resync inside a measurement
		s.write(body)

		b.StartTimer()
		t0 := time.Now()
		a := s.start()
		e := a.waitFor(0, "reconciled", func(e logEntry) bool { return e.str("reason") == "start" }, 10*time.Minute)
		el := time.Since(t0)
		b.StopTimer()

		w, _ := e.num("writes")
		errs, _ := e.num("errors")
		if w != want || errs != 0 {
			b.Fatalf("cold apply of %d x %d: writes=%d errors=%d, want writes=%d errors=0", n, benchReals, w, errs, want)
		}
		dur := entryDuration(b, e)
		wall.add(el)
		agentDur.add(dur)
		starting := a.waitFor(0, "starting", nil, time.Second)
		startup.add(entryTime(b, starting).Sub(t0))
		// At debug level every write is logged: split the reconcile into
		// reading the kernel + planning, and writing.
		if kw := a.entriesSince(0, "kernel write"); len(kw) > 0 {
			begin := entryTime(b, e).Add(-dur)
			toWrite.add(entryTime(b, kw[0]).Sub(begin))
			writing.add(entryTime(b, kw[len(kw)-1]).Sub(entryTime(b, kw[0])))
		}
		a.stop(time.Minute)
		// What reading the file costs: ipvs-agent check is exec, parse, validate.
		t1 := time.Now()
		if out, err := run(bin, "check", "-c", s.cfg); err != nil {
			b.Fatalf("ipvs-agent check: %v\n%s", err, out)
		}
		check.add(time.Since(t1))
		if got, gotD := countServices(b), countDests(b); got != n || gotD != n*benchReals {
			b.Fatalf("kernel holds %d services and %d real servers, want %d and %d", got, gotD, n, n*benchReals)
		}
	}
	wall.report(b, "s/apply")
	agentDur.report(b, "agent-s/apply")
	startup.report(b, "startup-s/apply")
	check.report(b, "check-s/apply")
	toWrite.report(b, "read+plan-s/apply")
	writing.report(b, "writing-s/apply")
	b.ReportMetric(float64(want), "writes/apply")
	b.ReportMetric(float64(want)/(agentDur.sum/time.Duration(agentDur.n)).Seconds(), "writes/agent-s")
	reloadIPVS(b) // leave no trash behind for what runs next
}

func BenchmarkColdApply1000x10(b *testing.B) { benchColdApply(b, 1000, "-log-level", "info") }
func BenchmarkColdApply5000x10(b *testing.B) { benchColdApply(b, 5000, "-log-level", "info") }

// One netlink socket instead of the default two.
func BenchmarkColdApply1000x10Handles1(b *testing.B) {
	benchColdApply(b, 1000, "-log-level", "info", "-handles", "1")
}

// The log level the vmtests run the agent at: one JSON line per write.
func BenchmarkColdApply1000x10Debug(b *testing.B) { benchColdApply(b, 1000) }

// benchNoopReload starts the agent on n x 10, then times SIGHUP with the
// file unchanged to the "reconciled" line of the reload, which must write
// nothing.
func benchNoopReload(b *testing.B, n int) {
	benchAgent(b, "-log-level", "info")
	reloadIPVS(b)
	s := newSetup(b)
	s.resync = "1h"
	s.write(benchServices(n))
	a := s.start()
	if w, errs := a.reconciled(0, "start", 10*time.Minute); w != n*(1+benchReals) || errs != 0 {
		b.Fatalf("start: writes=%d errors=%d", w, errs)
	}
	a.waitFor(0, "ready", nil, time.Minute)
	var wall, agentDur phase
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from := a.mark()
		t0 := time.Now()
		a.signal(syscall.SIGHUP)
		e := a.waitFor(from, "reconciled", func(e logEntry) bool { return e.str("reason") == "reload" }, 10*time.Minute)
		el := time.Since(t0)
		b.StopTimer()
		w, _ := e.num("writes")
		errs, _ := e.num("errors")
		if w != 0 || errs != 0 {
			b.Fatalf("reload of an unchanged file: writes=%d errors=%d, want 0 and 0: %s", w, errs, e.raw)
		}
		wall.add(el)
		agentDur.add(entryDuration(b, e))
		b.StartTimer()
	}
	b.StopTimer()
	wall.report(b, "s/reload")
	agentDur.report(b, "agent-s/reload")
	b.ReportMetric(0, "writes/reload")
	a.stop(time.Minute)
	reloadIPVS(b)
}

func BenchmarkNoopReload1000x10(b *testing.B) { benchNoopReload(b, 1000) }
func BenchmarkNoopReload5000x10(b *testing.B) { benchNoopReload(b, 5000) }
