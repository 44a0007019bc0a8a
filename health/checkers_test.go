package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
)

// runSpec builds the checker for spec and probes target once, failing the
// test on a configuration error.
func runSpec(t *testing.T, spec Spec, target netip.AddrPort) result {
	t.Helper()
	if spec.Timeout == 0 {
		spec.Timeout = time.Second
	}
	c, err := newChecker(spec)
	if err != nil {
		t.Fatalf("newChecker(%+v): %v", spec, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), spec.Timeout)
	defer cancel()
	p := probe{addr: target, rs: target}
	if spec.Port != 0 {
		p.addr = netip.AddrPortFrom(target.Addr(), spec.Port)
	}
	return c.check(ctx, p)
}

func wantPass(t *testing.T, r result) {
	t.Helper()
	if r.outcome != pass {
		t.Fatalf("want pass, got %v: %s", r.outcome, r.reason)
	}
}

func wantFail(t *testing.T, r result, reasonHas string) {
	t.Helper()
	if r.outcome != fail {
		t.Fatalf("want fail, got %v: %s", r.outcome, r.reason)
	}
	if !strings.Contains(r.reason, reasonHas) {
		t.Fatalf("reason %q lacks %q", r.reason, reasonHas)
	}
}

func addrOf(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// closedPort returns a loopback TCP port nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := addrOf(t, l.Addr())
	l.Close()
	return a
}

// acceptAndClose listens on loopback and closes every connection it
// accepts: a TCP target that is up. It stops with the test.
func acceptAndClose(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

func TestTCP(t *testing.T) {
	l := acceptAndClose(t)
	wantPass(t, runSpec(t, Spec{Type: "tcp"}, addrOf(t, l.Addr())))
	wantFail(t, runSpec(t, Spec{Type: "tcp"}, closedPort(t)), "connection refused")
	// Port override: the real server's port is closed, the check port open.
	wantPass(t, runSpec(t, Spec{Type: "tcp", Port: addrOf(t, l.Addr()).Port()}, closedPort(t)))
}

func TestHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			fmt.Fprintf(w, "status: healthy host=%s method=%s", r.Host, r.Method)
		case "/404":
			http.NotFound(w, r)
		case "/503":
			w.WriteHeader(503)
		case "/big":
			w.Write([]byte(strings.Repeat("x", 100000) + "MARKER"))
		}
	}))
	defer srv.Close()
	target := addrOf(t, srv.Listener.Addr())
	wantPass(t, runSpec(t, Spec{Type: "http", Path: "/ok"}, target))
	wantPass(t, runSpec(t, Spec{Type: "http", Path: "/ok", ExpectBody: "healthy"}, target))
	wantPass(t, runSpec(t, Spec{Type: "http", Path: "/ok", Host: "example.org", ExpectBody: "host=example.org"}, target))
	wantPass(t, runSpec(t, Spec{Type: "http", Path: "/ok", BodyRegex: `status: (healthy|degraded)`}, target))
	wantPass(t, runSpec(t, Spec{Type: "http", Path: "/ok", Method: "HEAD"}, target))
	wantFail(t, runSpec(t, Spec{Type: "http", Path: "/ok", ExpectBody: "sick"}, target), "body lacks")
	wantFail(t, runSpec(t, Spec{Type: "http", Path: "/ok", BodyRegex: `^sick`}, target), "does not match")
	wantFail(t, runSpec(t, Spec{Type: "http", Path: "/404"}, target), "HTTP 404")
	wantPass(t, runSpec(t, Spec{Type: "http", Path: "/404", ExpectStatus: []StatusRange{{200, 299}, {404, 404}}}, target))
	wantFail(t, runSpec(t, Spec{Type: "http", Path: "/503"}, target), "HTTP 503")
	// The marker lies beyond max_body: not found, and nothing more is read.
	wantFail(t, runSpec(t, Spec{Type: "http", Path: "/big", ExpectBody: "MARKER"}, target), "body lacks")
	wantPass(t, runSpec(t, Spec{Type: "http", Path: "/big", ExpectBody: "MARKER", MaxBody: 200000}, target))
	wantFail(t, runSpec(t, Spec{Type: "http"}, closedPort(t)), "connect")
}

