// Package config reads and validates /etc/ipvs-agent.toml. Load returns
// either a complete, valid Config or every problem in the file, each with
// file:line:col: nothing is ever applied from a file that has one.
package config

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/settings"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// Config is a validated configuration.
type Config struct {
	Path string
	// Digest is the SHA-256 of the file's bytes: a reload of an unchanged
	// file can skip parsing it.
	Digest         [32]byte
	StateFile      string
	ResyncInterval time.Duration
	CleanupOnExit  bool
	// MaxChecksInFlight bounds the health probes running at once (sockets,
	// goroutines); 0 means the health package's default.
	MaxChecksInFlight int
	// Kernel holds the IPVS settings ([agent.kernel]) the agent keeps in
	// the kernel: the defaults for direct routing, less unmanaged ones.
	Kernel settings.Values
	// KernelUnmanaged are the settings listed in [agent.kernel] unmanaged:
	// never written, not even to restore them.
	KernelUnmanaged map[settings.Name]bool
	// StatusSocket is the control socket's path ("" = none), StatusGroup
	// the group allowed to use it ("" = root's), MetricsListen the
	// Prometheus endpoint's address ("" = off). Read at start.
	StatusSocket  string
	StatusGroup   string
	MetricsListen string
	// MetricsRealServers exports the per-real-server series (default
	// false: 8 series per real server cost real CPU per scrape at scale).
	MetricsRealServers bool
	// CheckBudget is the health probes per second run at most (0: the
	// health package's default, which follows the CPUs); over it every
	// check interval is stretched evenly. Read at start.
	CheckBudget    int
	VirtualServers []VirtualServer
}

// VirtualServer is one validated [[virtual_server]].
type VirtualServer struct {
	Name    string
	Service model.Service
	Adopt   bool

	// Health-related behaviour the agent applies on the checks' verdicts.
	OnFailure   string // "quiesce" (weight 0) or "remove" (delete the destination)
	SorryServer *model.Destination
	// Quorum is the number of healthy real servers the virtual server
	// needs (0: none); Hysteresis widens it both ways (lost below
	// Quorum-Hysteresis, back at Quorum+Hysteresis).
	Quorum     int
	Hysteresis int
	// Alpha: a checked real server that is not in the kernel yet gets no
	// traffic (weight 0, or not added with on_failure = "remove") until
	// its first check passes.
	Alpha        bool
	DrainTimeout time.Duration

	RealServers []RealServer
}

// RealServer is one validated [[virtual_server.real_server]]. Dest.Weight is
// the configured weight; health scales it.
type RealServer struct {
	Dest  model.Destination
	Check *health.Spec // nil: no health check, the real server is always up
}

// Defaults for keys the user leaves out.
const (
	DefaultStateFile      = "/var/lib/ipvs-agent/state.json"
	DefaultResyncInterval = 10 * time.Second
	DefaultScheduler      = "wlc"
	DefaultDrainTimeout   = 5 * time.Minute
	DefaultStatusSocket   = "/run/ipvs-agent/status.sock"
)

// Schedulers the kernel ships (net/netfilter/ipvs/ip_vs_*.c).
var schedulers = map[string]bool{
	"rr": true, "wrr": true, "lc": true, "wlc": true, "lblc": true, "lblcr": true, "dh": true,
	"sh": true, "sed": true, "nq": true, "fo": true, "ovf": true, "mh": true, "twos": true,
}

// Scheduler flags and the scheduler they belong to.
var schedulerFlags = map[string]struct {
	sched string
	flag  uint32
}{
	"sh-fallback": {"sh", model.FlagSched1},
	"sh-port":     {"sh", model.FlagSched2},
	"mh-fallback": {"mh", model.FlagSched1},
	"mh-port":     {"mh", model.FlagSched2},
}

var forwardings = map[string]uint32{"dr": model.ForwardDR, "nat": model.ForwardNAT, "tunnel": model.ForwardTunnel}

