// Package report builds the status document `ipvs-agent status` shows and
// `GET /v1/status` serves, from a snapshot: the agent's View, the health
// scheduler's statuses and counters, and one read of the kernel's table
// with its counters. It is pure (the inputs carry the time), so the table
// and the JSON have golden tests. The JSON schema is docs/status.md; it
// only grows (new fields), and "schema" changes when a field changes
// meaning or goes away.
package report

import "time"

// Schema is the version of the JSON document.
const Schema = 1

// Doc is the status document.
type Doc struct {
	Schema         int             `json:"schema"`
	Time           time.Time       `json:"time"`
	Agent          Agent           `json:"agent"`
	VirtualServers []VirtualServer `json:"virtual_servers"`
}

// Agent is the agent-wide part.
type Agent struct {
	Running bool `json:"running"`
	// Error says why the agent could not be asked (Running false).
	Error         string     `json:"error,omitempty"`
	Version       string     `json:"version,omitempty"`
	PID           int        `json:"pid,omitempty"`
	Started       *time.Time `json:"started,omitempty"`
	Config        string     `json:"config,omitempty"`
	ConfigSHA256  string     `json:"config_sha256,omitempty"`
	StateFile     string     `json:"state_file,omitempty"`
	LastReload    *Reload    `json:"last_reload"`
	LastReconcile *Reconcile `json:"last_reconcile"`
	Checks        *Checks    `json:"checks"`
	// KernelError is why the kernel's table (and its counters) could not
	// be read; the rest of the document is the agent's view only.
	KernelError string `json:"kernel_error,omitempty"`
}

// Reload is the last reload (SIGHUP or `ipvs-agent reload`).
type Reload struct {
	Time      time.Time `json:"time"`
	OK        bool      `json:"ok"`
	Unchanged bool      `json:"unchanged"`
	Writes    int       `json:"writes"`
	Errors    int       `json:"errors"`
	Problems  []string  `json:"problems,omitempty"`
	Error     string    `json:"error,omitempty"`
	Seconds   float64   `json:"duration_seconds"`
}

// Reconcile is the last reconcile of any reason (start, reload, resync,
// health).
type Reconcile struct {
	Time    time.Time `json:"time"`
	Reason  string    `json:"reason"`
	Writes  int       `json:"writes"`
	Errors  int       `json:"errors"`
	Seconds float64   `json:"duration_seconds"`
}

// Checks is the health checks' load.
type Checks struct {
	Configured int `json:"configured"` // check IDs (real servers with a check)
	Probes     int `json:"probes"`     // distinct probes after dedupe
	// ConfiguredPerSecond is Σ 1/interval over the distinct probes
	// (approximated per check ID when the scheduler does not say);
	// DonePerSecond is measured over the last sampling period.
	ConfiguredPerSecond float64 `json:"configured_per_second"`
	DonePerSecond       float64 `json:"done_per_second"`
	DoneTotal           uint64  `json:"done_total"`
	LateTotal           uint64  `json:"late_total"`
	SaturatedTotal      uint64  `json:"saturated_total"`
	MaxLagSeconds       float64 `json:"max_lag_seconds"`
	InFlight            int     `json:"in_flight"`
}

// VirtualServer is one configured virtual server (or, with the agent not
// running, one the state file lists).
type VirtualServer struct {
	Name      string `json:"name"`
	Service   string `json:"service"` // "tcp 192.0.2.10:80", "fwmark 10 inet"
	Scheduler string `json:"scheduler"`
	Flags     string `json:"flags,omitempty"` // "persistent 300", "ops", "sh-port"...
	// Ownership: "owned" (in the state file), "conflict" (in the kernel,
	// not ours, left alone), "pending" (not in the kernel yet), "adopt"
	// (adopt = true, being taken over).
	Ownership   string         `json:"ownership"`
	Quorum      Quorum         `json:"quorum"`
	Kernel      *ServiceKernel `json:"kernel"`
	RealServers []RealServer   `json:"real_servers"`
}

// Quorum is the virtual server's health as a whole.
type Quorum struct {
	Required int  `json:"required"` // the quorum key; 0 = none
	Healthy  int  `json:"healthy"`  // up, or no verdict yet
	OK       bool `json:"ok"`       // healthy >= required
}

// RealServer is one real server: configured, draining, or the sorry server.
type RealServer struct {
	Address string `json:"address"`
	// Role: "real" (configured), "sorry" (the sorry server), "draining"
	// (removed from the file, waiting for its connections to end).
	Role       string   `json:"role"`
	Forwarding string   `json:"forwarding"`
	Weight     Weight   `json:"weight"`
	Why        []string `json:"why"`
	Health     *Health  `json:"health"`
	Kernel     *Kernel  `json:"kernel"`
}

// Weight compares what the file says, what the agent wants and what the
// kernel has. Desired is -1 when the agent keeps the kernel's weight (no
// verdict yet) and Kernel is -1 when the real server is not in the kernel.
type Weight struct {
	Configured int `json:"configured"`
	Desired    int `json:"desired"`
	Kernel     int `json:"kernel"`
}

// Health is a real server's check.
type Health struct {
	Type   string     `json:"type"`
	State  string     `json:"state"`           // unknown, up, down, drain
	Since  *time.Time `json:"since,omitempty"` // absent with state unknown
	Reason string     `json:"reason"`
	// The last probe; absent before the first result.
	LastCheck                *time.Time `json:"last_check,omitempty"`
	LastOK                   bool       `json:"last_ok"`
	LastResult               string     `json:"last_result,omitempty"`
	LatencySeconds           float64    `json:"latency_seconds"`
	IntervalSeconds          float64    `json:"interval_seconds"`
	EffectiveIntervalSeconds float64    `json:"effective_interval_seconds"`
}

// Counters are the kernel's traffic counters (ipvsadm -Ln --stats --rate):
// totals since the object was created (connections and packets are 32-bit
// in the kernel's netlink reply and wrap) and the kernel's rate estimates.
type Counters struct {
	ConnectionsTotal uint64 `json:"connections_total"`
	PacketsInTotal   uint64 `json:"packets_in_total"`
	PacketsOutTotal  uint64 `json:"packets_out_total"`
	BytesInTotal     uint64 `json:"bytes_in_total"`
	BytesOutTotal    uint64 `json:"bytes_out_total"`
	CPS              uint64 `json:"connections_per_second"`
	PPSIn            uint64 `json:"packets_in_per_second"`
	PPSOut           uint64 `json:"packets_out_per_second"`
	BPSIn            uint64 `json:"bytes_in_per_second"`
	BPSOut           uint64 `json:"bytes_out_per_second"`
}

// ServiceKernel is what the kernel holds for a virtual server.
type ServiceKernel struct {
	Present bool `json:"present"`
	Counters
}

// Kernel is what the kernel holds for a real server.
type Kernel struct {
	Present             bool   `json:"present"`
	Weight              int    `json:"weight"`
	ActiveConnections   uint32 `json:"active_connections"`
	InactiveConnections uint32 `json:"inactive_connections"`
	Counters
}
