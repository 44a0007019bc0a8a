package health

// One DNS question and its answer section, encoded by hand: a health check
// needs a dozen record types and the rcode, which is less code than wiring in
// a general DNS library and keeps the module free of dependencies.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
)

var dnsTypes = map[string]uint16{
	"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
	"AAAA": 28, "SRV": 33, "ANY": 255,
}

var dnsRcodes = map[string]int{
	"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
}

func rcodeName(rc int) string {
	for k, v := range dnsRcodes {
		if v == rc {
			return k
		}
	}
	return "RCODE" + strconv.Itoa(rc)
}

type dnsChecker struct {
	name   string
	qtype  uint16
	rcode  int
	answer string // "" = any
}

func newDNSChecker(s Spec) (checker, error) {
	if s.QueryName == "" {
		return nil, errors.New("dns check needs query_name")
	}
	d := &dnsChecker{name: s.QueryName, answer: s.ExpectAnswer}
	qt := strings.ToUpper(s.QueryType)
	if qt == "" {
		qt = "A"
	}
	t, ok := dnsTypes[qt]
	if !ok {
		return nil, fmt.Errorf("query_type %q not supported (A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, ANY)", s.QueryType)
	}
	d.qtype = t
	rc := strings.ToUpper(s.ExpectRcode)
	if rc == "" {
		rc = "NOERROR"
	}
	r, ok := dnsRcodes[rc]
	if !ok {
		return nil, fmt.Errorf("expect_rcode %q unknown (NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED)", s.ExpectRcode)
	}
	d.rcode = r
	if _, err := encodeQuery(0, d.name, d.qtype); err != nil {
		return nil, fmt.Errorf("query_name: %w", err)
	}
	return d, nil
}

func (d *dnsChecker) check(ctx context.Context, p probe) result {
	id := uint16(rand.Uint32())
	q, _ := encodeQuery(id, d.name, d.qtype)
	reply, err := exchangeUDP(ctx, p, q)
	if err != nil {
		return failed(udpReason("dns", err))
	}
	rc, answers, err := parseReply(reply, id)
	if err != nil {
		return failed("dns: " + err.Error())
	}
	if rc != d.rcode {
		return failed(fmt.Sprintf("dns: rcode %s, want %s", rcodeName(rc), rcodeName(d.rcode)))
	}
	if d.answer == "" {
		return passed("dns: " + rcodeName(rc))
	}
	for _, a := range answers {
		if strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(d.answer, ".")) {
			return passed("dns: answer " + a)
		}
	}
	return failed(fmt.Sprintf("dns: %d answers, none is %q", len(answers), d.answer))
}

func encodeQuery(id uint16, name string, qtype uint16) ([]byte, error) {
	b := make([]byte, 12, 12+len(name)+6)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], 0x0100) // RD: works against recursors and authoritatives alike
	binary.BigEndian.PutUint16(b[4:], 1)      // QDCOUNT
	name = strings.TrimSuffix(name, ".")
	if len(name) > 253 {
		return nil, errors.New("name longer than 253 bytes")
	}
	if name != "" {
		for _, l := range strings.Split(name, ".") {
			if l == "" || len(l) > 63 {
				return nil, fmt.Errorf("bad label %q", l)
			}
			b = append(b, byte(len(l)))
			b = append(b, l...)
		}
	}
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, qtype)
	b = binary.BigEndian.AppendUint16(b, 1) // IN
	return b, nil
}

var errShort = errors.New("truncated reply")

// parseReply checks the header and renders each answer's rdata as text:
// addresses for A/AAAA, names for CNAME/NS/PTR/MX (exchange), the first
// string for TXT; other types as their type number.
func parseReply(m []byte, id uint16) (rcode int, answers []string, err error) {
	if len(m) < 12 {
		return 0, nil, errShort
	}
	if binary.BigEndian.Uint16(m[0:]) != id {
		return 0, nil, errors.New("reply ID does not match query")
	}
	flags := binary.BigEndian.Uint16(m[2:])
	if flags&0x8000 == 0 {
		return 0, nil, errors.New("reply is not a response")
	}
	rcode = int(flags & 0xf)
	qd := int(binary.BigEndian.Uint16(m[4:]))
	an := int(binary.BigEndian.Uint16(m[6:]))
	off := 12
	for range qd {
		if _, off, err = readName(m, off); err != nil {
			return 0, nil, err
		}
		off += 4
	}
	for range an {
		if off > len(m) {
			return 0, nil, errShort
		}
		if _, off, err = readName(m, off); err != nil {
			return 0, nil, err
		}
		if off+10 > len(m) {
			return 0, nil, errShort
		}
		typ := binary.BigEndian.Uint16(m[off:])
		rdlen := int(binary.BigEndian.Uint16(m[off+8:]))
		off += 10
		if off+rdlen > len(m) {
			return 0, nil, errShort
		}
		rd := m[off : off+rdlen]
		switch typ {
		case 1, 28:
			if a, ok := netip.AddrFromSlice(rd); ok {
				answers = append(answers, a.String())
			}
		case 2, 5, 12:
			if n, _, err := readName(m, off); err == nil {
				answers = append(answers, n)
			}
		case 15:
			if rdlen > 2 {
				if n, _, err := readName(m, off+2); err == nil {
					answers = append(answers, n)
				}
			}
		case 16:
			if rdlen > 0 && int(rd[0]) < rdlen {
				answers = append(answers, string(rd[1:1+int(rd[0])]))
			}
		default:
			answers = append(answers, "TYPE"+strconv.Itoa(int(typ)))
		}
		off += rdlen
	}
	return rcode, answers, nil
}

// readName decodes a possibly compressed name at off and returns the offset
// after it. Pointer hops are bounded so a hostile reply cannot loop us.
func readName(m []byte, off int) (string, int, error) {
	var sb strings.Builder
	end := -1
	for hops := 0; ; {
		if off >= len(m) {
			return "", 0, errShort
		}
		l := int(m[off])
		switch {
		case l == 0:
			if end < 0 {
				end = off + 1
			}
			if sb.Len() == 0 {
				sb.WriteByte('.')
			}
			return sb.String(), end, nil
		case l&0xc0 == 0xc0:
			if off+1 >= len(m) {
				return "", 0, errShort
			}
			if hops++; hops > 32 {
				return "", 0, errors.New("name compression loop")
			}
			if end < 0 {
				end = off + 2
			}
			off = int(binary.BigEndian.Uint16(m[off:]) & 0x3fff)
		case l&0xc0 != 0:
			return "", 0, errors.New("bad label type")
		default:
			if off+1+l > len(m) {
				return "", 0, errShort
			}
			sb.Write(m[off+1 : off+1+l])
			sb.WriteByte('.')
			off += 1 + l
		}
	}
}
