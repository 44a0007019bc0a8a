package health

import (
	"strings"
	"unicode/utf8"
)

// maxReason bounds the text a probe's reason carries from a real server.
const maxReason = 200

// sanitizeReason makes text that came from a real server or a command fit
// for a log line and an environment variable: control bytes (NUL, escape
// sequences, newlines) and invalid UTF-8 become '?', and it is cut at
// maxReason bytes. A NUL in IPVS_REASON made the notify command fail to
// start, silencing the page about that very server.
func sanitizeReason(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= utf8.RuneSelf {
			clean = false
			break
		}
	}
	if clean && len(s) <= maxReason {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > maxReason {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
