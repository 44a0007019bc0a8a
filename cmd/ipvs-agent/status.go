package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/control"
	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/report"
)

// exitNoSuchName: `status NAME` for a name the configuration lacks.
const exitNoSuchName = 3

// runStatus is `ipvs-agent status [NAME] [-json] [-quorum]`.
func runStatus(args []string, stdout, stderr io.Writer) int {
	f := newClientFlags("status", stderr)
	asJSON := f.fs.Bool("json", false, "print the JSON document (schema: docs/status.md)")
	quorum := f.fs.Bool("quorum", false, "with NAME: print nothing, exit 0 if NAME has quorum (for a VRRP track script)")
	timeout := f.fs.Duration("timeout", 60*time.Second, "give up after this long (a status waits for a running reload, at most 20 s)")
	// Flags may come before or after NAME.
	var name string
	for {
		if err := f.fs.Parse(args); err != nil {
			return exitUnreachable
		}
		args = f.fs.Args()
		if len(args) == 0 {
			break
		}
		if name != "" {
			fmt.Fprintln(stderr, "ipvs-agent status: one virtual server name at most")
			return exitUnreachable
		}
		name, args = args[0], args[1:]
	}
	if *quorum && name == "" {
		fmt.Fprintln(stderr, "ipvs-agent status: -quorum needs a virtual server NAME")
		return exitUnreachable
	}
	k, err := f.keys()
	if err != nil {
		fmt.Fprintln(stderr, "ipvs-agent status:", err)
		return exitUnreachable
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var raw []byte
	if k.StatusSocket == "" {
		err = fmt.Errorf("%w (status_socket is off in %s)", control.ErrNotRunning, *f.cfgPath)
	} else {
		raw, err = control.NewClient(k.StatusSocket).Status(ctx, name, *quorum)
	}
	switch {
	case errors.Is(err, control.ErrNotFound):
		fmt.Fprintf(stderr, "ipvs-agent status: no virtual server named %q in the running configuration\n", name)
		return exitNoSuchName
	case err != nil && control.NotRunning(err):
		if *quorum {
			fmt.Fprintln(stderr, "ipvs-agent status:", err)
			return exitUnreachable
		}
		return offlineStatus(stdout, stderr, err, k.StateFile, *asJSON)
	case err != nil:
		fmt.Fprintln(stderr, "ipvs-agent status:", err)
		if control.Unreachable(err) {
			return exitUnreachable
		}
		return exitFailed
	}
	var doc report.Doc
	if err := json.Unmarshal(raw, &doc); err != nil {
		fmt.Fprintln(stderr, "ipvs-agent status: unreadable reply:", err)
		return exitFailed
	}
	if *quorum {
		if len(doc.VirtualServers) != 1 {
			return exitNoSuchName
		}
		if !hasQuorum(doc.VirtualServers[0]) {
			return exitFailed
		}
		return exitOK
	}
	if *asJSON {
		var buf bytes.Buffer
		if json.Indent(&buf, raw, "", "  ") != nil {
			buf.Reset()
			buf.Write(raw)
		}
		stdout.Write(buf.Bytes())
		return exitOK
	}
	if err := report.Render(stdout, &doc); err != nil {
		return exitFailed
	}
	return exitOK
}

// hasQuorum is what a VRRP track script asks: the agent runs this virtual
// server (owned, not a conflict), it has its quorum, and at least one real
// server is healthy (quorum = 0 asks for nothing more than that).
func hasQuorum(vs report.VirtualServer) bool {
	return vs.Ownership == "owned" && vs.Quorum.OK && vs.Quorum.Healthy > 0
}

// offlineStatus shows the kernel's view of what the state file lists,
// saying loudly that the agent is not running. Exit 2.
func offlineStatus(stdout, stderr io.Writer, why error, stateFile string, asJSON bool) int {
	owned, ownedErr := agent.ReadOwned(stateFile)
	var ks []kernel.ServiceStats
	k, kerr := kernel.Open()
	if kerr == nil {
		ks, kerr = k.ReadStats(owned)
		k.Close()
	}
	doc := report.Offline(time.Now(), why, stateFile, owned, ownedErr, ks, kerr)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(doc)
	} else {
		report.Render(stdout, doc)
	}
	fmt.Fprintln(stderr, "ipvs-agent status:", why)
	return exitUnreachable
}
