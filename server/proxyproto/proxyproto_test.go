package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	pp "github.com/pires/go-proxyproto"
)

func init() {
	// The oracle's bound on the v2 length field, made ours, so that the
	// two agree on what is too long.
	pp.MaxV2HeaderSize = MaxV2Len
}

// v2 builds a version 2 header: the signature, ver/cmd, family, then the
// length of body and body (addresses and TLVs).
func v2(verCmd, fam byte, body ...[]byte) []byte {
	b := []byte(sigV2)
	var all []byte
	for _, p := range body {
		all = append(all, p...)
	}
	b = append(b, verCmd, fam, byte(len(all)>>8), byte(len(all)))
	return append(b, all...)
}

// addr4 is a TCP4 address block: src, dst, sport, dport.
func addr4(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	return append(b, byte(sport>>8), byte(sport), byte(dport>>8), byte(dport))
}

func addr6(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	return append(b, byte(sport>>8), byte(sport), byte(dport>>8), byte(dport))
}

// tlv is one type-length-value.
func tlv(typ byte, v string) []byte {
	return append([]byte{typ, byte(len(v) >> 8), byte(len(v))}, v...)
}

var ap = netip.MustParseAddrPort

// valid are headers Parse must accept, each followed by "EHLO x\r\n",
// which it must leave unconsumed.
var valid = []struct {
	name string
	in   []byte
	want Header
}{
	// Version 1.
	{"v1 tcp4", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n"),
		Header{1, CmdProxy, TCP4, ap("192.0.2.7:56324"), ap("198.51.100.1:25")}},
	{"v1 tcp4 max", []byte("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
		Header{1, CmdProxy, TCP4, ap("255.255.255.255:65535"), ap("255.255.255.255:65535")}},
	{"v1 tcp4 zeros", []byte("PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n"),
		Header{1, CmdProxy, TCP4, ap("0.0.0.0:0"), ap("10.0.0.1:0")}},
	{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8:0:1::25 40000 25\r\n"),
		Header{1, CmdProxy, TCP6, ap("[2001:db8::7]:40000"), ap("[2001:db8:0:1::25]:25")}},
	{"v1 tcp6 full", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff FFFF:0:0:0:0:0:0:1 1 2\r\n"),
		Header{1, CmdProxy, TCP6, ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1"), ap("[ffff::1]:2")}},
	{"v1 tcp6 mapped", []byte("PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n"),
		Header{1, CmdProxy, TCP6, ap("[::ffff:192.0.2.7]:1"), ap("[::1]:2")}},
	{"v1 tcp6 unspecified", []byte("PROXY TCP6 :: ::1 1 2\r\n"),
		Header{1, CmdProxy, TCP6, ap("[::]:1"), ap("[::1]:2")}},
	{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), Header{1, CmdProxy, Unspec, netip.AddrPort{}, netip.AddrPort{}}},
	{"v1 unknown with rest", []byte("PROXY UNKNOWN ffff:f...f:ffff whatever 1 2\r\n"), Header{1, CmdProxy, Unspec, netip.AddrPort{}, netip.AddrPort{}}},
	{"v1 unknown longest", []byte("PROXY UNKNOWN " + strings.Repeat("x", MaxV1Bytes-16) + "\r\n"), Header{1, CmdProxy, Unspec, netip.AddrPort{}, netip.AddrPort{}}},

	// Version 2.
	{"v2 tcp4", v2(0x21, 0x11, addr4("192.0.2.7", "198.51.100.1", 56324, 25)),
		Header{2, CmdProxy, TCP4, ap("192.0.2.7:56324"), ap("198.51.100.1:25")}},
	{"v2 tcp4 tlvs", v2(0x21, 0x11, addr4("192.0.2.7", "198.51.100.1", 1, 25), tlv(0x05, "unique"), tlv(0x04, ""), tlv(0x02, "mx.example")),
		Header{2, CmdProxy, TCP4, ap("192.0.2.7:1"), ap("198.51.100.1:25")}},
	{"v2 tcp6", v2(0x21, 0x21, addr6("2001:db8::7", "2001:db8::25", 40000, 25)),
		Header{2, CmdProxy, TCP6, ap("[2001:db8::7]:40000"), ap("[2001:db8::25]:25")}},
	{"v2 tcp6 tlvs", v2(0x21, 0x21, addr6("2001:db8::7", "2001:db8::25", 40000, 25), tlv(0x01, "smtp"), tlv(0xE0, strings.Repeat("z", 500))),
		Header{2, CmdProxy, TCP6, ap("[2001:db8::7]:40000"), ap("[2001:db8::25]:25")}},
	{"v2 longest", v2(0x21, 0x11, addr4("192.0.2.7", "198.51.100.1", 1, 25), tlv(0x04, strings.Repeat("z", MaxV2Len-12-3))),
		Header{2, CmdProxy, TCP4, ap("192.0.2.7:1"), ap("198.51.100.1:25")}},
	// LOCAL: addresses ignored, whatever the family and length.
	{"v2 local", v2(0x20, 0x00), Header{2, CmdLocal, Unspec, netip.AddrPort{}, netip.AddrPort{}}},
	{"v2 local tcp4", v2(0x20, 0x11, addr4("192.0.2.7", "198.51.100.1", 1, 25)), Header{2, CmdLocal, TCP4, netip.AddrPort{}, netip.AddrPort{}}},
	{"v2 local short block", v2(0x20, 0x21, []byte{1, 2, 3}), Header{2, CmdLocal, TCP6, netip.AddrPort{}, netip.AddrPort{}}},
	// PROXY with families a TCP receiver treats as UNSPEC (spec 2.2).
	{"v2 proxy unspec", v2(0x21, 0x00), Header{2, CmdProxy, Unspec, netip.AddrPort{}, netip.AddrPort{}}},
	{"v2 proxy udp4", v2(0x21, 0x12, addr4("192.0.2.7", "198.51.100.1", 1, 25)), Header{2, CmdProxy, UDP4, netip.AddrPort{}, netip.AddrPort{}}},
	{"v2 proxy udp6", v2(0x21, 0x22, addr6("::1", "::2", 1, 25)), Header{2, CmdProxy, UDP6, netip.AddrPort{}, netip.AddrPort{}}},
	{"v2 proxy unix", v2(0x21, 0x31, make([]byte, 216)), Header{2, CmdProxy, UnixStream, netip.AddrPort{}, netip.AddrPort{}}},
}

// TestParseValid: every valid header parses to what it says, consuming
// exactly itself; each proper prefix asks for more, and so does none.
func TestParseValid(t *testing.T) {
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			in := append(append([]byte{}, tc.in...), "EHLO x\r\n"...)
			h, n, more, err := Parse(in)
			if err != nil || more {
				t.Fatalf("Parse = more %v, err %v", more, err)
			}
			if h != tc.want {
				t.Errorf("header = %+v\nwant     %+v", h, tc.want)
			}
			if n != len(tc.in) {
				t.Errorf("consumed %d, want %d", n, len(tc.in))
			}
			for k := range len(tc.in) {
				if h, n, more, err := Parse(tc.in[:k]); !more || err != nil || n != 0 || h != (Header{}) {
					t.Fatalf("prefix of %d bytes: more %v, n %d, err %v, %+v", k, more, n, err, h)
				}
			}
		})
	}
}

