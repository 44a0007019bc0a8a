package health_test

// Tests for agent/config/check.go, the TOML face of health.Spec. They live
// here because that file belongs to the health work while the rest of the
// config package is the agent's.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/health"
)

type doc struct {
	Defaults struct {
		Check *config.Check `toml:"check"`
	} `toml:"defaults"`
	VS struct {
		Check *config.Check `toml:"check"`
		RS    struct {
			Check *config.Check `toml:"check"`
		} `toml:"real_server"`
	} `toml:"virtual_server"`
}

func decode(t *testing.T, src string) doc {
	t.Helper()
	var d doc
	md, err := toml.Decode(src, &d)
	if err != nil {
		t.Fatal(err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		t.Fatalf("undecoded keys %v", und)
	}
	return d
}

func TestConfigMergeAndDefaults(t *testing.T) {
	d := decode(t, `
[defaults.check]
type = "tcp"
interval = "5s"
fall = 5

[virtual_server.check]
type = "http"
path = "/healthz"
expect_status = ["200-299", 404]
slow_start = "30s"
notify = ["/usr/local/bin/page", "ops"]

[virtual_server.real_server.check]
port = 8080
expect_body = "ok"
`)
	spec, err := d.VS.RS.Check.Merge(d.VS.Check.Merge(d.Defaults.Check)).Spec()
	if err != nil {
		t.Fatal(err)
	}
	want := health.Spec{
		Type: "http", Interval: 5 * time.Second, Timeout: time.Second, Rise: 2, Fall: 5, Port: 8080,
		SlowStart: 30 * time.Second, Notify: []string{"/usr/local/bin/page", "ops"}, User: "nobody",
		Path: "/healthz", ExpectStatus: []health.StatusRange{{Lo: 200, Hi: 299}, {Lo: 404, Hi: 404}},
		ExpectBody: "ok",
	}
	if !spec.Equal(want) {
		t.Fatalf("spec\n%+v\nwant\n%+v", spec, want)
	}
	// Merge leaves its inputs alone.
	if d.VS.Check.Port != nil {
		t.Fatal("Merge modified the parent")
	}
	var none *config.Check
	if none.Merge(nil) != nil {
		t.Fatal("Merge of nothing must be nil (no check)")
	}
}

func TestConfigKinds(t *testing.T) {
	for _, src := range []string{
		`type = "tcp"`,
		`type = "https"
tls_verify = false
tls_server_name = "www.example.org"`,
		`type = "udp"
send_hex = "00ff"
expect = "pong"`,
		`type = "dns"
query_name = "example.org"
query_type = "aaaa"
expect_rcode = "noerror"
expect_answer = "2001:db8::1"`,
		`type = "exec"
command = ["/bin/true"]
user = "nobody"`,
		`type = "icmp"`,
		"type = \"tcp\"\nweight_file = \"/run/ipvs-agent/weight/{addr}\"",
		`type = "file"
file = "/run/ipvs-agent/{ip}_{port}"`,
		`type = "agent"
port = 9999
send = "status\n"`,
		`type = "http"
expect_status = 204`,
		`type = "http"
expect_status = "200-299,301"`,
	} {
		d := decode(t, "[defaults.check]\n"+src)
		if _, err := d.Defaults.Check.Spec(); err != nil {
			t.Errorf("%s: %v", src, err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for _, tc := range []struct{ src, want string }{
		{`interval = "2s"`, "type is required"},
		{`type = "smtp"`, "unknown check type"},
		{"type = \"tcp\"\ninterval = \"2 seconds\"", "interval"},
		{"type = \"tcp\"\nrise = 0", "rise 0 out of range 1..1000"},
		{"type = \"tcp\"\ninterval = \"1s\"\ntimeout = \"2s\"", "timeout 2s out of range 10ms..1s"},
		{"type = \"tcp\"\nport = 70000", "port"},
		{"type = \"http\"\nexpect_body_regex = \"(\"", "expect_body_regex"},
		{"type = \"http\"\nexpect_status = [\"abc\"]", "expect_status"},
		{"type = \"http\"\nexpect_status = [\"500-200\"]", "expect_status"},
		{"type = \"https\"\ntls_verify = true\nca_file = \"" + notPEM + "\"", "no PEM certificates"},
		{"type = \"https\"\ntls_verify = true\nca_file = \"/nonexistent/ca.pem\"", "ca_file"},
		{"type = \"https\"\nca_file = \"" + notPEM + "\"", "ca_file has no effect without tls_verify"},
		{"type = \"https\"\ncert_file = \"/x.pem\"", "go together"},
		{"type = \"dns\"", "query_name"},
		{"type = \"dns\"\nquery_name = \"x\"\nexpect_rcode = \"OK\"", "expect_rcode"},
		{`type = "exec"`, "command"},
		{"type = \"exec\"\ncommand = [\"/bin/true\"]\nuser = \"no-such-user-xyz\"", "no-such-user-xyz"},
		{`type = "file"`, "file"},
		{`type = "agent"`, "needs port"},
		{"type = \"tcp\"\nweight_file = \"rel/{ip}\"", "weight_file"},
		{"type = \"udp\"\nsend = \"a\"\nsend_hex = \"00\"", "exclusive"},
		{"type = \"udp\"\nsend_hex = \"zz\"", "send_hex"},
	} {
		d := decode(t, "[defaults.check]\n"+tc.src)
		_, err := d.Defaults.Check.Spec()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.src, err, tc.want)
		}
	}
}