// writePEM saves the test server's certificate so ca_file can trust it.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "secure ok")
	}))
	defer srv.Close()
	target := addrOf(t, srv.Listener.Addr())
	dir := t.TempDir()
	ca := writePEM(t, dir, "ca.pem", "CERTIFICATE", srv.Certificate().Raw)

	wantPass(t, runSpec(t, Spec{Type: "https", ExpectBody: "secure"}, target))
	// httptest's certificate is for 127.0.0.1 and example.com.
	wantPass(t, runSpec(t, Spec{Type: "https", TLSVerify: true, CAFile: ca}, target))
	wantPass(t, runSpec(t, Spec{Type: "https", TLSVerify: true, CAFile: ca, TLSServerName: "example.com"}, target))
	wantFail(t, runSpec(t, Spec{Type: "https", TLSVerify: true, CAFile: ca, TLSServerName: "wrong.example.net"}, target), "tls")
	wantFail(t, runSpec(t, Spec{Type: "https", TLSVerify: true}, target), "tls") // system roots do not know it
	// Plain HTTP against a TLS port fails cleanly.
	wantFail(t, runSpec(t, Spec{Type: "http"}, target), "HTTP 400")

	if _, err := newChecker(Spec{Type: "https", CAFile: filepath.Join(dir, "missing.pem")}); err == nil {
		t.Fatal("missing ca_file accepted")
	}
	if _, err := newChecker(Spec{Type: "http", CAFile: ca}); err == nil {
		t.Fatal("ca_file on http accepted")
	}
}

func TestHTTPSClientCert(t *testing.T) {
	var gotCN string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			gotCN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	target := addrOf(t, srv.Listener.Addr())
	wantFail(t, runSpec(t, Spec{Type: "https"}, target), "")

	// Reuse httptest's own key pair as the client certificate.
	dir := t.TempDir()
	cert := srv.TLS.Certificates[0]
	certFile := writePEM(t, dir, "c.pem", "CERTIFICATE", cert.Certificate[0])
	keyDER, err := x509MarshalKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := writePEM(t, dir, "k.pem", "PRIVATE KEY", keyDER)
	wantPass(t, runSpec(t, Spec{Type: "https", CertFile: certFile, KeyFile: keyFile}, target))
	if gotCN == "" && srv.TLS.Certificates[0].Leaf != nil {
		t.Log("server saw no client certificate CN")
	}
}

func TestUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "silent" {
				continue
			}
			pc.WriteTo(append([]byte("pong:"), buf[:n]...), from)
		}
	}()
	target := addrOf(t, pc.LocalAddr())
	wantPass(t, runSpec(t, Spec{Type: "udp", Send: "ping"}, target))
	wantPass(t, runSpec(t, Spec{Type: "udp", Send: "ping", Expect: "pong:ping"}, target))
	wantFail(t, runSpec(t, Spec{Type: "udp", Send: "ping", Expect: "nope"}, target), "lacks")
	wantFail(t, runSpec(t, Spec{Type: "udp", Send: "silent", Timeout: 200 * time.Millisecond}, target), "timeout")

	// A closed UDP port answers with ICMP port unreachable.
	c, _ := net.ListenPacket("udp", "127.0.0.1:0")
	closed := addrOf(t, c.LocalAddr())
	c.Close()
	wantFail(t, runSpec(t, Spec{Type: "udp", Send: "ping"}, closed), "ICMP port unreachable")
}

// dnsResponder answers every query for name with the given rcode and, for
// type A, one A record 192.0.2.1 using a compression pointer.
func dnsResponder(t *testing.T, rcode int) netip.AddrPort {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			resp := append([]byte(nil), q...)
			binary.BigEndian.PutUint16(resp[2:], 0x8180|uint16(rcode))
			qtype := binary.BigEndian.Uint16(q[n-4:])
			if rcode == 0 && qtype == 1 {
				binary.BigEndian.PutUint16(resp[6:], 1)
				resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
			}
			pc.WriteTo(resp, from)
		}
	}()
	return addrOf(t, pc.LocalAddr())
}

