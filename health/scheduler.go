package health

import (
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxInFlight = 1024
	DefaultJitter      = 0.1
	DefaultLateAfter   = 500 * time.Millisecond
	// DefaultTick is how often the loop wakes while probes are in flight:
	// probe starts, completions and timeouts are handled per tick.
	DefaultTick = 10 * time.Millisecond
	// DefaultBudgetPerCPU is the probes per second per CPU (GOMAXPROCS)
	// the scheduler runs before it stretches intervals, when Options.Budget
	// is zero. Measured in the qemu TCG test VM, where a TCP check costs
	// ~0.1 ms of vCPU: 2,000/s per CPU keeps checks under a fifth of the
	// machine and leaves the rest to the control plane.
	DefaultBudgetPerCPU = 2000
	// lateLogEvery rate-limits the "falling behind" warning: loud, but one
	// line per period, not one per late check.
	lateLogEvery = 10 * time.Second
	notifyQueue  = 1024
	notifyTime   = 30 * time.Second
	// maxIdle is the longest the loop sleeps: Stats.LastLoop stays within
	// a second of now while the scheduler is alive.
	maxIdle = time.Second
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
	// scheduler falling behind, and how late past its timeout a failure
	// may come back before it yields no verdict (see Scheduler).
	LateAfter time.Duration
	// Budget is the probes per second the scheduler runs at most: when the
	// configured checks ask for more, every interval is stretched by the
	// same factor (Stats.Stretch, Timings) and a warning says so. Zero:
	// DefaultBudgetPerCPU x GOMAXPROCS. Either way the loop lowers it to
	// what it measures it can sustain. Negative: no budget at all.
	Budget float64
	// Tick is the loop's batching period (DefaultTick when zero).
	Tick time.Duration

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

	// LastLoop is when the scheduler's loop last ran; it runs at least
	// every second while Run is alive (the watchdog reads it).
	LastLoop time.Time
	// Wakeups counts the loop's wake-ups (its cost in a VM is the
	// wake-ups more than the probes); WakeupsPerSec is the rate over the
	// last full second.
	Wakeups       uint64
	WakeupsPerSec float64
	// NoVerdict counts probes whose result was thrown away because the
	// agent could not look in time or failed locally (out of sockets):
	// they neither pass nor fail the real server.
	NoVerdict uint64
	// Stalled is the total time the loop was found asleep longer than it
	// asked (the agent or the VM short of CPU); probe timeouts discount it.
	Stalled time.Duration
	// Budget is the probes per second allowed (0: none): the configured
	// budget, or less when the loop measured that it cannot sustain it
	// within its CPU share (Scheduler.adaptBudget); ConfiguredRate
	// what the checks ask for; Stretch (>= 1) the factor every interval is
	// multiplied by to fit the budget.
	Budget, ConfiguredRate, Stretch float64
}

// Timing is how often a virtual server's checks really run.
type Timing struct {
	// Interval is the shortest configured interval of its checks;
	// Effective the same stretched to fit the budget.
	Interval, Effective time.Duration
	// DetectWithin bounds how long after a real server dies its checks
	// fail it (fall failures), with the budget's stretch and with the
	// probe timeouts extended as far as stalls allow.
	DetectWithin time.Duration
}

