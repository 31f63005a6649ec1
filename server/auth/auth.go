// Package auth verifies who sent a message: SPF (RFC 7208), DKIM (RFC 6376,
// 8301, 8463), DMARC (RFC 7489) and iprev (RFC 8601 3), and writes the
// verdicts as an Authentication-Results field (RFC 8601). Every function
// here blocks on DNS: call them off the event loop, with a context that
// carries the message's deadline. DNS trouble is always a temperror, never
// a permanent result.
package auth

import (
	"context"
	"errors"
	"net"
)

// Resolver is the DNS the checks use. *resolver.Resolver (the server's
// caching resolver) and *net.Resolver have these methods; so does
// blitiri.com.ar/go/spf's DNSResolver.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// txtSharer is a Resolver that can answer a TXT lookup with a slice it
// keeps, to be read only (*resolver.Resolver: its cache's).
type txtSharer interface {
	LookupTXTShared(ctx context.Context, name string) ([]string, error)
}

// lookupTXT is r.LookupTXT, without a copy when r can share its answer:
// the caller must not modify the slice.
func lookupTXT(ctx context.Context, r Resolver, name string) ([]string, error) {
	if s, ok := r.(txtSharer); ok {
		return s.LookupTXTShared(ctx, name)
	}
	return r.LookupTXT(ctx, name)
}

// Status is a result value of RFC 8601 2.7.
type Status string

// The result values the checks produce.
const (
	None      Status = "none"
	Pass      Status = "pass"
	Fail      Status = "fail"
	SoftFail  Status = "softfail"
	Neutral   Status = "neutral"
	Policy    Status = "policy"
	TempError Status = "temperror"
	PermError Status = "permerror"
)

// notFound reports a DNS answer saying the name or record does not exist
// (NXDOMAIN or NODATA); anything else that failed is temporary.
func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// normalizeErr makes every lookup error either "not found" or temporary,
// as the libraries test them (*net.DNSError with IsNotFound, or
// Temporary()): a context deadline or an odd error must never read as
// "does not exist".
func normalizeErr(name string, err error) error {
	if err == nil || notFound(err) {
		return err
	}
	var de *net.DNSError
	if errors.As(err, &de) && de.Temporary() {
		return de
	}
	return &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true}
}

// strictResolver wraps a Resolver so that its errors are normalized.
type strictResolver struct{ r Resolver }

func (s strictResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	v, err := s.r.LookupTXT(ctx, name)
	return v, normalizeErr(name, err)
}
func (s strictResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	v, err := s.r.LookupMX(ctx, name)
	return v, normalizeErr(name, err)
}
func (s strictResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	v, err := s.r.LookupIPAddr(ctx, host)
	return v, normalizeErr(host, err)
}
func (s strictResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	v, err := s.r.LookupAddr(ctx, addr)
	return v, normalizeErr(addr, err)
}
