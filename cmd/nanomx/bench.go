package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/nanomx/nanomx/bench"
)

// benchFlags are the flags of "nanomx bench".
type benchFlags struct {
	fs  *flag.FlagSet
	cfg bench.Config

	size, to string
	// Byte counts with units, parsed after the flags.
	unreadBytes, rssLimit string
	gcFloor               string
	silentBDAT            string
	jsonOut               bool
	ackedFile             string
	// Report mode: read JSON results instead of running.
	table     bool
	summary   bool
	ref       string
	chart     string
	chartName string
	cells     bool
	matrix    bool
	ratios    string
	// slo, with -rate, searches the highest rate within it.
	slo time.Duration
}

func newBenchFlags(out io.Writer) *benchFlags {
	f := &benchFlags{fs: flag.NewFlagSet("bench", flag.ContinueOnError)}
	fs, c := f.fs, &f.cfg
	fs.SetOutput(out)
	fs.StringVar(&c.Target, "target", bench.DefaultTarget, "server `host:port`")
	fs.IntVar(&c.Conns, "conns", bench.DefaultConns, "`n` concurrent sessions")
	fs.Int64Var(&c.Count, "count", 0, "`n` messages to send (default 1000 when -duration is not set either)")
	fs.DurationVar(&c.Duration, "duration", 0, "start no message after this `duration`, e.g. 10s")
	fs.DurationVar(&c.MaxDuration, "max-duration", bench.DefaultMaxDuration, "hard bound: cut every connection after this `duration`")
	fs.StringVar(&f.size, "size", "10KB", "message `size`, header included: bytes, KB/MB (1000), KiB/MiB (1024), or mix")
	fs.IntVar(&c.PerConn, "per-conn", 0, "`n` messages per session before QUIT; 1 = a connection per message, 0 = unlimited")
	fs.IntVar(&c.Rcpts, "rcpts", 1, "`n` recipients per message, taken in turn from -to")
	fs.StringVar(&c.From, "from", bench.DefaultFrom, "envelope sender `address`")
	fs.StringVar(&f.to, "to", bench.DefaultTo, "recipient `addresses`, comma-separated, used round robin")
	fs.BoolVar(&c.Pipelining, "pipelining", false, "send MAIL, RCPT and DATA in one write when the server offers PIPELINING")
	fs.StringVar(&c.EHLO, "ehlo", bench.DefaultEHLO, "EHLO `name`")
	fs.BoolVar(&c.TLS, "tls", false, "upgrade every session, idle and slow ones included, with STARTTLS after EHLO; a server not offering it fails the session")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "with -tls: verify the server's certificate against the CAs in PEM `file` (default: not verified)")
	fs.StringVar(&c.TLSServerName, "tls-servername", "", "with -tls: `name` sent in SNI and verified (default: the host of -target)")
	fs.BoolVar(&c.TLSResume, "tls-resume", false, "with -tls: offer TLS session resumption (one client session cache for the run's connections)")
	fs.Float64Var(&c.Rate, "rate", 0, "open loop: `n` messages per second arrive on schedule, whether or not earlier ones finished; latency also from the scheduled time")
	fs.DurationVar(&f.slo, "slo", 0, "with -rate: search the highest rate whose p99 (scheduled → 250) stays within this `bound`, starting at -rate, -duration per step (default 5s)")
	fs.StringVar(&c.Profile, "profile", "", "traffic `mix`: internet (mostly STARTTLS, mostly a message per connection, mix sizes, refused recipients, bots, dropped transactions; see bench/profile.go)")
	fs.Int64Var(&c.Seed, "seed", 1, "`seed` of the body text and of the mix sizes")
	fs.StringVar(&c.RunID, "run-id", "", "marker prefix of this run (default random)")
	fs.DurationVar(&c.Timeout, "timeout", bench.DefaultTimeout, "bound on each connect, greeting, EHLO and transaction")
	fs.StringVar(&c.DKIMKey, "dkim-key", "", "DKIM-sign every message (relaxed/relaxed, for the domain of -from) with the PEM private key in `file`")
	fs.StringVar(&c.DKIMSelector, "dkim-selector", bench.DefaultDKIMSelector, "with -dkim-key: the `selector`")
	fs.BoolVar(&c.SpreadSources, "spread-sources", true, "bind connections to 127.0.0.2-127.0.255.254 in turn when the target is on 127.0.0.0/8")
	fs.IntVar(&c.PID, "pid", 0, "`pid` of a local server: report its CPU per message and its RSS")
	fs.IntVar(&c.Idle, "idle", 0, "hold `n` idle sessions open (after EHLO) during the run")
	fs.IntVar(&c.Slow, "slow", 0, "`n` sessions trickling a transaction one byte at a time during the run")
	fs.DurationVar(&c.SlowInterval, "slow-interval", bench.DefaultSlowInterval, "`interval` between the bytes of -slow sessions")
	fs.IntVar(&c.IdleRcpts, "idle-rcpts", 0, "with -idle: each idle session first runs MAIL, `n` recipients and RSET (the server needs a catch-all)")
	fs.IntVar(&c.IdleRcptLen, "idle-rcpt-len", bench.DefaultIdleRcptLen, "with -idle-rcpts: length of each recipient address in `bytes`")
	fs.IntVar(&c.Unread, "unread", 0, "`n` sessions that, before the load, send -unread-bytes of -unread-command lines and read the replies only at the end")
	fs.StringVar(&f.unreadBytes, "unread-bytes", "24MiB", "with -unread: `size` each session sends")
	fs.StringVar(&c.UnreadCommand, "unread-command", bench.DefaultUnreadCmd, "with -unread: the command `line` repeated, without CRLF")
	fs.StringVar(&c.UnreadFirst, "unread-first", "", "with -unread: a command `line` sent once before them, e.g. \"MAIL FROM:<>\"")
	fs.DurationVar(&c.UnreadFor, "unread-for", bench.DefaultUnreadFor, "with -unread: bound on the writing, and on the reading, in `duration`")
	fs.StringVar(&f.gcFloor, "gc-floor", "32MiB", "heap this load generator sets aside untouched, so that its garbage collector runs about this `size` of garbage apart (0: Go's default pacing); not resident")
	fs.StringVar(&f.rssLimit, "rss-limit", "", "with -unread and -pid: stop writing when the server's RSS passes this `size`")
	fs.IntVar(&c.Silent, "silent", 0, "hold `n` sessions during the run that say MAIL FROM:<>, RCPT and BDAT -silent-bdat, then nothing")
	fs.StringVar(&c.SilentRcpt, "silent-rcpt", "", "with -silent: the recipient `address` (default postmaster at the domain of the first -to)")
	fs.StringVar(&f.silentBDAT, "silent-bdat", strconv.FormatInt(bench.DefaultSilentBDAT, 10), "with -silent: the chunk `sizes` announced, in bytes, comma-separated, used in turn")
	fs.StringVar(&c.SilentSource, "silent-source", "", "with -silent: the one local `ip` they all come from (default: spread like the others)")
	fs.StringVar(&c.VerifyMaildir, "verify-maildir", "", "after the run, check that every acked message is in the Maildirs under `dir`, once")
	fs.StringVar(&c.Label, "label", "", "scenario `name` for reports")
	fs.BoolVar(&f.jsonOut, "json", false, "print the result as one JSON object on stdout")
	fs.StringVar(&f.ackedFile, "acked", "", "write the markers of the acked messages to `file`, one a line")
	fs.BoolVar(&f.table, "table", false, "report mode: print a Markdown table of the JSON result files given as arguments")
	fs.BoolVar(&f.summary, "summary", false, "report mode: print the text summary of the JSON result files given as arguments")
	fs.StringVar(&f.ref, "ref", "", "with -table or -chart: a JSON result `file` to compare throughput with (e.g. smtp-sink's)")
	fs.StringVar(&f.chart, "chart", "", "report mode: write an SVG chart of throughput vs -conns per size to `file`")
	fs.StringVar(&f.chartName, "title", "Throughput vs concurrency", "with -chart: the chart's `title`")
	fs.BoolVar(&f.cells, "cells", false, "report mode: group the JSON result files by label and print each group's median, min–max and spread (flagged past 25 %)")
	fs.BoolVar(&f.matrix, "matrix", false, "report mode: as -cells, as a matrix of rows and columns (labels \"ROW · COLUMN\")")
	fs.StringVar(&f.ratios, "ratios", "", "with -matrix: ratio columns, `A/B,...` of column names")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: nanomx bench [flags]
       nanomx bench -table [-ref FILE] FILE.json...
       nanomx bench -summary FILE.json...
       nanomx bench -chart OUT.svg [-title T] [-ref FILE] FILE.json...
       nanomx bench -cells FILE.json...
       nanomx bench -matrix [-ratios A/B,...] FILE.json...

