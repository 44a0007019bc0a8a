package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
)

// ErrNotRunning: nothing answers on the socket (no agent, or not this path).
var ErrNotRunning = errors.New("the agent is not running")

// Client talks to an agent's control socket.
type Client struct {
	Socket string
	hc     *http.Client
}

// NewClient makes a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{Socket: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}}
}

// reachErr explains why the socket could not be reached.
func (c *Client) reachErr(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (nothing listens on %s)", ErrNotRunning, c.Socket)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s: permission denied: run as root or as a member of the agent's status_group", c.Socket)
	}
	return fmt.Errorf("control socket %s: %w", c.Socket, err)
}

// Unreachable reports whether err means the agent could not be talked to
// (not running, or the socket is not ours to use).
func Unreachable(err error) bool {
	var ue *unreachableError
	return errors.As(err, &ue)
}

// NotRunning reports whether err means no agent listens on the socket.
func NotRunning(err error) bool { return errors.Is(err, ErrNotRunning) }

type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

func (c *Client) do(ctx context.Context, method, path string) (int, []byte, error) {
	return c.doBody(ctx, method, path, bytes.NewReader(nil))
}

func (c *Client) doBody(ctx context.Context, method, path string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://ipvs-agent"+path, body)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return 0, nil, err
		}
		return 0, nil, &unreachableError{c.reachErr(err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("control socket %s: reading the reply: %w", c.Socket, err)
	}
	return resp.StatusCode, b, nil
}

// Reload asks the agent to reload and returns its reply once the reload's
// reconcile finished (or the file was refused).
func (c *Client) Reload(ctx context.Context) (ReloadReply, error) {
	code, b, err := c.do(ctx, http.MethodPost, "/v1/reload")
	if err != nil {
		return ReloadReply{}, err
	}
	var r ReloadReply
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("control socket: HTTP %d, unreadable reply: %w", code, err)
	}
	if code != http.StatusOK && code != http.StatusUnprocessableEntity {
		return r, fmt.Errorf("control socket: HTTP %d: %s", code, r.Error)
	}
	return r, nil
}

// Status fetches the status document (raw JSON); name "" for all. With
// light, the agent answers from its snapshot alone, at once (no kernel
// read, no last-probe walk, no waiting for a reload): for -quorum.
func (c *Client) Status(ctx context.Context, name string, light bool) ([]byte, error) {
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	}
	if light {
		q.Set("light", "1")
	}
	p := "/v1/status"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	code, b, err := c.do(ctx, http.MethodGet, p)
	if err != nil {
		return nil, err
	}
	switch code {
	case http.StatusOK:
		return b, nil
	case http.StatusNotFound:
		return nil, fmt.Errorf("%w %q", ErrNotFound, name)
	}
	return nil, fmt.Errorf("control socket: HTTP %d: %s", code, bytes.TrimSpace(b))
}
