package config

import (
	"fmt"
	"strings"
	"time"
)

// MaxFileSize bounds the configuration file: 50,000 real servers take
// about 4 MB of TOML, and decoding costs some 20 times the file's size in
// memory, so 16 MiB keeps a start-up or reload under ~400 MB however the
// file was made.
const MaxFileSize = 16 << 20

// MaxPersistence is keepalived's limit on persistence_timeout (31 days,
// LVS_MAX_TIMEOUT), well inside the kernel's u32 seconds and its jiffies.
const MaxPersistence = 31 * 24 * time.Hour

// Nesting limits checked before the file reaches the TOML library, whose
// cost grows with the square of a key's depth (a 40 KB dotted key took
// 877 MB). The deepest key this format has is
// virtual_server.real_server.check.type: 4 parts.
const (
	maxKeyParts   = 16 // parts of one dotted key or table header
	maxValueDepth = 16 // arrays and inline tables inside each other
)

// checkShape refuses text the TOML library would take unbounded time or
// memory over: too large, or nested too deep. It is a small lexer that
// knows strings, comments, headers, keys and brackets, nothing more; the
// decoder reports every other problem.
func checkShape(file, src string) *Problem {
	if len(src) > MaxFileSize {
		return &Problem{File: file, Msg: fmt.Sprintf("file is %d bytes, larger than the limit of %d", len(src), MaxFileSize)}
	}
	var (
		line, col = 1, 0
		stack     []byte // open '[' and '{' of values
		keyPos    = true // reading a key or header, not a value
		header    = false
		parts     = 0 // parts of the key being read
	)
	tooDeep := func(what string, n, limit int) *Problem {
		return &Problem{File: file, Line: line, Col: max(col, 1), Msg: fmt.Sprintf("%s nested %d deep, more than the limit of %d", what, n, limit)}
	}
	newline := func() {
		line++
		col = 0
		if len(stack) == 0 {
			keyPos, header, parts = true, false, 0
		}
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		col++
		switch {
		case c == '\n':
			newline()
		case c == '#':
			for i+1 < len(src) && src[i+1] != '\n' {
				i++
			}
		case c == '"' || c == '\'':
			if keyPos && parts == 0 {
				parts = 1
			}
			quote := string(c)
			multi := strings.HasPrefix(src[i:], quote+quote+quote)
			if multi {
				i += 2
			}
		str:
			for i++; i < len(src); i++ {
				switch {
				case src[i] == '\\' && c == '"':
					i++
				case src[i] == '\n':
					newline()
					if !multi {
						i = len(src) // unterminated: the decoder says where
					}
				case src[i] == c && (!multi || strings.HasPrefix(src[i:], quote+quote+quote)):
					if multi {
						i += 2
						for i+1 < len(src) && src[i+1] == c { // """a"""" ends with a quote in the string
							i++
						}
					}
					break str
				}
			}
		case keyPos:
			switch {
			case c == '[' && parts == 0 && len(stack) == 0:
				header = true
			case c == ']' && header:
				keyPos, header, parts = false, false, 0
			case c == '.':
				parts++
				if parts > maxKeyParts {
					return tooDeep("key", parts, maxKeyParts)
				}
			case c == '=':
				keyPos, parts = false, 0
			case c == '}' && len(stack) > 0: // an empty inline table
				stack = stack[:len(stack)-1]
				keyPos = false
			case c != ' ' && c != '\t' && c != '\r' && parts == 0:
				parts = 1
			}
		default: // a value
			switch c {
			case '[', '{':
				stack = append(stack, c)
				if len(stack) > maxValueDepth {
					return tooDeep("value", len(stack), maxValueDepth)
				}
				if c == '{' {
					keyPos, parts = true, 0
				}
			case ']', '}':
				if len(stack) > 0 {
					stack = stack[:len(stack)-1]
				}
			case ',':
				if len(stack) > 0 && stack[len(stack)-1] == '{' {
					keyPos, parts = true, 0
				}
			}
		}
	}
	return nil
}
