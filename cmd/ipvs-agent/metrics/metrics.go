// Package metrics exports the agent's state to Prometheus. It lives at the
// edge: the agent calls Observer methods (counters and a histogram, no I/O)
// from its loop, and a scrape reads a snapshot (the agent's View, the
// scheduler's counters, one read of the kernel's counters on the edges'
// own netlink socket). Names: ipvs_agent_ prefix, base units, _total for
// counters, _seconds for time; labels are bounded (virtual server names and
// real server addresses from the file, check types, fixed reason classes).
// docs/metrics.md lists every metric and counts the series.
package metrics

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// Reasons a reconcile runs for: the label values of the reconcile metrics.
var reasons = []string{"start", "reload", "resync", "health"}

// Observer counts reconciles and reloads as the agent makes them; it is the
// agent.Observer the daemon hands to agent.New.
type Observer struct {
	duration    *prometheus.HistogramVec
	writes      *prometheus.CounterVec
	writeErrors *prometheus.CounterVec
	reloads     *prometheus.CounterVec
	lastOK      prometheus.Gauge
	lastOKTime  prometheus.Gauge
}

// NewObserver registers the agent's event metrics on reg.
func NewObserver(reg prometheus.Registerer) *Observer {
	o := &Observer{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ipvs_agent_reconcile_duration_seconds",
			Help:    "Time a reconcile took (plan and kernel writes; start, reload and resync also read the kernel), by reason.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"reason"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipvs_agent_kernel_writes_total",
			Help: "Kernel IPVS writes attempted, by the reconcile's reason (resync: drift repairs).",
		}, []string{"reason"}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipvs_agent_kernel_write_errors_total",
			Help: "Kernel IPVS writes that failed, by the reconcile's reason.",
		}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipvs_agent_config_reloads_total",
			Help: "Configuration reloads, by result (failure: the file was refused, nothing changed).",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ipvs_agent_config_last_reload_successful",
			Help: "1 if the last reload took its file (or none happened since start), 0 if it was refused.",
		}),
		lastOKTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ipvs_agent_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully (start or reload), Unix time.",
		}),
	}
	for _, r := range reasons {
		o.duration.WithLabelValues(r)
		o.writes.WithLabelValues(r)
		o.writeErrors.WithLabelValues(r)
	}
	o.reloads.WithLabelValues("success")
	o.reloads.WithLabelValues("failure")
	o.lastOK.Set(1)
	o.lastOKTime.Set(float64(time.Now().UnixNano()) / 1e9)
	reg.MustRegister(o.duration, o.writes, o.writeErrors, o.reloads, o.lastOK, o.lastOKTime)
	return o
}

// Reconciled implements agent.Observer.
func (o *Observer) Reconciled(r agent.ReconcileResult) {
	o.duration.WithLabelValues(r.Reason).Observe(r.Duration.Seconds())
	o.writes.WithLabelValues(r.Reason).Add(float64(r.Writes))
	o.writeErrors.WithLabelValues(r.Reason).Add(float64(r.Errors))
}

// Reloaded implements agent.Observer.
func (o *Observer) Reloaded(r agent.ReloadResult) {
	if !r.OK {
		o.reloads.WithLabelValues("failure").Inc()
		o.lastOK.Set(0)
		return
	}
	o.reloads.WithLabelValues("success").Inc()
	o.lastOK.Set(1)
	o.lastOKTime.Set(float64(r.Time.UnixNano()) / 1e9)
}

// Snapshot is what one scrape reads.
type Snapshot struct {
	View      *agent.View
	Stats     health.Stats
	Kernel    []kernel.ServiceStats // nil when unreadable
	KernelErr error
	// RealServers: export the per-real-server series (metrics_real_servers).
	RealServers bool
	// Yield, optional, is called between virtual servers while the metrics
	// are built: it waits while the agent reloads.
	Yield func()
}

// Collector turns a Snapshot into metrics at scrape time.
type Collector struct {
	snap    func() Snapshot
	version string
}

// NewCollector makes the scrape-time collector; snap takes the snapshot.
func NewCollector(version string, snap func() Snapshot) *Collector {
	return &Collector{snap: snap, version: version}
}

