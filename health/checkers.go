package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// probe is what a checker is pointed at.
type probe struct {
	addr netip.AddrPort // where to connect (Spec.Port applied)
	rs   netip.AddrPort // the real server as configured
}

// checker runs one probe. ctx carries the check's timeout as its deadline;
// every implementation must return by then and release what it opened.
type checker interface {
	check(ctx context.Context, p probe) result
}

// newChecker validates the kind-specific fields of s and prepares what can
// be prepared once (TLS config, regexp, user lookup).
func newChecker(s Spec) (checker, error) {
	c, err := newKindChecker(s)
	if err != nil || s.WeightFile == "" {
		return c, err
	}
	if s.Type == "file" {
		return nil, errors.New("weight_file needs another check type (a file check reads file)")
	}
	f, err := newFileChecker(Spec{File: s.WeightFile})
	if err != nil {
		return nil, fmt.Errorf("weight_file: %w", err)
	}
	return overlayChecker{probe: c, file: f.(fileChecker)}, nil
}

func newKindChecker(s Spec) (checker, error) {
	switch s.Type {
	case "tcp":
		return tcpChecker{}, nil
	case "http", "https":
		return newHTTPChecker(s)
	case "udp":
		return udpChecker{send: []byte(s.Send), expect: []byte(s.Expect)}, nil
	case "dns":
		return newDNSChecker(s)
	case "exec":
		return newExecChecker(s)
	case "icmp":
		return icmpChecker{}, nil
	case "file":
		return newFileChecker(s)
	case "agent":
		return agentChecker{send: []byte(s.Send)}, nil
	case "":
		return nil, errors.New("check type missing")
	}
	return nil, fmt.Errorf("unknown check type %q (want tcp, http, https, udp, dns, exec, icmp, file or agent)", s.Type)
}

// dialTCP connects and arranges for Close to reset the connection: a health
// checker that closes first would otherwise leave one TIME_WAIT socket per
// check on the director, 60 s each, which at thousands of checks a second
// exhausts ephemeral ports.
func dialTCP(ctx context.Context, addr netip.AddrPort) (*net.TCPConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetLinger(0)
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	return tc, nil
}

// abortOnCancel makes blocking I/O on c fail at once when ctx is
// cancelled before its deadline (the check removed by a reload, the agent
// stopping): a socket only honours its deadline, which may be many seconds
// away. Call the returned stop before closing c.
func abortOnCancel(ctx context.Context, c interface{ SetDeadline(time.Time) error }) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
}

// errReason shortens Go's network errors for log lines: "dial tcp
// 127.0.0.1:80: connect: connection refused" becomes "connect: connection
// refused" — the address is in the log line already.
func errReason(prefix string, err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return prefix + ": timeout"
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return prefix + ": timeout"
	}
	// A refused dial is an OpError around a SyscallError named "connect":
	// said once, not "connect: connect: connection refused".
	var se *os.SyscallError
	if errors.As(err, &se) && se.Syscall == prefix {
		err = se.Err
	}
	s := err.Error()
	if prefix != "" {
		s = prefix + ": " + s
	}
	return s
}

type tcpChecker struct{}

func (tcpChecker) check(ctx context.Context, p probe) result {
	c, err := dialTCP(ctx, p.addr)
	if err != nil {
		return failed(errReason("connect", err))
	}
	c.Close()
	return passed("connect ok")
}

// maxAgentReply bounds what an agent check reads: HAProxy agents answer
// with a short line.
const maxAgentReply = 1024

// agentChecker speaks HAProxy's agent-check protocol: connect, optionally
// send a line, read one line of words.
type agentChecker struct{ send []byte }

func (a agentChecker) check(ctx context.Context, p probe) result {
	c, err := dialTCP(ctx, p.addr)
	if err != nil {
		return failed(errReason("agent connect", err))
	}
	defer c.Close()
	defer abortOnCancel(ctx, c)()
	if len(a.send) > 0 {
		if _, err := c.Write(a.send); err != nil {
			return failed(errReason("agent write", err))
		}
	}
	buf := make([]byte, 0, 128)
	tmp := make([]byte, 256)
	for len(buf) < maxAgentReply {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if i := bytes.IndexAny(buf, "\r\n"); i >= 0 {
			buf = buf[:i]
			break
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return failed(errReason("agent read", err))
		}
	}
	if len(buf) >= maxAgentReply {
		return failed("agent: reply line too long")
	}
	return parseAgentReply(string(buf))
}

// parseAgentReply interprets an agent's line the way HAProxy does: words
// separated by spaces, tabs or commas; "NN%" scales the weight; up/ready,
// drain, maint, down/fail/stopped set the state; "#text" is a description.
func parseAgentReply(line string) result {
	desc := ""
	if i := strings.IndexByte(line, '#'); i >= 0 {
		desc = strings.TrimSpace(line[i+1:])
		line = line[:i]
	}
	words := strings.FieldsFunc(strings.ToLower(line), func(r rune) bool {
		return r == ' ' || r == '\t' || r == ','
	})
	factor := -1.0
	var up, down, drn, mnt bool
	for _, w := range words {
		switch w {
		case "up", "ready":
			up = true
		case "down", "fail", "failed", "stopped":
			down = true
		case "drain":
			drn = true
		case "maint":
			mnt = true
		default:
			if pct, ok := strings.CutSuffix(w, "%"); ok {
				if v, err := strconv.ParseFloat(pct, 64); err == nil && v >= 0 {
					factor = min(v/100, 1)
				}
			}
		}
	}
	reason := "agent: " + sanitizeReason(strings.TrimSpace(line))
	if desc != "" {
		reason += " (" + sanitizeReason(desc) + ")"
	}
	switch {
	case down, mnt:
		// The agent says so itself: down at once, as the package doc
		// and a file's "down" have it, not after fall replies.
		return result{outcome: maint, factor: -1, weight: -1, reason: reason}
	case drn:
		return result{outcome: drain, factor: -1, weight: -1, reason: reason}
	case up || factor >= 0:
		r := passed(reason)
		r.factor = factor
		return r
	}
	return failed(fmt.Sprintf("agent: unrecognised reply %q", line))
}

