package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// DiffRequest is the body of POST /v1/diff: a configuration file's
// contents (the client reads it, so the daemon never opens a path a
// socket user names) and its path for positions in problems.
type DiffRequest struct {
	Path   string `json:"path"`
	Config string `json:"config"`
}

// DiffReply is what a reload to that file would write. 422 with
// problems when the file is bad.
type DiffReply struct {
	OK        bool         `json:"ok"`
	Changes   []DiffChange `json:"changes"`
	Conflicts []DiffChange `json:"conflicts,omitempty"`
	Problems  []string     `json:"problems,omitempty"`
	Error     string       `json:"error,omitempty"`
}

// DiffChange is one kernel write, in the words of the agent's "kernel
// write" log line.
type DiffChange struct {
	VirtualServer string `json:"virtual_server"`
	Op            string `json:"op"`
}

// maxDiffBody bounds a diff request: far above a 5,000 x 10 file.
const maxDiffBody = 64 << 20

func (s *Server) diff(w http.ResponseWriter, r *http.Request) {
	var req DiffRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxDiffBody)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, DiffReply{Error: "bad request: " + err.Error()})
		return
	}
	reply := s.Diff(r.Context(), req)
	code := http.StatusOK
	switch {
	case len(reply.Problems) > 0:
		code = http.StatusUnprocessableEntity
	case reply.Error != "":
		code = http.StatusInternalServerError
	}
	writeJSON(w, code, reply)
}

// Diff asks the agent what a reload to the file would write.
func (c *Client) Diff(ctx context.Context, path string, src []byte) (DiffReply, error) {
	body, err := json.Marshal(DiffRequest{Path: path, Config: string(src)})
	if err != nil {
		return DiffReply{}, err
	}
	code, b, err := c.doBody(ctx, http.MethodPost, "/v1/diff", bytes.NewReader(body))
	if err != nil {
		return DiffReply{}, err
	}
	var r DiffReply
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("control socket: HTTP %d, unreadable reply: %w", code, err)
	}
	if code != http.StatusOK && code != http.StatusUnprocessableEntity {
		return r, fmt.Errorf("control socket: HTTP %d: %s", code, r.Error)
	}
	return r, nil
}
