//go:build vmtest

package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Health-check work shared by the side-by-side benchmark (keepalived and
// ipvs-agent) and the starvation test: n virtual servers x 10 real servers
// on the farm (farm_test.go), wrr, DR, a TCP connect check on every real
// server every 1 s, timeout 1 s, fall 3. Virtual server i is
// 198.51.100.(1+i/1000):(10000+i%1000); its real server j is farm address
// i*10+j on the same port, so every check has its own target (no two
// virtual servers share one, which the agent would check once).
type hcWork struct {
	n       int
	vips    []netip.AddrPort
	targets []netip.AddrPort // n*10: virtual server i's real servers are [i*10, i*10+10)
	weights []int
}

const hcReals = 10

func newHCWork(n int) *hcWork {
	w := &hcWork{n: n}
	for i := 0; i < n; i++ {
		port := uint16(10000 + i%1000)
		w.vips = append(w.vips, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i/1000)}), port))
		for j := 0; j < hcReals; j++ {
			w.targets = append(w.targets, netip.AddrPortFrom(farmRealAddr(i*hcReals+j), port))
			w.weights = append(w.weights, 1+j%3)
		}
	}
	return w
}

// agentConfig is the agent's file for the work. rise = 1 and alpha = false
// as keepalived without alpha (one good check brings a server back, and a
// new real server is presumed up, so a server at weight 0 is one a check
// took down, which is what the samplers count); on_failure quiesce
// (weight 0) as keepalived's inhibit_on_failure. resync_interval is the
// default (10 s): what a user runs.
func (w *hcWork) agentConfig(state, comment string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# %s\n[agent]\nstate_file = %q\n\n", comment, state)
	sb.WriteString("[defaults.check]\ntype = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\nrise = 1\nfall = 3\n\n")
	for i, v := range w.vips {
		fmt.Fprintf(&sb, "[[virtual_server]]\nname = \"vs%d\"\naddress = %q\nscheduler = \"wrr\"\nforwarding = \"dr\"\non_failure = \"quiesce\"\nalpha = false\n", i, v.String())
		for j := 0; j < hcReals; j++ {
			k := i*hcReals + j
			fmt.Fprintf(&sb, "  [[virtual_server.real_server]]\n  address = %q\n  weight = %d\n", w.targets[k].String(), w.weights[k])
		}
	}
	return sb.String()
}

// keepaliveConfig is keepalived's file for the same work: delay_loop 1,
// connect_timeout 1, retry 2 (three failed connects in a row, as fall 3),
// delay_before_retry 1 (a retry an interval later, as the agent's next
// check), inhibit_on_failure (weight 0 instead of removal, as the agent's
// quiesce, so one sampler judges both).
func (w *hcWork) keepalivedConfig(comment string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# %s\nglobal_defs {\n  router_id vmbench\n}\n", comment)
	for i, v := range w.vips {
		fmt.Fprintf(&sb, "virtual_server %s %d {\n  delay_loop 1\n  lb_algo wrr\n  lb_kind DR\n  protocol TCP\n", v.Addr(), v.Port())
		for j := 0; j < hcReals; j++ {
			k := i*hcReals + j
			fmt.Fprintf(&sb, "  real_server %s %d {\n    weight %d\n    inhibit_on_failure\n    TCP_CHECK {\n      connect_timeout 1\n      retry 2\n      delay_before_retry 1\n    }\n  }\n",
				w.targets[k].Addr(), w.targets[k].Port(), w.weights[k])
		}
		sb.WriteString("}\n")
	}
	return sb.String()
}

// proc is a daemon under test with its output lines, each stamped when the
// test read it.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu      sync.Mutex
	changed chan struct{}
	lines   []procLine
}

type procLine struct {
	at   time.Time
	text string
}

// startProc starts argv in its own process group (so a stop reaches
// keepalived's children too) with env added to the test's environment.
func startProc(t testing.TB, name string, env []string, argv ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, done: make(chan struct{}), changed: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	var wg sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		wg.Add(1)
		go func(r io.Reader) {
			defer wg.Done()
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				p.mu.Lock()
				p.lines = append(p.lines, procLine{at: time.Now(), text: sc.Text()})
				close(p.changed)
				p.changed = make(chan struct{})
				p.mu.Unlock()
			}
		}(r)
	}
	go func() {
		wg.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.running() {
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			p.dump(40)
		}
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// waitLine returns the first line after position from that contains all of
// subs; ok is false on timeout or exit.
func (p *proc) waitLine(from int, limit time.Duration, subs ...string) (procLine, bool) {
	deadline := time.After(limit)
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			all := true
			for _, s := range subs {
				if !strings.Contains(p.lines[i].text, s) {
					all = false
					break
				}
			}
			if all {
				l := p.lines[i]
				p.mu.Unlock()
				return l, true
			}
		}
		from = len(p.lines)
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.done:
			return procLine{}, false
		case <-deadline:
			return procLine{}, false
		}
	}
}

func (p *proc) dump(last int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	from := 0
	if len(p.lines) > last {
		from = len(p.lines) - last
	}
	p.t.Logf("%s: last %d of %d output lines:", p.name, len(p.lines)-from, len(p.lines))
	for _, l := range p.lines[from:] {
		p.t.Logf("  %s", l.text)
	}
}

