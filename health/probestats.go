package health

import (
	"strings"
	"sync/atomic"
	"time"
)

// CheckTypes are the check types, in the order Stats.Probes lists them.
var CheckTypes = []string{"tcp", "http", "https", "udp", "dns", "exec", "icmp", "file", "agent"}

// ProbeBuckets are the upper bounds of TypeStats.Buckets (a probe that
// takes longer lands in the last, +Inf, bucket).
var ProbeBuckets = []time.Duration{
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
}

// FailureClasses bound the failure reasons a probe can count under: a
// metric label per free-text reason would grow without limit.
var FailureClasses = []string{"timeout", "refused", "unreachable", "reset", "response", "down", "drain", "error"}

// TypeStats are the probes of one check type since start.
type TypeStats struct {
	Type  string
	Count uint64
	Sum   time.Duration
	// Buckets[i] counts probes that took at most ProbeBuckets[i] and more
	// than the bound before (not cumulative); the last entry counts the
	// rest.
	Buckets []uint64
	// Failures by class, indexed like FailureClasses.
	Failures []uint64
}

// probeStats are lock-free counters every probe adds to once.
type probeStats struct {
	types [10]typeCounters // CheckTypes, then "other"
}

type typeCounters struct {
	sum      atomic.Uint64
	buckets  [13]atomic.Uint64
	failures [8]atomic.Uint64
}

func typeIndex(t string) int {
	for i, c := range CheckTypes {
		if c == t {
			return i
		}
	}
	return len(CheckTypes)
}

func (p *probeStats) note(typ string, r result) {
	c := &p.types[typeIndex(typ)]
	c.sum.Add(uint64(max(r.latency, 0)))
	b := len(ProbeBuckets)
	for i, ub := range ProbeBuckets {
		if r.latency <= ub {
			b = i
			break
		}
	}
	c.buckets[b].Add(1)
	if r.outcome != pass {
		c.failures[failureClass(r)].Add(1)
	}
}

// failureClass sorts a failed result into FailureClasses by its outcome and
// the wording errReason and the checkers use.
func failureClass(r result) int {
	switch r.outcome {
	case maint:
		return 5
	case drain:
		return 6
	}
	s := r.reason
	switch {
	case strings.Contains(s, ": timeout"), strings.Contains(s, "i/o timeout"), strings.Contains(s, "timed out"):
		return 0
	case strings.Contains(s, "refused"), strings.Contains(s, "port unreachable"):
		return 1
	case strings.Contains(s, "unreachable"), strings.Contains(s, "no route"):
		return 2
	case strings.Contains(s, "reset by peer"), strings.Contains(s, "broken pipe"), strings.Contains(s, "EOF"):
		return 3
	case strings.HasPrefix(s, "HTTP "), strings.HasPrefix(s, "dns: rcode"), strings.HasPrefix(s, "dns: "),
		strings.Contains(s, "lacks"), strings.Contains(s, "unrecognised"), strings.HasPrefix(s, "exit "),
		strings.HasPrefix(s, "exec: exit"):
		return 4
	}
	return 7
}

func (p *probeStats) snapshot() []TypeStats {
	out := make([]TypeStats, 0, len(p.types))
	for i := range p.types {
		c := &p.types[i]
		// The count is the buckets' sum, read once each, so a histogram
		// built from this is consistent while probes keep landing.
		var n uint64
		bs := make([]uint64, len(c.buckets))
		for j := range c.buckets {
			bs[j] = c.buckets[j].Load()
			n += bs[j]
		}
		if n == 0 {
			continue
		}
		name := "other"
		if i < len(CheckTypes) {
			name = CheckTypes[i]
		}
		ts := TypeStats{Type: name, Count: n, Sum: time.Duration(c.sum.Load()),
			Buckets: bs, Failures: make([]uint64, len(c.failures))}
		for j := range c.failures {
			ts.Failures[j] = c.failures[j].Load()
		}
		out = append(out, ts)
	}
	return out
}
