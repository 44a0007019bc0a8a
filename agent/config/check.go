package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/ipvs-agent/ipvs-agent/health"
)

// Check is a health check table as users write it, at [defaults.check],
// [virtual_server.check] and [virtual_server.real_server.check]. Every field
// is a pointer, slice or interface so "not set" is distinguishable from a
// zero value, which is what lets Merge override key by key.
type Check struct {
	Type      *string  `toml:"type"`       // tcp, http, https, udp, dns, exec, icmp, file, agent
	Interval  *string  `toml:"interval"`   // Go duration, default "2s"
	Timeout   *string  `toml:"timeout"`    // default "1s"; must not exceed interval
	Rise      *int     `toml:"rise"`       // default 2
	Fall      *int     `toml:"fall"`       // default 3
	Port      *int     `toml:"port"`       // probe this port instead of the real server's
	SlowStart *string  `toml:"slow_start"` // default "0s" (off)
	Notify    []string `toml:"notify"`     // argv run on each transition

	// http / https
	Method          *string `toml:"method"`            // default GET
	Path            *string `toml:"path"`              // default "/"
	Host            *string `toml:"host"`              // Host header; default the target ip:port
	ExpectStatus    any     `toml:"expect_status"`     // 200, "200-399", or a list of both; default "200-399"
	ExpectBody      *string `toml:"expect_body"`       // substring of the body
	ExpectBodyRegex *string `toml:"expect_body_regex"` // RE2 regexp over the body
	MaxBody         *int    `toml:"max_body"`          // bytes of body searched, default 65536
	TLSServerName   *string `toml:"tls_server_name"`   // SNI and name verified
	TLSVerify       *bool   `toml:"tls_verify"`        // default false: liveness, not identity
	CAFile          *string `toml:"ca_file"`
	CertFile        *string `toml:"cert_file"` // client certificate
	KeyFile         *string `toml:"key_file"`

	// udp (send/expect) and agent (send)
	Send      *string `toml:"send"`
	SendHex   *string `toml:"send_hex"` // binary payload, e.g. "deadbeef"
	Expect    *string `toml:"expect"`
	ExpectHex *string `toml:"expect_hex"`

	// dns
	QueryName    *string `toml:"query_name"`
	QueryType    *string `toml:"query_type"`    // default A
	ExpectRcode  *string `toml:"expect_rcode"`  // default NOERROR
	ExpectAnswer *string `toml:"expect_answer"` // an answer's address/name/text

	// exec
	Command []string `toml:"command"` // argv; IPVS_RS_IP, IPVS_RS_PORT, IPVS_CHECK_IP, IPVS_CHECK_PORT in env
	Shell   *bool    `toml:"shell"`   // run command[0] with /bin/sh -c
	User    *string  `toml:"user"`    // runs exec commands and notify commands; default "nobody"

	// file
	File        *string `toml:"file"`         // path template: {ip}, {port}, {addr}
	FileMissing *string `toml:"file_missing"` // up (default), down or drain

	// any type but file: an operator override file, same template and
	// content as file; drain/down win, weight/NN% apply while passing
	WeightFile *string `toml:"weight_file"`
}

// Merge returns a new Check with c's set keys over parent's. Either may be
// nil; Merge of two nils is nil, meaning "no health check".
func (c *Check) Merge(parent *Check) *Check {
	if c == nil && parent == nil {
		return nil
	}
	out := &Check{}
	if parent != nil {
		*out = *parent
	}
	if c == nil {
		return out
	}
	cv, ov := reflect.ValueOf(c).Elem(), reflect.ValueOf(out).Elem()
	for i := 0; i < cv.NumField(); i++ {
		if f := cv.Field(i); !f.IsNil() {
			ov.Field(i).Set(f)
		}
	}
	return out
}

// Check defaults, documented with the keys above.
const (
	DefaultCheckInterval = 2 * time.Second
	DefaultCheckTimeout  = time.Second
	DefaultCheckRise     = 2
	DefaultCheckFall     = 3
	DefaultCheckUser     = "nobody"
)

