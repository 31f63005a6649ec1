package server

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/lmtp/dovecottest"
)

// BenchmarkLMTP is the LMTP scenario of issue 13: 50 sessions sending
// 10 KB messages for a fixed time (NANOMX_BENCH_SECONDS, default 8)
// through the project's load generator, against a server delivering to
// its own Maildirs (group commit, fsync on) and one delivering over LMTP
// to a private Dovecot (dovecottest: Dovecot fsyncs each message itself),
// alternating for NANOMX_BENCH_ROUNDS rounds (default 2), in one run.
// Maildirs and Dovecot's store are on the same disk (the temp directory).
//
//	go test -run '^$' -bench LMTP -benchtime 1x ./server/
func BenchmarkLMTP(b *testing.B) {
	secs, rounds := 8, 2
	if s, err := strconv.Atoi(os.Getenv("NANOMX_BENCH_SECONDS")); err == nil && s > 0 && s <= 20 {
		secs = s
	}
	if s, err := strconv.Atoi(os.Getenv("NANOMX_BENCH_ROUNDS")); err == nil && s > 0 && s <= 5 {
		rounds = s
	}
	d := dovecottest.Start(b, "bob@example.test")
	for round := 1; round <= rounds; round++ {
		for _, lmtp := range []bool{false, true} {
			name := fmt.Sprintf("maildir/round=%d", round)
			if lmtp {
				name = fmt.Sprintf("lmtp/round=%d", round)
			}
			b.Run(name, func(b *testing.B) {
				cfg := loadConfig(b, "") // the disk Dovecot's store is on
				if lmtp {
					cfg.Delivery = DeliveryLMTP
					cfg.LMTP = d.Addr
					cfg.LMTPTimeout = 30 * time.Second
				}
				r := start(b, cfg)
				res := runLoad(b, r.addr, secs)
				e := res.Latency.EndOfData
				b.Logf("%s: %d delivered, %d failed in %.1fs: %.0f msg/s; end of data p50 %.1f ms p99 %.1f ms",
					name, res.Delivered, res.Failed, res.Elapsed, res.MsgsPerSec, e.P50, e.P99)
				if res.Delivered == 0 {
					b.Errorf("%s delivered nothing: %v", name, res.Errors)
				}
				b.ReportMetric(res.MsgsPerSec, "msgs/s")
				b.ReportMetric(e.P99, "eod-p99-ms")
			})
		}
	}
}