// invalid are inputs the spec forbids (or that are no header), with the
// error Parse must give.
var invalid = []struct {
	name string
	in   []byte
	want error
}{
	// Neither signature.
	{"smtp", []byte("EHLO mx.example\r\n"), ErrNotProxy},
	{"proxy lowercase", []byte("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrNotProxy},
	{"proxy no space", []byte("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrNotProxy},
	{"v2 bad signature", []byte("\r\n\r\n\x00\r\nQUIT\r"), ErrNotProxy},
	{"crlf then smtp", []byte("\r\nEHLO"), ErrNotProxy},

	// Version 1 framing.
	{"v1 bare lf", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), ErrV1Syntax},
	{"v1 bare cr", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r" + strings.Repeat("x", 80)), ErrV1TooLong},
	{"v1 too long", []byte("PROXY UNKNOWN " + strings.Repeat("x", MaxV1Bytes-15) + "\r\n"), ErrV1TooLong},
	{"v1 no crlf", []byte("PROXY TCP4 " + strings.Repeat("1", 200)), ErrV1TooLong},
	{"v1 double space", []byte("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrV1Family},
	{"v1 double space later", []byte("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), ErrV1Syntax},
	{"v1 tab", []byte("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"), ErrV1Family},
	{"v1 trailing space", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), ErrV1Syntax},
	{"v1 extra field", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), ErrV1Syntax},
	{"v1 missing port", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), ErrV1Syntax},
	{"v1 only family", []byte("PROXY TCP4\r\n"), ErrV1Family},
	{"v1 empty family", []byte("PROXY \r\n"), ErrV1Family},
	{"v1 family udp", []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrV1Family},
	{"v1 family lowercase", []byte("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrV1Family},
	{"v1 unknownx", []byte("PROXY UNKNOWNX\r\n"), ErrV1Family},

	// Version 1 addresses: canonical, of the declared family.
	{"v1 ipv4 leading zero", []byte("PROXY TCP4 192.0.2.07 5.6.7.8 1 2\r\n"), ErrAddress},
	{"v1 ipv4 octet 256", []byte("PROXY TCP4 192.0.2.256 5.6.7.8 1 2\r\n"), ErrAddress},
	{"v1 ipv4 three parts", []byte("PROXY TCP4 192.0.2 5.6.7.8 1 2\r\n"), ErrAddress},
	{"v1 ipv4 five parts", []byte("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"), ErrAddress},
	{"v1 ipv4 empty part", []byte("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n"), ErrAddress},
	{"v1 ipv6 in tcp4", []byte("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), ErrAddress},
	{"v1 mapped in tcp4", []byte("PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n"), ErrAddress},
	{"v1 ipv4 in tcp6", []byte("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), ErrAddress},
	{"v1 ipv6 zone", []byte("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), ErrAddress},
	{"v1 ipv6 two ellipses", []byte("PROXY TCP6 1::2::3 ::1 1 2\r\n"), ErrAddress},
	{"v1 ipv6 five digits", []byte("PROXY TCP6 12345::1 ::1 1 2\r\n"), ErrAddress},
	{"v1 ipv6 nine groups", []byte("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"), ErrAddress},
	{"v1 ipv6 seven groups", []byte("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n"), ErrAddress},
	{"v1 ipv6 empty ellipsis", []byte("PROXY TCP6 1:2:3:4::5:6:7:8 ::1 1 2\r\n"), ErrAddress},
	{"v1 ipv6 trailing colon", []byte("PROXY TCP6 1:: ::1: 1 2\r\n"), ErrAddress},
	{"v1 ipv6 leading colon", []byte("PROXY TCP6 :1::2 ::1 1 2\r\n"), ErrAddress},
	{"v1 ipv6 brackets", []byte("PROXY TCP6 [::1] ::1 1 2\r\n"), ErrAddress},
	{"v1 dst wrong family", []byte("PROXY TCP4 1.2.3.4 ::1 1 2\r\n"), ErrAddress},

	// Version 1 ports.
	{"v1 port leading zero", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), ErrPort},
	{"v1 port 65536", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"), ErrPort},
	{"v1 port sign", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), ErrPort},
	{"v1 port hex", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n"), ErrPort},
	{"v1 port long", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 000001 2\r\n"), ErrPort},
	{"v1 port empty", []byte("PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n"), ErrPort},

	// Version 2.
	{"v2 version 1", v2(0x11, 0x11, addr4("1.2.3.4", "5.6.7.8", 1, 2)), ErrV2Version},
	{"v2 version 3", v2(0x31, 0x11, addr4("1.2.3.4", "5.6.7.8", 1, 2)), ErrV2Version},
	{"v2 command 2", v2(0x22, 0x11, addr4("1.2.3.4", "5.6.7.8", 1, 2)), ErrV2Command},
	{"v2 command f", v2(0x2f, 0x11, addr4("1.2.3.4", "5.6.7.8", 1, 2)), ErrV2Command},
	{"v2 family 4", v2(0x21, 0x41, addr4("1.2.3.4", "5.6.7.8", 1, 2)), ErrV2Family},
	{"v2 transport 3", v2(0x21, 0x13, addr4("1.2.3.4", "5.6.7.8", 1, 2)), ErrV2Family},
	{"v2 unspec stream", v2(0x21, 0x01), ErrV2Family},
	{"v2 local bad family", v2(0x20, 0x41), ErrV2Family},
	{"v2 tcp4 short", v2(0x21, 0x11, make([]byte, 11)), ErrV2Length},
	{"v2 tcp6 with tcp4 block", v2(0x21, 0x21, addr4("1.2.3.4", "5.6.7.8", 1, 2)), ErrV2Length},
	{"v2 unix short", v2(0x21, 0x31, make([]byte, 215)), ErrV2Length},
	{"v2 too long", v2(0x21, 0x11, make([]byte, MaxV2Len+1)), ErrV2Length},
	{"v2 local too long", v2(0x20, 0x00, make([]byte, MaxV2Len+1)), ErrV2Length},
}

// TestParseInvalid: each forbidden input is refused with its reason, and
// as soon as the deciding byte is there: every prefix that is still a
// possible header asks for more, and none is accepted.
func TestParseInvalid(t *testing.T) {
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			h, n, more, err := Parse(tc.in)
			if !errors.Is(err, tc.want) || more || n != 0 || h != (Header{}) {
				t.Fatalf("Parse = %+v, %d, more %v, err %v; want err %v", h, n, more, err, tc.want)
			}
			for k := range len(tc.in) {
				if _, n, more, err := Parse(tc.in[:k]); err == nil && (!more || n != 0) {
					t.Fatalf("prefix of %d bytes accepted", k)
				}
			}
		})
	}
}

// TestParseFailsFast: a v2 header with a bad fixed byte is refused when
// that byte arrives, not after the length it declares; garbage at once.
func TestParseFailsFast(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{sigV2 + "\x31", ErrV2Version},
		{sigV2 + "\x23", ErrV2Command},
		{sigV2 + "\x21\x99", ErrV2Family},
		{sigV2 + "\x21\x11\xff\xff", ErrV2Length},
		{"G", ErrNotProxy},
		{"PRO\x00", ErrNotProxy},
		{"\r\n\r\n\x01", ErrNotProxy},
	} {
		if _, _, more, err := Parse([]byte(tc.in)); !errors.Is(err, tc.want) || more {
			t.Errorf("Parse(%q) = more %v, %v; want %v", tc.in, more, err, tc.want)
		}
	}
}

// TestParseAllocs: parsing allocates nothing, valid or not.
func TestParseAllocs(t *testing.T) {
	for _, tc := range valid {
		if a := testing.AllocsPerRun(100, func() { _, _, _, _ = Parse(tc.in) }); a != 0 {
			t.Errorf("%s: %v allocations", tc.name, a)
		}
	}
	for _, tc := range invalid {
		if a := testing.AllocsPerRun(100, func() { _, _, _, _ = Parse(tc.in) }); a != 0 {
			t.Errorf("%s: %v allocations", tc.name, a)
		}
	}
}

// oracle parses b with github.com/pires/go-proxyproto: the header, the
// bytes it consumed, and its error.
func oracle(b []byte) (*pp.Header, int, error) {
	r := bytes.NewReader(b)
	br := bufio.NewReaderSize(r, max(len(b), 16))
	h, err := pp.Read(br)
	return h, len(b) - br.Buffered() - r.Len(), err
}

// agree checks Parse against the oracle on one input; it returns a
// description of the disagreement, or "".
func agree(b []byte) string {
	h, n, more, err := Parse(b)
	oh, on, oerr := oracle(b)
	switch {
	case more:
		if oerr == nil {
			return "Parse wants more, oracle accepted"
		}
		return ""
	case err != nil:
		if oerr == nil {
			return "Parse refused (" + err.Error() + "), oracle accepted"
		}
		return ""
	}
	// Parse accepted. The oracle refuses PROXY with UNSPEC, which the spec
	// leaves to the receiver ("free to accept the connection anyway and use
	// the real endpoint addresses or to reject it"); like a v1 UNKNOWN, we
	// accept it.
	if h.Version == 2 && h.Command == CmdProxy && h.Family == Unspec {
		if oerr == nil {
			return "oracle accepted PROXY UNSPEC"
		}
		return ""
	}
	if oerr != nil {
		return "Parse accepted, oracle refused: " + oerr.Error()
	}
	if on != n {
		return "consumed differ"
	}
	if int(oh.Version) != int(h.Version) {
		return "version differs"
	}
	if h.Source.IsValid() != (h.Command == CmdProxy && (h.Family == TCP4 || h.Family == TCP6)) {
		return "source validity"
	}
	if !h.Source.IsValid() {
		return ""
	}
	if byte(oh.TransportProtocol) != byte(h.Family) || !oh.Command.IsProxy() {
		return "family or command differ"
	}
	src, ok1 := oh.SourceAddr.(*net.TCPAddr)
	dst, ok2 := oh.DestinationAddr.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return "oracle has no TCP addresses"
	}
	if src.AddrPort() != h.Source || dst.AddrPort() != h.Destination {
		return "addresses differ: oracle " + src.String() + " " + dst.String() + ", Parse " + h.Source.String() + " " + h.Destination.String()
	}
	return ""
}

// TestOracle: on every table input, and every prefix of the valid ones,
// Parse and go-proxyproto agree: the same addresses and length when Parse
// accepts, and both refuse what the spec forbids.
func TestOracle(t *testing.T) {
	for _, tc := range valid {
		if d := agree(tc.in); d != "" {
			t.Errorf("%s: %s", tc.name, d)
		}
		in := append(append([]byte{}, tc.in...), "EHLO x\r\n"...)
		if d := agree(in); d != "" {
			t.Errorf("%s + EHLO: %s", tc.name, d)
		}
	}
	for _, tc := range invalid {
		if _, _, err := oracle(tc.in); err == nil {
			t.Errorf("%s: the oracle accepts what the spec forbids", tc.name)
		}
		if d := agree(tc.in); d != "" {
			t.Errorf("%s: %s", tc.name, d)
		}
	}
}

// TestIPv6LikeNetip: the IPv6 parser agrees with netip.ParseAddr (zones
// aside) on a set of tricky forms; FuzzParse covers the rest.
func TestIPv6LikeNetip(t *testing.T) {
	for _, s := range []string{
		"::", "::1", "1::", "1::2", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6::", "::2:3:4:5:6:7:8",
		"1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7", "1:2:3:4:5:6:1.2.3.4", "::1.2.3.4", "::ffff:1.2.3.4",
		"1::1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "1:2:3:4:5::1.2.3.4", "1:2:3:4:5:6::1.2.3.4",
		"::01.2.3.4", "::1.2.3", "1.2.3.4", ":", ":::", "1:::2", "abcd:ef01::", "ABCD::", "0000::",
		"00000::", "g::", "1:2:3:4:5:6:7:8:", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "1::2:",
		"::1.2.3.4.5", "::1.2.3.4:5", "1:2:3:4:5:6:7:8:9", "",
	} {
		got, ok := parseIPv6([]byte(s))
		want, err := netip.ParseAddr(s)
		wok := err == nil && want.Is6()
		if ok != wok || (ok && got != want) {
			t.Errorf("%q: parseIPv6 = %v %v, netip = %v %v", s, got, ok, want, err)
		}
	}
}

// FuzzParse: Parse never panics, consumes no more than it has, asks for
// more only below MaxBytes, is consistent on the bytes it consumed and on
// their prefixes, and agrees with go-proxyproto; its address parsers agree
// with netip.
func FuzzParse(f *testing.F) {
	for _, tc := range valid {
		f.Add(tc.in)
	}
	for _, tc := range invalid {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, more, err := Parse(b)
		switch {
		case more:
			if err != nil || n != 0 || len(b) >= MaxBytes {
				t.Fatalf("more with err %v, n %d, len %d", err, n, len(b))
			}
		case err != nil:
			if n != 0 {
				t.Fatalf("error %v with n %d", err, n)
			}
		default:
			if n <= 0 || n > len(b) || n > MaxBytes {
				t.Fatalf("n = %d of %d", n, len(b))
			}
			h2, n2, more2, err2 := Parse(b[:n])
			if h2 != h || n2 != n || more2 || err2 != nil {
				t.Fatalf("the consumed bytes alone parse differently: %+v %d %v %v", h2, n2, more2, err2)
			}
			if _, _, more, err := Parse(b[:n-1]); !more || err != nil {
				t.Fatalf("a prefix does not ask for more: %v", err)
			}
		}
		if d := agree(b); d != "" {
			t.Fatalf("%q: %s", b, d)
		}
		// The address parsers against netip, on the input as text.
		s := string(b)
		if strings.IndexByte(s, '%') < 0 {
			want, werr := netip.ParseAddr(s)
			got6, ok6 := parseIPv6(b)
			if ok6 != (werr == nil && want.Is6()) || (ok6 && got6 != want) {
				t.Fatalf("parseIPv6(%q) = %v %v, netip %v %v", s, got6, ok6, want, werr)
			}
			got4, ok4 := parseIPv4(b)
			if ok4 != (werr == nil && want.Is4()) || (ok4 && got4 != want) {
				t.Fatalf("parseIPv4(%q) = %v %v, netip %v %v", s, got4, ok4, want, werr)
			}
		}
	})
}

// BenchmarkParse: the cost per header.
func BenchmarkParse(b *testing.B) {
	for _, name := range []string{"v1 tcp4", "v1 tcp6", "v2 tcp4", "v2 tcp6 tlvs"} {
		var in []byte
		for _, tc := range valid {
			if tc.name == name {
				in = tc.in
			}
		}
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _, _, _ = Parse(in)
			}
		})
	}
}
