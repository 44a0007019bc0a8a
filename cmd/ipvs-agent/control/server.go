// Package control is the agent's control socket: HTTP/1.1 over a unix
// socket, served by the daemon and used by `ipvs-agent reload` and
// `ipvs-agent status`. It lives at the edge: the daemon hands it functions
// that read the agent's snapshot or ask its loop to reload, and nothing here
// holds a lock the reconcile loop or the checks take.
//
//	GET  /v1/status[?name=VS]  the status document (see docs/status.md);
//	                           &light=1: the agent's snapshot only, no kernel read
//	POST /v1/reload            reload the file, reply after its reconcile:
//	                           200 {"ok":true,"writes":N,"errors":N,...}
//	                           422 {"ok":false,"problems":["file:line:col: ..."]}
//	POST /v1/diff              {"path":..,"config":".."}: the writes a reload to
//	                           that file would make, applied nowhere
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent"
)

// ReloadReply is the body of POST /v1/reload.
type ReloadReply struct {
	OK        bool     `json:"ok"`
	Unchanged bool     `json:"unchanged,omitempty"`
	Writes    int      `json:"writes"`
	Errors    int      `json:"errors"`
	Problems  []string `json:"problems,omitempty"`
	Error     string   `json:"error,omitempty"`
	Config    string   `json:"config,omitempty"`
	Seconds   float64  `json:"duration_seconds"`
}

// ErrNotFound is what Status returns for an unknown virtual server name.
var ErrNotFound = errors.New("no such virtual server")

// Server answers on the control socket.
type Server struct {
	Log *slog.Logger
	// Reload asks the agent's loop to reload and waits for the result
	// (agent.Agent.Reload).
	Reload func(ctx context.Context) (agent.ReloadResult, error)
	// Config is the path of the file the agent reloads.
	Config string
	// Status builds the status document; name "" for every virtual
	// server, else one (ErrNotFound when unknown). light: from the agent's
	// snapshot only, at once (no kernel read).
	Status func(ctx context.Context, name string, light bool) (any, error)
	// Diff plans a reload to the file in the request without applying it.
	Diff func(ctx context.Context, req DiffRequest) DiffReply
}

// Handler routes the control API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/reload", s.reload)
	if s.Status != nil {
		mux.HandleFunc("GET /v1/status", s.status)
	}
	if s.Diff != nil {
		mux.HandleFunc("POST /v1/diff", s.diff)
	}
	return mux
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	res, err := s.Reload(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, ReloadReply{Error: "agent is stopping: " + err.Error(), Config: s.Config})
		return
	}
	reply := ReloadReply{OK: res.OK, Unchanged: res.Unchanged, Writes: res.Writes, Errors: res.Errors,
		Problems: res.Problems, Error: res.Err, Config: s.Config, Seconds: res.Duration.Seconds()}
	code := http.StatusOK
	if !res.OK {
		code = http.StatusUnprocessableEntity
	}
	writeJSON(w, code, reply)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	doc, err := s.Status(r.Context(), r.URL.Query().Get("name"), r.URL.Query().Get("light") == "1")
	switch {
	case errors.Is(err, ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// Not indented: a 1,000 x 10 status is megabytes; the client indents.
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to do
}

// Serve serves h on l until ctx ends.
func Serve(ctx context.Context, l net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Listen makes the control socket at path, mode 0660, group group ("" =
// leave root's). A stale socket from a crashed agent is replaced; a live one
// (another agent serving it) is an error. Call it before starting other
// goroutines that create files: it narrows the process umask while it binds
// so the socket is never reachable with looser permissions.
func Listen(path, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("status_group %q: %w", group, err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("status_group %q: gid %q: %w", group, g.Gid, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("status socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("status socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("status socket %s: another ipvs-agent is serving it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale status socket: %w", err)
		}
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("status socket: chown to group %s: %w", group, err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("status socket: %w", err)
	}
	return l, nil
}
