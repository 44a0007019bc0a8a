package health

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Run drives the checks until ctx ends, then waits for probes in flight to
// be cancelled and returns ctx.Err(). Call it once per Scheduler.
//
// One goroutine does all of it: it pops the probes that are due, starts
// TCP connects on the epoll poller (poller.go) and every other kind on a
// goroutine of its own, collects completions, applies results under one
// lock per batch, and sleeps until the next tick. With a fake Clock
// (tests) it waits on the Clock's timers instead of epoll.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.deliver(ctx) }()
	go func() { defer wg.Done(); s.runNotifies(ctx) }()
	defer wg.Wait()
	var probes sync.WaitGroup
	defer probes.Wait()

	var p *poller
	if _, real := s.clock.(realClock); real {
		var err error
		if p, err = newPoller(s.tick); err != nil {
			s.log.Warn("health: no epoll loop, TCP checks run on goroutines", "err", err)
		}
	}
	var timer Timer
	if p != nil {
		s.kicker.Store(p)
		defer func() { s.kicker.Store(nil); p.close() }()
		stop := context.AfterFunc(ctx, p.kick)
		defer stop()
	} else {
		timer = s.clock.NewTimer(time.Hour)
		defer timer.Stop()
	}

	var (
		due       []item
		done      []completion
		events    []transition
		rateStart = s.clock.Now()
		rateWakes uint64
		lastStats = rateStart
		// For adaptBudget: the loop's busy time and probe starts since
		// the last adaptation, and how many starts fit in one batch.
		busy       time.Duration
		started    int
		lastAdapt  = rateStart
		adaptAfter = firstAdapt
		startLimit = 256
		busyCPU    time.Duration
		cpu0       time.Duration
		behind     bool // the queue's head was overdue by a whole interval
	)
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		now := s.clock.Now()
		if p != nil {
			cpu0 = threadCPU()
		}
		s.lastLoop.Store(now.UnixNano())
		if w := s.wakeups.Add(1); now.Sub(rateStart) >= time.Second {
			s.wakeRate.Store(math.Float64bits(float64(w-rateWakes) / now.Sub(rateStart).Seconds()))
			rateStart, rateWakes = now, w
			if now.Sub(lastStats) >= statsLogEvery {
				lastStats = now
				s.logStats()
			}
		}
		done = done[:0]
		if p != nil {
			done = p.harvest(done)
			done = p.expire(now, done)
			s.stalled.Store(int64(p.stall))
		}

		s.mu.Lock()
		events = events[:0]
		for _, c := range done {
			s.checks.Add(1)
			events = s.completeLocked(c.r, s.timeAt(c.due), c.res, now, events)
		}
		if len(done) > 0 {
			s.inFlight.Add(-int64(len(done)))
		}
		due = due[:0]
		free := s.maxInFlight - int(s.inFlight.Load())
		for s.queue.Len() > 0 && s.queue[0].at <= s.mono(now) {
			it := s.queue[0]
			if it.r.dead {
				s.queue.pop()
				continue
			}
			if it.ramp {
				s.queue.pop()
				if it.gen == it.r.rampGen {
					s.rampLocked(it.r, now)
				}
				continue
			}
			if len(due) >= free || len(due) >= startLimit {
				// Every slot busy: the rest wait for the next tick.
				s.saturated.Add(1)
				break
			}
			due = append(due, s.queue.pop())
		}
		// Behind: the queue's head is overdue by a whole interval (and at
		// least twice LateAfter): rounds are being lost, not a moment's lag.
		if s.queue.Len() > 0 {
			if over := time.Duration(s.mono(now) - s.queue[0].at); over > 2*s.lateAfter && over > s.interval(s.queue[0].r) {
				behind = true
			}
		}
		wait := maxIdle
		if s.queue.Len() > 0 {
			wait = min(wait, time.Duration(s.queue[0].at-s.mono(now)))
		}
		s.mu.Unlock()
		for _, e := range events {
			s.report(e)
		}

		cut := false
		for i, it := range due {
			if p != nil && i%8 == 7 && s.clock.Now().Sub(now) > maxBatch {
				// Starts are slow (a starved process: under a 10% CPU
				// quota one took ~0.1 s): put the rest back and look at
				// completions, deadlines and the budget first.
				s.mu.Lock()
				for _, back := range due[i:] {
					s.queue.push(back)
				}
				s.mu.Unlock()
				due, cut = due[:i], true
				break
			}
			s.noteLag(now, time.Duration(s.mono(now)-it.at))
			s.inFlight.Add(1)
			if p != nil && it.r.se.onPoller && it.r.se.err == nil {
				if c, fin := p.start(it.r, it.at, s.clock); fin {
					done = append(done[:0], c)
					s.finishNow(c, now)
				}
				continue
			}
			s.startGoroutine(ctx, &probes, it)
		}

		if p != nil {
			started += len(due)
			wall := s.clock.Now().Sub(now)
			busy += wall
			// The loop's own CPU: a thread clock read, valid unless the
			// goroutine moved to another thread meanwhile (then it may be
			// anything, and the wall time bounds it).
			if c := threadCPU() - cpu0; c >= 0 && c <= wall {
				busyCPU += c
			} else {
				busyCPU += wall
			}
			if el := now.Sub(lastAdapt); el >= adaptAfter {
				if started >= 20 {
					startLimit = max(16, int(maxBatch/(busy/time.Duration(started))))
					s.adaptBudget(busyCPU, started, el, behind)
				}
				busy, busyCPU, started, lastAdapt, adaptAfter, behind = 0, 0, 0, now, adaptEvery, false
			}
			if cut || len(due) == startLimit {
				continue // more are due: collect completions, then start them
			}
			if dl := p.nextDeadline(); !dl.IsZero() {
				wait = min(wait, dl.Sub(now))
			}
			p.wait(max(wait, 0))
			continue
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

// The loop measures what a probe costs it (its own thread's CPU time per
// probe started, wake-ups and completions included; the control plane's
// work does not count) and from that the probes per second it can run in
// loopShare of one CPU. When it falls behind all the same (its process is
// held to a CPU quota, or a hog or the host takes the CPU) and achieved
// less than 90% of the rate asked, the rate it achieved is the capacity. The budget in force is never above the
// capacity, so on a small or starved machine intervals stretch evenly (and
// say so, with the detection bound that follows) instead of every check
// starting late and the control plane waiting behind the checks. Starts per
// iteration are bounded by wall time (maxBatch), so completions and
// timeouts are collected in between.
const (
	loopShare  = 0.5
	firstAdapt = 3 * time.Second
	adaptEvery = 10 * time.Second
	maxBatch   = 20 * time.Millisecond
	// minCapacity: below this many probes per second the measurement is
	// not trusted to lower the budget further.
	minCapacity = 1
)

// threadCPU is the CPU time of the thread running the caller.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// adaptBudget updates the measured capacity from cpu spent on started
// probes over el (behind: the loop fell behind meanwhile) and re-fits the
// checks to the budget when it moved by more than a quarter. It rises by
// half at most per adaptation, so a capacity learned by falling behind is
// not forgotten at once.
func (s *Scheduler) adaptBudget(cpu time.Duration, started int, el time.Duration, behind bool) {
	cost := cpu / time.Duration(started)
	if cost <= 0 {
		cost = time.Microsecond
	}
	capacity := loopShare * float64(time.Second) / float64(cost)
	achieved := float64(started) / el.Seconds()
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.capacity
	// Behind while achieving about what was asked is a passing lag, not a
	// limit: cutting to the achieved rate then would ratchet the budget
	// down window after window.
	asked := s.rate
	if b := s.effBudget(); b > 0 {
		asked = min(asked, b)
	}
	if behind && achieved < 0.9*asked {
		capacity = min(capacity, achieved)
	} else if old > 0 {
		capacity = min(capacity, 1.5*old)
	}
	capacity = max(capacity, minCapacity)
	if old > 0 && capacity > old*0.75 && capacity < old*1.25 {
		return
	}
	s.capacity = capacity
	s.log.Debug("health loop capacity measured", "cpu_per_probe", cost.String(),
		"achieved_per_second", int(achieved), "behind", behind, "probes_per_second", int(capacity))
	s.refitLocked()
}

// statsLogEvery is how often the loop logs its counters at debug level.
const statsLogEvery = 10 * time.Second

func (s *Scheduler) logStats() {
	st := s.Stats()
	s.log.Debug("health scheduler", "checks", st.Checks, "no_verdict", st.NoVerdict, "late", st.Late,
		"max_lag", st.MaxLag.String(), "saturated", st.Saturated, "in_flight", st.InFlight,
		"wakeups_per_second", st.WakeupsPerSec, "stalled", st.Stalled.String(),
		"checks_per_second_configured", st.ConfiguredRate, "budget", st.Budget, "stretch", st.Stretch)
}

// finishNow applies a probe the poller finished as it started it.
func (s *Scheduler) finishNow(c completion, now time.Time) {
	s.inFlight.Add(-1)
	s.checks.Add(1)
	s.mu.Lock()
	events := s.completeLocked(c.r, s.timeAt(c.due), c.res, now, nil)
	s.mu.Unlock()
	for _, e := range events {
		s.report(e)
	}
}

// startGoroutine runs a probe of any kind but plain TCP on a goroutine of
// its own. Its timeout starts when the goroutine does, not when it was
// dispatched; a failure that comes back more than LateAfter after that
// timeout was judged by a runtime that could not run it in time (a
// deadline firing before the answer was read) and yields no verdict.
func (s *Scheduler) startGoroutine(ctx context.Context, probes *sync.WaitGroup, it item) {
	probes.Add(1)
	r, due := it.r, s.timeAt(it.at)
	go func() {
		defer probes.Done()
		defer s.inFlight.Add(-1)
		start := s.clock.Now()
		pctx, cancel := context.WithTimeout(ctx, r.se.spec.Timeout)
		defer cancel()
		s.mu.Lock()
		if r.dead {
			s.mu.Unlock()
			return
		}
		r.cancel = cancel
		s.mu.Unlock()
		res := s.runProbe(pctx, r)
		if ctx.Err() != nil {
			// Cut short because Run is stopping: the result says
			// nothing about the server (counted, it would turn servers
			// down on every shutdown).
			return
		}
		if res.outcome == fail && s.clock.Now().Sub(start) > r.se.spec.Timeout+s.lateAfter {
			res.noVerdict = true
		}
		s.checks.Add(1)
		s.complete(r, due, res)
	}()
}

// runProbe runs r's checker once. A panic in a checker (a parser meeting
// input nobody foresaw) is that check failing, logged with its stack; it
// must neither kill the daemon nor leave the check unscheduled.
func (s *Scheduler) runProbe(ctx context.Context, r *runner) (res result) {
	start := s.clock.Now()
	defer func() { res.latency = s.clock.Now().Sub(start) }() // after the recover below
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
		"raise intervals, lower the number of checks or lower [agent] check_budget",
		"late_checks", since, "lag", lag.Round(time.Millisecond),
		"in_flight", s.inFlight.Load(), "in_flight_limit", s.maxInFlight)
}

