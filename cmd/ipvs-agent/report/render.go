package report

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Render writes the document as a table in the spirit of `ipvsadm -Ln`: the
// agent's state, then one block per virtual server with a line per real
// server.
func Render(w io.Writer, d *Doc) error {
	bw := &errWriter{w: w}
	a := d.Agent
	if !a.Running {
		fmt.Fprintf(bw, "ipvs-agent is NOT RUNNING: %s\n", a.Error)
		fmt.Fprintf(bw, "kernel view of the virtual servers state file %s lists (read-only):\n", a.StateFile)
	} else {
		fmt.Fprintf(bw, "ipvs-agent %s, pid %d", a.Version, a.PID)
		if a.Started != nil {
			fmt.Fprintf(bw, ", up %s", dur(d.Time.Sub(*a.Started)))
		}
		fmt.Fprintln(bw)
		if a.Config != "" {
			fmt.Fprintf(bw, "config         %s (sha256 %s)\n", a.Config, short(a.ConfigSHA256))
		}
		if r := a.LastReload; r != nil {
			fmt.Fprintf(bw, "last reload    %s (%s ago): ", r.Time.UTC().Format(time.RFC3339), dur(d.Time.Sub(r.Time)))
			switch {
			case !r.OK:
				fmt.Fprintf(bw, "FAILED, %d problems, old configuration kept\n", len(r.Problems))
				for _, p := range r.Problems {
					fmt.Fprintf(bw, "               %s\n", p)
				}
			default:
				what := "ok"
				if r.Unchanged {
					what = "ok, file unchanged"
				}
				fmt.Fprintf(bw, "%s, %d writes, %d errors in %s\n", what, r.Writes, r.Errors, secs(r.Seconds))
			}
		} else {
			fmt.Fprintln(bw, "last reload    none since start")
		}
		if r := a.LastReconcile; r != nil {
			fmt.Fprintf(bw, "last reconcile %s (%s ago): %s, %d writes, %d errors in %s\n",
				r.Time.UTC().Format(time.RFC3339), dur(d.Time.Sub(r.Time)), r.Reason, r.Writes, r.Errors, secs(r.Seconds))
		}
		if c := a.Checks; c != nil {
			fmt.Fprintf(bw, "checks         %d configured (%d probes), %.1f/s configured, %.1f/s done; late %d, saturated %d, max lag %s, in flight %d\n",
				c.Configured, c.Probes, c.ConfiguredPerSecond, c.DonePerSecond, c.LateTotal, c.SaturatedTotal, secs(c.MaxLagSeconds), c.InFlight)
		}
	}
	if a.KernelError != "" {
		fmt.Fprintf(bw, "kernel         NOT READ: %s\n", a.KernelError)
	}
	fmt.Fprintln(bw)

	// Real server rows are aligned across the whole table; virtual server
	// lines are printed as they are, as ipvsadm does.
	rows := [][]string{{"  -> RemoteAddress:Port", "Forward", "Weight", "ActiveConn", "InActConn", "CPS", "Health(for)", "LastProbe", "Why"}}
	heads := map[int]string{}
	for _, vs := range d.VirtualServers {
		head := strings.ToUpper(vs.Service)
		if vs.Scheduler != "" {
			head += " " + vs.Scheduler
		}
		if vs.Flags != "" {
			head += " " + vs.Flags
		}
		head += "  [" + vs.Name + "] " + vs.Ownership
		if vs.Kernel != nil && !vs.Kernel.Present {
			head += ", NOT IN KERNEL"
		}
		if vs.Quorum.Required > 0 {
			head += fmt.Sprintf(", quorum %d/%d", vs.Quorum.Healthy, vs.Quorum.Required)
			if !vs.Quorum.OK {
				head += " LOST"
			}
		}
		heads[len(rows)] = head
		for _, r := range vs.RealServers {
			act, inact, cps := "-", "-", "-"
			if r.Kernel != nil && r.Kernel.Present {
				act, inact, cps = strconv.Itoa(int(r.Kernel.ActiveConnections)), strconv.Itoa(int(r.Kernel.InactiveConnections)), strconv.FormatUint(r.Kernel.CPS, 10)
			}
			rows = append(rows, []string{"  -> " + r.Address, forwardWord(r.Forwarding), weight(r.Weight),
				act, inact, cps, healthWord(r, d.Time), lastProbe(r.Health, d.Time), strings.Join(r.Why, "; ")})
		}
	}
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	fmt.Fprintln(bw, "Prot LocalAddress:Port Scheduler Flags  [Name] Ownership, Quorum healthy/required")
	for i, row := range rows {
		if h, ok := heads[i]; ok {
			fmt.Fprintln(bw, h)
		}
		var line strings.Builder
		for j, c := range row {
			line.WriteString(c)
			if j < len(row)-1 {
				line.WriteString(strings.Repeat(" ", widths[j]-utf8.RuneCountInString(c)+1))
			}
		}
		fmt.Fprintln(bw, strings.TrimRight(line.String(), " "))
	}
	if h, ok := heads[len(rows)]; ok { // a last virtual server without real servers
		fmt.Fprintln(bw, h)
	}
	return bw.err
}

// weight shows configured -> effective, and the kernel's when it differs.
func weight(w Weight) string {
	num := func(n int) string {
		if n < 0 {
			return "-"
		}
		return strconv.Itoa(n)
	}
	eff := w.Desired
	s := num(w.Configured)
	switch {
	case w.Desired < 0 && w.Configured >= 0 && w.Kernel < 0:
		return s
	case w.Desired < 0 && w.Configured >= 0:
		return s + "->" + num(w.Kernel) + " (kept)"
	case w.Configured < 0:
		return num(w.Kernel)
	case eff != w.Configured:
		s += "->" + num(eff)
	}
	if w.Kernel >= 0 && eff >= 0 && w.Kernel != eff {
		s += " (kernel " + num(w.Kernel) + ")"
	}
	return s
}

func forwardWord(f string) string {
	switch f {
	case "dr":
		return "Route"
	case "tunnel":
		return "Tunnel"
	case "nat":
		return "Masq"
	}
	return f
}

func healthWord(r RealServer, now time.Time) string {
	h := r.Health
	if h == nil && r.Role == "kernel" {
		return "-"
	}
	if h == nil {
		return "no check"
	}
	if h.Since == nil {
		return h.State
	}
	return fmt.Sprintf("%s %s", h.State, dur(now.Sub(*h.Since)))
}

func lastProbe(h *Health, now time.Time) string {
	if h == nil || h.LastCheck == nil {
		return "-"
	}
	res := "ok"
	if !h.LastOK {
		res = "FAIL"
	}
	return fmt.Sprintf("%s %s, %s ago", res, secs(h.LatencySeconds), dur(now.Sub(*h.LastCheck)))
}

// dur is a short age: 45s, 3m12s, 2h5m, 3d4h.
func dur(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// secs shows a duration in seconds with a unit fit for its size.
func secs(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