func TestDNS(t *testing.T) {
	ok := dnsResponder(t, 0)
	nx := dnsResponder(t, 3)
	wantPass(t, runSpec(t, Spec{Type: "dns", QueryName: "www.example.org"}, ok))
	wantPass(t, runSpec(t, Spec{Type: "dns", QueryName: "www.example.org", ExpectAnswer: "192.0.2.1"}, ok))
	wantFail(t, runSpec(t, Spec{Type: "dns", QueryName: "www.example.org", ExpectAnswer: "192.0.2.9"}, ok), "none is")
	wantFail(t, runSpec(t, Spec{Type: "dns", QueryName: "www.example.org"}, nx), "NXDOMAIN")
	wantPass(t, runSpec(t, Spec{Type: "dns", QueryName: "nope.example.org", ExpectRcode: "NXDOMAIN"}, nx))
	wantPass(t, runSpec(t, Spec{Type: "dns", QueryName: "example.org", QueryType: "AAAA"}, ok))
	if _, err := newChecker(Spec{Type: "dns", QueryName: "x", QueryType: "BOGUS"}); err == nil {
		t.Fatal("bogus query_type accepted")
	}
	if _, err := newChecker(Spec{Type: "dns"}); err == nil {
		t.Fatal("missing query_name accepted")
	}
}

func TestParseReplyHostile(t *testing.T) {
	// A compression pointer to itself must not loop.
	m := []byte{0, 7, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0, 0xc0, 12}
	if _, _, err := parseReply(m, 7); err == nil {
		t.Fatal("pointer loop accepted")
	}
	if _, _, err := parseReply([]byte{0, 7, 0x81}, 7); err == nil {
		t.Fatal("short reply accepted")
	}
	if _, _, err := parseReply([]byte{0, 8, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}, 7); err == nil {
		t.Fatal("wrong ID accepted")
	}
}

func TestExec(t *testing.T) {
	target := netip.MustParseAddrPort("127.0.0.2:8080")
	wantPass(t, runSpec(t, Spec{Type: "exec", Command: []string{"/bin/true"}}, target))
	wantFail(t, runSpec(t, Spec{Type: "exec", Command: []string{"/bin/false"}}, target), "exit status 1")
	wantPass(t, runSpec(t, Spec{Type: "exec", Shell: true,
		Command: []string{`test "$IPVS_RS_IP:$IPVS_RS_PORT" = 127.0.0.2:8080 && test "$IPVS_CHECK_PORT" = 8080`}}, target))
	wantFail(t, runSpec(t, Spec{Type: "exec", Shell: true, Command: []string{"echo broken >&2; exit 3"}}, target), "broken")

	// A command that outlives its timeout is killed with its children.
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	start := time.Now()
	r := runSpec(t, Spec{Type: "exec", Shell: true, Timeout: 300 * time.Millisecond,
		Command: []string{"sleep 30 & echo $! > " + pidFile + "; wait"}}, target)
	wantFail(t, r, "timeout")
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("exec took %v after a 300ms timeout", el)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	deadline := time.Now().Add(3 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie (state Z) is dead for our purpose.
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

func TestExecUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("switching user needs root")
	}
	target := netip.MustParseAddrPort("127.0.0.1:80")
	wantPass(t, runSpec(t, Spec{Type: "exec", User: "nobody", Shell: true, Command: []string{`test "$(id -u)" != 0`}}, target))
	if _, err := newChecker(Spec{Type: "exec", User: "no-such-user-xyz", Command: []string{"/bin/true"}}); err == nil {
		t.Fatal("unknown user accepted")
	}
}

