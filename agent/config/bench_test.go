package config

import (
	"fmt"
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
