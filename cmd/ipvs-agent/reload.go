package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/control"
)

// Exit codes of the client commands.
const (
	exitOK          = 0
	exitFailed      = 1 // bad file, failed writes, quorum lost, changes pending
	exitUnreachable = 2 // the agent is not running (or usage error)
)

// clientFlags are the flags every client command shares.
type clientFlags struct {
	fs      *flag.FlagSet
	cfgPath *string
	socket  *string
}

func newClientFlags(name string, stderr io.Writer) clientFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return clientFlags{
		fs:      fs,
		cfgPath: fs.String("c", defaultConfig, "configuration file (to find status_socket and state_file)"),
		socket:  fs.String("socket", "", "control socket (default: status_socket from the file)"),
	}
}

func (f clientFlags) explicit(name string) bool {
	set := false
	f.fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// keys resolves the socket and state file paths.
func (f clientFlags) keys() (agentKeys, error) {
	k, err := readAgentKeys(*f.cfgPath, f.explicit("c"))
	if *f.socket != "" {
		k.StatusSocket = *f.socket
		err = nil // the socket is all reload needs
	}
	return k, err
}

// runReload is `ipvs-agent reload`: ask the running agent to reload its file
// and wait until the new table is in the kernel. systemd's ExecReload.
func runReload(args []string, stdout, stderr io.Writer) int {
	f := newClientFlags("reload", stderr)
	timeout := f.fs.Duration("timeout", 10*time.Minute, "give up waiting after this long")
	if err := f.fs.Parse(args); err != nil {
		return exitUnreachable
	}
	k, err := f.keys()
	if err != nil {
		fmt.Fprintln(stderr, "ipvs-agent reload:", err)
		return exitUnreachable
	}
	if k.StatusSocket == "" {
		fmt.Fprintf(stderr, "ipvs-agent reload: status_socket is off in %s: use SIGHUP (systemctl kill -s HUP ipvs-agent)\n", *f.cfgPath)
		return exitUnreachable
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	r, err := control.NewClient(k.StatusSocket).Reload(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "ipvs-agent reload:", err)
		if control.Unreachable(err) {
			return exitUnreachable
		}
		return exitFailed
	}
	if f.explicit("c") && r.Config != "" {
		if abs, _ := filepath.Abs(*f.cfgPath); abs != r.Config && *f.cfgPath != r.Config {
			fmt.Fprintf(stderr, "ipvs-agent reload: note: the agent reloaded %s, not %s\n", r.Config, *f.cfgPath)
		}
	}
	if !r.OK {
		for _, p := range r.Problems {
			fmt.Fprintln(stderr, p)
		}
		fmt.Fprintf(stderr, "ipvs-agent reload: %s refused (%d problems); the running configuration is unchanged\n", r.Config, len(r.Problems))
		return exitFailed
	}
	what := "reloaded"
	if r.Unchanged {
		what = "unchanged, kernel re-checked"
	}
	fmt.Fprintf(stdout, "%s: %s: %d writes, %d errors in %.3fs\n", r.Config, what, r.Writes, r.Errors, r.Seconds)
	if r.Errors > 0 {
		if r.Error != "" {
			fmt.Fprintln(stderr, "ipvs-agent reload:", r.Error)
		}
		fmt.Fprintf(stderr, "ipvs-agent reload: %d kernel writes failed (see the agent's log)\n", r.Errors)
		return exitFailed
	}
	return exitOK
}