// maxFileRead bounds a file check's read: the file holds one word.
const maxFileRead = 256

// fileChecker reads an operator-written file per real server. Content:
// a weight ("0".."65535"), a percentage ("50%"), "up", "drain", "down"
// (or "maint"); "down" and "drain" take effect at once, without fall.
type fileChecker struct {
	path    string
	missing result
}

func newFileChecker(s Spec) (checker, error) {
	if s.File == "" {
		return nil, errors.New("file check needs file (a path template such as /run/ipvs-agent/{ip}_{port})")
	}
	if !strings.HasPrefix(s.File, "/") {
		return nil, fmt.Errorf("file %q must be an absolute path", s.File)
	}
	f := fileChecker{path: s.File}
	switch s.FileMissing {
	case "", "up":
		f.missing = passed("file: missing (file_missing = up)")
	case "down":
		f.missing = result{outcome: maint, factor: -1, weight: -1, reason: "file: missing (file_missing = down)"}
	case "drain":
		f.missing = result{outcome: drain, factor: -1, weight: -1, reason: "file: missing (file_missing = drain)"}
	default:
		return nil, fmt.Errorf("file_missing %q: want up, down or drain", s.FileMissing)
	}
	return f, nil
}

// expandPath fills the template: {ip} the real server's address, {port} its
// port, {addr} ip:port ([ip]:port for IPv6).
func expandPath(tmpl string, rs netip.AddrPort) string {
	return strings.NewReplacer(
		"{ip}", rs.Addr().String(),
		"{port}", strconv.Itoa(int(rs.Port())),
		"{addr}", rs.String(),
	).Replace(tmpl)
}

func (f fileChecker) check(ctx context.Context, p probe) result {
	path := expandPath(f.path, p.rs)
	b, missing, err := readCheckFile(path)
	if missing {
		return f.missing
	}
	if err != nil {
		return failed(errReason("file", err))
	}
	return parseFileContent(path, string(b))
}

// readCheckFile reads an operator's file as the agent (root) without
// letting the path lead it elsewhere: the file is looked at before it is
// opened (only a regular file is opened at all: opening a device can have
// effects), opened without following a symlink and without blocking (a
// FIFO swapped in meanwhile), and checked again once open.
func readCheckFile(path string) (b []byte, missing bool, err error) {
	li, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	if li.Mode()&fs.ModeSymlink != 0 {
		return nil, false, fmt.Errorf("%s: a symlink, not followed", path)
	}
	if !li.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s: not a regular file (%s)", path, li.Mode().Type())
	}
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, false, err
	}
	if !fi.Mode().IsRegular() || !os.SameFile(li, fi) {
		return nil, false, fmt.Errorf("%s: replaced while opened", path)
	}
	b, err = io.ReadAll(io.LimitReader(fh, maxFileRead))
	return b, false, err
}

func parseFileContent(path, content string) result {
	w := strings.ToLower(strings.TrimSpace(content))
	reason := fmt.Sprintf("file %s: %q", path, w)
	switch w {
	case "", "up":
		return passed(reason)
	case "drain":
		return result{outcome: drain, factor: -1, weight: -1, reason: reason}
	case "down", "maint", "fail":
		return result{outcome: maint, factor: -1, weight: -1, reason: reason}
	}
	if pct, ok := strings.CutSuffix(w, "%"); ok {
		v, err := strconv.ParseFloat(pct, 64)
		if err == nil && v >= 0 {
			r := passed(reason)
			r.factor = min(v/100, 1)
			return r
		}
	}
	if n, err := strconv.Atoi(w); err == nil && n >= 0 && n <= 65535 {
		if n == 0 {
			// Weight 0 is how keepalived's FILE_CHECK drains.
			return result{outcome: drain, factor: -1, weight: -1, reason: reason}
		}
		r := passed(reason)
		r.weight = n
		return r
	}
	// Not the content itself: whatever the file holds (a secret the path
	// led to) must not reach logs or a notify command's environment.
	return failed(fmt.Sprintf("file %s: unrecognised content, %d bytes (want a weight, NN%%, up, drain or down)", path, len(content)))
}

// deadlineOf is the deadline for sockets that take one instead of a
// context.
func deadlineOf(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(time.Second)
}

// overlayChecker combines a probe with an operator's weight file.
type overlayChecker struct {
	probe checker
	file  fileChecker
}

func (o overlayChecker) check(ctx context.Context, p probe) result {
	r := o.probe.check(ctx, p)
	f := o.file.check(ctx, p)
	switch {
	case f.outcome == drain || f.outcome == maint:
		return f // the operator wins, whatever the probe says
	case f.outcome == fail:
		// A typo in the file must not take a healthy server down.
		r.reason += "; weight_file ignored: " + f.reason
	case r.outcome == pass:
		if f.weight >= 0 {
			r.weight = f.weight
		}
		if f.factor >= 0 {
			r.factor = f.factor
		}
	}
	return r
}
