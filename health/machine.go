package health

import (
	"math"
	"time"
)

// outcome is what one probe says.
type outcome int

const (
	pass  outcome = iota // the server answered as expected
	fail                 // it did not (counted against fall)
	drain                // an operator or the server itself asked for no new traffic
	maint                // an operator took the server out: down now, no fall count
)

// result is one probe's verdict. Factor and Weight carry what agent and
// file checks report; the others leave them at -1.
type result struct {
	outcome outcome
	factor  float64 // 0..1, or -1 for "not reported"
	weight  int     // absolute weight, or -1
	reason  string
	// noVerdict: the agent could not look in time, or failed on its own
	// side (out of sockets); the result neither passes nor fails the
	// server (Scheduler.completeLocked).
	noVerdict bool
}

func passed(reason string) result {
	return result{outcome: pass, factor: -1, weight: -1, reason: reason}
}
func failed(reason string) result {
	return result{outcome: fail, factor: -1, weight: -1, reason: reason}
}

// slowStartSteps is how many distinct factors slow start emits between 10%
// and 100%: enough for a smooth ramp, few enough not to flood the agent.
const slowStartSteps = 10

// maxSlowStart bounds slow start (about 146 years) so the ramp arithmetic,
// which multiplies durations by slowStartSteps, cannot overflow.
const maxSlowStart = time.Duration(math.MaxInt64 / (2 * slowStartSteps))

// machine is one check's state machine. It is pure: it owns no timers and
// takes the time as an argument, so it is table-tested with fabricated times.
type machine struct {
	since       time.Time
	reason      string
	slowStart   time.Duration
	agentFactor float64 // reported by the probe while passing
	state       State
	rise, fall  int32
	oks, fails  int32 // consecutive results of each kind
	weight      int32
	// ramping: slow start runs from since (the transition to Up) for
	// slowStart; a flag rather than a time keeps the machine small.
	ramping bool
}

func newMachine(s Spec, initial State, now time.Time) *machine {
	return &machine{
		rise: int32(s.Rise), fall: int32(s.Fall), slowStart: min(s.SlowStart, maxSlowStart),
		state: initial, since: now, agentFactor: 1, weight: -1,
		reason: "initial state",
	}
}

// observe feeds one result in. It reports whether the State changed
// (a transition, logged and notified) and whether anything a subscriber
// sees changed (state, factor or weight).
func (m *machine) observe(now time.Time, r result) (transition, changed bool) {
	before := m.snapshot(now)
	old := m.state
	switch r.outcome {
	case drain:
		m.oks, m.fails = 0, 0
		m.to(Drain, now, r.reason)
	case pass:
		m.fails = 0
		m.oks++
		m.agentFactor = 1
		if r.factor >= 0 {
			m.agentFactor = r.factor
		}
		m.weight = int32(r.weight)
		switch m.state {
		case Unknown:
			// The first verdict after start-up or reload decides at once:
			// the server was serving before we knew, ramping it would only
			// cut its weight for no reason.
			m.to(Up, now, r.reason)
		case Drain:
			m.to(Up, now, r.reason)
			m.startRamp()
		case Down:
			if m.oks >= m.rise {
				m.to(Up, now, r.reason)
				m.startRamp()
			}
		}
	case maint:
		m.oks, m.fails = 0, 0
		m.to(Down, now, r.reason)
	case fail:
		m.oks = 0
		m.fails++
		switch m.state {
		case Unknown, Drain:
			m.to(Down, now, r.reason)
		case Up:
			if m.fails >= m.fall {
				m.to(Down, now, r.reason)
			}
		}
	}
	after := m.snapshot(now)
	return m.state != old, after != before
}

func (m *machine) to(s State, now time.Time, reason string) {
	if m.state != s {
		m.state = s
		m.since = now
		m.ramping = false
	}
	m.reason = reason
}

func (m *machine) startRamp() {
	if m.slowStart > 0 {
		m.ramping = true
	}
}

// rampFactor is slow start's share of the factor: 10% at the transition,
// stepping to 100% at slowStart.
func (m *machine) rampFactor(now time.Time) float64 {
	if !m.ramping || m.state != Up {
		return 1
	}
	el := now.Sub(m.since)
	if el >= m.slowStart {
		return 1
	}
	if el < 0 {
		el = 0
	}
	i := int(el * slowStartSteps / m.slowStart)
	f := 0.1 + 0.9*float64(i)/slowStartSteps
	return math.Round(f*1000) / 1000
}

// nextRamp is when the ramp factor next changes, or zero if it will not.
func (m *machine) nextRamp(now time.Time) time.Time {
	if !m.ramping || m.state != Up {
		return time.Time{}
	}
	el := now.Sub(m.since)
	if el >= m.slowStart {
		return time.Time{}
	}
	if el < 0 {
		el = 0
	}
	// The factor is step i = floor(el*steps/slowStart) (rampFactor); it
	// next changes at the first instant where that reaches i+1, which is
	// ceil((i+1)*slowStart/steps), and the last one is slowStart itself.
	// (slowStart/steps as a step length is 0 below 10 ns and drifts from
	// rampFactor's steps when slowStart is not a multiple of 10 ns.)
	i := el * slowStartSteps / m.slowStart
	d := ((i+1)*m.slowStart + slowStartSteps - 1) / slowStartSteps
	return m.since.Add(d)
}

func (m *machine) factor(now time.Time) float64 {
	return m.agentFactor * m.rampFactor(now)
}

// snapshot is the subscriber-visible part, for change detection.
// Kept to 16 bytes: every runner holds the one last sent.
type view struct {
	factor float64
	weight int32
	state  uint8
}

func (m *machine) snapshot(now time.Time) view {
	return view{m.factor(now), m.weight, uint8(m.state)}
}

func (m *machine) status(id string, now time.Time) Status {
	return Status{ID: id, State: m.state, Factor: m.factor(now), Weight: int(m.weight), Reason: m.reason, Since: m.since}
}