// Scheduler runs a set of checks and reports their verdicts.
type Scheduler struct {
	log         *slog.Logger
	onChange    func(Status)
	clock       Clock
	jitter      float64
	lateAfter   time.Duration
	tick        time.Duration
	budget      float64
	fixedBudget bool // no budget, measured or configured (Options.Budget < 0)
	maxInFlight int
	newChecker  func(Spec) (checker, error)
	wake        chan struct{}
	notifyWake  chan struct{}
	notifyQ     chan notifyJob
	kicker      atomic.Pointer[poller] // the running loop's poller, for kick

	mu       sync.Mutex
	specs    map[string]*specEntry // by Spec.Key()
	nRunners int
	subs     map[string]*runner // by check ID
	epoch    time.Time          // queue times are nanoseconds since epoch
	queue    itemHeap
	pending  map[string]Status // undelivered OnChange calls
	order    []string          // delivery order of pending
	lastLate time.Time
	lateLog  uint64            // Late at lastLate
	rate     float64           // probes per second the checks ask for
	capacity float64           // probes per second the loop was measured to sustain, 0 unknown
	stretch  float64           // >= 1
	timings  map[string]Timing // by virtual server

	checks, late, saturated, notifyDropped, noVerdict, wakeups atomic.Uint64
	maxLag, lastLoop, stalled                                  atomic.Int64
	wakeRate                                                   atomic.Uint64 // float64 bits
	inFlight                                                   atomic.Int64
}

func (s *Scheduler) mono(t time.Time) int64    { return int64(t.Sub(s.epoch)) }
func (s *Scheduler) timeAt(ns int64) time.Time { return s.epoch.Add(time.Duration(ns)) }

// NewScheduler makes a scheduler with no checks; add them with Set.
func NewScheduler(opts Options) *Scheduler {
	s := &Scheduler{
		log:         opts.Logger,
		onChange:    opts.OnChange,
		clock:       opts.Clock,
		jitter:      opts.Jitter,
		lateAfter:   opts.LateAfter,
		tick:        opts.Tick,
		budget:      opts.Budget,
		maxInFlight: opts.MaxInFlight,
		newChecker:  opts.newChecker,
		wake:        make(chan struct{}, 1),
		notifyWake:  make(chan struct{}, 1),
		notifyQ:     make(chan notifyJob, notifyQueue),
		specs:       map[string]*specEntry{},
		subs:        map[string]*runner{},
		pending:     map[string]Status{},
		stretch:     1,
		timings:     map[string]Timing{},
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
	if s.tick <= 0 {
		s.tick = DefaultTick
	}
	if s.budget == 0 {
		s.budget = DefaultBudgetPerCPU * float64(runtime.GOMAXPROCS(0))
	} else if s.budget < 0 {
		s.budget, s.fixedBudget = 0, true
	}
	if s.newChecker == nil {
		s.newChecker = Spec.prepare
	}
	if s.maxInFlight <= 0 {
		s.maxInFlight = DefaultMaxInFlight
	}
	return s
}

// kick wakes the loop: the queue's head moved earlier or checks changed.
func (s *Scheduler) kick() {
	if p := s.kicker.Load(); p != nil {
		p.kick()
		return
	}
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
	for id, r := range s.subs {
		out[id] = r.m.status(id, now)
	}
	return out
}

// Timings returns, per virtual server (Check.Service), how often its
// checks run and the detection bound that follows.
func (s *Scheduler) Timings() map[string]Timing {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Timing, len(s.timings))
	for k, v := range s.timings {
		out[k] = v
	}
	return out
}

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	runners, subs, rate, stretch, budget := s.nRunners, len(s.subs), s.rate, s.stretch, s.effBudget()
	s.mu.Unlock()
	st := Stats{
		Checks:         s.checks.Load(),
		Late:           s.late.Load(),
		MaxLag:         time.Duration(s.maxLag.Load()),
		Saturated:      s.saturated.Load(),
		InFlight:       int(s.inFlight.Load()),
		Runners:        runners,
		Subscribers:    subs,
		NotifyDropped:  s.notifyDropped.Load(),
		Wakeups:        s.wakeups.Load(),
		WakeupsPerSec:  math.Float64frombits(s.wakeRate.Load()),
		NoVerdict:      s.noVerdict.Load(),
		Stalled:        time.Duration(s.stalled.Load()),
		Budget:         budget,
		ConfiguredRate: rate,
		Stretch:        stretch,
	}
	if ns := s.lastLoop.Load(); ns != 0 {
		st.LastLoop = time.Unix(0, ns)
	}
	return st
}