// The file as TOML decodes it, before validation.
type rawFile struct {
	Agent struct {
		StateFile      *string   `toml:"state_file"`
		ResyncInterval *string   `toml:"resync_interval"`
		CleanupOnExit  bool      `toml:"cleanup_on_exit"`
		MaxInFlight    *int64    `toml:"max_checks_in_flight"`
		Kernel         rawKernel `toml:"kernel"`
		StatusSocket   *string   `toml:"status_socket"`
		StatusGroup    string    `toml:"status_group"`
		MetricsListen  string    `toml:"metrics_listen"`
		MetricsRS      *bool     `toml:"metrics_real_servers"`
		CheckBudget    *int64    `toml:"check_budget"`
	} `toml:"agent"`
	Defaults struct {
		Check *Check `toml:"check"`
	} `toml:"defaults"`
	VirtualServers []rawVS `toml:"virtual_server"`
}

type rawVS struct {
	Name               string   `toml:"name"`
	Address            *string  `toml:"address"`
	FWMark             *int64   `toml:"fwmark"`
	Family             *string  `toml:"family"`
	Protocol           *string  `toml:"protocol"`
	Scheduler          *string  `toml:"scheduler"`
	SchedulerFlags     []string `toml:"scheduler_flags"`
	Persistence        *string  `toml:"persistence"`
	PersistenceNetmask any      `toml:"persistence_netmask"`
	OnePacket          bool     `toml:"one_packet"`
	Forwarding         *string  `toml:"forwarding"`
	Adopt              bool     `toml:"adopt"`
	OnFailure          *string  `toml:"on_failure"`
	SorryServer        *string  `toml:"sorry_server"`
	Quorum             *int64   `toml:"quorum"`
	Hysteresis         *int64   `toml:"hysteresis"`
	Alpha              *bool    `toml:"alpha"`
	DrainTimeout       *string  `toml:"drain_timeout"`
	Check              *Check   `toml:"check"`
	RealServers        []rawRS  `toml:"real_server"`
}

type rawRS struct {
	Address        *string `toml:"address"`
	Weight         *int64  `toml:"weight"`
	Forwarding     *string `toml:"forwarding"`
	UpperThreshold int64   `toml:"upper_threshold"`
	LowerThreshold int64   `toml:"lower_threshold"`
	Check          *Check  `toml:"check"`
}

// Load reads, decodes and validates a configuration file.
func Load(path string) (*Config, error) {
	src, err := ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, string(src))
}

// ReadFile reads a configuration file: a regular file of at most
// MaxFileSize bytes. It opens without blocking, so a FIFO or device put in
// its place is an error rather than a hung start-up or reload.
func ReadFile(path string) ([]byte, error) { return health.ReadRegular(path, MaxFileSize) }

// Parse validates configuration text; path is used in messages.
func Parse(path, src string) (*Config, error) {
	if p := checkShape(path, src); p != nil {
		return nil, Problems{*p}
	}
	v := &validator{file: path, src: src}
	var raw rawFile
	undecoded, err := decode(src, &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, Problems{{File: path, Line: pe.Position.Line, Col: max(pe.Position.Col, 1), Msg: pe.Message}}
		}
		return nil, Problems{v.decodeProblem(err)}
	}
	// toml lists an unknown key inside an array of tables once per
	// occurrence, and occurrences() already finds every one of them: report
	// each distinct key once, or N typos become N^2 problems.
	reported := make(map[string]bool, len(undecoded))
	for _, k := range undecoded {
		ks := k.String()
		if reported[ks] {
			continue
		}
		reported[ks] = true
		occ := v.positions().occurrences(ks)
		if len(occ) == 0 {
			v.addAt(pos{}, "unknown key %q", ks)
		}
		sort.Strings(occ)
		for _, o := range occ {
			v.problem(o, "unknown key %q", k[len(k)-1])
		}
	}
	cfg := v.build(&raw)
	if len(v.problems) > 0 {
		sort.SliceStable(v.problems, func(i, j int) bool {
			a, b := v.problems[i], v.problems[j]
			if a.Line != b.Line {
				return a.Line < b.Line
			}
			return a.Col < b.Col
		})
		return nil, v.problems
	}
	cfg.Path = path
	cfg.Digest = sha256.Sum256([]byte(src))
	return cfg, nil
}