// Bounds on check timings. Below MinCheckInterval one check is a probe
// storm (interval = "1ns" made 454,614 probes in 2.5 s, a full core);
// below MinCheckTimeout no real server can answer, even on loopback, so the
// check can never pass; above MaxCheckInterval a dead server keeps its
// weight for a day. Rise and fall above MaxRiseFall mean "never" (and
// wrapped to 0 in the machine's counters at 2^32).
const (
	MinCheckInterval = 100 * time.Millisecond
	MaxCheckInterval = 24 * time.Hour
	MinCheckTimeout  = 10 * time.Millisecond
	MaxSlowStart     = 24 * time.Hour
	MaxRiseFall      = 1000
)

// Spec applies defaults and validates, returning the health package's
// description of the check. Errors name the offending key.
func (c *Check) Spec() (health.Spec, error) {
	if c == nil {
		c = &Check{}
	}
	s := health.Spec{
		Type:     str(c.Type),
		Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout,
		Rise: DefaultCheckRise, Fall: DefaultCheckFall,
		Notify:        c.Notify,
		Method:        strings.ToUpper(str(c.Method)),
		Path:          str(c.Path),
		Host:          str(c.Host),
		ExpectBody:    str(c.ExpectBody),
		BodyRegex:     str(c.ExpectBodyRegex),
		TLSServerName: str(c.TLSServerName),
		CAFile:        str(c.CAFile),
		CertFile:      str(c.CertFile),
		KeyFile:       str(c.KeyFile),
		Send:          str(c.Send),
		Expect:        str(c.Expect),
		QueryName:     str(c.QueryName),
		QueryType:     strings.ToUpper(str(c.QueryType)),
		ExpectRcode:   strings.ToUpper(str(c.ExpectRcode)),
		ExpectAnswer:  str(c.ExpectAnswer),
		Command:       c.Command,
		File:          str(c.File),
		FileMissing:   str(c.FileMissing),
		WeightFile:    str(c.WeightFile),
	}
	if key := c.keyWithNUL(); key != "" {
		// The kernel takes paths and argv as C strings: a NUL passed
		// validation and then failed every probe with EINVAL.
		return s, fmt.Errorf("check: %s contains a NUL byte", key)
	}
	if s.Type == "" {
		return s, errors.New("check: type is required (tcp, http, https, udp, dns, exec, icmp, file or agent)")
	}
	var err error
	if s.Interval, err = dur("interval", c.Interval, s.Interval); err != nil {
		return s, err
	}
	if s.Timeout, err = dur("timeout", c.Timeout, s.Timeout); err != nil {
		return s, err
	}
	if s.SlowStart, err = dur("slow_start", c.SlowStart, 0); err != nil {
		return s, err
	}
	if s.Interval < MinCheckInterval || s.Interval > MaxCheckInterval {
		return s, fmt.Errorf("check: interval %v out of range %v..%v", s.Interval, MinCheckInterval, MaxCheckInterval)
	}
	if c.Timeout != nil && (s.Timeout < MinCheckTimeout || s.Timeout > s.Interval) {
		return s, fmt.Errorf("check: timeout %v out of range %v..%v (the interval)", s.Timeout, MinCheckTimeout, s.Interval)
	}
	if s.SlowStart < 0 || s.SlowStart > MaxSlowStart {
		return s, fmt.Errorf("check: slow_start %v out of range 0s..%v", s.SlowStart, MaxSlowStart)
	}
	if c.Timeout == nil && s.Timeout > s.Interval {
		// Only the default timeout adapts; an explicit one is checked.
		s.Timeout = s.Interval
	}
	if c.Rise != nil {
		if *c.Rise < 1 || *c.Rise > MaxRiseFall {
			return s, fmt.Errorf("check: rise %d out of range 1..%d", *c.Rise, MaxRiseFall)
		}
		s.Rise = *c.Rise
	}
	if c.Fall != nil {
		if *c.Fall < 1 || *c.Fall > MaxRiseFall {
			return s, fmt.Errorf("check: fall %d out of range 1..%d", *c.Fall, MaxRiseFall)
		}
		s.Fall = *c.Fall
	}
	if c.Port != nil {
		if *c.Port < 1 || *c.Port > 65535 {
			return s, fmt.Errorf("check: port %d out of range 1-65535", *c.Port)
		}
		s.Port = uint16(*c.Port)
	}
	if c.MaxBody != nil {
		if *c.MaxBody < 1 || *c.MaxBody > health.MaxBodyLimit {
			return s, fmt.Errorf("check: max_body %d out of range 1-%d", *c.MaxBody, health.MaxBodyLimit)
		}
		s.MaxBody = *c.MaxBody
	}
	if c.TLSVerify != nil {
		s.TLSVerify = *c.TLSVerify
	}
	if c.Shell != nil {
		s.Shell = *c.Shell
	}
	if c.ExpectStatus != nil {
		if s.ExpectStatus, err = statusRanges(c.ExpectStatus); err != nil {
			return s, fmt.Errorf("check: expect_status: %w", err)
		}
	}
	if c.SendHex != nil {
		if c.Send != nil {
			return s, errors.New("check: send and send_hex are exclusive")
		}
		b, err := hex.DecodeString(*c.SendHex)
		if err != nil {
			return s, fmt.Errorf("check: send_hex: %w", err)
		}
		s.Send = string(b)
	}
	if c.ExpectHex != nil {
		if c.Expect != nil {
			return s, errors.New("check: expect and expect_hex are exclusive")
		}
		b, err := hex.DecodeString(*c.ExpectHex)
		if err != nil {
			return s, fmt.Errorf("check: expect_hex: %w", err)
		}
		s.Expect = string(b)
	}
	if s.Type == "exec" || len(s.Notify) > 0 {
		// Notify commands run as the same user as exec checks: not root.
		s.User = DefaultCheckUser
		if c.User != nil {
			s.User = *c.User
		}
	}
	if s.Type == "agent" && s.Port == 0 {
		return s, errors.New("check: an agent check needs port (the agent's, not the service's)")
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("check (type %s): %w", s.Type, err)
	}
	return s, nil
}

