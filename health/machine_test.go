package health

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestMachine feeds sequences of results at one-second steps and checks the
// state after each, for each initial state.
func TestMachine(t *testing.T) {
	P, F := passed("ok"), failed("bad")
	D := result{outcome: drain, factor: -1, weight: -1, reason: "drain"}
	M := result{outcome: maint, factor: -1, weight: -1, reason: "maint"}
	pct := func(f float64) result { r := passed("pct"); r.factor = f; return r }
	spec := Spec{Rise: 2, Fall: 3}
	for _, tc := range []struct {
		name    string
		initial State
		in      []result
		want    []State
	}{
		{"unknown resolves on first pass", Unknown, []result{P}, []State{Up}},
		{"unknown needs fall failures", Unknown, []result{F, F, F}, []State{Unknown, Unknown, Down}},
		{"unknown: a pass decides at once", Unknown, []result{F, P}, []State{Unknown, Up}},
		{"up needs fall failures", Up, []result{F, F, F}, []State{Up, Up, Down}},
		{"a pass resets the fall count", Up, []result{F, F, P, F, F, F}, []State{Up, Up, Up, Up, Up, Down}},
		{"down needs rise passes", Down, []result{P, P}, []State{Down, Up}},
		{"a fail resets the rise count", Down, []result{P, F, P, P}, []State{Down, Down, Down, Up}},
		{"drain is immediate", Up, []result{D, P}, []State{Drain, Up}},
		{"drain then fail is down", Up, []result{D, F}, []State{Drain, Down}},
		{"maint skips fall", Up, []result{M}, []State{Down}},
		{"percentage keeps up", Up, []result{pct(0.5), pct(1)}, []State{Up, Up}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Unix(1000, 0)
			m := newMachine(spec, tc.initial, t0)
			for i, r := range tc.in {
				m.observe(t0.Add(time.Duration(i+1)*time.Second), r)
				if m.state != tc.want[i] {
					t.Fatalf("after result %d (%v): state %v, want %v", i, r.reason, m.state, tc.want[i])
				}
			}
		})
	}
}

func TestMachineReportsChanges(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m := newMachine(Spec{Rise: 1, Fall: 1}, Unknown, t0)
	if tr, ch := m.observe(t0, passed("ok")); !tr || !ch {
		t.Fatalf("unknown->up: transition=%v changed=%v", tr, ch)
	}
	if tr, ch := m.observe(t0, passed("ok")); tr || ch {
		t.Fatalf("up->up: transition=%v changed=%v", tr, ch)
	}
	r := passed("75%")
	r.factor = 0.75
	if tr, ch := m.observe(t0, r); tr || !ch {
		t.Fatalf("factor change: transition=%v changed=%v", tr, ch)
	}
	if st := m.status("x", t0); st.Factor != 0.75 || st.State != Up || st.Since != t0 {
		t.Fatalf("status %+v", st)
	}
}

func TestSlowStartRamp(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m := newMachine(Spec{Rise: 1, Fall: 1, SlowStart: 10 * time.Second}, Down, t0)
	m.observe(t0, passed("ok"))
	if m.state != Up {
		t.Fatalf("state %v", m.state)
	}
	var got []float64
	now := t0
	for steps := 0; steps < 20; steps++ {
		got = append(got, m.factor(now))
		next := m.nextRamp(now)
		if next.IsZero() {
			break
		}
		if !next.After(now) {
			t.Fatalf("nextRamp %v not after %v", next, now)
		}
		now = next
	}
	want := []float64{0.1, 0.19, 0.28, 0.37, 0.46, 0.55, 0.64, 0.73, 0.82, 0.91, 1}
	if len(got) != len(want) {
		t.Fatalf("ramp %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ramp %v, want %v", got, want)
		}
	}
	if now != t0.Add(10*time.Second) {
		t.Fatalf("ramp ended at %v, want slow_start after the transition", now.Sub(t0))
	}
	// Start-up (unknown -> up) does not ramp: the server was serving.
	m2 := newMachine(Spec{Rise: 1, Fall: 1, SlowStart: 10 * time.Second}, Unknown, t0)
	m2.observe(t0, passed("ok"))
	if f := m2.factor(t0); f != 1 {
		t.Fatalf("unknown->up factor %v, want 1", f)
	}
	// Agent percentage and ramp multiply.
	m3 := newMachine(Spec{Rise: 1, Fall: 1, SlowStart: 10 * time.Second}, Drain, t0)
	r := passed("50%")
	r.factor = 0.5
	m3.observe(t0, r)
	if f := m3.factor(t0.Add(10 * time.Second)); f != 0.5 {
		t.Fatalf("factor after ramp %v, want 0.5", f)
	}
	if f := m3.factor(t0); f != 0.05 {
		t.Fatalf("factor at ramp start %v, want 0.05", f)
	}
}