// typeErrRE matches BurntSushi/toml's type-mismatch errors, which carry a
// line and the key but are not ParseErrors.
var typeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]+)"\): (.*)$`)

func (v *validator) decodeProblem(err error) Problem {
	m := typeErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		return Problem{File: v.file, Msg: err.Error()}
	}
	line, _ := strconv.Atoi(m[1])
	col := 1
	occ := v.positions().occurrences(m[2])
	sort.Slice(occ, func(i, j int) bool { return v.pos.at[occ[i]].line < v.pos.at[occ[j]].line })
	for _, o := range occ {
		if p := v.pos.at[o]; p.line == line {
			col = p.col
		}
	}
	// For a key inside an array of tables toml reports the line of the
	// key's last occurrence, not of the one that failed. Decoding stops at
	// the first bad value in file order, so the culprit is the first
	// occurrence whose value has the type toml complained about.
	if want := typeOfValueRE.FindStringSubmatch(m[3]); want != nil && len(occ) > 1 {
		lines := strings.Split(v.src, "\n")
		for _, o := range occ {
			p := v.pos.at[o]
			if valueType(lines[p.line-1]) == want[1] {
				line, col = p.line, p.col
				break
			}
		}
	}
	key := m[2][strings.LastIndex(m[2], ".")+1:]
	return Problem{File: v.file, Line: line, Col: col, Msg: fmt.Sprintf("%s: %s", key, m[3])}
}

var typeOfValueRE = regexp.MustCompile(`TOML value has type (\S+);`)

// valueType is the Go type toml gives the value of a one-line "key = value",
// named as toml's errors name it ("string", "int64", "[]any"), or "".
func valueType(line string) string {
	i := strings.IndexByte(line, '=')
	if i < 0 {
		return ""
	}
	var m map[string]any
	if _, err := toml.Decode("v ="+line[i+1:], &m); err != nil {
		return ""
	}
	return strings.ReplaceAll(fmt.Sprintf("%T", m["v"]), "interface {}", "any")
}

type validator struct {
	file     string
	src      string
	pos      *positions // built on the first problem: valid files never pay for it
	problems Problems
}

func (v *validator) positions() *positions {
	if v.pos == nil {
		v.pos = indexPositions(v.src)
	}
	return v.pos
}

func (v *validator) problem(path, format string, args ...any) {
	v.addAt(v.positions().of(path), format, args...)
}

