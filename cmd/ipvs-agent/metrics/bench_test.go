package metrics

import (
	"bytes"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// BenchmarkScrape1000x10 is one scrape's CPU at 1,000 x 10 (fake kernel,
// already read): collect, gather, encode as text.
func BenchmarkScrape1000x10(b *testing.B) {
	reg, stop := bigRegistry(b, true)
	defer stop()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fams, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, f := range fams {
			enc.Encode(f)
		}
		b.SetBytes(int64(buf.Len()))
	}
}

var _ = prometheus.NewRegistry