func TestICMP(t *testing.T) {
	r := runSpec(t, Spec{Type: "icmp"}, netip.MustParseAddrPort("127.0.0.1:0"))
	if r.outcome == fail && strings.Contains(r.reason, "CAP_NET_RAW") {
		t.Skipf("no ICMP socket here: %s", r.reason)
	}
	wantPass(t, r)
	r = runSpec(t, Spec{Type: "icmp"}, netip.MustParseAddrPort("[::1]:0"))
	if r.outcome == fail && strings.Contains(r.reason, "address not available") {
		t.Skip("no IPv6 loopback")
	}
	wantPass(t, r)
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	target := netip.MustParseAddrPort("127.0.0.3:443")
	spec := Spec{Type: "file", File: dir + "/{ip}_{port}"}
	path := filepath.Join(dir, "127.0.0.3_443")
	wantPass(t, runSpec(t, spec, target)) // missing: up by default
	os.WriteFile(path, []byte("drain\n"), 0o644)
	if r := runSpec(t, spec, target); r.outcome != drain {
		t.Fatalf("drain file: %v %s", r.outcome, r.reason)
	}
	os.WriteFile(path, []byte("7\n"), 0o644)
	if r := runSpec(t, spec, target); r.outcome != pass || r.weight != 7 {
		t.Fatalf("weight file: %+v", r)
	}
	spec.FileMissing = "down"
	os.Remove(path)
	if r := runSpec(t, spec, target); r.outcome != maint {
		t.Fatalf("missing with file_missing=down: %+v", r)
	}
	// A FIFO must not block the check.
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	wantFail(t, runSpec(t, spec, target), "not a regular file")
	if _, err := newChecker(Spec{Type: "file", File: "relative/{ip}"}); err == nil {
		t.Fatal("relative path accepted")
	}
}

// agentServer answers each connection with the next line of replies.
func agentServer(t *testing.T, replies ...string) netip.AddrPort {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for i := 0; ; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, replies[i%len(replies)])
			c.Close()
		}
	}()
	return addrOf(t, l.Addr())
}

func TestAgent(t *testing.T) {
	a := agentServer(t, "75%\n", "up\r\n", "drain\n", "maint\n", "down#disk full\n", "ready 20%")
	spec := Spec{Type: "agent"}
	r := runSpec(t, spec, a)
	if r.outcome != pass || r.factor != 0.75 {
		t.Fatalf("75%%: %+v", r)
	}
	wantPass(t, runSpec(t, spec, a))
	if r := runSpec(t, spec, a); r.outcome != drain {
		t.Fatalf("drain: %+v", r)
	}
	if r := runSpec(t, spec, a); r.outcome != maint {
		t.Fatalf("maint: %+v", r)
	}
	if r := runSpec(t, spec, a); r.outcome != maint || !strings.Contains(r.reason, "disk full") {
		t.Fatalf("down: %+v", r)
	}
	if r := runSpec(t, spec, a); r.outcome != pass || r.factor != 0.2 {
		t.Fatalf("no newline, EOF: %+v", r)
	}
	wantFail(t, runSpec(t, spec, closedPort(t)), "connect")
}

func x509MarshalKey(k any) ([]byte, error) { return x509.MarshalPKCS8PrivateKey(k) }

func TestWeightFileOverlay(t *testing.T) {
	l := acceptAndClose(t)
	target := addrOf(t, l.Addr())
	dir := t.TempDir()
	spec := Spec{Type: "tcp", WeightFile: dir + "/{port}"}
	path := filepath.Join(dir, fmt.Sprint(target.Port()))
	wantPass(t, runSpec(t, spec, target)) // missing: the probe decides
	os.WriteFile(path, []byte("drain"), 0o644)
	if r := runSpec(t, spec, target); r.outcome != drain {
		t.Fatalf("drain file over a passing probe: %+v", r)
	}
	os.WriteFile(path, []byte("30%"), 0o644)
	if r := runSpec(t, spec, target); r.outcome != pass || r.factor != 0.3 {
		t.Fatalf("30%% file: %+v", r)
	}
	os.WriteFile(path, []byte("up"), 0o644)
	wantFail(t, runSpec(t, spec, closedPort(t)), "connect") // "up" cannot revive a dead server
	os.WriteFile(path, []byte("garbage"), 0o644)
	wantPass(t, runSpec(t, spec, target))
	if _, err := newChecker(Spec{Type: "file", File: "/x", WeightFile: "/y"}); err == nil {
		t.Fatal("weight_file on a file check accepted")
	}
}

func TestExecClearsGroups(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("switching user needs root")
	}
	// Give this (root) test process a supplementary group for the
	// duration, so there is something to leak.
	old, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setgroups([]int{4242}); err != nil {
		t.Skipf("setgroups: %v", err)
	}
	defer syscall.Setgroups(old)
	target := netip.MustParseAddrPort("127.0.0.1:80")
	wantPass(t, runSpec(t, Spec{Type: "exec", User: "nobody", Shell: true,
		Command: []string{`for g in $(id -G); do test "$g" != 4242 || exit 1; done`}}, target))
}

