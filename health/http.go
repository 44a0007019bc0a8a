package health

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

const (
	// maxHTTPHeader bounds the status line and headers, on their own: a
	// target that "answers forever" is cut off here and counted down.
	maxHTTPHeader = 16 << 10
	// DefaultMaxBody is how much body is searched when max_body is unset.
	DefaultMaxBody = 64 << 10
	// MaxBodyLimit caps max_body: a health page's marker sits near its
	// top, and every byte searched is held in memory while it is.
	MaxBodyLimit = 1 << 20
	// BodyBudget bounds the memory of all HTTP bodies being searched at
	// once, whatever max_checks_in_flight: a probe reserves max_body from
	// it before reading the body and waits, within its timeout, when it
	// is spent. Worst case per probe beyond that: maxHTTPHeader plus a
	// 4 KiB read buffer.
	BodyBudget = 64 << 20
	// bodyUnit is the budget's granularity.
	bodyUnit = 64 << 10
)

// memBudget is a counting semaphore of bodyUnit-sized slots, taken all at
// once by one probe at a time so two probes cannot each hold half of what
// both need.
type memBudget struct {
	slots chan struct{}
	turn  chan struct{} // one acquirer at a time
}

func newMemBudget(bytes int) *memBudget {
	return &memBudget{slots: make(chan struct{}, max(bytes/bodyUnit, 1)), turn: make(chan struct{}, 1)}
}

// acquire reserves bytes (rounded up to whole units) and returns their
// release; it fails when ctx ends first or bytes exceed the whole budget.
func (b *memBudget) acquire(ctx context.Context, bytes int) (release func(), err error) {
	n := (bytes + bodyUnit - 1) / bodyUnit
	if n > cap(b.slots) {
		return nil, fmt.Errorf("%d bytes exceed the body memory budget of %d", bytes, cap(b.slots)*bodyUnit)
	}
	select {
	case b.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-b.turn }()
	release = func() {
		for i := 0; i < n; i++ {
			<-b.slots
		}
	}
	for i := 0; i < n; i++ {
		select {
		case b.slots <- struct{}{}:
		case <-ctx.Done():
			for ; i > 0; i-- {
				<-b.slots
			}
			return nil, ctx.Err()
		}
	}
	return release, nil
}

