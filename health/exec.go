package health

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cred is who an external command runs as; nil means the agent's own user.
type cred = syscall.Credential

// lookupCred resolves a user name or numeric uid. Switching user needs
// root (CAP_SETUID); asking for the agent's own user is a no-op.
func lookupCred(name string) (*cred, error) {
	if name == "" {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		var uerr error
		if u, uerr = user.LookupId(name); uerr != nil {
			return nil, fmt.Errorf("user %q: %w", name, err)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %q: non-numeric uid/gid", name)
	}
	if int(uid) == os.Getuid() && int(gid) == os.Getgid() {
		return nil, nil
	}
	if os.Geteuid() != 0 && !canSetID() {
		return nil, fmt.Errorf("user %q: switching user needs root or CAP_SETUID and CAP_SETGID, "+
			"and the agent runs as uid %d without them; set user to the agent's own user", name, os.Geteuid())
	}
	// Groups left empty (NoSetGroups false) clears the supplementary
	// groups: the command must not inherit root's.
	return &cred{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// canSetID reports whether this process holds CAP_SETUID and CAP_SETGID,
// read from /proc so no capability library is needed.
func canSetID() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			const setgid, setuid = 1 << 6, 1 << 7
			return err == nil && caps&setgid != 0 && caps&setuid != 0
		}
	}
	return false
}

// limitedBuffer keeps the first n bytes written and discards the rest, so a
// chatty command cannot grow the agent's memory.
type limitedBuffer struct {
	bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.Len(); room > 0 {
		l.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// runCommand runs argv in its own process group with env added to a minimal
// environment, and kills the whole group when ctx ends: a health script
// that forks (curl in a shell) must not outlive its timeout. A child that
// leaves the group (setsid, a daemonising double fork) is found by a
// marker in its inherited environment and killed too, when the command
// ends or times out: only a child that also clears its environment
// escapes (a cgroup per check would catch that one too, but needs a
// delegated cgroup subtree).
func runCommand(ctx context.Context, argv []string, cr *cred, env []string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	marker := runMarker()
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", marker}, env...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cr}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// If a grandchild escaped the group and keeps our pipe open, stop
	// waiting for it shortly after the kill.
	cmd.WaitDelay = 500 * time.Millisecond
	out := &limitedBuffer{n: 512}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	// Reap stragglers in the group even on success (a backgrounded child).
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		killMarked(marker)
	}
	return strings.TrimSpace(out.String()), err
}

// runMarker is an environment entry unique to one command run.
func runMarker() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "IPVS_AGENT_RUN=" + hex.EncodeToString(b[:])
}

// killMarked kills every process whose environment holds marker: the
// descendants of one command run, wherever they went.
func killMarked(marker string) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	want := []byte(marker + "\x00")
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && bytes.Contains(b, want) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

type execChecker struct {
	argv []string
	cred *cred
}

func newExecChecker(s Spec) (checker, error) {
	if len(s.Command) == 0 || s.Command[0] == "" {
		return nil, errors.New("exec check needs command (argv list)")
	}
	argv := s.Command
	if s.Shell {
		argv = append([]string{"/bin/sh", "-c"}, s.Command...)
	} else if !filepath.IsAbs(argv[0]) {
		// A relative name was resolved against the directory `check` ran
		// in (or PATH) but run from "/" with another PATH: what was
		// validated is not what runs.
		return nil, fmt.Errorf("command %q must be an absolute path", argv[0])
	}
	cr, err := lookupCred(s.User)
	if err != nil {
		return nil, err
	}
	return &execChecker{argv: argv, cred: cr}, nil
}

func (e *execChecker) check(ctx context.Context, p probe) result {
	env := []string{
		"IPVS_RS_IP=" + p.rs.Addr().String(),
		"IPVS_RS_PORT=" + strconv.Itoa(int(p.rs.Port())),
		"IPVS_CHECK_IP=" + p.addr.Addr().String(),
		"IPVS_CHECK_PORT=" + strconv.Itoa(int(p.addr.Port())),
	}
	out, err := runCommand(ctx, e.argv, e.cred, env)
	if err == nil || (errors.Is(err, exec.ErrWaitDelay) && ctx.Err() == nil) {
		// ErrWaitDelay: the command exited 0 but a child it left behind
		// held its output open; the exit status is the verdict.
		return passed("exec: exit 0")
	}
	reason := "exec: " + err.Error()
	if ctx.Err() != nil {
		reason = "exec: timeout, process group killed"
	}
	if out != "" {
		reason += ": " + sanitizeReason(out)
	}
	return failed(reason)
}
