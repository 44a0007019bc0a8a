package health

import (
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the scheduler's source of time; tests substitute a fake one.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the scheduler uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

type realClock struct{}
type realTimer struct{ t *time.Timer }

func (realClock) Now() time.Time                 { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }
func (t realTimer) C() <-chan time.Time          { return t.t.C }
func (t realTimer) Stop() bool                   { return t.t.Stop() }
func (t realTimer) Reset(d time.Duration) bool   { return t.t.Reset(d) }

// Defaults for Options fields left zero.
const (
	DefaultMaxInFlight = 1024
	DefaultJitter      = 0.1
	DefaultLateAfter   = 500 * time.Millisecond
	// lateLogEvery rate-limits the "falling behind" warning: loud, but one
	// line per period, not one per late check.
	lateLogEvery = 10 * time.Second
	notifyQueue  = 1024
	notifyTime   = 30 * time.Second
)

// Options configures a Scheduler. Every field is optional.
type Options struct {
	Logger *slog.Logger
	// OnChange receives every status change (state, factor or weight),
	// in order per ID, from one goroutine; a slow OnChange delays later
	// calls but never the checks. Changes that pile up while it runs are
	// coalesced per ID, so the latest status always arrives.
	OnChange func(Status)
	Clock    Clock
	// MaxInFlight bounds concurrent probes (sockets, goroutines). When
	// every slot is busy the scheduler falls behind and says so.
	MaxInFlight int
	// Jitter is the fraction each interval is randomly stretched or shrunk
	// by (0.1: ±10%), so checks started together drift apart. Negative
	// disables it.
	Jitter float64
	// LateAfter is how late a check may start before it counts as the
	// scheduler falling behind.
	LateAfter time.Duration

	// newChecker replaces Spec.prepare in tests.
	newChecker func(Spec) (checker, error)
}

// Stats are counters for the agent to export as metrics.
type Stats struct {
	Checks      uint64        // probes completed
	Late        uint64        // probes started more than LateAfter after their due time
	MaxLag      time.Duration // worst start delay seen
	Saturated   uint64        // times a due probe waited for a free in-flight slot
	InFlight    int
	Runners     int // distinct probes (after dedupe)
	Subscribers int // check IDs
	// NotifyDropped counts notify commands not run because the queue was full.
	NotifyDropped uint64
	// LastLoop is when the dispatch loop last turned; it wakes at least
	// every second, so an old LastLoop means the scheduler is stuck.
	LastLoop time.Time
	// Probes are probe durations and failures per check type (probestats.go).
	Probes []TypeStats
}

// Scheduler runs a set of checks and reports their verdicts.
type Scheduler struct {
	log        *slog.Logger
	onChange   func(Status)
	clock      Clock
	jitter     float64
	lateAfter  time.Duration
	newChecker func(Spec) (checker, error)
	sem        chan struct{}
	bodies     *memBudget // shared by every HTTP check's body
	wake       chan struct{}
	notifyWake chan struct{}
	notifyQ    chan notifyJob

	mu       sync.Mutex
	specs    map[string]*specEntry // by Spec.Key()
	nRunners int
	subs     map[string]*runner // by check ID
	epoch    time.Time          // queue times are nanoseconds since epoch
	queue    itemHeap
	pending  map[string]Status // undelivered OnChange calls
	order    []string          // delivery order of pending
	lastLate time.Time
	lateLog  uint64 // Late at lastLate

	checks, late, saturated, notifyDropped atomic.Uint64
	maxLag                                 atomic.Int64
	lastLoop                               atomic.Int64 // UnixNano, see Stats.LastLoop
	inFlight                               atomic.Int64
	probes                                 probeStats
}

// sub is one subscriber of a runner, held by value: there are as many as
// real servers configured.
type sub struct {
	id, service string
	port        uint16 // its real server's port; the address is the runner's
	gen         uint64 // Check.Gen, echoed in its statuses
}

func (r *runner) target(sb sub) netip.AddrPort { return netip.AddrPortFrom(r.rs.Addr(), sb.port) }

// statusOf is sb's status, stamped with its generation.
func (r *runner) statusOf(sb sub, now time.Time) Status {
	st := r.m.status(sb.id, now)
	st.Gen = sb.gen
	return st
}

// specEntry is one distinct Spec, interned: 50,000 real servers usually
// share a handful of specs, and so share one prepared checker (TLS config,
// regexp, user lookup) instead of holding a copy each.
type specEntry struct {
	spec  Spec
	chk   checker
	err   error
	perRS bool // spec.perRealServer(), computed once
}

// runnerKey identifies identical probes: same spec, same probe target.
type runnerKey struct {
	target netip.AddrPort
	spec   *specEntry
}

// runner is one distinct probe (target + spec) and its state machine,
// shared by every subscriber with the same check.
type runner struct {
	se     *specEntry
	rs     netip.AddrPort // the first subscriber's real server
	m      machine
	subs   []sub
	cancel context.CancelFunc // of the probe in flight
	// seen is what the subscribers were last sent. Changes are detected
	// against it, not against the state just before a result: a ramp step
	// falls due at an instant of its own, and a result that arrives after
	// that instant but before the loop emits the step (which it then
	// invalidates) would otherwise swallow the step, the last one too.
	seen    view
	rampGen uint32 // invalidates queued ramp items
	dead    bool
}

// probe is where this runner's checks go: the real server, on Spec.Port
// when set. Computed per check rather than stored: 50,000 runners.
func (r *runner) probe() probe {
	p := probe{addr: r.rs, rs: r.rs}
	if port := r.se.spec.Port; port != 0 {
		p.addr = netip.AddrPortFrom(r.rs.Addr(), port)
	}
	return p
}

// item is a queued event: a probe to start, or a slow-start step. Kept
// small (24 bytes): the queue holds one per real server.
// key is the runner's identity, as Set computes it for a Check.
func (r *runner) key() runnerKey {
	if r.se.perRS {
		return runnerKey{target: r.rs, spec: r.se}
	}
	return runnerKey{target: r.probe().addr, spec: r.se}
}

type item struct {
	at   int64 // nanoseconds since Scheduler.epoch
	r    *runner
	gen  uint32
	ramp bool
}

type itemHeap []item

func (h itemHeap) Len() int           { return len(h) }
func (h itemHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h itemHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)        { *h = append(*h, x.(item)) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = item{}
	*h = old[:len(old)-1]
	return it
}

func (s *Scheduler) mono(t time.Time) int64    { return int64(t.Sub(s.epoch)) }
func (s *Scheduler) timeAt(ns int64) time.Time { return s.epoch.Add(time.Duration(ns)) }

// NewScheduler makes a scheduler with no checks; add them with Set.
func NewScheduler(opts Options) *Scheduler {
	s := &Scheduler{
		log:        opts.Logger,
		onChange:   opts.OnChange,
		clock:      opts.Clock,
		jitter:     opts.Jitter,
		lateAfter:  opts.LateAfter,
		newChecker: opts.newChecker,
		wake:       make(chan struct{}, 1),
		notifyWake: make(chan struct{}, 1),
		notifyQ:    make(chan notifyJob, notifyQueue),
		specs:      map[string]*specEntry{},
		subs:       map[string]*runner{},
		pending:    map[string]Status{},
		bodies:     newMemBudget(BodyBudget),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	s.epoch = s.clock.Now()
	if s.jitter == 0 {
		s.jitter = DefaultJitter
	} else if s.jitter < 0 {
		s.jitter = 0
	}
	if s.lateAfter <= 0 {
		s.lateAfter = DefaultLateAfter
	}
	if s.newChecker == nil {
		s.newChecker = Spec.prepare
	}
	n := opts.MaxInFlight
	if n <= 0 {
		n = DefaultMaxInFlight
	}
	s.sem = make(chan struct{}, n)
	return s
}

// Set replaces the whole set of checks. A check whose target and spec are
// unchanged keeps its state, whatever its ID; a new ID joining an existing
// probe gets that probe's state at once. Callable before and during Run.
func (s *Scheduler) Set(checks []Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	// Index the running probes by identity for this reload only: keeping
	// the index between reloads would cost ~100 bytes per real server.
	prev := make(map[runnerKey]*runner, len(s.subs))
	oldSubs := make(map[string]sub, len(s.subs))
	for _, r := range s.subs {
		k := r.key()
		if _, seen := prev[k]; seen {
			continue
		}
		prev[k] = r
		for _, sb := range r.subs {
			oldSubs[sb.id] = sb
		}
	}
	runners := make(map[runnerKey]*runner, len(checks))
	subs := make(map[string]*runner, len(checks))
	specs := make(map[string]*specEntry)
	var lastSpec *Spec // neighbours usually share a spec: skip encoding it
	var lastKey string
	for i := range checks {
		c := &checks[i]
		if _, dup := subs[c.ID]; dup {
			s.log.Error("duplicate health check ID ignored", "check", c.ID)
			continue
		}
		sk := lastKey
		if lastSpec == nil || !lastSpec.Equal(c.Spec) {
			sk = c.Spec.Key()
			lastSpec, lastKey = &c.Spec, sk
		}
		se := specs[sk]
		if se == nil {
			if se = s.specs[sk]; se == nil {
				se = &specEntry{spec: c.Spec, perRS: c.Spec.perRealServer()}
				se.chk, se.err = s.newChecker(c.Spec)
				setBodyBudget(se.chk, s.bodies)
				if se.err != nil {
					// Reported as down with the error as reason; keep
					// the schedule sane whatever the spec says.
					se.spec.Interval, se.spec.Timeout = DefaultInterval, DefaultTimeout
				}
			}
			specs[sk] = se
		}
		k := runnerKey{target: c.probeTarget(), spec: se}
		if se.perRS {
			k.target = c.Target // see Spec.perRealServer
		}
		r := runners[k]
		if r == nil {
			r = prev[k]
			if r == nil {
				r = s.newRunner(*c, se, now)
			}
			r.subs = r.subs[:0]
			runners[k] = r
		}
		sb := sub{id: c.ID, service: c.Service, port: c.Target.Port(), gen: c.Gen}
		if s.subs[c.ID] != r || oldSubs[c.ID] != sb {
			st := r.statusOf(sb, now)
			if st.State != Unknown && st.State != c.Initial {
				s.emitLocked(st)
			}
		}
		subs[c.ID] = r
		r.subs = append(r.subs, sb)
	}
	for k, r := range prev {
		if runners[k] != r {
			r.dead = true
			if r.cancel != nil {
				r.cancel()
			}
		}
	}
	for id := range s.subs {
		if _, ok := subs[id]; !ok {
			delete(s.pending, id) // its entry in s.order is skipped
		}
	}
	s.subs, s.specs, s.nRunners = subs, specs, len(runners)
	s.kick()
}

func (s *Scheduler) newRunner(c Check, se *specEntry, now time.Time) *runner {
	r := &runner{
		se: se,
		rs: c.Target,
		m:  *newMachine(se.spec, c.Initial, now),
	}
	r.seen = r.m.snapshot(now)
	// Spread the first round over one interval so a reload of 10,000
	// servers does not open 10,000 sockets in the same millisecond. The
	// interned spec's interval: for an invalid spec it is the default.
	first := time.Duration(rand.Int64N(int64(max(se.spec.Interval, time.Millisecond))))
	heap.Push(&s.queue, item{at: s.mono(now.Add(first)), r: r})
	return r
}

func (s *Scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Statuses returns a snapshot of every subscriber's status.
func (s *Scheduler) Statuses() map[string]Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	out := make(map[string]Status, len(s.subs))
	seen := make(map[*runner]bool, s.nRunners)
	for _, r := range s.subs {
		if !seen[r] {
			seen[r] = true
			for _, sb := range r.subs {
				out[sb.id] = r.statusOf(sb, now)
			}
		}
	}
	return out
}

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	runners, subs := s.nRunners, len(s.subs)
	s.mu.Unlock()
	return Stats{
		Checks:        s.checks.Load(),
		Late:          s.late.Load(),
		MaxLag:        time.Duration(s.maxLag.Load()),
		Saturated:     s.saturated.Load(),
		InFlight:      int(s.inFlight.Load()),
		Runners:       runners,
		Subscribers:   subs,
		NotifyDropped: s.notifyDropped.Load(),
		LastLoop:      unixNano(s.lastLoop.Load()),
		Probes:        s.probes.snapshot(),
	}
}

// Run drives the checks until ctx ends, then waits for probes in flight to
// be cancelled and returns ctx.Err(). Call it once per Scheduler.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.deliver(ctx) }()
	go func() { defer wg.Done(); s.runNotifies(ctx) }()
	defer wg.Wait()

	timer := s.clock.NewTimer(time.Hour)
	defer timer.Stop()
	var probes sync.WaitGroup
	defer probes.Wait()
	var due []item
	for {
		s.mu.Lock()
		now := s.clock.Now()
		s.lastLoop.Store(now.UnixNano())
		due = due[:0]
		for s.queue.Len() > 0 && s.queue[0].at <= s.mono(now) {
			it := heap.Pop(&s.queue).(item)
			if it.r.dead {
				continue
			}
			if it.ramp {
				if it.gen == it.r.rampGen {
					s.rampLocked(it.r, now)
				}
				continue
			}
			due = append(due, it)
		}
		wait := time.Second // even idle, turn every second: LastLoop proves liveness
		if s.queue.Len() > 0 {
			wait = min(wait, time.Duration(s.queue[0].at-s.mono(now)))
		}
		s.mu.Unlock()

		for _, it := range due {
			select {
			case s.sem <- struct{}{}:
			default:
				s.saturated.Add(1)
				select {
				case s.sem <- struct{}{}:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			start := s.clock.Now()
			s.noteLag(start, time.Duration(s.mono(start)-it.at))
			pctx, cancel := context.WithTimeout(ctx, it.r.se.spec.Timeout)
			s.mu.Lock()
			if it.r.dead {
				s.mu.Unlock()
				cancel()
				<-s.sem
				continue
			}
			it.r.cancel = cancel
			s.mu.Unlock()
			s.inFlight.Add(1)
			probes.Add(1)
			go func(r *runner, due time.Time) {
				defer probes.Done()
				res := s.runProbe(pctx, r)
				cancel()
				s.inFlight.Add(-1)
				<-s.sem
				if ctx.Err() != nil {
					// Cut short because Run is stopping: the result
					// says nothing about the server (counted, it would
					// turn servers down on every shutdown).
					return
				}
				s.checks.Add(1)
				s.complete(r, due, res)
			}(it.r, s.timeAt(it.at))
		}
		if len(due) > 0 {
			continue // dispatching took time; look again before sleeping
		}

		if !timer.Stop() {
			select {
			case <-timer.C():
			default:
			}
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		case <-timer.C():
		}
	}
}

// runProbe runs r's checker once. A panic in a checker (a parser meeting
// input nobody foresaw) is that check failing, logged with its stack; it
// must neither kill the daemon nor leave the check unscheduled.
func (s *Scheduler) runProbe(ctx context.Context, r *runner) (res result) {
	start := s.clock.Now()
	defer func() { // after the recover below
		res.latency = s.clock.Now().Sub(start)
		s.probes.note(r.se.spec.Type, res)
	}()
	if r.se.err != nil {
		return failed("configuration: " + r.se.err.Error())
	}
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("health checker panicked", "type", r.se.spec.Type, "real_server", r.rs.String(),
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			res = failed(fmt.Sprintf("internal error: checker panic: %v", v))
		}
	}()
	return r.se.chk.check(ctx, r.probe())
}

// noteLag counts late starts and warns, at most once per lateLogEvery.
func (s *Scheduler) noteLag(now time.Time, lag time.Duration) {
	for {
		m := s.maxLag.Load()
		if int64(lag) <= m || s.maxLag.CompareAndSwap(m, int64(lag)) {
			break
		}
	}
	if lag <= s.lateAfter {
		return
	}
	n := s.late.Add(1)
	s.mu.Lock()
	if now.Sub(s.lastLate) < lateLogEvery {
		s.mu.Unlock()
		return
	}
	since := n - s.lateLog
	s.lastLate, s.lateLog = now, n
	s.mu.Unlock()
	s.log.Warn("health check scheduler is falling behind: checks start late; "+
		"raise intervals, lower the number of checks or raise the in-flight limit",
		"late_checks", since, "lag", lag.Round(time.Millisecond),
		"in_flight", s.inFlight.Load(), "in_flight_limit", cap(s.sem))
}

// jittered stretches d by up to ±jitter.
func (s *Scheduler) jittered(d time.Duration) time.Duration {
	if s.jitter == 0 {
		return d
	}
	f := 1 + s.jitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

type transition struct {
	sub      sub
	target   netip.AddrPort
	from, to State
	st       Status
	notify   []string
	user     string // runs notify; "" is the agent's own user
}

// complete applies a probe's result, schedules the next probe and reports.
func (s *Scheduler) complete(r *runner, due time.Time, res result) {
	s.mu.Lock()
	if r.dead {
		s.mu.Unlock()
		return
	}
	r.cancel = nil
	now := s.clock.Now()
	old := r.m.state
	rampWas := r.m.nextRamp(now)
	moved, _ := r.m.observe(now, res)
	after := r.m.snapshot(now)
	// Schedule from the due time, not the start, so dispatch lag does not
	// stretch every interval; when behind, run again at once.
	next := due.Add(s.jittered(r.se.spec.Interval))
	if next.Before(now) {
		next = now
	}
	heap.Push(&s.queue, item{at: s.mono(next), r: r})
	// Re-queue the ramp only when the result changed its schedule (it
	// started, restarted or ended). A result mid-ramp leaves the queued
	// step valid: replacing it on every probe would leave one stale item
	// per probe in the queue until its time came, (step / interval) per
	// real server during a mass recovery.
	if at := r.m.nextRamp(now); !at.Equal(rampWas) {
		r.rampGen++
		if !at.IsZero() {
			heap.Push(&s.queue, item{at: s.mono(at), r: r, ramp: true, gen: r.rampGen})
		}
	}
	var events []transition
	if after != r.seen || moved {
		r.seen = after
		for _, sb := range r.subs {
			st := r.statusOf(sb, now)
			s.emitLocked(st)
			if moved {
				events = append(events, transition{sub: sb, target: r.target(sb), from: old, to: r.m.state, st: st, notify: r.se.spec.Notify, user: r.se.spec.User})
			}
		}
	}
	top := s.queue[0].r == r // the next wake-up moved earlier
	s.mu.Unlock()
	if top {
		s.kick()
	}
	for _, e := range events {
		s.report(e)
	}
}

// rampLocked emits a slow-start step and queues the next.
func (s *Scheduler) rampLocked(r *runner, now time.Time) {
	// Ramp items are queued for the instants the factor steps, and
	// invalidated (rampGen) by a result that changes the ramp; a result
	// emits any step it finds due but not yet sent.
	if v := r.m.snapshot(now); v != r.seen {
		r.seen = v
		for _, sb := range r.subs {
			s.emitLocked(r.statusOf(sb, now))
		}
	}
	s.log.Debug("slow start step", "real_server", r.rs.String(), "factor", r.m.factor(now))
	r.rampGen++
	if at := r.m.nextRamp(now); !at.IsZero() {
		heap.Push(&s.queue, item{at: s.mono(at), r: r, ramp: true, gen: r.rampGen})
	}
}

// report logs a transition and queues its notify command. A first verdict
// of "up" (unknown -> up) is only logged at debug level and notifies
// nobody: at start-up it is every server at once, and nothing changed.
func (s *Scheduler) report(e transition) {
	lvl := slog.LevelInfo
	switch {
	case e.to == Down:
		lvl = slog.LevelWarn
	case e.from == Unknown && e.to == Up:
		lvl = slog.LevelDebug
	}
	s.log.Log(context.Background(), lvl, "real server health changed",
		"virtual_server", e.sub.service, "real_server", e.target.String(), "check", e.sub.id,
		"from", e.from.String(), "to", e.to.String(), "reason", e.st.Reason)
	if len(e.notify) == 0 || lvl == slog.LevelDebug {
		return
	}
	job := notifyJob{argv: e.notify, user: e.user, env: []string{
		"IPVS_CHECK_ID=" + e.sub.id,
		"IPVS_VIRTUAL_SERVER=" + e.sub.service,
		"IPVS_RS_IP=" + e.target.Addr().String(),
		"IPVS_RS_PORT=" + strconv.Itoa(int(e.target.Port())),
		"IPVS_OLD_STATE=" + e.from.String(),
		"IPVS_NEW_STATE=" + e.to.String(),
		"IPVS_REASON=" + sanitizeReason(e.st.Reason),
		"IPVS_FACTOR=" + fmt.Sprintf("%.3f", e.st.Factor),
	}}
	select {
	case s.notifyQ <- job:
	default:
		s.notifyDropped.Add(1)
		s.log.Warn("notify queue full, command not run", "check", e.sub.id, "to", e.to.String())
	}
}

type notifyJob struct {
	argv, env []string
	user      string
}

// runNotifies runs notify commands one at a time: they are for humans and
// pagers, and running them serially keeps a mass failure from forking
// thousands of processes.
func (s *Scheduler) runNotifies(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.notifyQ:
			// As the check's user, like exec checks: a notify command is
			// as much configuration as a check command is.
			cr, err := lookupCred(j.user)
			if err != nil {
				s.log.Warn("notify command not run", "command", j.argv[0], "err", err)
				continue
			}
			nctx, cancel := context.WithTimeout(ctx, notifyTime)
			out, err := runCommand(nctx, j.argv, cr, j.env)
			cancel()
			if err != nil {
				s.log.Warn("notify command failed", "command", j.argv[0], "err", err, "output", out)
			}
		}
	}
}

func (s *Scheduler) emitLocked(st Status) {
	if s.onChange == nil {
		return
	}
	if _, ok := s.pending[st.ID]; !ok {
		s.order = append(s.order, st.ID)
	}
	s.pending[st.ID] = st
	select {
	case s.notifyWake <- struct{}{}:
	default:
	}
}

// deliver calls OnChange from a single goroutine, outside the lock.
func (s *Scheduler) deliver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.notifyWake:
		}
		s.mu.Lock()
		order := s.order
		batch := make([]Status, 0, len(order))
		for _, id := range order {
			// order may name an ID twice when Set dropped it from
			// pending and it came back: deliver it once.
			if st, ok := s.pending[id]; ok {
				batch = append(batch, st)
				delete(s.pending, id)
			}
		}
		s.order = nil
		clear(s.pending)
		s.mu.Unlock()
		for _, st := range batch {
			s.onChange(st)
		}
	}
}

// unixNano is the time n ns after the epoch, or the zero time for 0.
func unixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
