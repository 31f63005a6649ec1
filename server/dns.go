package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/nanomx/nanomx/server/resolver"
)

// validateDNS checks DNSServers and DNSTimeout (keys dns_servers,
// dns_timeout).
func (c *Config) validateDNS() error {
	for _, s := range c.DNSServers {
		if err := resolver.CheckServer(s); err != nil {
			return &ConfigError{Key: "dns_servers", Err: fmt.Errorf("%q: must be ip:port (e.g. \"127.0.0.1:53\")", s)}
		}
	}
	if c.DNSTimeout < 0 || c.DNSTimeout > time.Minute {
		return &ConfigError{Key: "dns_timeout", Err: errors.New("must be between 0 (5s) and 1m")}
	}
	return nil
}

// resolvConf is where the DNS servers come from when DNSServers is empty
// (a variable for tests).
var resolvConf = resolver.DefaultResolvConf

// newResolver builds the server's one resolver. It sends no query, and a
// missing /etc/resolv.conf is no failure: the resolver then asks
// 127.0.0.1:53, which is logged.
func newResolver(cfg Config) (*resolver.Resolver, error) {
	servers := cfg.DNSServers
	if len(servers) == 0 {
		s, err := resolver.ServersFromResolvConf(resolvConf)
		if err != nil || len(s) == 0 {
			cfg.Log.Warn().Err(err).Str("file", resolvConf).
				Msg("no nameserver found; DNS goes to 127.0.0.1:53 (set dns_servers)")
			s = []string{"127.0.0.1:53"}
		}
		servers = s
	}
	r, err := resolver.New(resolver.Config{Servers: servers, Timeout: cfg.DNSTimeout})
	if err != nil {
		return nil, &ConfigError{Key: "dns_servers", Err: err}
	}
	return r, nil
}
