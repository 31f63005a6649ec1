package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// Size is how big the messages of a run are: a fixed number of bytes, or
// Mix, a seeded distribution of realistic sizes.
type Size struct {
	Bytes int64 // the fixed size, header included; 0 when Mix is set
	Mix   bool
}

// The mix: share of messages in ten-thousandths, and the size range of
// each class in bytes (inclusive). Shaped like an MX's inbound traffic:
// mostly short text, some HTML, few attachments, rare large ones.
var mixClasses = [...]struct {
	share  uint64
	lo, hi int64
}{
	{6000, 2_000, 8_000},
	{3000, 10_000, 50_000},
	{900, 100_000, 500_000},
	{100, 1_000_000, 5_000_000},
}

// maxFixedSize bounds a fixed -size: the body pool is allocated whole.
const maxFixedSize = 64 << 20

// ParseSize parses a message size: a number of bytes with an optional unit,
// KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), case
// insensitive ("10KB" is 10000 bytes, "1KiB" 1024), or "mix".
func ParseSize(s string) (Size, error) {
	if strings.EqualFold(strings.TrimSpace(s), "mix") {
		return Size{Mix: true}, nil
	}
	n, err := parseBytes(s, maxFixedSize)
	if err != nil {
		return Size{}, err
	}
	return Size{Bytes: n}, nil
}

// ParseBytes parses a byte count as ParseSize does a fixed size, from 1
// byte to 1 TiB: "24MiB", "900MiB".
func ParseBytes(s string) (int64, error) { return parseBytes(s, 1<<40) }

// parseBytes parses a number of bytes with an optional unit, from 1 to
// limit.
func parseBytes(s string, limit int64) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit (KB, KiB, MB, MiB, GB, GiB) or \"mix\"", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	var mult int64
	switch strings.ToLower(strings.TrimSpace(t[i:])) {
	case "", "b":
		mult = 1
	case "kb", "k":
		mult = 1000
	case "mb", "m":
		mult = 1000 * 1000
	case "gb", "g":
		mult = 1000 * 1000 * 1000
	case "kib":
		mult = 1 << 10
	case "mib":
		mult = 1 << 20
	case "gib":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("size %q: unknown unit %q (KB, KiB, MB, MiB, GB, GiB)", s, t[i:])
	}
	if n <= 0 || n > limit/mult {
		return 0, fmt.Errorf("size %q: must be from 1 byte to %d MiB", s, limit>>20)
	}
	return n * mult, nil
}

// String formats s as ParseSize reads it, in the largest exact unit of
// 1000 or else 1024.
func (s Size) String() string {
	if s.Mix {
		return "mix"
	}
	n := s.Bytes
	switch {
	case n == 0:
		return "0"
	case n%1_000_000_000 == 0:
		return strconv.FormatInt(n/1_000_000_000, 10) + "GB"
	case n%1_000_000 == 0:
		return strconv.FormatInt(n/1_000_000, 10) + "MB"
	case n%1000 == 0:
		return strconv.FormatInt(n/1000, 10) + "KB"
	case n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

// MarshalText makes a Size read as its string in JSON.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses what MarshalText wrote.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// max is the largest message this size can produce.
func (s Size) max() int64 {
	if s.Mix {
		return mixClasses[len(mixClasses)-1].hi
	}
	return s.Bytes
}

// Of returns the size of message seq in a run seeded with seed. For a mix
// it depends only on (seed, seq), not on which session sends the message
// or when, so a seeded run always sends the same sizes.
func (s Size) Of(seed, seq int64) int64 {
	if !s.Mix {
		return s.Bytes
	}
	h := splitmix64(uint64(seed) ^ splitmix64(uint64(seq)))
	p := h % 10000
	for _, c := range mixClasses {
		if p < c.share {
			r := splitmix64(h)
			return c.lo + int64(r%uint64(c.hi-c.lo+1))
		}
		p -= c.share
	}
	return mixClasses[0].lo // unreachable: the shares add up to 10000
}

// splitmix64 is the SplitMix64 finaliser: a cheap, well-mixed hash of x.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
