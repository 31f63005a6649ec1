package main

import (
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string // substrings of stdout and stderr
	}{
		// No command: usage on stderr.
		{nil, exitUsage, "", "Commands:"},
		{[]string{"help"}, exitOK, "serve", ""},
		{[]string{"-h"}, exitOK, "version", ""},
		{[]string{"help", "serve"}, exitOK, "-max-connections-per-ip", ""},
		{[]string{"version"}, exitOK, "nanomx dev", ""},
		{[]string{"bogus"}, exitUsage, "", `unknown command "bogus"`},
		// serve stops before starting anything on a bad command line.
		{[]string{"serve", "-nope"}, exitUsage, "", "flag provided but not defined: -nope"},
		{[]string{"serve", "-h"}, exitOK, "", "Usage: nanomx serve"},
		{[]string{"serve", "-pprof", "0.0.0.0:1"}, exitUsage, "", "nanomx: flag -pprof: pprof:"},
		{[]string{"serve", "-config", "/nonexistent/nanomx.toml"}, exitUsage, "", "nanomx: config: open /nonexistent/nanomx.toml"},
		// A malformed listen address is a configuration error.
		{[]string{"serve", "-listen", "127.0.0.1:99999"}, exitUsage, "", `nanomx: flag -listen: listen: "127.0.0.1:99999": port 99999 is out of range (1-65535)`},
		{[]string{"serve", "-listen", "127.0.0.1"}, exitUsage, "", `nanomx: flag -listen: listen: "127.0.0.1": missing port in address`},
	} {
		var out, errOut strings.Builder
		code := run(tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errOut.String(), tc.errOut) {
			t.Errorf("run(%q) = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q",
				tc.args, code, out.String(), errOut.String(), tc.code, tc.out, tc.errOut)
		}
	}
}
