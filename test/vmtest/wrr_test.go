//go:build vmtest

package vmtest

import (
	"testing"
)

// Test 2: with wrr and weights 1/2/3, new client connections split 1:2:3.
// wrr is deterministic (each round of 6 picks gives 1, 2 and 3), so 120
// sequential connections should split exactly 20/40/60. Tolerance: ±2 per
// real server, for the round already begun before the first connection.
func TestWeightedSplit(t *testing.T) {
	resetKernel(t)
	addVIP(t, "192.0.2.20")
	s := newSetup(t)
	s.write(`
[[virtual_server]]
name = "split"
address = "192.0.2.20:80"
scheduler = "wrr"
  [[virtual_server.real_server]]
  address = "198.18.0.11:80"
  weight = 1
  [[virtual_server.real_server]]
  address = "198.18.0.12:80"
  weight = 2
  [[virtual_server.real_server]]
  address = "198.18.0.13:80"
  weight = 3
`)
	s.startReady()
	assertTable(t, lines(`
-A -t 192.0.2.20:80 -s wrr
-a -t 192.0.2.20:80 -r 198.18.0.11:80 -g -w 1
-a -t 192.0.2.20:80 -r 198.18.0.12:80 -g -w 2
-a -t 192.0.2.20:80 -r 198.18.0.13:80 -g -w 3
`))
	const n = 120
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		name, err := who("192.0.2.20:80")
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		seen[name]++
	}
	t.Logf("%d connections: %v", n, seen)
	for i, r := range reals {
		want := n * (i + 1) / 6
		if got := seen[r.name]; got < want-2 || got > want+2 {
			t.Errorf("%s (weight %d) answered %d of %d connections, want %d±2", r.name, i+1, got, n, want)
		}
	}
}
