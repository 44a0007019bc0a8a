package config

import (
	"reflect"

	"fmt"
	"github.com/BurntSushi/toml"
	"strings"
	"testing"
)

// keepalived spends 1.2 s of a 1,000 x 10 cold start parsing its
// configuration; this is ours.
func BenchmarkParse1000x10(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("[agent]\nstate_file = \"/tmp/s.json\"\n[defaults.check]\ntype = \"tcp\"\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&sb, "[[virtual_server]]\nname = \"vs%d\"\naddress = \"198.51.%d.%d:80\"\nscheduler = \"wrr\"\n", i, i/250, i%250+1)
		for j := 0; j < 10; j++ {
			fmt.Fprintf(&sb, "  [[virtual_server.real_server]]\n  address = \"198.18.%d.%d:80\"\n  weight = %d\n", j, i%250+1, j+1)
		}
	}
	src := sb.String()
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		cfg, err := Parse("bench.toml", src)
		if err != nil {
			b.Fatal(err)
		}
		if len(cfg.VirtualServers) != 1000 {
			b.Fatal("short")
		}
	}
}

func bigSource(nvs int, extra string) string {
	var sb strings.Builder
	sb.WriteString("[agent]\nstate_file = \"/tmp/s.json\"\n[defaults.check]\ntype = \"tcp\"\n")
	for i := 0; i < nvs; i++ {
		fmt.Fprintf(&sb, "[[virtual_server]]\nname = \"vs%d\"\naddress = \"198.51.%d.%d:80\"\nscheduler = \"wrr\"\n", i, i/250, i%250+1)
		if i%7 == 0 {
			sb.WriteString("  [virtual_server.check] # a comment\n  type = \"http\"\n  path = \"/x\"\n")
		}
		for j := 0; j < 10; j++ {
			fmt.Fprintf(&sb, "  [[virtual_server.real_server]]\n  address = \"198.18.%d.%d:80\"\n  weight = %d\n", j, i%250+1, j+1)
		}
		if i == nvs/2 {
			sb.WriteString(extra)
		}
	}
	return sb.String()
}

// Decoding a large file in parallel parts gives exactly what decoding it
// whole gives, and a file the cut cannot handle is decoded whole.
func TestParallelDecodeEquivalent(t *testing.T) {
	src := bigSource(400, "    [virtual_server.real_server.check]\n    type = \"tcp\"\n    wieght = 1\n")
	if parts := split(src, 2); len(parts) != 3 {
		t.Fatalf("split into %d parts, want 3 (preamble + 2)", len(parts))
	}
	var whole, parallel rawFile
	md, err := toml.Decode(src, &whole)
	if err != nil {
		t.Fatal(err)
	}
	keys, ok := decodeParts(split(src, 2), &parallel)
	if !ok {
		t.Fatal("parallel decode refused a plain file")
	}
	if !reflect.DeepEqual(whole, parallel) {
		t.Fatal("parallel decode differs from the whole-file decode")
	}
	if fmt.Sprint(keys) != fmt.Sprint(md.Undecoded()) {
		t.Fatalf("undecoded keys %v, want %v", keys, md.Undecoded())
	}
	for name, bad := range map[string]string{
		"another table after the first virtual server": "[agent]\nresync_interval = \"3s\"\n",
		"multi-line string":                            "  [virtual_server.check]\n  type = \"exec\"\n  command = [\"\"\"\n[[virtual_server]]\"\"\"]\n",
	} {
		if parts := split(bigSource(400, bad), 2); parts != nil {
			t.Errorf("%s: split into %d parts, want no split", name, len(parts))
		}
	}
	if parts := split(src, 1); parts != nil {
		t.Error("split with one CPU")
	}
}

// A broken part falls back to the whole file, so the position is the file's.
func TestParallelDecodeErrorsHaveFilePositions(t *testing.T) {
	src := bigSource(400, "  [[virtual_server.real_server]]\n  address = \"198.18.99.1:80\"\n  weight = \"heavy\"\n")
	line := strings.Count(src[:strings.Index(src, `"heavy"`)], "\n") + 1
	_, err := Parse("big.toml", src)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("big.toml:%d:", line)) {
		t.Fatalf("want an error at line %d, got %v", line, err)
	}
}
