package config

import (
	"net"
	"path/filepath"
	"strconv"
)

// controlKeys validates the [agent] keys of the edges: the control socket
// and the metrics endpoint. The group is looked up when the socket is
// made, not here: `check` on a build machine need not have it.
func (v *validator) controlKeys(raw *rawFile, cfg *Config) {
	cfg.StatusSocket = DefaultStatusSocket
	if s := raw.Agent.StatusSocket; s != nil {
		if *s != "" && !filepath.IsAbs(*s) {
			v.problem("agent.status_socket", "status_socket must be an absolute path (or \"\" for none), got %q", *s)
		}
		cfg.StatusSocket = *s
	}
	cfg.StatusGroup = raw.Agent.StatusGroup
	cfg.MetricsRealServers = raw.Agent.MetricsRS != nil && *raw.Agent.MetricsRS
	if m := raw.Agent.MetricsListen; m != "" {
		host, port, err := net.SplitHostPort(m)
		if err != nil {
			v.problem("agent.metrics_listen", "metrics_listen must be \"host:port\" (e.g. \"127.0.0.1:9587\"): %v", err)
		} else if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			v.problem("agent.metrics_listen", "metrics_listen %q: port must be 1..65535", m)
		} else if host != "" && net.ParseIP(host) == nil {
			v.problem("agent.metrics_listen", "metrics_listen %q: host must be an IP address (a name could resolve to more than one)", m)
		}
		cfg.MetricsListen = m
	}
}
