package config

import (
	"os"
	"runtime/metrics"
	"testing"
	"time"
)

// FuzzParse holds Parse to the brief's bound for bad input: an error or a
// config, never a panic, within 2 s and 256 MB of allocation per input.
// Run (5 minutes, recorded in BENCHMARKS.md):
//
//	go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 5m -parallel 1 ./agent/config/
func FuzzParse(f *testing.F) {
	f.Add(good)
	if b, err := os.ReadFile("../../packaging/ipvs-agent.toml"); err == nil {
		f.Add(string(b))
	}
	f.Add("[agent]\nstate_fil = \"/x\"\n")
	f.Add("[[virtual_server]]\nname = \"a\"\naddress = \"192.0.2.1:80\"\n  [virtual_server.check]\n  type = \"http\"\n  expect_status = [200, \"300-399\"]\n  [[virtual_server.real_server]]\n  address = \"198.18.0.1:80\"\n  check.port = 8080\n")
	f.Add("x = {a = {b = [1, [2, {c = 3}]]}}\n\"a.b\".'c' = \"\"\"\nq\"\"\"\n")
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocated := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	f.Fuzz(func(t *testing.T, src string) {
		a0, t0 := allocated(), time.Now()
		cfg, err := Parse("fuzz.toml", src)
		d, a := time.Since(t0), allocated()-a0
		if (cfg == nil) == (err == nil) {
			t.Fatalf("config %v and error %v", cfg != nil, err)
		}
		if d > 2*time.Second || a > 256<<20 {
			t.Fatalf("%d bytes of input took %v and %d MB", len(src), d, a>>20)
		}
	})
}
