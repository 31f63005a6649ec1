// Command nanomx is an inbound-only SMTP MX that delivers to Maildir.
//
// Usage:
//
//	nanomx serve [-config FILE] [flags]
//	nanomx check-config [-config FILE] [flags]
//	nanomx bench [flags]
//	nanomx doctor [-config FILE] [-json]
//	nanomx doctor probe [-json] HOST
//	nanomx version
//	nanomx help [serve|check-config|bench]
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// version is set at link time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the server failed while running
	exitUsage = 2 // bad command line or configuration; nothing was started
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the exit code. Logs go to stdout;
// human messages (usage, config errors, the development hint) to stderr.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "check-config":
		return checkConfig(args[1:], stdout, stderr)
	case "bench":
		return benchCmd(args[1:], stdout, stderr)
	case "doctor":
		return doctorCmd(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "nanomx %s %s %s/%s\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && (args[1] == "serve" || args[1] == "check-config") {
			newServeFlags(args[1], stdout).fs.Usage()
			return exitOK
		}
		if len(args) > 1 && args[1] == "doctor" {
			doctorCmd([]string{"-h"}, stdout, stdout)
			return exitOK
		}
		if len(args) > 1 && args[1] == "bench" {
			newBenchFlags(stdout).fs.Usage()
			return exitOK
		}
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "nanomx: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `nanomx is an inbound-only SMTP MX that delivers to Maildir.

Usage:
  nanomx <command> [flags]

Commands:
  serve         run the MX until SIGTERM or SIGINT ("nanomx help serve" lists flags)
  check-config  check the configuration and print it whole, defaults included
  bench         send SMTP load to a server and measure it ("nanomx help bench")
  doctor        check DNS (A, MX, PTR), listeners and certificate; "doctor probe HOST"
                checks port 25 from another machine
  version       print the version and the Go version
  help          print this help

Without -config, "nanomx serve" runs a development default on 127.0.0.1:2525
that stores mail for every address @localhost in ./mail/localhost/catchall/.
`)
}

// versionString is version, or for a "dev" build the VCS revision Go
// stamped into the binary, when there is one.
func versionString() string {
	if version != "dev" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "-modified"
			}
		}
	}
	if rev == "" {
		return version
	}
	return version + "+" + rev[:min(len(rev), 12)] + modified
}

// checkConfig runs "nanomx check-config" and returns the exit code: it loads
// the configuration as "nanomx serve" would, flags included, checks it as
// server.Check does and prints it.
func checkConfig(args []string, stdout, stderr io.Writer) int {
	l, code := loadChecked("check-config", args, stderr)
	if l == nil {
		return code
	}
	if err := printConfig(stdout, l); err != nil {
		fmt.Fprintln(stderr, "nanomx:", err)
		return exitError
	}
	return exitOK
}