// stop sends SIGTERM to the process group, SIGKILL after limit; it reports
// how long the exit took and whether it needed the kill.
func (p *proc) stop(limit time.Duration) (took time.Duration, killed bool) {
	t0 := time.Now()
	syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(limit):
		syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
		killed = true
	}
	return time.Since(t0), killed
}

// weightSampler reads the kernel's weights every period and judges each
// real server of the work against what the test knows: a server the test
// stopped should reach weight 0 (detection time); any other server at weight
// 0 or missing is a healthy server marked down. Judging starts once the
// whole table is in the kernel.
type weightSampler struct {
	w      *hcWork
	period time.Duration
	index  map[netip.AddrPort]int

	mu         sync.Mutex
	stoppedAt  []time.Time // zero: up
	detectedAt []time.Time
	fullAt     time.Time
	samples    int
	readCost   time.Duration
	worstFalse int           // most healthy servers at weight 0 in one sample
	worstAt    time.Duration // since fullAt
	everFalse  map[int]bool  // healthy servers ever seen at weight 0
	errs       []string      // table errors: wrong weight on an up server, extra entries

	quit chan struct{}
	done chan struct{}
}

func newWeightSampler(w *hcWork, period time.Duration) *weightSampler {
	s := &weightSampler{w: w, period: period, index: map[netip.AddrPort]int{},
		stoppedAt: make([]time.Time, len(w.targets)), detectedAt: make([]time.Time, len(w.targets)),
		everFalse: map[int]bool{}, quit: make(chan struct{}), done: make(chan struct{})}
	for k, a := range w.targets {
		s.index[a] = k
	}
	go s.loop()
	return s
}

func (s *weightSampler) loop() {
	defer close(s.done)
	weights := map[netip.AddrPort]int{}
	tick := time.NewTicker(s.period)
	defer tick.Stop()
	for {
		t0 := time.Now()
		svcs, err := ipvsWeights(weights)
		at := time.Now()
		s.mu.Lock()
		s.samples++
		s.readCost += at.Sub(t0)
		if err == nil {
			s.judge(svcs, weights, at)
		}
		s.mu.Unlock()
		select {
		case <-s.quit:
			return
		case <-tick.C:
		}
	}
}

// judge runs under s.mu.
func (s *weightSampler) judge(svcs int, weights map[netip.AddrPort]int, at time.Time) {
	if s.fullAt.IsZero() {
		if svcs < s.w.n || len(weights) < len(s.w.targets) {
			return
		}
		for _, a := range s.w.targets {
			if _, ok := weights[a]; !ok {
				return
			}
		}
		s.fullAt = at
	}
	falseNow := 0
	for k, a := range s.w.targets {
		wt, ok := weights[a]
		down := !ok || wt == 0
		switch {
		case !s.stoppedAt[k].IsZero():
			if down && s.detectedAt[k].IsZero() {
				s.detectedAt[k] = at
			}
		case down:
			falseNow++
			s.everFalse[k] = true
		case wt != s.w.weights[k] && len(s.errs) < 10:
			s.errs = append(s.errs, fmt.Sprintf("%v has weight %d, configured %d", a, wt, s.w.weights[k]))
		}
	}
	if len(weights) != len(s.w.targets) && len(s.errs) < 10 {
		s.errs = append(s.errs, fmt.Sprintf("%d real servers in the kernel, want %d", len(weights), len(s.w.targets)))
	}
	if falseNow > s.worstFalse {
		s.worstFalse = falseNow
		s.worstAt = at.Sub(s.fullAt)
	}
}

// waitFull waits until the sampler has seen the whole table.
func (s *weightSampler) waitFull(limit time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		at := s.fullAt
		s.mu.Unlock()
		if !at.IsZero() {
			return at, true
		}
		time.Sleep(s.period / 2)
	}
	return time.Time{}, false
}

// stopped records that the test stopped real server k at time at.
func (s *weightSampler) stopped(k int, at time.Time) {
	s.mu.Lock()
	s.stoppedAt[k] = at
	s.mu.Unlock()
}

// detections returns the detection times of the given stopped servers;
// missing counts those not at weight 0 yet.
func (s *weightSampler) detections(ks []int) (took []time.Duration, missing int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range ks {
		if s.detectedAt[k].IsZero() {
			missing++
			continue
		}
		took = append(took, s.detectedAt[k].Sub(s.stoppedAt[k]))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	return took, missing
}

func (s *weightSampler) waitDetected(ks []int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if _, missing := s.detections(ks); missing == 0 {
			return
		}
		time.Sleep(s.period)
	}
}

func (s *weightSampler) close() {
	close(s.quit)
	<-s.done
}

// falseDowns returns the worst moment and the number of distinct healthy
// servers ever at weight 0.
func (s *weightSampler) falseDowns() (worst, distinct int, worstAt time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.worstFalse, len(s.everFalse), s.worstAt
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

// spreadTargets picks count real servers spread over the work (different
// virtual servers and positions).
func (w *hcWork) spreadTargets(count int) []int {
	var ks []int
	step := len(w.targets) / count
	for i := 0; i < count; i++ {
		ks = append(ks, i*step+i%hcReals)
	}
	return ks
}
