package settings

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/ipvs"
)

// DefaultDir is where the kernel shows the current network namespace's
// IPVS sysctls (present only while ip_vs is loaded).
const DefaultDir = "/proc/sys/net/ipv4/vs"

// Proc is the real Kernel: sysctls as files under Dir, timeouts over IPVS
// generic netlink (moby/ipvs GetConfig/SetConfig) on a socket of its own.
type Proc struct {
	dir string
	h   *ipvs.Handle
}

// Open returns the settings of the current network namespace.
func Open() (*Proc, error) {
	if _, err := os.Stat(DefaultDir); err != nil {
		return nil, fmt.Errorf("IPVS settings: %w (is ip_vs loaded?)", err)
	}
	h, err := ipvs.New("")
	if err != nil {
		return nil, fmt.Errorf("IPVS settings: open netlink socket: %w", err)
	}
	return &Proc{dir: DefaultDir, h: h}, nil
}

// Close releases the netlink socket.
func (p *Proc) Close() { p.h.Close() }

// Read returns every setting the kernel has.
func (p *Proc) Read() (Values, error) {
	v := Values{}
	for _, n := range All() {
		if n.IsTimeout() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.dir, string(n)))
		if errors.Is(err, os.ErrNotExist) {
			continue // not built into this kernel
		}
		if err != nil {
			return nil, fmt.Errorf("read net.ipv4.vs.%s: %w", n, err)
		}
		i, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("read net.ipv4.vs.%s: %q is not a number", n, b)
		}
		v[n] = i
	}
	c, err := p.h.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("read IPVS timeouts: %w", err)
	}
	v[TimeoutTCP] = int(c.TimeoutTCP / time.Second)
	v[TimeoutTCPFin] = int(c.TimeoutTCPFin / time.Second)
	v[TimeoutUDP] = int(c.TimeoutUDP / time.Second)
	return v, nil
}

// bootIDPath is a random ID the kernel picks at boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// BootID returns the kernel's boot ID.
func (p *Proc) BootID() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", fmt.Errorf("read kernel boot ID: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Write sets one setting. A timeout is sent alone: the kernel leaves the
// timeouts given as 0 unchanged.
func (p *Proc) Write(n Name, v int) error {
	if n.IsTimeout() {
		if v < 1 {
			return fmt.Errorf("set IPVS %s: %d s (a timeout is at least 1 s)", n, v)
		}
		var c ipvs.Config
		d := time.Duration(v) * time.Second
		switch n {
		case TimeoutTCP:
			c.TimeoutTCP = d
		case TimeoutTCPFin:
			c.TimeoutTCPFin = d
		case TimeoutUDP:
			c.TimeoutUDP = d
		}
		if err := p.h.SetConfig(&c); err != nil {
			return fmt.Errorf("set IPVS %s to %d s: %w", n, v, err)
		}
		return nil
	}
	if !Known(n) {
		return fmt.Errorf("unknown IPVS setting %q", n)
	}
	path := filepath.Join(p.dir, string(n))
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("set net.ipv4.vs.%s: not present in this kernel", n)
	}
	if err != nil {
		return fmt.Errorf("set net.ipv4.vs.%s: %w", n, err)
	}
	_, err = f.WriteString(strconv.Itoa(v))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("set net.ipv4.vs.%s to %d: %w", n, v, err)
	}
	return nil
}
