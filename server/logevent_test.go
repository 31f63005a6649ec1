package server

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/rs/zerolog"
)

// TestConnEvent: c.event gives the line c.log() gives, byte for byte, and
// nothing at all, without allocating, when its level is disabled.
func TestConnEvent(t *testing.T) {
	var out bytes.Buffer
	s := &Server{log: zerolog.New(&out).With().Str("svc", "mx").Logger(), idBase: "B"}
	proxy := netip.MustParseAddr("127.0.0.1")
	c := &conn{srv: s, n: 7, remote: netip.MustParseAddr("192.0.2.1"), proxy: &proxy, tlsInfo: "TLSv1.3"}
	c.log().Info().Str("id", "Q1").Msg("delivered")
	want := out.String()
	out.Reset()
	c.event(zerolog.InfoLevel).Str("id", "Q1").Msg("delivered")
	if got := out.String(); got != want || want == "" {
		t.Errorf("event wrote %q, c.log() %q", got, want)
	}

	s.log = s.log.Level(zerolog.WarnLevel)
	out.Reset()
	allocs := testing.AllocsPerRun(100, func() {
		c.event(zerolog.InfoLevel).Str("id", "Q1").Int64("size", 10).Msg("delivered")
	})
	if allocs != 0 || out.Len() != 0 {
		t.Errorf("disabled level: %v allocations, wrote %q", allocs, out.String())
	}
}
