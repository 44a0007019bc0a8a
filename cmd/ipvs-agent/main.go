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
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/settings"
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
  ipvs-agent diff [-c FILE]     the kernel writes a reload to FILE would make, applied nowhere
                                (exit 0 none, 1 some, 2 bad file or agent/kernel unreadable)
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
	case "diff":
		return runDiff(args, stdout, stderr)
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
	var (
		ctx context.Context
		hup chan os.Signal
	)
	if cmd == "run" {
		// Signals first: without a handler SIGHUP's default action kills
		// the process (exit 129), so a reload sent while a large file
		// parses at start-up killed the daemon. A SIGHUP from now on is
		// a reload after start-up; SIGTERM stops at the first chance.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
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
	if ctx.Err() != nil {
		log.Info("stopped during start-up")
		return 0
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
	// The settings ([agent.kernel]) are not worth refusing to program the
	// table for: without them the agent runs and says why, at every start.
	var sysctls settings.Kernel
	if p, err := settings.Open(); err != nil {
		log.Error("kernel IPVS settings will not be kept", "err", err)
	} else {
		defer p.Close()
		sysctls = p
	}
	// The scheduler is made here rather than by agent.New so the edges
	// can read its counters; its verdicts go to the agent.
	var a *agent.Agent
	sched := health.NewScheduler(health.Options{Logger: log, MaxInFlight: cfg.MaxChecksInFlight,
		OnChange: func(st health.Status) { a.OnHealth(st) }})
	m := newMetrics(cfg)
	a, err = agent.New(cfg, agent.Options{Logger: log, Kernels: kernels, Settings: sysctls, Notifier: agent.Systemd{}, Health: sched, Observer: m.observer()})
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}

	// The edges (control socket, metrics) stop before Run's deferred
	// cleanup finishes: their context ends with the signal's or at return.
	ectx, estop := context.WithCancel(ctx)
	stats, closeStats := openStatsReader(ectx, log)
	defer closeStats()
	edges, err := startEdges(ectx, log, cfg, a, sched, stats, m)
	if err != nil {
		estop()
		log.Error("start failed", "err", err)
		return 1
	}
	defer edges.wait()
	defer estop() // stop the edges before waiting for them
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
	finished := make(chan struct{})
	defer close(finished)
	go boundStop(ctx, finished, log)
	if err := a.Run(ctx, reload); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// stopBound is how long the agent may take to stop after SIGTERM. Run
// stops a running apply between two kernel writes, so it normally returns
// in milliseconds; this bounds the rest (a kernel call stuck in netlink,
// cleanup_on_exit deleting thousands of services). It stays well under the
// unit's TimeoutStopSec (30 s), so systemd never has to SIGKILL the agent.
// The kernel table is consistent at any point: the ownership record is
// written before a service is created.
const stopBound = 10 * time.Second

func boundStop(ctx context.Context, finished <-chan struct{}, log *slog.Logger) {
	select {
	case <-finished:
		return
	case <-ctx.Done():
	}
	select {
	case <-finished:
	case <-time.After(stopBound):
		log.Error("did not stop in time; exiting with the kernel table as it is", "bound", stopBound.String())
		os.Exit(1)
	}
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
