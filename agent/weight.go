package agent

import (
	"fmt"
	"math"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// This file is the one home of weight policy: how a real server's health
// (state, factor and reported weight, from package health) and the virtual
// server's settings (on_failure, alpha) become its presence and weight in
// the kernel. Quorum and the sorry server, which depend on all real servers
// of a virtual server, are in desired.go, built on these decisions.

// decision is what the policy makes of one real server.
type decision struct {
	// present: the real server is in the desired table. Not present is a
	// delete (on_failure = "remove"), or no add (alpha with "remove").
	present bool
	// keep: no verdict yet and the real server is in the kernel already:
	// keep the kernel's weight (a restart or reload changes nothing).
	keep bool
	// weight is the kernel weight when present and not keep.
	weight int
	// healthy counts toward the quorum. A real server without a verdict
	// counts as what the kernel says of it (a weight above 0), so a
	// restart or reload neither loses nor regains a quorum on its own.
	healthy bool
	// pending: a new real server waiting for its first verdict (alpha).
	// It cannot take a quorum back, but it keeps one from being lost:
	// a first start must not flap the quorum for the first interval.
	pending bool
	// why says why the kernel weight is not the configured one (empty when
	// it is), one reason per element: for status.
	why []string
}

// decide applies the policy to one real server. known is false when its
// check has no status at all; kernel is the real server as the kernel had
// it when last read (nil: not there).
func decide(vs *config.VirtualServer, rs *config.RealServer, st health.Status, known bool, kernel *model.Destination) decision {
	conf := rs.Dest.Weight
	if rs.Check == nil {
		return decision{present: true, weight: conf, healthy: true}
	}
	if !known || st.State == health.Unknown {
		switch {
		case kernel != nil:
			d := decision{present: true, keep: true, healthy: kernel.Weight > 0}
			switch {
			case kernel.Weight == conf:
			case kernel.Weight == 0 && vs.Alpha:
				// Added at 0 by alpha, or quiesced before a restart:
				// either way it waits for its first verdict.
				d.pending = true
				d.why = []string{"alpha: weight 0 until its first check passes"}
			default:
				d.why = []string{"no verdict yet: the kernel's weight is kept"}
			}
			return d
		case !vs.Alpha:
			return decision{present: true, weight: conf, healthy: true}
		case vs.OnFailure == "remove":
			return decision{pending: true, why: []string{"alpha: added when its first check passes"}}
		default:
			return decision{present: true, pending: true, why: []string{"alpha: weight 0 until its first check passes"}}
		}
	}
	switch st.State {
	case health.Down:
		if vs.OnFailure == "remove" {
			return decision{why: []string{reason("down", st.Reason) + " (removed: on_failure = remove)"}}
		}
		return decision{present: true, why: []string{reason("down", st.Reason)}}
	case health.Drain:
		return decision{present: true, why: []string{reason("drain", st.Reason)}}
	}
	w, why := upWeight(conf, st, rs.Check.Type)
	return decision{present: true, weight: w, healthy: true, why: why}
}

// upWeight is the kernel weight of a real server that is up, configured
// with weight configured: a file's absolute weight replaces the configured
// one; slow start and an agent's percentage (Factor) scale it. The reasons
// name each source (slow start, agent, file or weight_file).
func upWeight(configured int, st health.Status, checkType string) (int, []string) {
	var why []string
	src := "weight_file" // an operator override file beside any check type
	switch checkType {
	case "file", "agent":
		src = checkType
	}
	if st.Weight >= 0 {
		configured = st.Weight
		why = append(why, fmt.Sprintf("%s weight %d", src, st.Weight))
	}
	f := min(st.Factor, 1)
	if configured <= 0 {
		return 0, why
	}
	if f <= 0 {
		return 0, append(why, src+" 0%")
	}
	w := int(math.Round(float64(configured) * f))
	// A tiny factor must not turn an up server into a drained one: weight 0
	// means "no new connections" to IPVS.
	w = max(w, 1)
	ramp := st.RampFactor
	if ramp <= 0 || ramp > 1 {
		ramp = 1
	}
	if ramp < 1 {
		why = append(why, "slow start "+pct(ramp))
	}
	if rest := f / ramp; rest < 0.9995 {
		why = append(why, src+" "+pct(rest))
	}
	return w, why
}

func pct(f float64) string { return fmt.Sprintf("%g%%", math.Round(f*1000)/10) }

func reason(state, r string) string {
	if r == "" {
		return state
	}
	return state + ": " + r
}