var (
	dBuild    = prometheus.NewDesc("ipvs_agent_build_info", "Build information; the value is 1.", []string{"version", "goversion"}, nil)
	dKernelOK = prometheus.NewDesc("ipvs_agent_kernel_read_ok", "1 if this scrape read the kernel's IPVS counters, 0 if not (the kernel metrics are then absent).", nil, nil)
	dOwned    = prometheus.NewDesc("ipvs_agent_owned_virtual_servers", "Virtual servers the state file says the agent owns.", nil, nil)
	dConflict = prometheus.NewDesc("ipvs_agent_conflicting_virtual_servers", "Configured virtual servers that exist in the kernel and are not the agent's (left untouched).", nil, nil)

	dChecks     = prometheus.NewDesc("ipvs_agent_checks_total", "Health probes completed.", nil, nil)
	dLate       = prometheus.NewDesc("ipvs_agent_checks_late_total", "Health probes started more than 500ms after they were due (the scheduler is behind).", nil, nil)
	dSaturated  = prometheus.NewDesc("ipvs_agent_checks_saturated_total", "Times a due probe waited for a free in-flight slot (max_checks_in_flight).", nil, nil)
	dMaxLag     = prometheus.NewDesc("ipvs_agent_check_max_lag_seconds", "Worst start delay of a health probe since start.", nil, nil)
	dInFlight   = prometheus.NewDesc("ipvs_agent_checks_in_flight", "Health probes running now.", nil, nil)
	dConfigured = prometheus.NewDesc("ipvs_agent_checks_configured_per_second", "Health probes per second the configuration asks for (sum of 1/interval over check IDs).", nil, nil)
	dProbes     = prometheus.NewDesc("ipvs_agent_check_probes", "Distinct health probes (identical checks run once).", nil, nil)
	dNotifyDrop = prometheus.NewDesc("ipvs_agent_notify_dropped_total", "Notify commands not run because their queue was full.", nil, nil)
	dDuration   = prometheus.NewDesc("ipvs_agent_check_duration_seconds", "Health probe duration, by check type.", []string{"type"}, nil)
	dFailures   = prometheus.NewDesc("ipvs_agent_check_failures_total", "Failed health probes, by check type and reason class (timeout refused unreachable reset response down drain error).", []string{"type", "reason"}, nil)

	vsLabels   = []string{"virtual_server"}
	dVSUp      = prometheus.NewDesc("ipvs_agent_virtual_server_up", "1 if the virtual server has its quorum and a healthy real server (what `ipvs-agent status -quorum` exits 0 on), else 0.", vsLabels, nil)
	dVSHealthy = prometheus.NewDesc("ipvs_agent_virtual_server_healthy_real_servers", "Real servers up (or without a verdict yet).", vsLabels, nil)
	dVSQuorum  = prometheus.NewDesc("ipvs_agent_virtual_server_quorum", "The quorum key (0: none).", vsLabels, nil)
	dVSConns   = prometheus.NewDesc("ipvs_agent_virtual_server_connections_total", "Connections the kernel scheduled for the virtual server.", vsLabels, nil)
	dVSPackets = prometheus.NewDesc("ipvs_agent_virtual_server_packets_total", "Packets through the virtual server, by direction (in: from clients).", []string{"virtual_server", "direction"}, nil)
	dVSBytes   = prometheus.NewDesc("ipvs_agent_virtual_server_bytes_total", "Bytes through the virtual server, by direction.", []string{"virtual_server", "direction"}, nil)

	rsLabels   = []string{"virtual_server", "real_server"}
	dRSUp      = prometheus.NewDesc("ipvs_agent_real_server_up", "1 if the real server is up (or has no check, or no verdict yet), 0 if down or drained.", rsLabels, nil)
	dRSWeight  = prometheus.NewDesc("ipvs_agent_real_server_weight", "Real server weight: configured (the file) or desired (what the agent sets after health, slow start, agent and weight_file).", []string{"virtual_server", "real_server", "kind"}, nil)
	dRSConns   = prometheus.NewDesc("ipvs_agent_real_server_connections_total", "Connections the kernel scheduled to the real server.", rsLabels, nil)
	dRSPackets = prometheus.NewDesc("ipvs_agent_real_server_packets_total", "Packets to and from the real server through the director, by direction.", []string{"virtual_server", "real_server", "direction"}, nil)
	dRSBytes   = prometheus.NewDesc("ipvs_agent_real_server_bytes_total", "Bytes to and from the real server through the director, by direction.", []string{"virtual_server", "real_server", "direction"}, nil)
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dBuild, dKernelOK, dOwned, dConflict, dChecks, dLate, dSaturated, dMaxLag, dInFlight,
		dConfigured, dProbes, dNotifyDrop, dDuration, dFailures, dVSUp, dVSHealthy, dVSQuorum, dVSConns, dVSPackets, dVSBytes,
		dRSUp, dRSWeight, dRSConns, dRSPackets, dRSBytes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge(dBuild, 1, c.version, runtime.Version())
	kernelOK := 0.0
	if s.Kernel != nil && s.KernelErr == nil {
		kernelOK = 1
	}
	gauge(dKernelOK, kernelOK)

	st := s.Stats
	counter(dChecks, float64(st.Checks))
	counter(dLate, float64(st.Late))
	counter(dSaturated, float64(st.Saturated))
	gauge(dMaxLag, st.MaxLag.Seconds())
	gauge(dInFlight, float64(st.InFlight))
	gauge(dProbes, float64(st.Runners))
	counter(dNotifyDrop, float64(st.NotifyDropped))
	for _, p := range st.Probes {
		buckets := make(map[float64]uint64, len(health.ProbeBuckets))
		var cum uint64
		for i, ub := range health.ProbeBuckets {
			cum += p.Buckets[i]
			buckets[ub.Seconds()] = cum
		}
		ch <- prometheus.MustNewConstHistogram(dDuration, p.Count, p.Sum.Seconds(), buckets, p.Type)
		for i, n := range p.Failures {
			if n > 0 {
				counter(dFailures, float64(n), p.Type, health.FailureClasses[i])
			}
		}
	}

	v := s.View
	if v == nil || v.Config == nil {
		return
	}
	gauge(dOwned, float64(len(v.Owned)))
	gauge(dConflict, float64(len(v.Conflicts)))
	perSecond := 0.0
	kern := map[model.ServiceKey]*kernel.ServiceStats{}
	for i := range s.Kernel {
		kern[s.Kernel[i].Service.Key] = &s.Kernel[i]
	}
	for i := range v.Config.VirtualServers {
		if s.Yield != nil && i%100 == 0 {
			s.Yield()
		}
		vs := &v.Config.VirtualServers[i]
		name := vs.Name
		healthy := v.Healthy[name]
		up := 0.0
		if !v.QuorumLost[name] && healthy > 0 && v.Owned[vs.Service.Key] {
			up = 1
		}
		gauge(dVSUp, up, name)
		gauge(dVSHealthy, float64(healthy), name)
		gauge(dVSQuorum, float64(vs.Quorum), name)
		ks := kern[vs.Service.Key]
		if ks != nil && v.Owned[vs.Service.Key] {
			counter(dVSConns, float64(ks.Counters.Conns), name)
			counter(dVSPackets, float64(ks.Counters.PktsIn), name, "in")
			counter(dVSPackets, float64(ks.Counters.PktsOut), name, "out")
			counter(dVSBytes, float64(ks.Counters.BytesIn), name, "in")
			counter(dVSBytes, float64(ks.Counters.BytesOut), name, "out")
		}
		var kd map[model.DestKey]*kernel.DestStats
		if ks != nil && v.Owned[vs.Service.Key] {
			kd = make(map[model.DestKey]*kernel.DestStats, len(ks.Dests))
			for j := range ks.Dests {
				kd[ks.Dests[j].Dest.Key] = &ks.Dests[j]
			}
		}
		desired := v.Desired[vs.Service.Key]
		for j := range vs.RealServers {
			rs := &vs.RealServers[j]
			if rs.Check != nil && rs.Check.Interval > 0 {
				perSecond += 1 / rs.Check.Interval.Seconds()
			}
			if !s.RealServers {
				continue
			}
			addr := rs.Dest.Key.String()
			rsUp := 1.0
			if rs.Check != nil {
				if st, ok := v.Statuses[agent.CheckID(vs, rs)]; ok && (st.State == health.Down || st.State == health.Drain) {
					rsUp = 0
				}
			}
			gauge(dRSUp, rsUp, name, addr)
			gauge(dRSWeight, float64(rs.Dest.Weight), name, addr, "configured")
			if desired != nil {
				if d, ok := desired.Dests[rs.Dest.Key]; ok {
					gauge(dRSWeight, float64(d.Weight), name, addr, "desired")
				} else {
					gauge(dRSWeight, 0, name, addr, "desired") // removed (on_failure = remove)
				}
			}
			if d := kd[rs.Dest.Key]; d != nil {
				counter(dRSConns, float64(d.Counters.Conns), name, addr)
				counter(dRSPackets, float64(d.Counters.PktsIn), name, addr, "in")
				counter(dRSPackets, float64(d.Counters.PktsOut), name, addr, "out")
				counter(dRSBytes, float64(d.Counters.BytesIn), name, addr, "in")
				counter(dRSBytes, float64(d.Counters.BytesOut), name, addr, "out")
			}
		}
	}
	gauge(dConfigured, perSecond)
}