// limitReader is io.LimitedReader with a limit that can be reset: headers
// and body are bounded separately on one connection.
type limitReader struct {
	r io.Reader
	n int
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

// httpChecker speaks just enough HTTP/1.1 for a probe on its own
// connection: no pooling (a pool would hide a server that stopped accepting),
// "Connection: close", and a reset on close so no TIME_WAIT piles up.
type httpChecker struct {
	tls      *tls.Config // nil for plain http
	method   string
	path     string
	host     string
	expect   []StatusRange
	body     string
	re       *regexp.Regexp
	maxBody  int
	needBody bool
	// budget bounds the bodies of all probes together; the scheduler sets
	// it (nil: unbounded, for validation only).
	budget *memBudget
}

func newHTTPChecker(s Spec) (checker, error) {
	h := &httpChecker{method: s.Method, path: s.Path, host: s.Host, expect: s.ExpectStatus, body: s.ExpectBody, maxBody: s.MaxBody}
	if h.method == "" {
		h.method = http.MethodGet
	}
	if strings.ContainsAny(h.method, " \r\n") {
		return nil, fmt.Errorf("method %q is not a valid HTTP method", h.method)
	}
	if h.path == "" {
		h.path = "/"
	}
	if !strings.HasPrefix(h.path, "/") || strings.ContainsAny(h.path, " \r\n") {
		return nil, fmt.Errorf("path %q must start with / and contain no spaces", h.path)
	}
	if strings.ContainsAny(h.host, " \r\n") {
		return nil, fmt.Errorf("host %q contains spaces or line breaks", h.host)
	}
	if len(h.expect) == 0 {
		h.expect = []StatusRange{{200, 399}}
	}
	for _, r := range h.expect {
		if r.Lo < 100 || r.Hi > 599 || r.Lo > r.Hi {
			return nil, fmt.Errorf("expect_status range %d-%d is not within 100-599", r.Lo, r.Hi)
		}
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBody
	}
	if h.maxBody > MaxBodyLimit {
		return nil, fmt.Errorf("max_body %d is above the limit of %d", h.maxBody, MaxBodyLimit)
	}
	if s.BodyRegex != "" {
		re, err := regexp.Compile(s.BodyRegex)
		if err != nil {
			return nil, fmt.Errorf("expect_body_regex: %w", err)
		}
		h.re = re
	}
	h.needBody = h.body != "" || h.re != nil
	if s.Type == "https" {
		cfg, err := tlsConfig(s)
		if err != nil {
			return nil, err
		}
		h.tls = cfg
	} else if s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.TLSServerName != "" || s.TLSVerify {
		return nil, errors.New("TLS keys (tls_server_name, tls_verify, ca_file, cert_file, key_file) need type = \"https\"")
	}
	return h, nil
}

// tlsConfig loads CA and client certificate files once per check, so a bad
// file is a configuration error rather than a server marked down.
func tlsConfig(s Spec) (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName: s.TLSServerName,
		// A health check proves liveness, not identity, and real servers
		// are usually addressed by IP; verification is opt-in.
		InsecureSkipVerify: !s.TLSVerify, //nolint:gosec // see above
		MinVersion:         tls.VersionTLS12,
	}
	if s.CAFile != "" && !s.TLSVerify {
		// RootCAs are only read to verify: without tls_verify the file
		// would be loaded and silently ignored.
		return nil, errors.New("ca_file has no effect without tls_verify = true")
	}
	if s.CAFile != "" {
		pem, err := readPEMFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates found", s.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		return nil, errors.New("cert_file and key_file go together")
	}
	if s.CertFile != "" {
		certPEM, err := readPEMFile(s.CertFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file: %w", err)
		}
		keyPEM, err := readPEMFile(s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("key_file: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Certificate files are read on the agent's main loop (at `check`, start
// and reload): only regular files of at most maxPEMFile bytes, and a read
// that takes longer than pemReadTimeout (a hung network filesystem) is an
// error. A FIFO hung `check` and reloads; /dev/zero ran out of memory.
const (
	maxPEMFile     = 1 << 20
	pemReadTimeout = 5 * time.Second
)

func readPEMFile(path string) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	done := make(chan res, 1)
	go func() {
		b, err := ReadRegular(path, maxPEMFile)
		done <- res{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-time.After(pemReadTimeout):
		return nil, fmt.Errorf("%s: not read within %v", path, pemReadTimeout)
	}
}

func (h *httpChecker) check(ctx context.Context, p probe) result {
	tc, err := dialTCP(ctx, p.addr)
	if err != nil {
		return failed(errReason("connect", err))
	}
	var conn net.Conn = tc
	defer func() { conn.Close() }()
	defer abortOnCancel(ctx, tc)()
	host := h.host
	if host == "" {
		host = p.addr.String()
	}
	if h.tls != nil {
		cfg := h.tls.Clone()
		if cfg.ServerName == "" {
			if h.host != "" {
				cfg.ServerName = hostOnly(h.host)
			} else {
				// Verifies IP SANs; not sent as SNI (Go omits IPs).
				cfg.ServerName = p.addr.Addr().String()
			}
		}
		tlc := tls.Client(tc, cfg)
		conn = tlc
		if err := tlc.HandshakeContext(ctx); err != nil {
			return failed(errReason("tls", err))
		}
	}
	req := h.method + " " + h.path + " HTTP/1.1\r\nHost: " + host +
		"\r\nUser-Agent: ipvs-agent-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return failed(errReason("http write", err))
	}
	lr := &limitReader{r: conn, n: maxHTTPHeader}
	br := bufio.NewReaderSize(lr, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: h.method})
	if err != nil {
		if lr.n <= 0 {
			return failed(fmt.Sprintf("http: status line and headers longer than %d bytes", maxHTTPHeader))
		}
		return failed(errReason("http", err))
	}
	lr.n = h.maxBody // the body's own limit (readUntil stops at it too)
	// No resp.Body.Close: it reads the rest of the body (to reuse the
	// connection), which for a large or slowly sent body holds the probe
	// until its timeout though the verdict is known. The deferred close
	// of the connection is enough.
	if !statusOK(h.expect, resp.StatusCode) {
		return failed(fmt.Sprintf("HTTP %d", resp.StatusCode))
	}
	if !h.needBody {
		return passed(fmt.Sprintf("HTTP %d", resp.StatusCode))
	}
	stopAt := ""
	if h.re == nil {
		stopAt = h.body // a regexp needs the whole body; a substring does not
	}
	if h.budget != nil {
		release, err := h.budget.acquire(ctx, h.maxBody)
		if err != nil {
			return failed(fmt.Sprintf("http body: no memory to read %d bytes within the timeout (all HTTP bodies share %d bytes)", h.maxBody, BodyBudget))
		}
		defer release()
	}
	body, rerr := readUntil(resp.Body, h.maxBody, stopAt)
	// Match what arrived even if the read then failed: a server that
	// streams forever still passes when the marker came early.
	if h.body != "" && !bytes.Contains(body, []byte(h.body)) {
		if rerr != nil {
			return failed(errReason("http body", rerr))
		}
		return failed(fmt.Sprintf("HTTP %d: body lacks %q in first %d bytes", resp.StatusCode, h.body, h.maxBody))
	}
	if h.re != nil && !h.re.Match(body) {
		if rerr != nil {
			return failed(errReason("http body", rerr))
		}
		return failed(fmt.Sprintf("HTTP %d: body does not match /%s/ in first %d bytes", resp.StatusCode, h.re, h.maxBody))
	}
	return passed(fmt.Sprintf("HTTP %d, body matched", resp.StatusCode))
}

// readUntil reads at most limit bytes of r, stopping early once marker
// (when not empty) has been read.
func readUntil(r io.Reader, limit int, marker string) ([]byte, error) {
	buf := make([]byte, 0, min(limit, 4096))
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(limit-len(buf), cap(buf)))
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), limit)])
		from := max(0, len(buf)-len(marker)+1) // a marker split across reads
		buf = buf[:len(buf)+n]
		if marker != "" && n > 0 && bytes.Contains(buf[from:], []byte(marker)) {
			return buf, nil
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// setBodyBudget gives an HTTP checker (plain, or under a weight file) the
// scheduler's shared body budget.
func setBodyBudget(c checker, b *memBudget) {
	switch x := c.(type) {
	case *httpChecker:
		x.budget = b
	case overlayChecker:
		setBodyBudget(x.probe, b)
	}
}

func statusOK(rs []StatusRange, code int) bool {
	for _, r := range rs {
		if code >= r.Lo && code <= r.Hi {
			return true
		}
	}
	return false
}

func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.Trim(h, "[]")
}
