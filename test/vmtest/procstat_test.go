//go:build vmtest

package vmtest

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ipvsWeights reads the director's /proc/net/ip_vs (IPv4 entries) into
// weights (real server -> weight; cleared first) and returns the number of
// virtual servers. It reads what ipvsadm -Ln reads, without a process per
// sample and without taking IPVS's configuration mutex as a netlink dump
// does, so sampling does not slow the daemons' writes.
func ipvsWeights(weights map[netip.AddrPort]int) (services int, err error) {
	data, err := os.ReadFile("/proc/1/net/ip_vs")
	if err != nil {
		return 0, err
	}
	clear(weights)
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		switch {
		case bytes.HasPrefix(line, []byte("TCP ")), bytes.HasPrefix(line, []byte("UDP ")), bytes.HasPrefix(line, []byte("SCTP ")), bytes.HasPrefix(line, []byte("FWM ")):
			services++
		case bytes.HasPrefix(line, []byte("  -> ")):
			f := bytes.Fields(line[5:])
			if len(f) < 3 {
				continue
			}
			ap, ok := parseHexAddrPort(f[0])
			if !ok {
				continue
			}
			w, _ := strconv.Atoi(string(f[2]))
			weights[ap] = w
		}
	}
	return services, nil
}

// parseHexAddrPort parses "C6130001:2710" (IPv4 only).
func parseHexAddrPort(b []byte) (netip.AddrPort, bool) {
	i := bytes.IndexByte(b, ':')
	if i != 8 {
		return netip.AddrPort{}, false
	}
	a, err1 := strconv.ParseUint(string(b[:8]), 16, 32)
	p, err2 := strconv.ParseUint(string(b[9:]), 16, 16)
	if err1 != nil || err2 != nil {
		return netip.AddrPort{}, false
	}
	var ab [4]byte
	binary.BigEndian.PutUint32(ab[:], uint32(a))
	return netip.AddrPortFrom(netip.AddrFrom4(ab), uint16(p)), true
}

// procUsage is what /proc says about a set of processes at one moment.
type procUsage struct {
	at        time.Time
	cpu       time.Duration // utime+stime, all threads, live and exited
	rssKiB    int64         // VmRSS summed over the processes
	voluntary int64         // voluntary context switches, summed over live threads
	involunt  int64
	procs     int
}

// clkTck is USER_HZ, 100 on every Linux that Go supports on amd64.
const clkTck = 100

// usage sums pids and, with children, every descendant of them (keepalived's
// checker is a child of its parent process).
func usage(pids []int, children bool) procUsage {
	u := procUsage{at: time.Now()}
	all := pids
	if children {
		all = withDescendants(pids)
	}
	for _, pid := range all {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		u.cpu += time.Duration(ut+st) * time.Second / clkTck
		u.procs++
		if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); err == nil {
			u.rssKiB += statusField(string(st), "VmRSS:")
		}
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/status")
		for _, tp := range tasks {
			if st, err := os.ReadFile(tp); err == nil {
				u.voluntary += statusField(string(st), "voluntary_ctxt_switches:")
				u.involunt += statusField(string(st), "nonvoluntary_ctxt_switches:")
			}
		}
	}
	return u
}

func statusField(status, key string) int64 {
	i := strings.Index(status, "\n"+key)
	if i < 0 {
		return 0
	}
	f := strings.Fields(status[i+1+len(key):])
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return n
}

// withDescendants returns pids and all their descendants.
func withDescendants(pids []int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 1 {
			pp, _ := strconv.Atoi(f[1])
			parent[pid] = pp
		}
	}
	in := map[int]bool{}
	for _, p := range pids {
		in[p] = true
	}
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if in[pp] && !in[pid] {
				in[pid] = true
				changed = true
			}
		}
	}
	out := make([]int, 0, len(in))
	for p := range in {
		out = append(out, p)
	}
	return out
}

// vmBusy returns the VM's busy and total CPU time from /proc/stat (all CPUs).
func vmBusy() (busy, total time.Duration) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var sum, idle int64
	for i, s := range f[1:] {
		n, _ := strconv.ParseInt(s, 10, 64)
		sum += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return time.Duration(sum-idle) * time.Second / clkTck, time.Duration(sum) * time.Second / clkTck
}
