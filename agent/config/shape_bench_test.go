package config

import "testing"

func BenchmarkCheckShape1000x10(b *testing.B) {
	src := bigSource(1000, "")
	b.SetBytes(int64(len(src)))
	for i := 0; i < b.N; i++ {
		if p := checkShape("f", src); p != nil {
			b.Fatal(p)
		}
	}
}