Sends SMTP load to -target (any SMTP server) and prints throughput,
latency percentiles and errors. A message counts as delivered only when its
end of data is answered 250. The run is bounded by -count, -duration and
-max-duration. Exit status 1 when nothing was delivered or -verify-maildir
found a lost or duplicated message, 2 for a bad command line.

Flags:
`)
		fs.PrintDefaults()
	}
	return f
}

// benchCmd runs "nanomx bench".
func benchCmd(args []string, stdout, stderr io.Writer) int {
	f := newBenchFlags(stderr)
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if f.table || f.summary || f.chart != "" || f.cells || f.matrix {
		return f.report(stdout, stderr)
	}
	if f.fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nanomx: bench: unexpected argument %q (JSON files go with -table, -summary or -chart)\n", f.fs.Arg(0))
		return exitUsage
	}
	size, err := bench.ParseSize(f.size)
	if err != nil {
		fmt.Fprintf(stderr, "nanomx: bench: -size: %v\n", err)
		return exitUsage
	}
	f.cfg.Size = size
	if f.cfg.Profile != "" && !f.isSet("size") {
		f.cfg.Size = bench.Size{Mix: true}
	}
	if f.slo != 0 && f.cfg.Rate <= 0 {
		fmt.Fprintln(stderr, "nanomx: bench: -slo needs -rate (the rate to start from)")
		return exitUsage
	}
	// The modes' defaults stay out of the JSON of runs without them.
	if f.cfg.IdleRcpts == 0 {
		f.cfg.IdleRcptLen = 0
	}
	if f.cfg.Silent == 0 {
		f.silentBDAT = ""
	}
	if f.cfg.Unread == 0 {
		f.unreadBytes, f.cfg.UnreadCommand, f.cfg.UnreadFirst, f.cfg.UnreadFor = "", "", "", 0
	}
	for _, v := range splitList(f.silentBDAT) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			fmt.Fprintf(stderr, "nanomx: bench: -silent-bdat: %q is not a size in bytes\n", v)
			return exitUsage
		}
		f.cfg.SilentBDAT = append(f.cfg.SilentBDAT, n)
	}
	for _, b := range []struct {
		name, s string
		dst     *int64
	}{{"unread-bytes", f.unreadBytes, &f.cfg.UnreadBytes}, {"rss-limit", f.rssLimit, &f.cfg.RSSLimit}, {"gc-floor", f.gcFloor, &f.cfg.GCFloor}} {
		if b.s == "" || b.s == "0" {
			continue
		}
		if *b.dst, err = bench.ParseBytes(b.s); err != nil {
			fmt.Fprintf(stderr, "nanomx: bench: -%s: %v\n", b.name, err)
			return exitUsage
		}
	}
	f.cfg.To = splitList(f.to)
	if len(f.cfg.To) == 0 {
		fmt.Fprintln(stderr, "nanomx: bench: -to: no address")
		return exitUsage
	}
	for name, v := range map[string]int{"conns": f.cfg.Conns, "rcpts": f.cfg.Rcpts} {
		if v < 1 {
			fmt.Fprintf(stderr, "nanomx: bench: -%s: must be at least 1\n", name)
			return exitUsage
		}
	}
	if file, ok := stderr.(*os.File); ok && term.IsTerminal(int(file.Fd())) {
		f.cfg.Progress = stderr
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.slo != 0 {
		return f.searchSLO(ctx, stdout, stderr)
	}
	res, err := bench.Run(ctx, f.cfg)
	if res == nil {
		fmt.Fprintf(stderr, "nanomx: bench: %v\n", err)
		return exitUsage
	}
	code := exitOK
	if err != nil {
		fmt.Fprintf(stderr, "nanomx: bench: %v\n", err)
		code = exitError
	}
	if f.ackedFile != "" {
		if err := writeAcked(f.ackedFile, res); err != nil {
			fmt.Fprintf(stderr, "nanomx: bench: -acked: %v\n", err)
			code = exitError
		}
	}
	if f.jsonOut {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "nanomx: bench: %v\n", err)
			return exitError
		}
	} else if err := res.WriteText(stdout); err != nil {
		return exitError
	}
	if res.Delivered == 0 && res.Attempted > 0 {
		code = exitError
	}
	if res.Verify != nil && !res.Verify.OK() {
		v := res.Verify
		fmt.Fprintf(stderr, "nanomx: bench: verify-maildir: %d acked messages lost, %d duplicated, %d of the wrong size, %d with other content, %d with a wrong S=, %d other problems\n",
			v.Lost, v.Duplicates, v.SizeMismatch, v.SumMismatch, v.NameSizeMismatch, v.Incomplete+v.Misplaced+v.Unended+v.Unknown)
		code = exitError
	}
	return code
}

// writeAcked writes one marker a line.
func writeAcked(path string, res *bench.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, seq := range res.Acked {
		fmt.Fprintln(w, bench.Marker(res.Config.RunID, seq))
	}
	return errors.Join(w.Flush(), f.Close())
}

// report reads JSON results and prints a table or summaries, or writes a
// chart.
func (f *benchFlags) report(stdout, stderr io.Writer) int {
	if f.fs.NArg() == 0 {
		fmt.Fprintln(stderr, "nanomx: bench: -table, -summary and -chart want JSON result files as arguments")
		return exitUsage
	}
	var results []*bench.Result
	for _, path := range f.fs.Args() {
		r, err := readResult(path)
		if err != nil {
			fmt.Fprintf(stderr, "nanomx: bench: %v\n", err)
			return exitError
		}
		results = append(results, r)
	}
	var ref *bench.Result
	if f.ref != "" {
		var err error
		if ref, err = readResult(f.ref); err != nil {
			fmt.Fprintf(stderr, "nanomx: bench: -ref: %v\n", err)
			return exitError
		}
	}
	if f.table {
		if err := bench.WriteTable(stdout, results, ref); err != nil {
			return exitError
		}
	}
	if f.cells {
		if err := bench.WriteCells(stdout, bench.Cells(results)); err != nil {
			return exitError
		}
	}
	if f.matrix {
		var ratios [][2]string
		for _, r := range splitList(f.ratios) {
			a, b, ok := strings.Cut(r, "/")
			if !ok {
				fmt.Fprintf(stderr, "nanomx: bench: -ratios: %q is not A/B\n", r)
				return exitUsage
			}
			ratios = append(ratios, [2]string{a, b})
		}
		if err := bench.WriteMatrix(stdout, bench.Cells(results), ratios); err != nil {
			return exitError
		}
	}
	if f.summary {
		for i, r := range results {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			if err := r.WriteText(stdout); err != nil {
				return exitError
			}
		}
	}
	if f.chart != "" {
		var b strings.Builder
		if err := bench.WriteChart(&b, f.chartName, results, ref); err != nil {
			return exitError
		}
		if err := os.WriteFile(f.chart, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintf(stderr, "nanomx: bench: -chart: %v\n", err)
			return exitError
		}
	}
	return exitOK
}

// readResult reads one result written by -json.
func readResult(path string) (*bench.Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r bench.Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// isSet reports whether the flag was given on the command line.
func (f *benchFlags) isSet(name string) bool {
	set := false
	f.fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// searchSLO runs "nanomx bench -rate N -slo D": the search's steps go to
// stderr as they finish, the table (or JSON) to stdout.
func (f *benchFlags) searchSLO(ctx context.Context, stdout, stderr io.Writer) int {
	res, err := bench.SearchSLO(ctx, f.cfg, f.slo, stderr)
	if res == nil {
		fmt.Fprintf(stderr, "nanomx: bench: %v\n", err)
		return exitUsage
	}
	code := exitOK
	if err != nil {
		fmt.Fprintf(stderr, "nanomx: bench: %v\n", err)
		code = exitError
	}
	if f.jsonOut {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return exitError
		}
	} else if err := res.WriteText(stdout); err != nil {
		return exitError
	}
	if res.Best == 0 {
		code = exitError
	}
	return code
}
