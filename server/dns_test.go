package server

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestDNSConfig: dns_servers must be ip:port; the resolver is built in New
// from DNSServers, or from resolv.conf, or 127.0.0.1:53 when that file is
// missing (no failure, no query).
func TestDNSConfig(t *testing.T) {
	for _, bad := range [][]string{{"127.0.0.1"}, {"dns.example:53"}, {"127.0.0.1:0"}} {
		cfg := testServerConfig(t)
		cfg.DNSServers = bad
		var ce *ConfigError
		if _, err := New(cfg); !errors.As(err, &ce) || ce.Key != "dns_servers" {
			t.Errorf("DNSServers %q: %v", bad, err)
		}
	}
	cfg := testServerConfig(t)
	cfg.DNSTimeout = -time.Second
	var ce *ConfigError
	if err := cfg.Validate(); !errors.As(err, &ce) || ce.Key != "dns_timeout" {
		t.Errorf("negative dns_timeout: %v", err)
	}

	cfg = testServerConfig(t)
	cfg.DNSServers = []string{"127.0.0.53:53", "[::1]:5353"}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.spool.Close()
	if got := srv.resolver.Servers(); !slices.Equal(got, cfg.DNSServers) {
		t.Errorf("servers %q", got)
	}

	defer func(old string) { resolvConf = old }(resolvConf)
	dir := t.TempDir()
	resolvConf = filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolvConf, []byte("nameserver 192.0.2.53\n"), 0o644)
	srv, err = New(testServerConfig(t))
	if err != nil || !slices.Equal(srv.resolver.Servers(), []string{"192.0.2.53:53"}) {
		t.Fatalf("from resolv.conf: %v", err)
	}
	srv.spool.Close()
	resolvConf = filepath.Join(dir, "missing")
	srv, err = New(testServerConfig(t))
	if err != nil || !slices.Equal(srv.resolver.Servers(), []string{"127.0.0.1:53"}) {
		t.Fatalf("without resolv.conf: %v", err)
	}
	srv.spool.Close()
}
