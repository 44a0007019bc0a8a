// Package health runs health checks against real servers and turns their
// results into verdicts: "real server X is up / down / drained, at weight
// factor f". It knows nothing of IPVS; the agent maps a Status onto the
// kernel's weight with Status.EffectiveWeight.
//
// One Scheduler drives every check from a single timer heap and one loop
// goroutine. Plain TCP connect checks run on that loop itself, on raw
// non-blocking sockets in one epoll set (poller_linux.go): the loop wakes
// once per tick (DefaultTick) while probes are in flight, starts every
// probe due, collects every completion and judges every timeout of that
// tick together, so a check costs its syscalls and no goroutine, timer or
// allocation. Other kinds run each probe on a short-lived goroutine. The
// number of real servers configured costs memory for their state only.
//
// The state machine, per distinct probe (target + spec):
//
//   - Unknown (the usual initial state) takes the first result as verdict:
//     pass -> Up at full weight (no slow start: the server was serving),
//     fail -> Down.
//   - Up -> Down after Fall consecutive failures; Down -> Up after Rise
//     consecutive passes, then slow start ramps Factor from 0.1 to 1 in
//     ten steps over SlowStart.
//   - "drain" from a file or agent check -> Drain at once; "down"/"maint"
//     from them -> Down at once. A pass leaves Drain at once.
//   - An agent check's percentage and a file check's weight or percentage
//     ride on passing results (Factor, Weight).
//
// Timing: the first check of a new probe is placed uniformly at random
// within one interval; each next one is due one interval (±Jitter, 10% by
// default) after the previous was due. Probes started more than LateAfter
// late are counted (Stats.Late) and logged as "falling behind", at most once
// per 10 s. When the checks ask for more probes per second than the budget
// (Options.Budget), every interval is stretched by the same factor and a
// warning gives the effective intervals and detection bounds (Timings).
//
// Lateness is never a failure. A TCP probe's timeout runs from when its SYN
// left; when it passes, the socket's own state decides (a handshake the
// kernel completed passes however late the loop noticed it), and time the
// loop was found asleep longer than it asked is not counted against the
// timeout, up to 3x the timeout of wall time (judgeTimeout), which bounds
// detection of a dead server under any overload. A probe of another kind
// whose failure comes back more than LateAfter after its timeout, and a
// probe that failed on the agent's side (out of sockets or ports), yield no
// verdict: they do not count towards rise or fall (Stats.NoVerdict).
//
// Reloads: a replaced or removed check leaves the queue at once.
package health

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// State is a real server's health as the agent should act on it.
type State int

const (
	// Unknown means no verdict yet: the agent keeps whatever weight the
	// kernel has, so restarting the agent does not flap a healthy pool.
	Unknown State = iota
	// Up: serve traffic at the configured weight times Factor.
	Up
	// Down: failed its checks; weight 0 (or removed, per the agent's
	// on_failure policy).
	Down
	// Drain: administratively drained (file or agent check said so):
	// weight 0 but existing connections are left alone.
	Drain
)

func (s State) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Up:
		return "up"
	case Down:
		return "down"
	case Drain:
		return "drain"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// ParseState is String's inverse, for config files and tests.
func ParseState(s string) (State, error) {
	switch s {
	case "unknown", "":
		return Unknown, nil
	case "up":
		return Up, nil
	case "down":
		return Down, nil
	case "drain":
		return Drain, nil
	}
	return Unknown, fmt.Errorf("unknown health state %q (want unknown, up, down or drain)", s)
}

// Status is the verdict for one subscriber ID, delivered through
// Options.OnChange and Scheduler.Statuses.
type Status struct {
	ID    string
	State State
	// Factor scales the configured weight (or Weight, when set): 1
	// normally, lower while slow start ramps up or when an agent check
	// reports a percentage.
	Factor float64
	// Weight is an absolute weight reported by a file check, or -1.
	Weight int
	// Reason says why, in words fit for a log line ("connect: connection
	// refused", "HTTP 503", "agent: drain").
	Reason string
	// Since is when State last changed.
	Since time.Time
}

