package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// Under journald every line carries its priority prefix and no timestamp,
// so `journalctl -p err` finds errors and the time is not printed twice.
func TestJournalLines(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		h, err := newJournalHandler(&buf, format, &slog.HandlerOptions{Level: slog.LevelDebug})
		if err != nil {
			t.Fatal(err)
		}
		log := slog.New(h).With("config", "/etc/ipvs-agent.toml")
		log.Error("config problem", "problem", "/etc/ipvs-agent.toml:3:1: bad")
		log.Warn("w")
		log.Info("i")
		log.Debug("d")
		lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		if len(lines) != 4 {
			t.Fatalf("%s: want 4 lines, got %q", format, buf.String())
		}
		for i, p := range []string{"<3>", "<4>", "<6>", "<7>"} {
			if !strings.HasPrefix(lines[i], p) {
				t.Errorf("%s: line %d %q lacks priority prefix %s", format, i, lines[i], p)
			}
			if strings.Contains(lines[i], "time") || strings.Contains(lines[i], "level") {
				t.Errorf("%s: line %q carries a time or level the journal records itself", format, lines[i])
			}
			if !strings.Contains(lines[i], "ipvs-agent.toml") {
				t.Errorf("%s: line %q lost the logger's attributes", format, lines[i])
			}
		}
	}
	if _, err := newJournalHandler(&bytes.Buffer{}, "xml", &slog.HandlerOptions{}); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestUnderJournaldNeedsMatchingStream(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "1:2")
	if underJournald(nil) {
		t.Error("nil file counted as the journal")
	}
	t.Setenv("JOURNAL_STREAM", "")
	if underJournald(nil) {
		t.Error("no JOURNAL_STREAM counted as the journal")
	}
}
