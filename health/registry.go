package health

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"time"
)

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
	// onPoller: a plain TCP connect check, run by the epoll loop rather
	// than on a goroutine.
	onPoller bool
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
	cancel context.CancelFunc // of the probe in flight on the goroutine path
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

// key is the runner's identity, as Set computes it for a Check.
func (r *runner) key() runnerKey {
	if r.se.perRS {
		return runnerKey{target: r.rs, spec: r.se}
	}
	return runnerKey{target: r.probe().addr, spec: r.se}
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
	var fresh []*runner // queued once the budget's stretch is known
	var lastSpec *Spec  // neighbours usually share a spec: skip encoding it
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
				_, se.onPoller = se.chk.(tcpChecker)
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
				r = &runner{se: se, rs: c.Target, m: *newMachine(se.spec, c.Initial, now)}
				r.seen = r.m.snapshot(now)
				fresh = append(fresh, r)
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
	died := false
	for k, r := range prev {
		if runners[k] != r {
			r.dead = true
			died = true
			if r.cancel != nil {
				r.cancel()
			}
		}
	}
	if died {
		// Out of the queue now, not when their time comes: at interval
		// 1h, 1,000 reloads replacing 1,000 checks left a million items.
		s.queue.filter(func(it item) bool { return !it.r.dead })
	}
	for id := range s.subs {
		if _, ok := subs[id]; !ok {
			delete(s.pending, id) // its entry in s.order is skipped
		}
	}
	s.subs, s.specs, s.nRunners = subs, specs, len(runners)
	s.fitBudgetLocked(runners)
	for _, r := range fresh {
		// Spread the first round over one (stretched) interval so a reload
		// of 10,000 servers does not open 10,000 sockets in the same
		// millisecond.
		iv := max(s.interval(r), time.Millisecond)
		s.queue.push(item{at: s.mono(now.Add(time.Duration(rand.Int64N(int64(iv))))), r: r})
	}
	s.kick()
}

// effBudget is the budget in force: the configured one, lowered to what
// the loop was measured to sustain (adaptBudget).
func (s *Scheduler) effBudget() float64 {
	if !s.fixedBudget && s.capacity > 0 && (s.budget == 0 || s.capacity < s.budget) {
		return s.capacity
	}
	return s.budget
}

// refitLocked re-applies the budget to the checks as they are.
func (s *Scheduler) refitLocked() {
	runners := make(map[runnerKey]*runner, s.nRunners)
	for _, r := range s.subs {
		runners[r.key()] = r
	}
	s.fitBudgetLocked(runners)
}

// interval is r's interval as run: the configured one (the interned
// spec's: the default for an invalid spec) stretched to fit the budget.
func (s *Scheduler) interval(r *runner) time.Duration {
	iv := r.se.spec.Interval
	if s.stretch > 1 {
		iv = time.Duration(float64(iv) * s.stretch)
	}
	return iv
}

// fitBudgetLocked sums the probes per second the checks ask for and, over
// the budget, stretches every interval by the same factor: all real
// servers keep being checked, less often, rather than some starving. It
// recomputes each virtual server's Timing and logs a change of stretch.
func (s *Scheduler) fitBudgetLocked(runners map[runnerKey]*runner) {
	budget := s.effBudget()
	rate := 0.0
	for _, r := range runners {
		rate += float64(time.Second) / float64(r.se.spec.Interval)
	}
	stretch := 1.0
	if budget > 0 && rate > budget {
		stretch = rate / budget
	}
	changed := stretch != s.stretch
	s.rate, s.stretch = rate, stretch
	if changed {
		// Re-space the queued probes over one new interval from now:
		// after a stretch a backlog of overdue probes would otherwise take
		// longer than the new interval to drain, and the detection bound
		// reported below would not hold until it had.
		// Never later than already due: a probe the old schedule had
		// soon keeps its time (overdue ones run first, now), so a
		// stretch never postpones the next look at a real server.
		now := s.clock.Now()
		for i := range s.queue {
			if it := &s.queue[i]; !it.ramp {
				at := s.mono(now.Add(time.Duration(rand.Int64N(int64(max(s.interval(it.r), time.Millisecond))))))
				it.at = min(it.at, at)
			}
		}
		s.queue.filter(func(item) bool { return true })
	}
	timings := make(map[string]Timing, len(s.timings))
	for _, r := range runners {
		iv := r.se.spec.Interval
		t := Timing{Interval: iv, Effective: s.interval(r), DetectWithin: s.detectWithin(r)}
		for _, sb := range r.subs {
			old, ok := timings[sb.service]
			if ok {
				t.Interval = min(t.Interval, old.Interval)
				t.Effective = min(t.Effective, old.Effective)
				t.DetectWithin = max(t.DetectWithin, old.DetectWithin)
			}
			timings[sb.service] = t
		}
	}
	s.timings = timings
	if !changed {
		return
	}
	if stretch == 1 {
		s.log.Info("health checks within budget: intervals as configured",
			"checks_per_second", int(rate), "budget_per_second", int(budget))
		return
	}
	// One line for every virtual server, however many: the stretch is the
	// same for all, so list the distinct interval changes and bounds.
	seen := map[[3]time.Duration]bool{}
	var pairs []string
	for _, t := range timings {
		k := [3]time.Duration{t.Interval, t.Effective, t.DetectWithin}
		if !seen[k] && len(pairs) < 16 {
			seen[k] = true
			pairs = append(pairs, t.Interval.String()+"->"+t.Effective.Round(time.Millisecond).String()+
				" (detect within "+t.DetectWithin.Round(100*time.Millisecond).String()+")")
		}
	}
	sort.Strings(pairs)
	s.log.Warn("health checks over budget: every interval stretched to fit; raise [agent] check_budget or intervals",
		"checks_per_second", int(rate), "budget_per_second", int(budget), "budget_configured", int(s.budget),
		"stretch", float64(int(stretch*100))/100, "virtual_servers", len(timings),
		"intervals", strings.Join(pairs, ", "))
}

// detectWithin bounds how long after a real server dies r fails it: the
// next probe starts within one interval (+jitter); each of the fall
// probes lasts at most its timeout extended by stalls (timeoutCapFactor),
// and the next one starts an interval after the last was due, or at once
// when that has passed; plus one tick of batching and LateAfter of start
// lag the scheduler tolerates before it warns.
func (s *Scheduler) detectWithin(r *runner) time.Duration {
	iv := time.Duration(float64(s.interval(r)) * (1 + s.jitter))
	probe := r.se.spec.Timeout
	if r.se.onPoller {
		probe *= timeoutCapFactor
	} else {
		probe += s.lateAfter
	}
	fall := time.Duration(max(r.se.spec.Fall, 1))
	return iv + (fall-1)*max(iv, probe) + probe + s.tick + s.lateAfter
}