// EffectiveWeight is the kernel weight the agent should set for a real
// server configured with weight configured. It returns -1 for Unknown,
// meaning "keep what the kernel has".
func (s Status) EffectiveWeight(configured int) int {
	switch s.State {
	case Down, Drain:
		return 0
	case Unknown:
		return -1
	}
	if s.Weight >= 0 {
		// A file's absolute weight replaces the configured one; slow
		// start and an agent's percentage still scale it.
		configured = s.Weight
	}
	if configured <= 0 {
		return 0
	}
	f := s.Factor
	if f <= 0 {
		return 0
	}
	if f > 1 {
		f = 1
	}
	w := int(math.Round(float64(configured) * f))
	// A tiny factor must not turn an up server into a drained one: weight 0
	// means "no new connections" to IPVS.
	if w < 1 {
		w = 1
	}
	return w
}

// Check is one health check subscription chosen by the agent.
type Check struct {
	// ID is the agent's name for this (virtual server, real server) pair,
	// e.g. "web/198.18.0.11:80". Statuses are keyed by it.
	ID string
	// Service names the virtual server, for log lines and notify commands.
	// Optional.
	Service string
	// Target is the real server. Spec.Port, when set, replaces its port for
	// the probe.
	Target netip.AddrPort
	Spec   Spec
	// Initial is the state assumed until the first verdict. Unknown (the
	// zero value) lets the first result decide; Up requires Spec.Fall
	// failures to go down; Down requires Spec.Rise successes to go up.
	Initial State
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Lo, Hi int }

// Spec describes how to check a real server. Two checks with equal Key()
// and the same probe target run once and fan out to every subscriber.
type Spec struct {
	Type      string // tcp, http, https, udp, dns, exec, icmp, file, agent
	Interval  time.Duration
	Timeout   time.Duration
	Rise      int
	Fall      int
	Port      uint16 // probe this port instead of the real server's
	SlowStart time.Duration
	Notify    []string // argv run on each transition

	// http, https
	Method       string
	Path         string
	Host         string // Host header; default the target address
	ExpectStatus []StatusRange
	ExpectBody   string // substring
	BodyRegex    string // Go regexp (RE2)
	MaxBody      int    // bytes of body read at most
	// TLS (https; also agent/tcp never use it)
	TLSServerName string
	TLSVerify     bool
	CAFile        string
	CertFile      string
	KeyFile       string

	// udp: Send is the datagram; Expect an optional substring of the reply.
	// agent: Send is an optional line written before reading.
	Send   string
	Expect string

	// dns
	QueryName    string
	QueryType    string // A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, ANY
	ExpectRcode  string // NOERROR, NXDOMAIN, ...
	ExpectAnswer string // optional; one answer's rdata as text must equal it

	// exec: Command is argv (with Shell, Command[0] is a /bin/sh -c script
	// and the rest its $0, $1...). User runs it (empty: the agent's own user).
	Command []string
	Shell   bool
	User    string

	// file: Path template ({ip}, {port}, {addr} of the real server; there
	// is no {id}: one probe serves every check ID on that real server);
	// FileMissing is the state assumed when the file does not exist ("up",
	// "down" or "drain").
	File        string
	FileMissing string

	// WeightFile (any type but file) is an operator's override read after
	// every probe, same template and content as File: "drain" or "down"
	// take the server out at once whatever the probe says; a weight or
	// percentage applies while the probe passes; missing or empty changes
	// nothing. It lets an operator drain a server with one write while its
	// real check keeps running.
	WeightFile string
}

// Key is a canonical encoding of the spec, equal for equal specs. It is what
// dedupe and reload compare.
func (s Spec) Key() string {
	b, err := json.Marshal(s)
	if err != nil { // cannot happen: Spec holds only plain values
		return fmt.Sprintf("%#v", s)
	}
	return string(b)
}

