package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nanomx/nanomx/server/doctor"
	"github.com/nanomx/nanomx/server/resolver"
)

// doctorCmd runs "nanomx doctor": it checks the DNS, the listeners and the
// certificate the configuration implies. "nanomx doctor probe HOST" checks
// an MX's port 25 from the outside. The exit status is 0 when all is ok, 1
// with a warning, 2 with a failure (and for a bad command line).
func doctorCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "probe" {
		return probeCmd(args[1:], stdout, stderr)
	}
	f := newServeFlags("doctor", stderr)
	asJSON := f.fs.Bool("json", false, "print the findings as JSON")
	nsPort := f.fs.String("ns-port", "53", "`port` the zones' authoritative servers are asked on (for tests)")
	f.fs.Usage = func() {
		fmt.Fprint(f.fs.Output(), `Usage: nanomx doctor [-config FILE] [-json] [flags]
       nanomx doctor probe [-json] [-port 25] [-timeout 10s] HOST

`+wrap(72, "Checks what makes this MX reachable: the hostname's A/AAAA records against this host's addresses, each domain's MX record (no CNAME, no null MX), the PTR records of the host's public addresses (forward-confirmed), the local resolver's answers against the zones' own servers (propagation), the listeners, the TLS certificate, the DNSBL path through the resolver, and the SPF, DMARC and MTA-STS records of each domain. Each check prints ok, warn or fail, and what to do. Exit status: 0 all ok, 1 a warning, 2 a failure.")+`

"doctor probe HOST", run from another machine, connects to HOST's port 25
as a sender would: banner, EHLO, STARTTLS.

Flags:
`)
		f.fs.PrintDefaults()
	}
	if err := f.fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		return exitUsage
	}
	l, err := load(f)
	if err != nil {
		printErr(stderr, err)
		return exitUsage
	}
	c := l.Config
	dc := doctor.Config{
		Hostname:      c.Hostname,
		Domains:       c.Domains,
		Listen:        c.Listen,
		GreetingDelay: c.GreetingDelay,
		TLSCert:       c.TLSCert,
		Resolvers:     c.DNSServers,
		Timeout:       c.DNSTimeout,
		DNSBLSites:    c.DNSBLSites,
		NSPort:        *nsPort,
	}
	if len(dc.Resolvers) == 0 {
		// As the server does: the resolvers of /etc/resolv.conf.
		dc.Resolvers, _ = resolver.ServersFromResolvConf(resolver.DefaultResolvConf)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return printFindings(stdout, doctor.Run(ctx, dc), *asJSON)
}

func probeCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	port := fs.String("port", "25", "`port` to connect to")
	timeout := fs.Duration("timeout", 10*time.Second, "connection and reply `timeout`")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: nanomx doctor probe [-json] [-port 25] [-timeout 10s] HOST")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4**timeout)
	defer cancel()
	fds := doctor.Probe(ctx, doctor.ProbeConfig{Host: fs.Arg(0), Port: *port, Timeout: *timeout})
	return printFindings(stdout, fds, *asJSON)
}

// printFindings writes fs as text (one line per check, the fix indented
// below) or as a JSON list, and returns the exit status they mean.
func printFindings(w io.Writer, fs []doctor.Finding, asJSON bool) int {
	if asJSON {
		if fs == nil {
			fs = []doctor.Finding{}
		}
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		_ = e.Encode(fs)
		return doctor.ExitCode(fs)
	}
	for _, f := range fs {
		fmt.Fprintf(w, "%-4s  %s: %s\n", f.Status, f.Check, f.Detail)
		if f.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", strings.ReplaceAll(f.Fix, "\n", "\n           "))
		}
	}
	switch doctor.Worst(fs) {
	case doctor.OK:
		fmt.Fprintln(w, "all checks passed")
	case doctor.Warn:
		fmt.Fprintln(w, "warnings only: mail can flow, but see above")
	default:
		fmt.Fprintln(w, "failures: mail will not reach this host (or will be refused) until they are fixed")
	}
	return doctor.ExitCode(fs)
}
