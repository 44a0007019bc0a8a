// Command preview draws a picture of the example Grafana dashboard
// (contrib/grafana/ipvs-agent.json) without Grafana: it evaluates the
// panels' queries over metrics samples scraped from a running agent and
// plots them with gnuplot (Debian package gnuplot-nox), one panel per
// dashboard panel, under the dashboard's titles.
//
//	go run ./contrib/grafana/preview -o docs/dashboard.png [-samples-out FILE] results.log...
//
// The input is any text with lines "vmtest-sample <unix ms> <series> <value>",
// as printed by test/vmtest's TestMetricsTimeline (a sample is printed when
// it changed since the previous scrape; the value carries forward). The
// queries are evaluated by this program, not by Prometheus: rate() is the
// increase over the window's scrapes divided by their time span (no
// extrapolation; a decrease counts as a counter reset) and the windows are
// 10 s instead of the dashboard's 1m/5m, because the run lasts one minute
// and is scraped every 2 s. The picture's header describes
// TestMetricsTimeline's scenario (keep the two in step).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

const window = 10 * time.Second

func main() {
	out := flag.String("o", "dashboard.png", "PNG to write")
	dash := flag.String("dashboard", "contrib/grafana/ipvs-agent.json", "dashboard JSON (panel titles)")
	samplesOut := flag.String("samples-out", "", "also write the extracted samples here")
	flag.Parse()
	if err := run(*out, *dash, *samplesOut, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "preview:", err)
		os.Exit(1)
	}
}

// store holds every series' value at every scrape, carried forward.
type store struct {
	times  []time.Time
	series map[string]*series
}

type series struct {
	name   string
	labels map[string]string
	vals   []float64 // per scrape; NaN before the series first appeared
}

func readSamples(paths []string, samplesOut string) (*store, error) {
	type sample struct {
		ms  int64
		key string
		v   float64
	}
	var all []sample
	var raw []string
	readOne := func(r io.Reader, name string) error {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for n := 1; sc.Scan(); n++ {
			l := sc.Text()
			i := strings.Index(l, "vmtest-sample ")
			if i < 0 {
				continue
			}
			l = l[i:]
			f := strings.Fields(l)
			if len(f) != 4 {
				return fmt.Errorf("%s:%d: want \"vmtest-sample MS SERIES VALUE\": %q", name, n, l)
			}
			ms, err1 := strconv.ParseInt(f[1], 10, 64)
			v, err2 := strconv.ParseFloat(f[3], 64)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("%s:%d: bad sample %q", name, n, l)
			}
			all = append(all, sample{ms, f[2], v})
			raw = append(raw, l)
		}
		return sc.Err()
	}
	if len(paths) == 0 {
		if err := readOne(os.Stdin, "stdin"); err != nil {
			return nil, err
		}
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		err = readOne(f, p)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no vmtest-sample lines in the input")
	}
	if samplesOut != "" {
		if err := os.WriteFile(samplesOut, []byte(strings.Join(raw, "\n")+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	idx := map[int64]int{}
	var mss []int64
	for _, s := range all {
		if _, ok := idx[s.ms]; !ok {
			idx[s.ms] = 0
			mss = append(mss, s.ms)
		}
	}
	sort.Slice(mss, func(i, j int) bool { return mss[i] < mss[j] })
	st := &store{series: map[string]*series{}}
	for i, ms := range mss {
		idx[ms] = i
		st.times = append(st.times, time.UnixMilli(ms).UTC())
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].ms < all[j].ms })
	for _, s := range all {
		se := st.series[s.key]
		if se == nil {
			name, labels, err := parseKey(s.key)
			if err != nil {
				return nil, err
			}
			se = &series{name: name, labels: labels, vals: make([]float64, len(mss))}
			for i := range se.vals {
				se.vals[i] = math.NaN()
			}
			st.series[s.key] = se
		}
		for i := idx[s.ms]; i < len(mss); i++ {
			se.vals[i] = s.v
		}
	}
	return st, nil
}

