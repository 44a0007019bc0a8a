package config

import (
	"runtime"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
)

// parallelMin is the file size from which decoding is split over the CPUs:
// BurntSushi/toml is most of a large file's start-up and reload cost (about
// 1 s for 1,000 x 10 in the test VM), and a file of many [[virtual_server]]
// tables splits cleanly into independent documents.
const parallelMin = 64 << 10

// decode decodes src into raw and returns the keys that matched no field.
// A large file is cut at [[virtual_server]] headers into one document per
// CPU, decoded in parallel and merged; whenever the cut is not plainly
// equivalent to the whole file, or any part fails, the whole file is decoded
// at once, so errors and their positions are always those of the file.
func decode(src string, raw *rawFile) ([]toml.Key, error) {
	if parts := split(src, runtime.GOMAXPROCS(0)); parts != nil {
		if keys, ok := decodeParts(parts, raw); ok {
			return keys, nil
		}
		*raw = rawFile{}
	}
	md, err := toml.Decode(src, raw)
	if err != nil {
		return nil, err
	}
	return md.Undecoded(), nil
}

// split cuts src before [[virtual_server]] headers into at most n parts, the
// first holding everything before the first such header. It returns nil when
// splitting is not worth it or not safe: a small file, one CPU, multi-line
// strings (which could hold header-like lines), or a table other than a
// virtual server's after the first virtual server.
func split(src string, n int) []string {
	if n < 2 || len(src) < parallelMin || strings.Contains(src, `"""`) || strings.Contains(src, `'''`) {
		return nil
	}
	var starts []int // byte offsets of [[virtual_server]] header lines
	for off := 0; off < len(src); {
		end := strings.IndexByte(src[off:], '\n')
		if end < 0 {
			end = len(src) - off
		}
		line := strings.TrimSpace(src[off : off+end])
		if strings.HasPrefix(line, "[") {
			h := strings.TrimSpace(strings.Trim(strings.SplitN(line, "#", 2)[0], " \t"))
			switch {
			case h == "[[virtual_server]]":
				starts = append(starts, off)
			case len(starts) > 0 && !strings.HasPrefix(h, "[virtual_server.") && !strings.HasPrefix(h, "[[virtual_server."):
				return nil
			}
		}
		off += end + 1
	}
	if len(starts) < 2*n {
		return nil
	}
	parts := []string{src[:starts[0]]}
	per := (len(starts) + n - 1) / n
	for i := 0; i < len(starts); i += per {
		end := len(src)
		if i+per < len(starts) {
			end = starts[i+per]
		}
		parts = append(parts, src[starts[i]:end])
	}
	return parts
}

// decodeParts decodes the parts concurrently and merges them into raw; ok is
// false if any part failed or the parts do not merge as the whole would.
func decodeParts(parts []string, raw *rawFile) ([]toml.Key, bool) {
	raws := make([]rawFile, len(parts))
	mds := make([]toml.MetaData, len(parts))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i := range parts {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			mds[i], errs[i] = toml.Decode(parts[i], &raws[i])
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, false
		}
	}
	if len(raws[0].VirtualServers) > 0 {
		return nil, false // virtual servers before the first header: an inline form
	}
	*raw = raws[0]
	seen := map[string]bool{}
	var keys []toml.Key
	for i := range parts {
		if i > 0 {
			raw.VirtualServers = append(raw.VirtualServers, raws[i].VirtualServers...)
		}
		for _, k := range mds[i].Undecoded() {
			if ks := k.String(); !seen[ks] {
				seen[ks] = true
				keys = append(keys, k)
			}
		}
	}
	return keys, true
}