// TestICMPSocketKinds covers the two paths root does not take on a default
// host: the unprivileged ping socket (allowed by ping_group_range) and the
// error without CAP_NET_RAW. Each runs TestICMPInner in a fresh network
// namespace, where ping_group_range can be set without touching the host's.
func TestICMPSocketKinds(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	for _, tool := range []string{"unshare", "setpriv", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	for mode, argv := range map[string][]string{
		"dgram": {"unshare", "--net", "sh", "-c",
			`ip link set lo up && echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range && exec "$0" -test.run '^TestICMPInner$' -test.v`, os.Args[0]},
		"nocap": {"unshare", "--net", "setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", "sh", "-c",
			`ip link set lo up && exec "$0" -test.run '^TestICMPInner$' -test.v`, os.Args[0]},
	} {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "HEALTH_ICMP_INNER="+mode)
		out, err := cmd.CombinedOutput()
		if strings.Contains(string(out), "Operation not permitted") && strings.Contains(string(out), "unshare") {
			t.Skipf("cannot create a network namespace here: %s", out)
		}
		if err != nil || !strings.Contains(string(out), "--- PASS: TestICMPInner") {
			t.Fatalf("%s: %v\n%s", mode, err, out)
		}
	}
}

func TestICMPInner(t *testing.T) {
	mode := os.Getenv("HEALTH_ICMP_INNER")
	if mode == "" {
		t.Skip("run by TestICMPSocketKinds")
	}
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	switch mode {
	case "dgram":
		pc, dgram, err := openICMP(false)
		if err != nil || !dgram {
			t.Fatalf("ping socket: dgram=%v err=%v", dgram, err)
		}
		pc.Close()
		wantPass(t, runSpec(t, Spec{Type: "icmp"}, lo))
		if _, err := os.Stat("/proc/net/if_inet6"); err == nil {
			wantPass(t, runSpec(t, Spec{Type: "icmp"}, netip.MustParseAddrPort("[::1]:0")))
		}
	case "nocap":
		wantFail(t, runSpec(t, Spec{Type: "icmp"}, lo), "CAP_NET_RAW")
	}
}

// TestHTTPSCAFileNeedsVerify: a CA file is only used to verify, so one given
// without tls_verify would be silently ignored; it is an error instead.
func TestHTTPSCAFileNeedsVerify(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ca := writePEM(t, t.TempDir(), "ca.pem", "CERTIFICATE", srv.Certificate().Raw)
	_, err := newChecker(Spec{Type: "https", CAFile: ca})
	if err == nil || !strings.Contains(err.Error(), "tls_verify") {
		t.Fatalf("ca_file without tls_verify: err %v, want one naming tls_verify", err)
	}
	if _, err := newChecker(Spec{Type: "https", CAFile: ca, TLSVerify: true}); err != nil {
		t.Fatal(err)
	}
}

func TestReadUntil(t *testing.T) {
	src := "aaaaMARKERbbbbbbbbbb"
	for _, tc := range []struct {
		limit  int
		marker string
		want   string
	}{
		{100, "MARKER", "aaaaMARKER"}, // stops at the marker, split over reads
		{6, "MARKER", "aaaaMA"},       // the limit wins
		{100, "", src},                // no marker: all of it
		{100, "nope", src},
	} {
		got, err := readUntil(iotest.OneByteReader(strings.NewReader(src)), tc.limit, tc.marker)
		if err != nil || string(got) != tc.want {
			t.Errorf("readUntil(%d, %q) = %q, %v; want %q", tc.limit, tc.marker, got, err, tc.want)
		}
	}
}

// A refused connection reads "connect: connection refused", the syscall
// named once (it read "connect: connect: connection refused").
func TestErrReasonNamesTheSyscallOnce(t *testing.T) {
	err := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	if got := errReason("connect", err); got != "connect: connection refused" {
		t.Errorf("errReason = %q", got)
	}
}
