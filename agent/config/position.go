package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a configuration file, at a position.
type Problem struct {
	File      string
	Line, Col int // 0 when unknown
	Msg       string
}

func (p Problem) String() string {
	if p.Line == 0 {
		return fmt.Sprintf("%s: %s", p.File, p.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Msg)
}

// Problems is every problem found in one file; Load returns it as its error
// so that a user fixes them all in one pass.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

type pos struct{ line, col int }

// positions maps concrete key paths ("virtual_server[1].real_server[0].weight")
// to where they stand in the file. BurntSushi/toml keeps key positions
// private and, for arrays of tables, only the last occurrence's, so the
// semantic checks that run after decoding need an index of their own. It is
// built from a line scan that understands table headers, array-of-table
// headers and "key = value" lines, which is all a config file uses; any
// path it cannot place falls back to its enclosing table.
type positions struct {
	at map[string]pos
}

var (
	headerRE = regexp.MustCompile(`^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?`)
	keyRE    = regexp.MustCompile(`^(\s*)((?:[A-Za-z0-9_-]+|"[^"]*")(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"))*)\s*=`)
)

func splitKey(k string) []string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if uq, err := strconv.Unquote(p); err == nil {
			p = uq
		}
		parts[i] = p
	}
	return parts
}

func indexPositions(src string) *positions {
	ps := &positions{at: map[string]pos{}}
	counts := map[string]int{} // array path -> number of elements seen
	table := ""                // concrete path of the current table
	inMultiline := false
	for n, line := range strings.Split(src, "\n") {
		lineNo := n + 1
		// Skip the bodies of multi-line strings: they may hold "k = v" text.
		if c := strings.Count(line, `"""`) + strings.Count(line, `'''`); c%2 == 1 {
			inMultiline = !inMultiline
			if !inMultiline {
				continue
			}
		} else if inMultiline {
			continue
		}
		if m := headerRE.FindStringSubmatchIndex(line); m != nil && !keyRE.MatchString(line) {
			isArray := line[m[2]:m[3]] == "[["
			comps := splitKey(line[m[4]:m[5]])
			concrete := ""
			for i, c := range comps {
				p := join(concrete, c)
				switch {
				case i == len(comps)-1 && isArray:
					concrete = fmt.Sprintf("%s[%d]", p, counts[p])
					counts[p]++
				case counts[p] > 0:
					concrete = fmt.Sprintf("%s[%d]", p, counts[p]-1)
				default:
					concrete = p
				}
			}
			table = concrete
			ps.at[table] = pos{lineNo, m[4] + 1}
			continue
		}
		if m := keyRE.FindStringSubmatchIndex(line); m != nil {
			p := table
			for _, c := range splitKey(line[m[4]:m[5]]) {
				p = join(p, c)
			}
			ps.at[p] = pos{lineNo, m[4] + 1}
		}
	}
	return ps
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// of returns the position of a concrete path, or of its nearest enclosing
// table or key that the index knows.
func (ps *positions) of(path string) pos {
	for path != "" {
		if p, ok := ps.at[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return pos{}
}

// occurrences lists the concrete paths whose index-free form is the given
// key, e.g. every "virtual_server[i].real_server[j].wieght" for the key
// virtual_server.real_server.wieght reported by toml's Undecoded.
func (ps *positions) occurrences(key string) []string {
	var out []string
	for p := range ps.at {
		if stripIndexes(p) == key {
			out = append(out, p)
		}
	}
	return out
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

func stripIndexes(p string) string { return indexRE.ReplaceAllString(p, "") }
