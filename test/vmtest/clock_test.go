//go:build vmtest

package vmtest

import (
	"strings"
	"testing"
)

// The VM boots with tsc=reliable clocksource=tsc (test/vm/lib.sh). Without
// it the guest uses hpet and every clock read is an emulated MMIO access,
// which makes timers and Go's scheduler several times dearer than on any
// real director: timing-sensitive tests and the benchmarks would measure
// the emulator. Fail loudly if a kernel or qemu change loses it.
func TestClocksourceTSC(t *testing.T) {
	got := strings.TrimSpace(readFile(t, "/sys/devices/system/clocksource/clocksource0/current_clocksource"))
	if got != "tsc" {
		t.Fatalf("current_clocksource = %q, want tsc (kernel command line: tsc=reliable clocksource=tsc)", got)
	}
}