func (v *validator) addAt(p pos, format string, args ...any) {
	v.problems = append(v.problems, Problem{File: v.file, Line: p.line, Col: p.col, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) duration(path string, s *string, def time.Duration, min time.Duration) time.Duration {
	if s == nil {
		return def
	}
	d, err := time.ParseDuration(*s)
	if err != nil {
		v.problem(path, "invalid duration %q (use Go durations such as \"2s\", \"500ms\", \"5m\")", *s)
		return def
	}
	if d < min {
		v.problem(path, "duration %s is below the minimum %s", d, min)
		return def
	}
	return d
}

func (v *validator) build(raw *rawFile) *Config {
	cfg := &Config{StateFile: DefaultStateFile, CleanupOnExit: raw.Agent.CleanupOnExit}
	if s := raw.Agent.StateFile; s != nil {
		if !filepath.IsAbs(*s) {
			v.problem("agent.state_file", "state_file must be an absolute path, got %q", *s)
		}
		cfg.StateFile = *s
	}
	cfg.ResyncInterval = v.duration("agent.resync_interval", raw.Agent.ResyncInterval, DefaultResyncInterval, time.Second)
	cfg.Kernel, cfg.KernelUnmanaged = v.kernel(&raw.Agent.Kernel)
	if m := raw.Agent.MaxInFlight; m != nil {
		if *m < 1 || *m > 65536 {
			v.problem("agent.max_checks_in_flight", "max_checks_in_flight %d out of range 1..65536", *m)
		} else {
			cfg.MaxChecksInFlight = int(*m)
		}
	}
	if b := raw.Agent.CheckBudget; b != nil {
		if *b < 1 || *b > 10_000_000 {
			v.problem("agent.check_budget", "check_budget %d out of range 1..10000000 (probes per second)", *b)
		} else {
			cfg.CheckBudget = int(*b)
		}
	}

	v.controlKeys(raw, cfg)

	// Values are the paths of first occurrences, turned into lines only
	// when a duplicate is reported.
	names := map[string]string{}
	keys := map[model.ServiceKey]string{}
	for i := range raw.VirtualServers {
		path := fmt.Sprintf("virtual_server[%d]", i)
		vs, ok := v.virtualServer(path, &raw.VirtualServers[i], raw.Defaults.Check)
		if !ok {
			continue
		}
		if prev, dup := names[vs.Name]; dup {
			v.problem(path+".name", "duplicate virtual server name %q (also at %s)", vs.Name, v.where(prev))
		} else {
			names[vs.Name] = path + ".name"
		}
		if prev, dup := keys[vs.Service.Key]; dup {
			v.problem(path, "duplicate virtual server %s (also at %s)", vs.Service.Key, v.where(prev))
		} else {
			keys[vs.Service.Key] = path
		}
		cfg.VirtualServers = append(cfg.VirtualServers, vs)
	}
	return cfg
}

func (v *validator) where(path string) string {
	p := v.positions().of(path)
	return fmt.Sprintf("line %d", p.line)
}

// virtualServer validates one virtual server; ok is false when its identity
// (name, address) is too broken to check it against the others.
func (v *validator) virtualServer(path string, r *rawVS, defCheck *Check) (VirtualServer, bool) {
	vs := VirtualServer{Name: r.Name, Adopt: r.Adopt, OnFailure: "quiesce"}
	ok := true
	if strings.TrimSpace(r.Name) == "" {
		v.problem(path, "virtual server needs a name")
	}
	svc := &vs.Service

	switch {
	case r.Address != nil && r.FWMark != nil:
		v.problem(path+".fwmark", "set either address or fwmark, not both")
		ok = false
	case r.Address == nil && r.FWMark == nil:
		v.problem(path, "virtual server %q needs an address (\"IP:port\") or a fwmark", r.Name)
		ok = false
	case r.Address != nil:
		ap, err := parseAddrPort(*r.Address)
		if err != nil {
			v.problem(path+".address", "invalid address %q: %v", *r.Address, err)
			ok = false
			break
		}
		if ap.Port() == 0 {
			v.problem(path+".address", "address %q needs a port from 1 to 65535", *r.Address)
		}
		svc.Key.Addr, svc.Key.Port, svc.Key.Family = ap.Addr(), ap.Port(), familyOf(ap.Addr())
		svc.Key.Protocol = model.ProtoTCP
		if r.Protocol != nil {
			switch strings.ToLower(*r.Protocol) {
			case "tcp":
			case "udp":
				svc.Key.Protocol = model.ProtoUDP
			case "sctp":
				svc.Key.Protocol = model.ProtoSCTP
			default:
				v.problem(path+".protocol", "unknown protocol %q (tcp, udp or sctp)", *r.Protocol)
			}
		}
		if r.Family != nil {
			v.problem(path+".family", "family goes with fwmark; an address's family is its own")
		}
	default:
		if *r.FWMark < 1 || *r.FWMark > math.MaxUint32 {
			v.problem(path+".fwmark", "fwmark %d out of range 1..%d", *r.FWMark, uint32(math.MaxUint32))
			ok = false
		}
		svc.Key.FWMark = uint32(*r.FWMark)
		svc.Key.Family = model.FamilyInet
		if r.Family != nil {
			switch *r.Family {
			case "inet":
			case "inet6":
				svc.Key.Family = model.FamilyInet6
			default:
				v.problem(path+".family", "unknown family %q (inet or inet6)", *r.Family)
			}
		}
		if r.Protocol != nil {
			v.problem(path+".protocol", "protocol cannot be set on a fwmark virtual server (the mark selects the packets)")
		}
	}

	svc.Scheduler = DefaultScheduler
	if r.Scheduler != nil {
		svc.Scheduler = *r.Scheduler
		if !schedulers[svc.Scheduler] {
			v.problem(path+".scheduler", "unknown scheduler %q (one of %s)", svc.Scheduler, strings.Join(sortedKeys(schedulers), " "))
		}
	}
	for _, f := range r.SchedulerFlags {
		sf, known := schedulerFlags[f]
		switch {
		case !known:
			v.problem(path+".scheduler_flags", "unknown scheduler flag %q (sh-fallback, sh-port, mh-fallback, mh-port)", f)
		case sf.sched != svc.Scheduler:
			v.problem(path+".scheduler_flags", "scheduler flag %q needs scheduler %q, not %q", f, sf.sched, svc.Scheduler)
		default:
			svc.Flags |= sf.flag
		}
	}
	svc.Netmask = model.DefaultNetmask(svc.Key.Family)
	if r.Persistence != nil {
		d := v.duration(path+".persistence", r.Persistence, 0, time.Second)
		switch {
		case d > MaxPersistence:
			// The kernel takes seconds in a u32 and keeps jiffies; a
			// larger value wrapped silently ("1193047h" became 1904 s).
			v.problem(path+".persistence", "persistence %v out of range 1s..%v", d, MaxPersistence)
		case d%time.Second != 0:
			v.problem(path+".persistence", "persistence %v is not a whole number of seconds (the kernel counts seconds)", d)
		case d > 0:
			svc.Flags |= model.FlagPersistent
			svc.Timeout = uint32(d / time.Second)
		}
	}
	if r.PersistenceNetmask != nil {
		if r.Persistence == nil {
			v.problem(path+".persistence_netmask", "persistence_netmask needs persistence")
		}
		if m, err := parseNetmask(r.PersistenceNetmask, svc.Key.Family); err != nil {
			v.problem(path+".persistence_netmask", "%v", err)
		} else {
			svc.Netmask = m
		}
	}
	if r.OnePacket {
		if svc.Key.FWMark == 0 && svc.Key.Protocol != model.ProtoUDP {
			v.problem(path+".one_packet", "one_packet (one-packet scheduling) is for UDP virtual servers only")
		}
		svc.Flags |= model.FlagOnePacket
	}

	fwd := v.forwarding(path+".forwarding", r.Forwarding, model.ForwardDR)
	if r.OnFailure != nil {
		switch *r.OnFailure {
		case "quiesce", "remove":
			vs.OnFailure = *r.OnFailure
		default:
			v.problem(path+".on_failure", "unknown on_failure %q (quiesce or remove)", *r.OnFailure)
		}
	}
	// By default a virtual server needs one healthy real server: below
	// that it is down (and its sorry server serves).
	vs.Quorum = 1
	if r.Quorum != nil {
		if *r.Quorum < 0 || *r.Quorum > int64(len(r.RealServers)) {
			v.problem(path+".quorum", "quorum %d out of range 0..%d (the number of real servers)", *r.Quorum, len(r.RealServers))
		} else {
			vs.Quorum = int(*r.Quorum)
		}
	}
	if h := r.Hysteresis; h != nil {
		switch {
		case *h < 0 || *h >= int64(max(vs.Quorum, 1)):
			v.problem(path+".hysteresis", "hysteresis %d out of range 0..%d (below quorum %d, or the quorum could never be lost)", *h, max(vs.Quorum-1, 0), vs.Quorum)
		case int64(vs.Quorum)+*h > int64(len(r.RealServers)):
			v.problem(path+".hysteresis", "quorum %d + hysteresis %d is more than the %d real servers: a lost quorum could never come back", vs.Quorum, *h, len(r.RealServers))
		default:
			vs.Hysteresis = int(*h)
		}
	}
	vs.Alpha = r.Alpha == nil || *r.Alpha
	if r.SorryServer != nil && r.Quorum != nil && *r.Quorum == 0 {
		v.problem(path+".sorry_server", "sorry_server with quorum = 0 would never be used (quorum 0: the virtual server is never down); remove quorum = 0")
	}
	vs.DrainTimeout = v.duration(path+".drain_timeout", r.DrainTimeout, DefaultDrainTimeout, 0)
	if r.SorryServer != nil {
		if d, good := v.dest(path+".sorry_server", *r.SorryServer, fwd, svc.Key); good {
			d.Weight = 1
			vs.SorryServer = &d
		}
	}

	vsCheck := r.Check.Merge(defCheck)
	var (
		vsSpec     *health.Spec
		vsSpecDone bool
	)
	seen := map[model.DestKey]string{}
	for j := range r.RealServers {
		rpath := fmt.Sprintf("%s.real_server[%d]", path, j)
		rr := &r.RealServers[j]
		if rr.Address == nil {
			v.problem(rpath, "real server needs an address")
			continue
		}
		f := v.forwarding(rpath+".forwarding", rr.Forwarding, fwd)
		d, good := v.dest(rpath+".address", *rr.Address, f, svc.Key)
		if good {
			if prev, dup := seen[d.Key]; dup {
				v.problem(rpath+".address", "duplicate real server %s in virtual server %q (also at %s)", d.Key, vs.Name, v.where(prev))
				good = false
			} else {
				seen[d.Key] = rpath + ".address"
			}
		}
		d.Weight = 1
		if rr.Weight != nil {
			if *rr.Weight < 0 || *rr.Weight > 65535 {
				v.problem(rpath+".weight", "weight %d out of range 0..65535", *rr.Weight)
			}
			d.Weight = int(*rr.Weight)
		}
		for _, t := range []struct {
			key string
			val int64
			dst *uint32
		}{{"upper_threshold", rr.UpperThreshold, &d.UpperThreshold}, {"lower_threshold", rr.LowerThreshold, &d.LowerThreshold}} {
			if t.val < 0 || t.val > math.MaxInt32 {
				v.problem(rpath+"."+t.key, "%s %d out of range 0..%d", t.key, t.val, math.MaxInt32)
				continue
			}
			*t.dst = uint32(t.val)
		}
		if d.UpperThreshold > 0 && d.LowerThreshold > d.UpperThreshold {
			v.problem(rpath+".lower_threshold", "lower_threshold %d is above upper_threshold %d", d.LowerThreshold, d.UpperThreshold)
		}
		if !good {
			continue // its other keys are checked above; its check needs an address
		}
		rs := RealServer{Dest: d}
		switch {
		case rr.Check != nil:
			spec, err := rr.Check.Merge(vsCheck).Spec()
			if err != nil {
				v.problem(rpath+".check", "check for real server %s: %v", d.Key, err)
			} else {
				rs.Check = &spec
			}
		case vsCheck != nil:
			// The virtual server's check, shared by its real servers: built
			// and reported once, not once per real server.
			if !vsSpecDone {
				vsSpecDone = true
				spec, err := vsCheck.Spec()
				if err != nil {
					cpath := path + ".check"
					if r.Check == nil {
						cpath = "defaults.check"
					}
					v.problem(cpath, "check of virtual server %q: %v", vs.Name, err)
				} else {
					vsSpec = &spec
				}
			}
			rs.Check = vsSpec
			if rs.Check == nil {
				continue // reported above; a real server with a broken check is not applied
			}
		}
		vs.RealServers = append(vs.RealServers, rs)
	}
	if vs.SorryServer != nil {
		// As a real server too, "remove" would re-add a dead server at
		// weight 1 when all are down, and "quiesce" would never add it.
		if _, clash := seen[vs.SorryServer.Key]; clash {
			v.problem(path+".sorry_server", "sorry_server %s is also a real server of %q: use another address", vs.SorryServer.Key, vs.Name)
		}
	}
	return vs, ok
}

func (v *validator) forwarding(path string, s *string, def uint32) uint32 {
	if s == nil {
		return def
	}
	f, known := forwardings[*s]
	if !known {
		v.problem(path, "unknown forwarding %q (dr, nat or tunnel)", *s)
		return def
	}
	return f
}

// dest validates a real server (or sorry server) address against its
// virtual server.
func (v *validator) dest(path, addr string, fwd uint32, svc model.ServiceKey) (model.Destination, bool) {
	ap, err := parseAddrPort(addr)
	if err != nil {
		v.problem(path, "invalid address %q: %v", addr, err)
		return model.Destination{}, false
	}
	fam := familyOf(ap.Addr())
	if svc.Family != 0 && fam != svc.Family {
		// The kernel mixes families only for tunnel destinations, and
		// moby/ipvs cannot express that (it sends no destination family).
		v.problem(path, "real server %s is %s but the virtual server is %s: families cannot be mixed", ap, famName(fam), famName(svc.Family))
		return model.Destination{}, false
	}
	if ap.Port() == 0 && svc.FWMark == 0 {
		v.problem(path, "real server address %q needs a port (only fwmark virtual servers may leave it out)", addr)
		return model.Destination{}, false
	}
	if svc.FWMark == 0 && svc.Port != 0 && (fwd == model.ForwardDR || fwd == model.ForwardTunnel) && ap.Port() != svc.Port {
		v.problem(path, "real server port %d differs from the virtual server's port %d: with %s forwarding the kernel cannot rewrite ports (use nat, or the same port)",
			ap.Port(), svc.Port, fwdName(fwd))
		return model.Destination{}, false
	}
	return model.Destination{Key: model.DestKey{Addr: ap.Addr(), Port: ap.Port()}, Family: fam, Forward: fwd}, true
}

// parseAddrPort accepts "IP:port", "[IPv6]:port", and, for fwmark real
// servers, a bare IP (port 0).
func parseAddrPort(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if z := ap.Addr().Zone(); z != "" {
			return netip.AddrPort{}, fmt.Errorf("zones are not allowed")
		}
		if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
			return netip.AddrPort{}, fmt.Errorf("not a unicast address")
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("want \"IP:port\" or \"[IPv6]:port\"")
	}
	if a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("not a unicast address")
	}
	return netip.AddrPortFrom(a.Unmap(), 0), nil
}

