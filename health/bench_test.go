package health

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The benchmarks measure the scheduler under sustained load, so each one
// runs for a fixed wall-clock window and reports rates as custom metrics
// (ns/op is not meaningful). The target servers run in a child process (this
// test binary re-executed) so their CPU and memory do not count against the
// checker's.
//
//	go test -run '^$' -bench . -benchmem ./health/

const benchServerEnv = "HEALTH_BENCH_SERVER"

func TestMain(m *testing.M) {
	if kind := os.Getenv(benchServerEnv); kind != "" {
		benchServer(kind)
		return
	}
	os.Exit(m.Run())
}

// benchServer listens on every address (so it answers on all of 127/8),
// prints its port and serves until stdin closes.
func benchServer(kind string) {
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	go func() { io.Copy(io.Discard, os.Stdin); os.Exit(0) }()
	switch kind {
	case "http":
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok\n")
		})}
		srv.Serve(l)
	default:
		for range 4 {
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
		select {}
	}
}

func startBenchServer(b *testing.B, kind string) uint16 {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), benchServerEnv+"="+kind)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		b.Fatalf("bench server: %q", line)
	}
	return uint16(port)
}

// procStatus reads a numeric field (kB for sizes) of /proc/self/status.
func procStatus(field string) int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timeWait counts IPv4 sockets in TIME_WAIT on the checker's side (remote
// port = the bench server's) and on the server's side (local port).
func timeWait(port uint16) (checker, server int) {
	b, _ := os.ReadFile("/proc/net/tcp")
	suffix := fmt.Sprintf(":%04X", port)
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 4 || f[3] != "06" {
			continue
		}
		if strings.HasSuffix(f[2], suffix) {
			checker++
		} else if strings.HasSuffix(f[1], suffix) {
			server++
		}
	}
	return checker, server
}

// benchTargets spreads n targets over 127.1.0.0/16 and up.
func benchTargets(n int, port uint16) []netip.AddrPort {
	out := make([]netip.AddrPort, n)
	for i := range n {
		out[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(1 + i/62500), byte(i / 250 % 250), byte(1 + i%250)}), port)
	}
	return out
}

type benchResult struct {
	rate, cores, rssMiB float64
	threads, down, late int
}

func runLoad(b *testing.B, spec Spec, n int, warm, window time.Duration) benchResult {
	port := startBenchServer(b, spec.Type)
	defer func() {
		c, s := timeWait(port)
		b.ReportMetric(float64(c), "TIME_WAIT-checker")
		b.ReportMetric(float64(s), "TIME_WAIT-server")
	}()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	checks := make([]Check, n)
	for i, t := range benchTargets(n, port) {
		checks[i] = Check{ID: "vs/" + t.String(), Target: t, Spec: spec}
	}
	// No budget: the benchmark measures what the loop can do.
	s := NewScheduler(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Budget: -1})
	s.Set(checks)
	checks = nil
	runtime.GC()
	runtime.ReadMemStats(&m1)
	heapPer := float64(m1.HeapAlloc-m0.HeapAlloc) / float64(n)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()

	time.Sleep(warm)
	b.ResetTimer()
	st0 := s.Stats()
	c0, w0, cpu0, t0 := st0.Checks, st0.Wakeups, cpuTime(), time.Now()
	var res benchResult
	for time.Since(t0) < window {
		time.Sleep(100 * time.Millisecond)
		res.rssMiB = max(res.rssMiB, float64(procStatus("VmRSS"))/1024)
		res.threads = max(res.threads, procStatus("Threads"))
	}
	el := time.Since(t0)
	st := s.Stats()
	res.rate = float64(st.Checks-c0) / el.Seconds()
	res.cores = float64(cpuTime()-cpu0) / float64(el)
	res.late = int(st.Late)
	b.ReportMetric(float64(st.Wakeups-w0)/el.Seconds(), "wakeups/s")
	b.ReportMetric(float64(st.NoVerdict), "no-verdict")
	if st.Runners != n {
		b.Fatalf("%d runners for %d targets: targets not distinct", st.Runners, n)
	}
	b.StopTimer()
	for _, v := range s.Statuses() {
		if v.State != Up {
			res.down++
		}
	}
	cancel()
	<-done
	b.ReportMetric(heapPer, "heap-B/server")
	b.ReportMetric(res.rate, "checks/s")
	b.ReportMetric(res.cores, "cores")
	b.ReportMetric(res.rssMiB, "peak-RSS-MiB")
	b.ReportMetric(float64(res.threads), "peak-threads")
	b.ReportMetric(float64(res.down), "not-up")
	b.ReportMetric(float64(res.late), "late")
	return res
}

// BenchmarkTCP50k: 50,000 real servers, 5 s interval: 10,000 checks/s.
// Targets: <= 1 core, <= 64 MiB RSS, <= 200 threads.
func BenchmarkTCP50k(b *testing.B) {
	spec := Spec{Type: "tcp", Interval: 5 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
	runLoad(b, spec, 50000, 6*time.Second, 10*time.Second)
}

// BenchmarkHTTP10k: 10,000 HTTP checks at 2 s interval (5,000/s). Both
// benchmarks report TIME_WAIT sockets left on the checker's side, which stay
// at zero because probes close with a reset, and on the server's side.
func BenchmarkHTTP10k(b *testing.B) {
	spec := Spec{Type: "http", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, ExpectBody: "ok"}
	runLoad(b, spec, 10000, 3*time.Second, 8*time.Second)
}

// BenchmarkSet50k: one reload of 50,000 checks into a scheduler already
// holding them (the lock is held meanwhile, so probes completing wait).
func BenchmarkSet50k(b *testing.B) {
	spec := Spec{Type: "http", Interval: 5 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, Path: "/healthz", ExpectStatus: []StatusRange{{200, 299}}}
	checks := make([]Check, 50000)
	for i, t := range benchTargets(50000, 80) {
		checks[i] = Check{ID: "vs/" + t.String(), Target: t, Spec: spec}
	}
	s := NewScheduler(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.Set(checks)
	b.ResetTimer()
	for range b.N {
		s.Set(checks)
	}
}
