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
	"os"
	"regexp"
	"slices"
	"strings"
)

const (
	// maxHTTPHeader bounds the status line and headers: a target that
	// "answers forever" is cut off here and counted down.
	maxHTTPHeader = 16 << 10
	// DefaultMaxBody is how much body is searched when max_body is unset.
	DefaultMaxBody = 64 << 10
)

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
		pem, err := os.ReadFile(s.CAFile)
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
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
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
	br := bufio.NewReaderSize(io.LimitReader(conn, int64(maxHTTPHeader+h.maxBody)), 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: h.method})
	if err != nil {
		return failed(errReason("http", err))
	}
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
