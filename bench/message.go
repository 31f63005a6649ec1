package bench

import (
	"math/rand/v2"
	"strconv"
	"time"
)

// MarkerHeader names the header that carries each message's marker,
// "<runid>-<seq>". -verify-maildir looks for it.
const MarkerHeader = "X-Nanomx-Bench"

// lineLen is the length of a body line without its CRLF.
const lineLen = 76

// endOfData follows every body: its CRLF ends the last line (a body that
// already ends in CRLF then ends in an empty line) and ".CRLF" the data.
var endOfData = []byte("\r\n.\r\n")

// bodyPool is text generated once per run: lines of lineLen letters and
// spaces ending in CRLF, none starting with a dot, so a prefix of it is a
// message body that needs no dot-stuffing. Every message of the run shares
// it; only the header differs.
type bodyPool []byte

// newBodyPool generates n bytes (at least) of seeded text.
func newBodyPool(n int64, seed int64) bodyPool {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6e616e6f6d78)) // "nanomx"
	lines := n/(lineLen+2) + 1
	b := make([]byte, 0, lines*(lineLen+2))
	for range lines {
		start := len(b)
		for len(b)-start < lineLen {
			// Words of 2 to 9 letters, which compress and wrap like text.
			w := 2 + rng.IntN(8)
			for range w {
				b = append(b, byte('a'+rng.IntN(26)))
			}
			b = append(b, ' ')
		}
		b = append(b[:start+lineLen], '\r', '\n')
	}
	return b
}

// body returns the pool prefix that makes a message of size bytes after a
// header of hdr bytes and before endOfData (whose first CRLF ends the
// message's last line, so it counts). It is at most one byte short of size:
// a prefix may not end between CR and LF.
func (p bodyPool) body(size int64, hdr int) []byte {
	n := size - int64(hdr) - 2
	if n <= 0 {
		return nil
	}
	n = min(n, int64(len(p)))
	if p[n-1] == '\r' {
		n--
	}
	return p[:n]
}

// appendHeader appends the message header of seq to dst: the marker, a
// Message-ID, From, To, Subject and Date, and the empty line that ends it.
// date is formatted once per run.
func appendHeader(dst []byte, runID string, seq int64, from, to, date string) []byte {
	dst = append(dst, "Message-ID: <"...)
	dst = appendMarker(dst, runID, seq)
	dst = append(dst, "@bench.nanomx.invalid>\r\n"...)
	dst = append(dst, MarkerHeader+": "...)
	dst = appendMarker(dst, runID, seq)
	dst = append(dst, "\r\nFrom: <"...)
	dst = append(dst, from...)
	dst = append(dst, ">\r\nTo: <"...)
	dst = append(dst, to...)
	dst = append(dst, ">\r\nSubject: nanomx bench "...)
	dst = appendMarker(dst, runID, seq)
	dst = append(dst, "\r\nDate: "...)
	dst = append(dst, date...)
	dst = append(dst, "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"...)
	return dst
}

// appendMarker appends "<runid>-<seq>".
func appendMarker(dst []byte, runID string, seq int64) []byte {
	dst = append(dst, runID...)
	dst = append(dst, '-')
	return strconv.AppendInt(dst, seq, 10)
}

// Marker returns the marker of message seq of run runID.
func Marker(runID string, seq int64) string {
	return string(appendMarker(nil, runID, seq))
}

// headerDate is the Date header value for a run started at t.
func headerDate(t time.Time) string { return t.Format(time.RFC1123Z) }