func TestParseAgentReply(t *testing.T) {
	for _, tc := range []struct {
		line    string
		outcome outcome
		factor  float64
	}{
		{"75%", pass, 0.75},
		{"up", pass, -1},
		{"ready 50%", pass, 0.5},
		{"up,100%", pass, 1},
		{"150%", pass, 1},
		{"drain", drain, -1},
		{"maint", maint, -1},
		// The agent's own "down" is a statement, not a failed probe:
		// down at once (package doc), like a file's "down".
		{"down#disk full", maint, -1},
		{"stopped", maint, -1},
		{"fail", maint, -1},
		{"", fail, -1},
		{"hello", fail, -1},
	} {
		r := parseAgentReply(tc.line)
		if r.outcome != tc.outcome || r.factor != tc.factor {
			t.Errorf("%q: outcome %v factor %v, want %v %v", tc.line, r.outcome, r.factor, tc.outcome, tc.factor)
		}
	}
}

func TestParseFileContent(t *testing.T) {
	for _, tc := range []struct {
		content string
		outcome outcome
		weight  int
		factor  float64
	}{
		{"", pass, -1, -1},
		{"up\n", pass, -1, -1},
		{"drain\n", drain, -1, -1},
		{"DOWN", maint, -1, -1},
		{"0", drain, -1, -1},
		{"25\n", pass, 25, -1},
		{"50%", pass, -1, 0.5},
		{"70000", fail, -1, -1},
		{"bogus", fail, -1, -1},
	} {
		r := parseFileContent("/f", tc.content)
		if r.outcome != tc.outcome || r.weight != tc.weight || r.factor != tc.factor {
			t.Errorf("%q: got %v w=%d f=%v, want %v w=%d f=%v", tc.content, r.outcome, r.weight, r.factor, tc.outcome, tc.weight, tc.factor)
		}
	}
}

// TestSpecEqualCoversEveryField changes each field of a Spec in turn and
// checks that Equal and Key both notice, so a field added to Spec but
// forgotten in Equal fails here.
func TestSpecEqualCoversEveryField(t *testing.T) {
	base := Spec{Type: "http", Interval: time.Second, Notify: []string{"a"}, ExpectStatus: []StatusRange{{200, 299}}, Command: []string{"x"}}
	v := reflect.ValueOf(&base).Elem()
	for i := range v.NumField() {
		mod := base
		mod.Notify = slices.Clone(base.Notify)
		mod.ExpectStatus = slices.Clone(base.ExpectStatus)
		mod.Command = slices.Clone(base.Command)
		if !mod.Equal(base) || mod.Key() != base.Key() {
			t.Fatal("a copy is not equal")
		}
		f := reflect.ValueOf(&mod).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "!")
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.Uint16:
			f.SetUint(f.Uint() + 1)
		case reflect.Slice:
			if f.Len() == 0 {
				t.Fatalf("field %s: give base a value", v.Type().Field(i).Name)
			}
			e := f.Index(0)
			switch e.Kind() {
			case reflect.String:
				e.SetString(e.String() + "!")
			case reflect.Struct:
				e.Field(0).SetInt(e.Field(0).Int() + 1)
			}
		default:
			t.Fatalf("field %s: kind %v not handled by this test", v.Type().Field(i).Name, f.Kind())
		}
		if mod.Equal(base) {
			t.Errorf("Equal ignores field %s", v.Type().Field(i).Name)
		}
		if mod.Key() == base.Key() {
			t.Errorf("Key ignores field %s", v.Type().Field(i).Name)
		}
	}
}

// TestSlowStartOddDurations: any slow_start the config accepts ramps
// without panicking, steps only when the factor changes, and ends at
// exactly factor 1 at slow_start after the transition.
func TestSlowStartOddDurations(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, ss := range []time.Duration{time.Nanosecond, 5, 9, 15, 1001, 7*time.Second + 3, 1 << 62} {
		m := newMachine(Spec{Rise: 1, Fall: 1, SlowStart: ss}, Down, t0)
		m.observe(t0, passed("ok"))
		now := t0
		prev := m.factor(now)
		if prev != 0.1 {
			t.Fatalf("slow_start %v: starts at %v", ss, prev)
		}
		for steps := 0; ; steps++ {
			if steps > slowStartSteps {
				t.Fatalf("slow_start %v: more than %d steps", ss, slowStartSteps)
			}
			next := m.nextRamp(now)
			if next.IsZero() {
				break
			}
			if !next.After(now) {
				t.Fatalf("slow_start %v: nextRamp %v not after %v", ss, next, now)
			}
			if f := m.factor(next.Add(-1)); f != prev {
				t.Fatalf("slow_start %v: factor moved to %v before the step at %v", ss, f, next.Sub(t0))
			}
			now = next
			f := m.factor(now)
			if f <= prev {
				t.Fatalf("slow_start %v: step at %v leaves factor %v (was %v)", ss, now.Sub(t0), f, prev)
			}
			prev = f
		}
		if prev != 1 {
			t.Fatalf("slow_start %v: ramp ends at %v", ss, prev)
		}
		if want := t0.Add(min(ss, maxSlowStart)); !now.Equal(want) {
			t.Fatalf("slow_start %v: ramp ended after %v", ss, now.Sub(t0))
		}
	}
}