// jittered stretches d by up to ±jitter.
func (s *Scheduler) jittered(d time.Duration) time.Duration {
	if s.jitter == 0 {
		return d
	}
	f := 1 + s.jitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

// complete applies a probe's result from the goroutine path.
func (s *Scheduler) complete(r *runner, due time.Time, res result) {
	s.mu.Lock()
	events := s.completeLocked(r, due, res, s.clock.Now(), nil)
	top := !r.dead && s.queue.Len() > 0 && s.queue[0].r == r // the next wake-up moved earlier
	s.mu.Unlock()
	if top {
		s.kick()
	}
	for _, e := range events {
		s.report(e)
	}
}

// completeLocked applies a probe's result, schedules the next probe and
// appends the transitions to report. A result marked noVerdict (the agent
// could not look in time, or failed locally) leaves the state machine
// alone: lateness is never a failure.
func (s *Scheduler) completeLocked(r *runner, due time.Time, res result, now time.Time, events []transition) []transition {
	if r.dead {
		return events
	}
	r.cancel = nil
	// Schedule from the due time, not the start, so dispatch lag does not
	// stretch every interval; when behind, run again at once.
	next := due.Add(s.jittered(s.interval(r)))
	if next.Before(now) {
		next = now
	}
	s.queue.push(item{at: s.mono(next), r: r})
	if res.noVerdict {
		s.noVerdict.Add(1)
		return events
	}
	s.probes.note(r.se.spec.Type, res)
	old := r.m.state
	rampWas := r.m.nextRamp(now)
	moved, _ := r.m.observe(now, res)
	after := r.m.snapshot(now)
	// Re-queue the ramp only when the result changed its schedule (it
	// started, restarted or ended). A result mid-ramp leaves the queued
	// step valid: replacing it on every probe would leave one stale item
	// per probe in the queue until its time came, (step / interval) per
	// real server during a mass recovery.
	if at := r.m.nextRamp(now); !at.Equal(rampWas) {
		r.rampGen++
		if !at.IsZero() {
			s.queue.push(item{at: s.mono(at), r: r, ramp: true, gen: r.rampGen})
		}
	}
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
	return events
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
		s.queue.push(item{at: s.mono(at), r: r, ramp: true, gen: r.rampGen})
	}
}
