// Command ipvs-agent keeps the kernel's IPVS table equal to
// /etc/ipvs-agent.toml. This file parses flags and wires the pieces; the
// work happens in package agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/health"
	"github.com/sirupsen/logrus"
)

// version is set at build time (-ldflags -X main.version=...).
var version = "dev"

const defaultConfig = "/etc/ipvs-agent.toml"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `usage:
  ipvs-agent check [-c FILE]    validate the configuration (exit 1 with every problem)
  ipvs-agent run   [-c FILE] [-log-format text|json] [-log-level debug|info|warn|error] [-handles N]
  ipvs-agent reload [-c FILE] [-socket PATH]   reload the running agent, wait until applied
                                (exit 1 with every problem when the file is bad, 2 when not running)
  ipvs-agent status [NAME] [-json] [-quorum] [-c FILE] [-socket PATH]
                                what the agent believes and the kernel does (exit 2 when not running;
                                -quorum NAME: exit 0 when NAME has quorum, for a VRRP track script)
  ipvs-agent version
The default FILE is %s.
`, defaultConfig)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "reload":
		return runReload(args, stdout, stderr)
	case "status":
		return runStatus(args, stdout, stderr)
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", defaultConfig, "configuration file")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	handles := fs.Int("handles", 2, "netlink sockets used in parallel to program the kernel")
	switch cmd {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "ipvs-agent", version)
		return 0
	case "check", "run":
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "ipvs-agent: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if cmd == "check" {
		fmt.Fprintf(stdout, "%s: ok (%d virtual servers)\n", *cfgPath, len(cfg.VirtualServers))
		return 0
	}

	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "ipvs-agent:", err)
		return 2
	}
	// moby/ipvs runs `modprobe ip_vs` when a handle opens and logs its
	// failure through logrus. Under the unit (ProtectKernelModules=yes) that
	// always fails and means nothing: kernel.Open already checked that ip_vs
	// is loaded (modules-load.d loads it at boot). Keep logrus's errors only.
	logrus.SetLevel(logrus.ErrorLevel)
	if *handles < 1 {
		*handles = 1
	}
	var kernels []kernel.IPVS
	for i := 0; i < *handles; i++ {
		k, err := kernel.Open()
		if err != nil {
			log.Error("cannot program IPVS", "err", err)
			return 1
		}
		defer k.Close()
		kernels = append(kernels, k)
	}
	// The scheduler is made here rather than by agent.New so the edges
	// can read its counters; its verdicts go to the agent.
	var a *agent.Agent
	sched := health.NewScheduler(health.Options{Logger: log, MaxInFlight: cfg.MaxChecksInFlight,
		OnChange: func(st health.Status) { a.OnHealth(st) }})
	a, err = agent.New(cfg, agent.Options{Logger: log, Kernels: kernels, Notifier: agent.Systemd{}, Health: sched})
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	stats, closeStats := openStatsReader(ctx, log)
	defer closeStats()
	edges, err := startEdges(ctx, log, cfg, a, sched, stats)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	defer edges.wait()
	defer stop() // stop the edges before waiting for them
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default: // a reload is already pending; it will read the newest file
			}
		}
	}()
	log.Info("starting", "version", version, "config", *cfgPath, "pid", os.Getpid())
	if err := a.Run(ctx, reload); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad -log-level %q", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if f, ok := w.(*os.File); ok && underJournald(f) {
		h, err := newJournalHandler(w, format, opts)
		if err != nil {
			return nil, err
		}
		return slog.New(h), nil
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("bad -log-format %q (text or json)", format)
}
