package resolver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
)

// DefaultResolvConf is where ServersFromResolvConf looks by default.
const DefaultResolvConf = "/etc/resolv.conf"

// ServersFromResolvConf returns the nameservers of a resolv.conf file as
// "host:53" addresses, in order (IPv6 bracketed, a zone kept). A file
// without nameserver lines gives an empty list and no error.
func ServersFromResolvConf(path string) ([]string, error) {
	if path == "" {
		path = DefaultResolvConf
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(out) < 16 {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		host := fields[1]
		ip := host
		if i := strings.IndexByte(ip, '%'); i >= 0 {
			ip = ip[:i]
		}
		if net.ParseIP(ip) == nil {
			continue
		}
		out = append(out, net.JoinHostPort(host, "53"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("resolver: %s: %w", path, err)
	}
	return out, nil
}
