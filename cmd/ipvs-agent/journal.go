package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
)

// underJournald reports whether f is the stream systemd connected to the
// journal: systemd sets JOURNAL_STREAM to "device:inode" of that stream, and
// a child that redirected its stderr elsewhere no longer matches.
func underJournald(f *os.File) bool {
	env := os.Getenv("JOURNAL_STREAM")
	if env == "" || f == nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return env == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// journalHandler writes each record as one line starting with its sd-daemon
// priority prefix ("<3>" error, "<4>" warning, "<6>" info, "<7>" debug) and
// without a timestamp (the journal has its own), so `journalctl -p err`
// selects the agent's errors. The line itself is text or JSON as usual.
type journalHandler struct {
	byLevel [4]slog.Handler // error, warn, info, debug
}

var journalPrefixes = [4]string{"<3>", "<4>", "<6>", "<7>"}

func newJournalHandler(w io.Writer, format string, opts *slog.HandlerOptions) (slog.Handler, error) {
	o := *opts
	o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
			return slog.Attr{} // the journal records both
		}
		return a
	}
	var mu sync.Mutex // one write per line across the four handlers
	var h journalHandler
	for i, p := range journalPrefixes {
		pw := &prefixWriter{mu: &mu, w: w, prefix: []byte(p)}
		switch format {
		case "text":
			h.byLevel[i] = slog.NewTextHandler(pw, &o)
		case "json":
			h.byLevel[i] = slog.NewJSONHandler(pw, &o)
		default:
			return nil, fmt.Errorf("bad -log-format %q (text or json)", format)
		}
	}
	return h, nil
}

func (h journalHandler) pick(l slog.Level) slog.Handler {
	switch {
	case l >= slog.LevelError:
		return h.byLevel[0]
	case l >= slog.LevelWarn:
		return h.byLevel[1]
	case l >= slog.LevelInfo:
		return h.byLevel[2]
	}
	return h.byLevel[3]
}

func (h journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.byLevel[0].Enabled(ctx, l)
}

func (h journalHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick(r.Level).Handle(ctx, r)
}

func (h journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for i := range h.byLevel {
		h.byLevel[i] = h.byLevel[i].WithAttrs(as)
	}
	return h
}

func (h journalHandler) WithGroup(name string) slog.Handler {
	for i := range h.byLevel {
		h.byLevel[i] = h.byLevel[i].WithGroup(name)
	}
	return h
}

// prefixWriter puts prefix before each write; slog handlers write one
// whole line per record.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix []byte
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(append(p.buf[:0], p.prefix...), b...)
	if _, err := p.w.Write(p.buf); err != nil {
		return 0, err
	}
	return len(b), nil
}
