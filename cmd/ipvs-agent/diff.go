package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent"
	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/cmd/ipvs-agent/control"
)

// diffReply turns an agent.DiffResult (or a refused file) into the reply.
func diffReply(r agent.DiffResult, err error) control.DiffReply {
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			out := control.DiffReply{}
			for _, p := range ps {
				out.Problems = append(out.Problems, p.String())
			}
			return out
		}
		return control.DiffReply{Error: err.Error()}
	}
	if r.Err != nil {
		return control.DiffReply{Error: "read kernel IPVS table: " + r.Err.Error()}
	}
	out := control.DiffReply{OK: true, Changes: []control.DiffChange{}}
	for _, c := range r.Changes {
		out.Changes = append(out.Changes, control.DiffChange{VirtualServer: c.VirtualServer, Op: c.Op.String()})
	}
	for _, c := range r.Conflicts {
		out.Conflicts = append(out.Conflicts, control.DiffChange{VirtualServer: c.VirtualServer, Op: c.Op.Service.Key.String()})
	}
	return out
}

// serveDiff is POST /v1/diff on the daemon: parse the file sent, then plan
// on the agent's loop.
func serveDiff(a *agent.Agent) func(context.Context, control.DiffRequest) control.DiffReply {
	return func(ctx context.Context, req control.DiffRequest) control.DiffReply {
		cfg, err := config.Parse(req.Path, req.Config)
		if err != nil {
			return diffReply(agent.DiffResult{}, err)
		}
		return diffReply(a.Diff(ctx, cfg))
	}
}

// runDiff is `ipvs-agent diff [-c FILE]`: the kernel writes a reload to FILE
// would make now, in the agent's words, applied nowhere. Exit 0 when there
// are none, 1 when there are, 2 when the file is bad or nothing could be
// read. With no agent running, it shows what `ipvs-agent run` would write
// at start.
func runDiff(args []string, stdout, stderr io.Writer) int {
	f := newClientFlags("diff", stderr)
	timeout := f.fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if err := f.fs.Parse(args); err != nil {
		return exitUnreachable
	}
	src, err := os.ReadFile(*f.cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "ipvs-agent diff:", err)
		return exitUnreachable
	}
	path := *f.cfgPath
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	k, _ := f.keys()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var reply control.DiffReply
	err = control.ErrNotRunning
	if k.StatusSocket != "" {
		reply, err = control.NewClient(k.StatusSocket).Diff(ctx, *f.cfgPath, src)
	}
	switch {
	case err != nil && control.NotRunning(err):
		fmt.Fprintf(stderr, "ipvs-agent diff: %v: showing what `ipvs-agent run` would write at start\n", err)
		reply = offlineDiff(*f.cfgPath, string(src))
	case err != nil:
		fmt.Fprintln(stderr, "ipvs-agent diff:", err)
		return exitUnreachable
	}
	if len(reply.Problems) > 0 {
		for _, p := range reply.Problems {
			fmt.Fprintln(stderr, p)
		}
		fmt.Fprintf(stderr, "ipvs-agent diff: %s has %d problems: a reload would change nothing\n", path, len(reply.Problems))
		return exitUnreachable
	}
	if reply.Error != "" {
		fmt.Fprintln(stderr, "ipvs-agent diff:", reply.Error)
		return exitUnreachable
	}
	for _, c := range reply.Conflicts {
		fmt.Fprintf(stdout, "%s: %s exists in the kernel and is not the agent's: left untouched (adopt = true takes it over)\n", c.VirtualServer, c.Op)
	}
	for _, c := range reply.Changes {
		fmt.Fprintf(stdout, "%s: %s\n", c.VirtualServer, c.Op)
	}
	if len(reply.Changes) == 0 {
		fmt.Fprintln(stdout, "no changes")
		return exitOK
	}
	fmt.Fprintf(stdout, "%d kernel writes\n", len(reply.Changes))
	return exitFailed
}

// offlineDiff plans a start on FILE against the kernel, in this process.
func offlineDiff(path, src string) control.DiffReply {
	cfg, err := config.Parse(path, src)
	if err != nil {
		return diffReply(agent.DiffResult{}, err)
	}
	k, err := kernel.Open()
	if err != nil {
		return control.DiffReply{Error: err.Error()}
	}
	defer k.Close()
	return diffReply(agent.PlanStart(cfg, k))
}