// Equal reports whether two specs describe the same check. It is Key()
// equality without the encoding, for the reload path that compares 50,000
// specs; TestSpecEqualCoversEveryField keeps the two in step.
func (s Spec) Equal(o Spec) bool {
	return s.Type == o.Type && s.Interval == o.Interval && s.Timeout == o.Timeout &&
		s.Rise == o.Rise && s.Fall == o.Fall && s.Port == o.Port && s.SlowStart == o.SlowStart &&
		slices.Equal(s.Notify, o.Notify) &&
		s.Method == o.Method && s.Path == o.Path && s.Host == o.Host &&
		slices.Equal(s.ExpectStatus, o.ExpectStatus) &&
		s.ExpectBody == o.ExpectBody && s.BodyRegex == o.BodyRegex && s.MaxBody == o.MaxBody &&
		s.TLSServerName == o.TLSServerName && s.TLSVerify == o.TLSVerify &&
		s.CAFile == o.CAFile && s.CertFile == o.CertFile && s.KeyFile == o.KeyFile &&
		s.Send == o.Send && s.Expect == o.Expect &&
		s.QueryName == o.QueryName && s.QueryType == o.QueryType &&
		s.ExpectRcode == o.ExpectRcode && s.ExpectAnswer == o.ExpectAnswer &&
		slices.Equal(s.Command, o.Command) && s.Shell == o.Shell && s.User == o.User &&
		s.File == o.File && s.FileMissing == o.FileMissing && s.WeightFile == o.WeightFile
}

// probeTarget is where the probe goes: the real server, with Spec.Port
// replacing its port when set.
func (c Check) probeTarget() netip.AddrPort {
	if c.Spec.Port != 0 {
		return netip.AddrPortFrom(c.Target.Addr(), c.Spec.Port)
	}
	return c.Target
}

// perRealServer reports whether the probe depends on the real server's own
// port, not only on the address it probes: exec and file checks, and a
// weight_file template naming the port, see it (env, path), so they never
// merge real servers that share a probe address (a check port).
func (s Spec) perRealServer() bool {
	return s.Type == "exec" || s.Type == "file" ||
		strings.Contains(s.WeightFile, "{port}") || strings.Contains(s.WeightFile, "{addr}")
}

// Defaults the scheduler falls back to when handed a spec that fails
// Validate (the config package applies its own, equal, defaults first).
const (
	DefaultInterval = 2 * time.Second
	DefaultTimeout  = time.Second
)

// Validate reports the first problem that would stop the spec from running:
// unknown type, missing kind-specific fields, bad regexp, unreadable TLS
// files, unknown user. The config package calls it so mistakes surface at
// load time rather than as a permanently down server.
func (s Spec) Validate() error {
	_, err := s.prepare()
	return err
}

// validTiming checks the fields every kind uses.
func (s Spec) validTiming() error {
	if s.Interval <= 0 {
		return fmt.Errorf("interval must be positive, got %v", s.Interval)
	}
	if s.Timeout <= 0 {
		return fmt.Errorf("timeout must be positive, got %v", s.Timeout)
	}
	if s.Timeout > s.Interval {
		return fmt.Errorf("timeout %v is longer than interval %v", s.Timeout, s.Interval)
	}
	if s.Rise < 1 {
		return fmt.Errorf("rise must be at least 1, got %d", s.Rise)
	}
	if s.Fall < 1 {
		return fmt.Errorf("fall must be at least 1, got %d", s.Fall)
	}
	if s.SlowStart < 0 {
		return fmt.Errorf("slow_start must not be negative, got %v", s.SlowStart)
	}
	if len(s.Notify) > 0 && s.Notify[0] == "" {
		return fmt.Errorf("notify: empty command")
	}
	return nil
}

// prepare validates s and builds its checker.
func (s Spec) prepare() (checker, error) {
	if err := s.validTiming(); err != nil {
		return nil, err
	}
	return newChecker(s)
}
