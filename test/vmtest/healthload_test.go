//go:build vmtest

package vmtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipvs-agent/ipvs-agent/health"
)

// A CPU profile of the health scheduler in the VM (make vmbench measures
// the agent against keepalived: sidebyside_test.go). The real servers:
// every address of 198.18.64.0/18 is local in rs1 (an AnyIP route on lo),
// whose listener on :80 answers them all; the director routes that range
// to rs1.
//
//	test/vm/run-tests.sh -test.run '^$' -test.bench HealthProfile -test.benchtime 1x

const farmRange = "198.18.64.0/18"

func farmRoutes(b testing.TB) {
	b.Helper()
	sh(b, "ip", "route", "replace", farmRange, "via", reals[0].ip4)
	sh(b, "ip", "netns", "exec", reals[0].name, "ip", "route", "replace", "local", farmRange, "dev", "lo")
}

// farmAddr is the idx-th real server of the farm.
func farmAddr(idx int) string { return fmt.Sprintf("198.18.%d.%d", 64+idx/250, 1+idx%250) }

// BenchmarkHealthProfile runs the health scheduler in this process against
// the farm (N=100, 1,000 checks/s) for 15 s under the CPU profiler and
// prints the profile base64-encoded between markers, for go tool pprof on
// the host (profiles carry their symbols). The real servers' listener runs
// in this process too: read the profile by function.
func BenchmarkHealthProfile(b *testing.B) {
	resetKernel(b)
	farmRoutes(b)
	var checks []health.Check
	for i := 0; i < 1000; i++ {
		t := netip.MustParseAddrPort(farmAddr(i) + ":80")
		checks = append(checks, health.Check{ID: t.String(), Target: t,
			Spec: health.Spec{Type: "tcp", Interval: time.Second, Timeout: time.Second, Rise: 2, Fall: 3}})
	}
	logs := &strings.Builder{}
	var mu sync.Mutex
	s := health.NewScheduler(health.Options{Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	s.Set(checks)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	time.Sleep(3 * time.Second)
	var prof bytes.Buffer
	st0, t0 := s.Stats(), time.Now()
	pprof.StartCPUProfile(&prof)
	time.Sleep(15 * time.Second)
	pprof.StopCPUProfile()
	st1 := s.Stats()
	cancel()
	<-done
	el := time.Since(t0).Seconds()
	b.Logf("in-process: %.0f checks/s, %.1f wake-ups/s, no verdict %d, late %d, saturated %d, stalled %v, max lag %v",
		float64(st1.Checks-st0.Checks)/el, float64(st1.Wakeups-st0.Wakeups)/el, st1.NoVerdict, st1.Late, st1.Saturated, st1.Stalled, st1.MaxLag)
	down := 0
	for _, v := range s.Statuses() {
		if v.State != health.Up {
			down++
		}
	}
	b.Logf("not up: %d", down)
	mu.Lock()
	if l := logs.String(); len(l) > 4000 {
		b.Logf("log tail: %s", l[len(l)-4000:])
	} else {
		b.Logf("log: %s", l)
	}
	mu.Unlock()
	fmt.Printf("PROFILE-BEGIN\n%s\nPROFILE-END\n", base64.StdEncoding.EncodeToString(prof.Bytes()))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