func parseNetmask(v any, family uint16) (uint32, error) {
	switch m := v.(type) {
	case string:
		if family == model.FamilyInet6 {
			return 0, fmt.Errorf("an IPv6 persistence_netmask is a prefix length (1..128), not %q", m)
		}
		a, err := netip.ParseAddr(m)
		if err != nil || !a.Is4() {
			return 0, fmt.Errorf("invalid IPv4 persistence_netmask %q", m)
		}
		b := a.As4()
		mask := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		if mask == 0 || (^mask)&(^mask+1) != 0 {
			return 0, fmt.Errorf("persistence_netmask %q is not a contiguous netmask", m)
		}
		return mask, nil
	case int64:
		limit := int64(32)
		if family == model.FamilyInet6 {
			limit = 128
		}
		if m < 1 || m > limit {
			return 0, fmt.Errorf("persistence_netmask prefix length %d out of range 1..%d", m, limit)
		}
		if family == model.FamilyInet6 {
			return uint32(m), nil
		}
		return ^uint32(0) << (32 - m), nil
	}
	return 0, fmt.Errorf("persistence_netmask must be a string (\"255.255.255.0\") or a prefix length")
}

func familyOf(a netip.Addr) uint16 {
	if a.Is4() {
		return model.FamilyInet
	}
	return model.FamilyInet6
}

func famName(f uint16) string {
	if f == model.FamilyInet6 {
		return "IPv6"
	}
	return "IPv4"
}

func fwdName(f uint32) string {
	for n, v := range forwardings {
		if v == f {
			return n
		}
	}
	return "?"
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
