// Package screen decides about a client before it sends mail, from its
// address alone: DNS block and allow lists scored like Postfix's
// postscreen (dnsbl_sites, dnsbl_threshold) and per-address rates like
// Postfix's anvil (connections, messages and recipients per minute).
//
// It knows no SMTP sessions: the server asks it at connect, MAIL and RCPT
// and turns its answers into replies.
package screen

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxWeight bounds a site's weight either way, so that no sum of weights
// can overflow.
const MaxWeight = 1 << 20

// Site is one entry of dnsbl_sites, in postscreen's syntax
// "domain[=filter][*weight]": "zen.spamhaus.org=127.0.0.[2..11]*3",
// "list.dnswl.org=127.0.[0..255].[1..3]*-2", "bl.spamcop.net".
type Site struct {
	// Domain is the list's zone, lowercase, without a trailing dot.
	Domain string
	// Filter says which answers count; nil counts every answer that is
	// not an error code (AnswerError).
	Filter *Filter
	// Weight is added to the client's score when the list answers with
	// an address the filter matches; negative for an allow list (DNSWL).
	Weight int
}

// String returns the entry in the syntax it was parsed from.
func (s Site) String() string {
	out := s.Domain
	if s.Filter != nil {
		out += "=" + s.Filter.String()
	}
	if s.Weight != 1 {
		out += "*" + strconv.Itoa(s.Weight)
	}
	return out
}

// Filter is a set of IPv4 answers: one set of allowed values per octet,
// like postscreen's "127.0.0.[2..11]" or "127.0.0.[2;4;10..11]".
type Filter struct {
	octets [4]octetSet
	text   string
}

// octetSet is a set of byte values, one bit each.
type octetSet [4]uint64

func (o *octetSet) add(lo, hi int) {
	for v := lo; v <= hi; v++ {
		o[v>>6] |= 1 << (v & 63)
	}
}

func (o *octetSet) has(v byte) bool { return o[v>>6]&(1<<(v&63)) != 0 }

// Match reports whether the IPv4 address a is in the filter.
func (f *Filter) Match(a [4]byte) bool {
	for i := range a {
		if !f.octets[i].has(a[i]) {
			return false
		}
	}
	return true
}

// String returns the filter as it was written.
func (f *Filter) String() string { return f.text }

// ParseSite parses one dnsbl_sites entry.
func ParseSite(s string) (Site, error) {
	site := Site{Weight: 1}
	rest := strings.TrimSpace(s)
	// A filter never holds '*', so the weight is what follows the last one.
	if i := strings.LastIndexByte(rest, '*'); i >= 0 {
		w, err := parseWeight(rest[i+1:])
		if err != nil {
			return Site{}, fmt.Errorf("%q: weight: %w", s, err)
		}
		site.Weight, rest = w, rest[:i]
	}
	if i := strings.IndexByte(rest, '='); i >= 0 {
		f, err := ParseFilter(rest[i+1:])
		if err != nil {
			return Site{}, fmt.Errorf("%q: filter: %w", s, err)
		}
		site.Filter, rest = f, rest[:i]
	}
	d, err := parseDomain(rest)
	if err != nil {
		return Site{}, fmt.Errorf("%q: %w", s, err)
	}
	site.Domain = d
	return site, nil
}

// ParseSites parses every entry of dnsbl_sites.
func ParseSites(entries []string) ([]Site, error) {
	sites := make([]Site, 0, len(entries))
	for _, e := range entries {
		s, err := ParseSite(e)
		if err != nil {
			return nil, err
		}
		sites = append(sites, s)
	}
	return sites, nil
}

func parseWeight(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	w, err := strconv.Atoi(s)
	if err != nil || w > MaxWeight || w < -MaxWeight {
		return 0, fmt.Errorf("%q is out of range (-%d to %d)", s, MaxWeight, MaxWeight)
	}
	return w, nil
}

// maxDomainLen leaves room in a 253-octet name for the longest query:
// 32 nibbles of an IPv6 address and their dots (RFC 1035 2.3.4).
const maxDomainLen = 253 - 64

// parseDomain checks a list's zone: dot-separated labels of letters,
// digits, '-' and '_', each 1 to 63 octets, short enough for IPv6 queries.
func parseDomain(s string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(s, "."))
	switch {
	case d == "":
		return "", errors.New("no domain")
	case len(d) > maxDomainLen:
		return "", fmt.Errorf("domain longer than %d octets", maxDomainLen)
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("domain %q: a label is empty or longer than 63 octets", d)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("domain %q: character %q", d, c)
			}
		}
	}
	return d, nil
}

// ParseFilter parses a filter: four dot-separated octets, each a number
// from 0 to 255 or a bracketed list of numbers and ranges separated by
// ';', e.g. "127.0.0.[2..11]", "127.0.[0..255].[1..3]",
// "127.0.0.[2;4;10..11]".
func ParseFilter(s string) (*Filter, error) {
	f := &Filter{text: s}
	rest := s
	for i := range 4 {
		var part string
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("%q: '[' without ']'", s)
			}
			part, rest = rest[:end+1], rest[end+1:]
		} else {
			end := strings.IndexByte(rest, '.')
			if end < 0 {
				end = len(rest)
			}
			part, rest = rest[:end], rest[end:]
		}
		if err := f.octets[i].parse(part); err != nil {
			return nil, fmt.Errorf("%q: octet %d: %w", s, i+1, err)
		}
		if i < 3 {
			if !strings.HasPrefix(rest, ".") {
				return nil, fmt.Errorf("%q: want four octets", s)
			}
			rest = rest[1:]
		}
	}
	if rest != "" {
		return nil, fmt.Errorf("%q: %q after the fourth octet", s, rest)
	}
	return f, nil
}

// parse adds one octet's values: "7" or "[2..11;20]".
func (o *octetSet) parse(s string) error {
	if !strings.HasPrefix(s, "[") {
		v, err := octet(s)
		if err != nil {
			return err
		}
		o.add(v, v)
		return nil
	}
	inner := strings.TrimSuffix(s[1:], "]")
	for item := range strings.SplitSeq(inner, ";") {
		lo, hi, isRange := strings.Cut(item, "..")
		a, err := octet(lo)
		if err != nil {
			return err
		}
		b := a
		if isRange {
			if b, err = octet(hi); err != nil {
				return err
			}
			if b < a {
				return fmt.Errorf("range %q runs backwards", item)
			}
		}
		o.add(a, b)
	}
	return nil
}

// octet parses a decimal number from 0 to 255, at most three digits.
func octet(s string) (int, error) {
	if s == "" || len(s) > 3 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a number from 0 to 255", s)
	}
	v, _ := strconv.Atoi(s)
	if v > 255 {
		return 0, fmt.Errorf("%d is over 255", v)
	}
	return v, nil
}
