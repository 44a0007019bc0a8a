package config

import (
	"strings"
	"testing"
)

func TestControlKeys(t *testing.T) {
	cfg, err := Parse("f.toml", "[agent]\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StatusSocket != DefaultStatusSocket || cfg.StatusGroup != "" || cfg.MetricsListen != "" || cfg.MetricsRealServers {
		t.Fatalf("defaults: %q %q %q", cfg.StatusSocket, cfg.StatusGroup, cfg.MetricsListen)
	}
	cfg, err = Parse("f.toml", "[agent]\nstatus_socket = \"\"\nstatus_group = \"adm\"\nmetrics_listen = \"[::1]:9587\"\nmetrics_real_servers = true\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StatusSocket != "" || cfg.StatusGroup != "adm" || cfg.MetricsListen != "[::1]:9587" || !cfg.MetricsRealServers {
		t.Fatalf("set: %q %q %q", cfg.StatusSocket, cfg.StatusGroup, cfg.MetricsListen)
	}
	for src, want := range map[string]string{
		"[agent]\nstatus_socket = \"run/x.sock\"\n":      "f.toml:2:1: status_socket must be an absolute path",
		"[agent]\nmetrics_listen = \"9587\"\n":           "f.toml:2:1: metrics_listen must be \"host:port\"",
		"[agent]\nmetrics_listen = \"127.0.0.1:0\"\n":    "f.toml:2:1: metrics_listen \"127.0.0.1:0\": port must be 1..65535",
		"[agent]\nmetrics_listen = \"localhost:9587\"\n": "f.toml:2:1: metrics_listen \"localhost:9587\": host must be an IP address",
	} {
		_, err := Parse("f.toml", src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", src, err, want)
		}
	}
}