// parseKey splits `name{a="x",b="y"}`.
func parseKey(k string) (string, map[string]string, error) {
	labels := map[string]string{}
	i := strings.IndexByte(k, '{')
	if i < 0 {
		return k, labels, nil
	}
	name, rest := k[:i], strings.TrimSuffix(k[i+1:], "}")
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq < 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
			return "", nil, fmt.Errorf("bad series %q", k)
		}
		ln := rest[:eq]
		rest = rest[eq+2:]
		var val strings.Builder
		j := 0
		for ; j < len(rest) && rest[j] != '"'; j++ {
			if rest[j] == '\\' && j+1 < len(rest) {
				j++
			}
			val.WriteByte(rest[j])
		}
		if j == len(rest) {
			return "", nil, fmt.Errorf("bad series %q", k)
		}
		labels[ln] = val.String()
		rest = strings.TrimPrefix(rest[j+1:], ",")
	}
	return name, labels, nil
}

// vec is one query result: a value per scrape for each legend.
type vec map[string][]float64

// sel returns the series of one metric that carry the given label values.
func (st *store) sel(name string, match map[string]string) []*series {
	var out []*series
	for _, s := range st.series {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range match {
			if s.labels[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// rate of one counter at scrape i over the window.
func (st *store) rate(s *series, i int) float64 {
	j := i
	for j > 0 && st.times[i].Sub(st.times[j-1]) <= window {
		j--
	}
	for j < i && math.IsNaN(s.vals[j]) { // the series appeared inside the window
		j++
	}
	if j == i || math.IsNaN(s.vals[j]) {
		return math.NaN()
	}
	inc := 0.0
	for k := j + 1; k <= i; k++ {
		d := s.vals[k] - s.vals[k-1]
		if d < 0 { // reset
			d = s.vals[k]
		}
		inc += d
	}
	return inc / st.times[i].Sub(st.times[j]).Seconds()
}

// sumBy sums f(series, scrape) by the legend the series' labels give.
func (st *store) sumBy(ss []*series, legend func(map[string]string) string, f func(*series, int) float64) vec {
	out := vec{}
	for _, s := range ss {
		l := legend(s.labels)
		if out[l] == nil {
			out[l] = make([]float64, len(st.times))
			for i := range out[l] {
				out[l][i] = math.NaN()
			}
		}
		for i := range st.times {
			v := f(s, i)
			if math.IsNaN(v) {
				continue
			}
			if math.IsNaN(out[l][i]) {
				out[l][i] = 0
			}
			out[l][i] += v
		}
	}
	return out
}

func (st *store) rateSum(name string, match map[string]string, legend func(map[string]string) string) vec {
	return st.sumBy(st.sel(name, match), legend, st.rate)
}

func (st *store) gauge(name string, match map[string]string, legend func(map[string]string) string) vec {
	return st.sumBy(st.sel(name, match), legend, func(s *series, i int) float64 { return s.vals[i] })
}

// p99 is histogram_quantile(0.99, sum by (le, group) (rate(name_bucket[window]))).
func (st *store) p99(name, group string) vec {
	buckets := map[string]map[float64]*series{}
	for _, s := range st.sel(name+"_bucket", nil) {
		le, err := strconv.ParseFloat(s.labels["le"], 64) // "+Inf" parses
		if err != nil {
			continue
		}
		g := s.labels[group]
		if buckets[g] == nil {
			buckets[g] = map[float64]*series{}
		}
		buckets[g][le] = s
	}
	out := vec{}
	for g, bs := range buckets {
		var les []float64
		for le := range bs {
			les = append(les, le)
		}
		sort.Float64s(les)
		vals := make([]float64, len(st.times))
		for i := range st.times {
			vals[i] = math.NaN()
			total := st.rate(bs[les[len(les)-1]], i)
			if math.IsNaN(total) || total == 0 {
				continue
			}
			rank, lower, prev := 0.99*total, 0.0, 0.0
			for _, le := range les {
				c := st.rate(bs[le], i)
				if c >= rank {
					if math.IsInf(le, 1) {
						vals[i] = lower
					} else {
						vals[i] = lower + (le-lower)*(rank-prev)/(c-prev)
					}
					break
				}
				lower, prev = le, c
			}
		}
		out[g] = vals
	}
	return out
}

func by(keys ...string) func(map[string]string) string {
	return func(l map[string]string) string {
		var parts []string
		for _, k := range keys {
			parts = append(parts, l[k])
		}
		return strings.Join(parts, " ")
	}
}

func fixed(s string) func(map[string]string) string {
	return func(map[string]string) string { return s }
}

func merge(vs ...vec) vec {
	out := vec{}
	for _, v := range vs {
		for k, x := range v {
			out[k] = x
		}
	}
	return out
}

// panel is one dashboard panel placed on a 24-column grid.
type panel struct {
	id         int
	title      string
	x, y, w, h int
	stat       bool // a Grafana stat panel: the last value, large, with its sparkline
	statFmt    func(vec) string
	unit       string // y axis label
	data       vec
	note       string // shown under the title: what differs from the dashboard
}

func run(out, dashPath, samplesOut string, inputs []string) error {
	st, err := readSamples(inputs, samplesOut)
	if err != nil {
		return err
	}
	titles, err := panelTitles(dashPath)
	if err != nil {
		return err
	}
	vsRS := by("virtual_server", "real_server")
	last := func(v vec, k string) float64 {
		x := v[k]
		if len(x) == 0 {
			return math.NaN()
		}
		return x[len(x)-1]
	}
	vsUp := st.gauge("ipvs_agent_virtual_server_up", nil, fixed("up"))
	vsCount := st.sumBy(st.sel("ipvs_agent_virtual_server_up", nil), fixed("configured"), func(s *series, i int) float64 {
		if math.IsNaN(s.vals[i]) {
			return math.NaN()
		}
		return 1
	})
	rsDown := st.sumBy(st.sel("ipvs_agent_real_server_up", nil), fixed("down"), func(s *series, i int) float64 {
		if s.vals[i] == 0 {
			return 1
		}
		return 0
	})
	panels := []panel{
		{id: 2, x: 0, y: 0, w: 6, h: 4, stat: true, data: merge(vsUp, vsCount), statFmt: func(v vec) string {
			return fmt.Sprintf("%g / %g", last(v, "up"), last(v, "configured"))
		}},
		{id: 3, x: 6, y: 0, w: 6, h: 4, stat: true, data: rsDown, statFmt: func(v vec) string { return fmt.Sprintf("%g", last(v, "down")) }},
		{id: 4, x: 12, y: 0, w: 6, h: 4, stat: true, data: st.gauge("ipvs_agent_config_last_reload_successful", nil, fixed("ok")),
			statFmt: func(v vec) string {
				if last(v, "ok") == 1 {
					return "OK"
				}
				return "FAILED"
			}},
		{id: 5, x: 18, y: 0, w: 6, h: 4, stat: true, note: "increase over the run",
			data: st.gauge("ipvs_agent_kernel_write_errors_total", nil, fixed("errors")),
			statFmt: func(v vec) string {
				x := v["errors"]
				if len(x) == 0 {
					return "0"
				}
				return fmt.Sprintf("%g", x[len(x)-1]-x[0])
			}},
		{id: 6, x: 0, y: 4, w: 12, h: 8, unit: "seconds", data: st.p99("ipvs_agent_reconcile_duration_seconds", "reason")},
		{id: 7, x: 12, y: 4, w: 12, h: 8, unit: "writes/s", data: merge(
			st.rateSum("ipvs_agent_kernel_writes_total", nil, by("reason")),
			st.rateSum("ipvs_agent_kernel_write_errors_total", nil, fixed("errors")))},
		{id: 9, x: 0, y: 12, w: 8, h: 8, unit: "checks/s", data: merge(
			st.gauge("ipvs_agent_checks_configured_per_second", nil, fixed("configured")),
			st.rateSum("ipvs_agent_checks_total", nil, fixed("done")),
			st.rateSum("ipvs_agent_checks_late_total", nil, fixed("late")))},
		{id: 10, x: 8, y: 12, w: 8, h: 8, unit: "seconds", data: st.p99("ipvs_agent_check_duration_seconds", "type")},
		{id: 11, x: 16, y: 12, w: 8, h: 8, unit: "failures/s", data: st.rateSum("ipvs_agent_check_failures_total", nil, by("type", "reason"))},
		{id: 13, x: 0, y: 20, w: 12, h: 8, unit: "connections/s", data: st.rateSum("ipvs_agent_virtual_server_connections_total", nil, by("virtual_server"))},
		{id: 14, x: 12, y: 20, w: 12, h: 8, unit: "bytes/s", data: st.rateSum("ipvs_agent_virtual_server_bytes_total", map[string]string{"direction": "in"}, by("virtual_server"))},
		{id: 15, x: 0, y: 28, w: 12, h: 9, unit: "connections/s", data: st.rateSum("ipvs_agent_real_server_connections_total", nil, vsRS)},
		{id: 18, x: 12, y: 28, w: 12, h: 9, unit: "weight", note: "the table's desired weight column over time; down = 0",
			data: st.gauge("ipvs_agent_real_server_weight", map[string]string{"kind": "desired"}, vsRS)},
	}
	for i := range panels {
		panels[i].title = titles[panels[i].id]
	}
	dir, err := os.MkdirTemp("", "dashboard-preview")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	script, err := gnuplotScript(st, panels, dir, out)
	if err != nil {
		return err
	}
	sp := filepath.Join(dir, "plot.gp")
	if err := os.WriteFile(sp, []byte(script), 0o644); err != nil {
		return err
	}
	cmd := exec.Command("gnuplot", sp)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gnuplot (apt-get install gnuplot-nox): %w", err)
	}
	return nil
}

func panelTitles(path string) (map[int]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []struct {
			ID    int
			Title string
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[int]string{}
	for _, p := range d.Panels {
		out[p.ID] = p.Title
	}
	return out, nil
}

var palette = []string{"#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#FADE2A", "#37872D", "#C4162A"}

const (
	width, rowPx, headPx = 1600, 34, 56
	gridRows             = 37
)

// gnuplotScript writes each panel's data to dir and returns the script that
// draws them all into one PNG, placed like the dashboard's grid (dark theme).
func gnuplotScript(st *store, panels []panel, dir, out string) (string, error) {
	height := headPx + gridRows*rowPx
	sx := func(col int) float64 { return float64(col) / 24 }
	sy := func(row int) float64 { return 1 - float64(headPx+row*rowPx)/float64(height) }
	px := func(n int) float64 { return float64(n) / float64(height) }
	pw := func(n int) float64 { return float64(n) / float64(width) }
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }
	abs, err := filepath.Abs(out)
	if err != nil {
		return "", err
	}
	w(`set terminal pngcairo size %d,%d background rgb "#111217" font "DejaVu Sans,9"`, width, height)
	w(`set output %q`, abs)
	w(`set datafile missing "NaN"`)
	w(`set xdata time; set timefmt "%%s"; set format x "%%H:%%M:%%S"`)
	w(`set border 3 lc rgb "#3a3d44"; set tics nomirror textcolor rgb "#b0b4bb"; set grid lc rgb "#25282e" lw 1`)
	w(`set multiplot`)
	first, lastT := st.times[0], st.times[len(st.times)-1]
	w(`set label 1 "ipvs-agent" at screen %f,%f left font "DejaVu Sans,15" textcolor rgb "#e0e2e6"`, pw(12), 1-px(24))
	w(`set label 2 "Not Grafana: contrib/grafana/preview evaluated the dashboard's queries (rates over 10 s) over /metrics scraped every 2 s from the agent in the VM run of TestMetricsTimeline, %s-%s UTC, and drew them with gnuplot." at screen %f,%f left font "DejaVu Sans,9" textcolor rgb "#9a9ea6"`,
		first.Format("2006-01-02 15:04:05"), lastT.Format("15:04:05"), pw(130), 1-px(18))
	w(`set label 3 "TestMetricsTimeline: new TCP connections paced at 20/s to web 192.0.2.91:80 and 10/s to api 192.0.2.91:8080. web's 198.18.0.12:80 stopped at +20 s and started at +40 s (slow start 10 s); api's weights 3,2,1 reloaded as 1,2,3 at +50 s." at screen %f,%f left font "DejaVu Sans,9" textcolor rgb "#9a9ea6"`, pw(130), 1-px(34))
	w(`unset key; unset border; unset tics; unset grid`)
	w(`plot [0:1][0:1] NaN notitle`)
	w(`unset label; set border 3; set tics; set grid`)
	for pi, p := range panels {
		x0, x1 := sx(p.x)+pw(4), sx(p.x+p.w)-pw(4)
		y1, y0 := sy(p.y)-px(4), sy(p.y+p.h)+px(4)
		w(`set object 1 rect from screen %f,%f to screen %f,%f behind fc rgb "#181b1f" fs solid border lc rgb "#2a2d33"`, x0, y0, x1, y1)
		title := p.title
		if p.note != "" {
			title += "  (" + p.note + ")"
		}
		w(`set label 1 %q at screen %f,%f left font "DejaVu Sans,10" textcolor rgb "#d8d9da"`, title, x0+pw(8), y1-px(14))
		keys := make([]string, 0, len(p.data))
		for k := range p.data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		file := filepath.Join(dir, fmt.Sprintf("p%d.dat", pi))
		var d strings.Builder
		for i, t := range st.times {
			fmt.Fprintf(&d, "%d", t.Unix())
			for _, k := range keys {
				fmt.Fprintf(&d, " %g", p.data[k][i])
			}
			d.WriteString("\n")
		}
		if err := os.WriteFile(file, []byte(d.String()), 0o644); err != nil {
			return "", err
		}
		xr := fmt.Sprintf(`["%d":"%d"]`, first.Unix(), lastT.Unix())
		if p.stat {
			w(`set label 2 %q at screen %f,%f center font "DejaVu Sans Bold,26" textcolor rgb "#73BF69" front`,
				p.statFmt(p.data), (x0+x1)/2, (y0+y1)/2+px(4))
			w(`unset border; unset tics; unset grid; unset key`)
			w(`set lmargin at screen %f; set rmargin at screen %f; set tmargin at screen %f; set bmargin at screen %f`, x0+pw(2), x1-pw(2), y1-px(70), y0+px(2))
			if len(keys) == 0 {
				w(`plot %s[0:1] NaN notitle`, xr)
			} else {
				w(`plot %s[0:] %q using 1:2 with filledcurves y1=0 fc rgb "#1f3a24" fs solid notitle`, xr, file)
			}
			w(`set border 3; set tics; set grid; unset label 2`)
		} else {
			bottom := 44 // room for the tic labels and a one-row legend
			if len(keys) > 3 {
				bottom = 58
			}
			w(`set lmargin at screen %f; set rmargin at screen %f; set tmargin at screen %f; set bmargin at screen %f`, x0+pw(62), x1-pw(30), y1-px(26), y0+px(bottom))
			w(`set ylabel %q textcolor rgb "#9a9ea6" offset 1,0`, p.unit)
			w(`set xtics 10; set mxtics 1; set ytics %g`, niceStep(p.data))
			w(`set key at screen %f,%f left bottom horizontal textcolor rgb "#c7c9cc" reverse Left samplen 1.5 width 2 maxrows 2`, x0+pw(8), y0+px(2))
			if len(keys) == 0 {
				w(`unset key; set label 2 "No data (nothing of this kind happened in the run)" at screen %f,%f center textcolor rgb "#9a9ea6"`, (x0+x1)/2, (y0+y1)/2)
				w(`plot %s[0:1] NaN notitle`, xr)
				w(`unset label 2`)
			} else {
				var plots []string
				for i, k := range keys {
					plots = append(plots, fmt.Sprintf(`%q using 1:%d with linespoints pt 7 ps 0.35 lw 1.6 lc rgb %q title %q`, file, i+2, palette[i%len(palette)], k))
				}
				w(`plot %s[0:*] %s`, xr, strings.Join(plots, ", \\\n  "))
			}
			w(`unset ylabel`)
		}
		w(`unset object 1; unset label 1`)
	}
	w(`unset multiplot`)
	return b.String(), nil
}

// niceStep is a 1-2-5 y tic step giving about five tics up to the data's maximum.
func niceStep(v vec) float64 {
	hi := 0.0
	for _, x := range v {
		for _, y := range x {
			if !math.IsNaN(y) && y > hi {
				hi = y
			}
		}
	}
	if hi == 0 {
		return 0.2
	}
	raw := hi / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}
