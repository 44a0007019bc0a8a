package health

import "testing"

// FuzzParseReply feeds arbitrary datagrams to the DNS reply parser: a
// hostile or broken server must get an error, never a panic or a hang.
func FuzzParseReply(f *testing.F) {
	f.Add([]byte{0, 7, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0, 0xc0, 12})
	q, _ := encodeQuery(7, "www.example.org", 1)
	resp := append([]byte(nil), q...)
	resp[2], resp[3], resp[7] = 0x81, 0x80, 1
	resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
	f.Add(resp)
	mx := append([]byte(nil), q...)
	mx[2], mx[3], mx[7] = 0x81, 0x80, 2
	mx = append(mx, 0xc0, 12, 0, 15, 0, 1, 0, 0, 0, 60, 0, 4, 0, 10, 0xc0, 12)
	mx = append(mx, 0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 3, 5, 'a', 'b')
	f.Add(mx)
	f.Fuzz(func(t *testing.T, m []byte) {
		_, _, _ = parseReply(m, 7)
	})
}
