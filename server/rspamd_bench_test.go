package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench"
	"github.com/nanomx/nanomx/server/rspamd/rspamdtest"
)

// BenchmarkRspamd is the rspamd scenario: 50 sessions sending 10 KB
// messages for a fixed time (NANOMX_BENCH_SECONDS, default 10) through
// the project's load generator (package bench, what "nanomx bench" runs),
// against a server with rspamd off and then on, in the same run, the
// same private rspamd (rspamdtest: one normal worker, the modules that ask
// the network off, so it measures rspamd's own work, not DNS). It reports
// throughput, the end-of-data latency the senders see and, with rspamd
// on, the scan latency percentiles the check records. Maildirs go to
// tmpfs when there is one, with fsync on (group commit).
//
//	go test -run '^$' -bench Rspamd -benchtime 1x ./server/
func BenchmarkRspamd(b *testing.B) {
	rs := rspamdtest.Start(b)
	secs := 10
	if s, err := strconv.Atoi(os.Getenv("NANOMX_BENCH_SECONDS")); err == nil && s > 0 && s <= 20 {
		secs = s
	}
	for _, on := range []bool{false, true} {
		name := "rspamd=off"
		if on {
			name = "rspamd=on"
		}
		b.Run(name, func(b *testing.B) {
			cfg := loadConfig(b, benchDir())
			cfg.RspamdOnError = RspamdOnErrorTempfail // a failed scan shows as a failed message
			if on {
				cfg.RspamdURL = rs.URL
			}
			r := start(b, cfg)
			res := runLoad(b, r.addr, secs)
			e := res.Latency.EndOfData
			line := fmt.Sprintf("%s: %d delivered, %d failed in %.1fs: %.0f msg/s; end of data p50 %.1f ms p99 %.1f ms",
				name, res.Delivered, res.Failed, res.Elapsed, res.MsgsPerSec, e.P50, e.P99)
			if on {
				s := rspamdOf(b, r.srv).client.Stats()
				line += fmt.Sprintf("; scans %d (failed %d, timeouts %d, busy %d): p50 %v p90 %v p99 %v max %v mean %v",
					s.Scans, s.Failed, s.Timeouts, s.Busy, s.P50, s.P90, s.P99, s.Max, s.Mean)
				line += fmt.Sprintf("; rspamd RSS %d MiB", groupRSS(rs.PID)>>20)
				b.ReportMetric(float64(s.P50.Microseconds())/1000, "scan-p50-ms")
				b.ReportMetric(float64(s.P99.Microseconds())/1000, "scan-p99-ms")
			}
			if len(res.Errors) > 0 {
				line += fmt.Sprintf("; errors %v", res.Errors)
			}
			b.Log(line)
			b.ReportMetric(res.MsgsPerSec, "msgs/s")
			b.ReportMetric(e.P99, "eod-p99-ms")
		})
	}
}

// groupRSS sums the resident memory of the processes in process group
// pgid (rspamd's main process and its workers), in bytes.
func groupRSS(pgid int) int64 {
	ents, _ := os.ReadDir("/proc")
	var total int64
	for _, e := range ents {
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: state ppid pgrp.
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 22 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		pages, _ := strconv.ParseInt(f[21], 10, 64) // rss, field 24
		total += pages * int64(os.Getpagesize())
	}
	return total
}

// loadConfig is the server of the load benchmarks: bob@example.test,
// Maildirs in a fresh folder under dir ("" for the temp directory),
// removed when b ends.
func loadConfig(b *testing.B, dir string) Config {
	cfg := Defaults()
	cfg.Hostname = "mx.example.test"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cfg.Listen = []string{l.Addr().String()}
	l.Close()
	root, err := os.MkdirTemp(dir, "nanomx-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(root) })
	cfg.MaildirRoot = root
	cfg.Domains = []string{"example.test"}
	cfg.Mailboxes = []string{"bob@example.test"}
	cfg.Postmaster = "bob@example.test"
	cfg.MaxConnectionsPerIP = 200
	return cfg
}

// runLoad sends 50 sessions of 10 KB messages to addr for secs seconds,
// b.N times, through the project's load generator, and returns the last
// result.
func runLoad(b *testing.B, addr string, secs int) *bench.Result {
	size, _ := bench.ParseSize("10KB")
	var res *bench.Result
	for i := 0; i < b.N; i++ {
		var err error
		res, err = bench.Run(context.Background(), bench.Config{
			Target:        addr,
			Conns:         50,
			Duration:      time.Duration(secs) * time.Second,
			MaxDuration:   time.Duration(secs+30) * time.Second,
			Size:          size,
			From:          "alice@example.org",
			To:            []string{"bob@example.test"},
			SpreadSources: true,
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return res
}