// keyWithNUL names the first key whose text holds a NUL byte, or "".
func (c *Check) keyWithNUL() string {
	v, t := reflect.ValueOf(c).Elem(), reflect.TypeOf(c).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if f.IsNil() {
			continue
		}
		var texts []string
		switch x := f.Interface().(type) {
		case *string:
			texts = []string{*x}
		case []string:
			texts = x
		}
		for _, s := range texts {
			if strings.IndexByte(s, 0) >= 0 {
				return strings.Split(t.Field(i).Tag.Get("toml"), ",")[0]
			}
		}
	}
	return ""
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func dur(key string, p *string, def time.Duration) (time.Duration, error) {
	if p == nil {
		return def, nil
	}
	d, err := time.ParseDuration(*p)
	if err != nil {
		return 0, fmt.Errorf("check: %s: %w", key, err)
	}
	return d, nil
}

// statusRanges accepts 200, "200", "200-399", "200-299,404" or a list of
// any of those (TOML allows mixed arrays).
func statusRanges(v any) ([]health.StatusRange, error) {
	var out []health.StatusRange
	var add func(v any) error
	add = func(v any) error {
		switch x := v.(type) {
		case int64:
			out = append(out, health.StatusRange{Lo: int(x), Hi: int(x)})
		case int:
			out = append(out, health.StatusRange{Lo: x, Hi: x})
		case string:
			for _, part := range strings.Split(x, ",") {
				part = strings.TrimSpace(part)
				lo, hi, isRange := strings.Cut(part, "-")
				a, err := strconv.Atoi(strings.TrimSpace(lo))
				if err != nil {
					return fmt.Errorf("%q is not a status code or range like \"200-399\"", part)
				}
				b := a
				if isRange {
					if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil {
						return fmt.Errorf("%q is not a status code or range like \"200-399\"", part)
					}
				}
				out = append(out, health.StatusRange{Lo: a, Hi: b})
			}
		case []any:
			for _, e := range x {
				if err := add(e); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("want a code, a \"lo-hi\" string or a list of them, got %T", v)
		}
		return nil
	}
	if err := add(v); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	for _, r := range out {
		if r.Lo < 100 || r.Hi > 599 || r.Lo > r.Hi {
			return nil, fmt.Errorf("%d-%d is not a range within 100-599", r.Lo, r.Hi)
		}
	}
	return out, nil
}
