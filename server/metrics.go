package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/metrics"
)

// Metrics (the `metrics` key): the counters the Prometheus endpoint reads.
// Most are read where they already are (Stats, the spool's); these are the
// ones kept only for it. With metrics off the server has none (srv.m is
// nil) and every method returns at once, so the benchmark can compare.
type serverMetrics struct {
	reg  *metrics.Registry
	http *metrics.Server

	commands proto.Counters   // by verb, counted by proto
	replies  [6]atomic.Uint64 // by first digit of the code
	refused  [numRefusals]atomic.Uint64
	rejects  [numReasons]atomic.Uint64 // the fixed reasons
	// checkRejects counts a check's refusals by stage and code.
	checkRejects   [stageData + 1][len(checkCodes)]atomic.Uint64
	tlsVersions    [3]atomic.Uint64 // TLS 1.2, 1.3, other
	deliveredBytes atomic.Uint64

	delivery *metrics.Histogram // end of data to 250
	batch    *metrics.Histogram // group commit: messages per batch
	flush    *metrics.Histogram // group commit: flush time per batch
}

// Why a connection was refused before its session began.
const (
	refusedMaxConns = iota
	refusedMaxConnsPerIP
	refusedShutdown
	refusedEarlyTalker
	refusedConnectCheck
	numRefusals
)

var refusalNames = [numRefusals]string{"max_connections", "max_connections_per_ip", "shutdown", "early_talker", "connect_check"}

// checkCodes are the reply codes a check's refusal is counted under; any
// other is counted as "4xx" or "5xx".
var checkCodes = [...]string{"421", "450", "451", "452", "550", "551", "553", "554", "4xx", "5xx"}

func checkCodeIndex(code int) int {
	switch code {
	case 421:
		return 0
	case 450:
		return 1
	case 451:
		return 2
	case 452:
		return 3
	case 550:
		return 4
	case 551:
		return 5
	case 553:
		return 6
	case 554:
		return 7
	}
	if code < 500 {
		return 8
	}
	return 9
}

// Buckets. Deliveries: a flush on an SSD takes a few ms, on a VPS disk
// tens; a rspamd scan can add a second.
var (
	deliveryBuckets = []time.Duration{
		time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
		25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
		500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	}
	flushBuckets = []time.Duration{
		500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
		10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
		250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
	}
	batchBuckets = []int64{1, 2, 4, 8, 16, 32, 64, 128, 256}
)

// newMetrics makes the server's counters and registers every series.
func (s *Server) newMetrics() *serverMetrics {
	m := &serverMetrics{
		reg:      metrics.New(),
		delivery: metrics.NewDurationHistogram(deliveryBuckets...),
		batch:    metrics.NewHistogram(1, batchBuckets...),
		flush:    metrics.NewDurationHistogram(flushBuckets...),
	}
	r, st := m.reg, &s.stats

	r.GaugeFunc("nanomx_connections_open", "Connections open now, TLS ones included.",
		func() float64 { return float64(s.connCount()) })
	r.Counter("nanomx_connections_accepted_total", "Connections accepted (given a session).", &st.Accepted)
	for i, name := range refusalNames {
		r.Counter("nanomx_connections_refused_total", "Connections refused before or instead of the greeting, by reason.", &m.refused[i], "reason", name)
	}
	r.Counter("nanomx_sessions_timed_out_total", "Sessions closed by a deadline (421 4.4.2).", &st.TimedOut)
	r.Counter("nanomx_sessions_not_reading_total", "Sessions closed because the client did not read its replies.", &st.NotReading)

	for v := range proto.NumVerbs {
		r.Counter("nanomx_commands_total", "SMTP command lines, by verb.", &m.commands.Commands[v], "verb", v.String())
	}
	for c := 2; c <= 5; c++ {
		r.Counter("nanomx_replies_total", "SMTP replies sent by sessions, by code class.", &m.replies[c], "class", string(rune('0'+c))+"xx")
	}
	for i, ri := range reasons {
		if ri.reply != nil {
			r.Counter("nanomx_rejects_total", "Refusals logged as \"reject\", by code and reason.", &m.rejects[i], "code", strconv.Itoa(ri.reply.Code), "reason", ri.name)
		}
	}
	r.Collect("nanomx_rejects_total", "Refusals logged as \"reject\", by code and reason.", metrics.KindCounter, func(e *metrics.Emitter) {
		for st := stageConnect; st <= stageData; st++ {
			for ci, code := range checkCodes {
				if n := m.checkRejects[st][ci].Load(); n > 0 {
					e.Uint(n, "code", code, "reason", checkReasons[st])
				}
			}
		}
	})
	r.CounterFunc("nanomx_reject_lines_suppressed_total", "Reject log lines not written because their client passed the per-minute limit.", s.rejectLog.suppressed.Load)

	r.Counter("nanomx_tls_sessions_total", "Successful TLS handshakes, by version.", &m.tlsVersions[0], "version", "TLSv1.2")
	r.Counter("nanomx_tls_sessions_total", "Successful TLS handshakes, by version.", &m.tlsVersions[1], "version", "TLSv1.3")
	r.Counter("nanomx_tls_sessions_total", "Successful TLS handshakes, by version.", &m.tlsVersions[2], "version", "other")
	r.GaugeFunc("nanomx_tls_sessions_open", "Sessions holding a TLS slot now.", func() float64 { return float64(s.tlsSessions.Load()) })
	r.Counter("nanomx_tls_handshake_failures_total", "Failed TLS handshakes.", &st.TLSFailed)
	r.Counter("nanomx_starttls_refused_total", "STARTTLS answered 454: no TLS slot free.", &st.TLSRefused)
	r.Counter("nanomx_starttls_injections_total", "Sessions that pipelined input after STARTTLS (dropped, CVE-2011-0411).", &st.TLSInjections)
	r.Collect("nanomx_tls_certificate_expiry_seconds", "Seconds until the TLS certificate in use expires (negative once it has).", metrics.KindGauge, func(e *metrics.Emitter) {
		if leaf := certLeaf(s.live.Load().tls); leaf != nil {
			e.Float(time.Until(leaf.NotAfter).Seconds())
		}
	})

	r.Counter("nanomx_messages_delivered_total", "Messages answered 250 (durable).", &st.Delivered)
	r.Counter("nanomx_messages_failed_total", "Messages answered 4xx or 5xx after their data.", &st.Failed)
	r.Counter("nanomx_messages_delivered_bytes_total", "Bytes of the messages delivered (as received, before trace fields).", &m.deliveredBytes)
	r.Histogram("nanomx_delivery_duration_seconds", "Time from the end of a message's data to its 250 reply.", m.delivery)

	r.GaugeFunc("nanomx_spool_queue_depth", "Messages waiting for a delivery worker.", func() float64 { return float64(s.spool.QueueDepth()) })
	r.GaugeFunc("nanomx_spool_queue_capacity", "Messages that may wait for a delivery worker (queue_length).", func() float64 { return float64(s.spool.QueueCapacity()) })
	r.GaugeFunc("nanomx_spool_free_bytes", "Free bytes under maildir_root, as last measured (-1 unknown).", func() float64 { return float64(s.spool.FreeBytes()) })
	r.Histogram("nanomx_commit_batch_messages", "Messages made durable by one group commit.", m.batch)
	r.Histogram("nanomx_commit_flush_duration_seconds", "Time a group commit spent in its file-system flushes (syncfs).", m.flush)
	r.GaugeFunc("nanomx_body_budget_bytes", "Memory message bodies may hold (body_budget).", func() float64 { return float64(s.live.Load().cfg.BodyBudgetBytes) })
	r.GaugeFunc("nanomx_body_budget_in_use_bytes", "Memory message bodies hold now.", func() float64 {
		return float64(s.live.Load().cfg.BodyBudgetBytes - s.budget.Load())
	})

	r.GaugeFunc("go_goroutines", "Goroutines that currently exist.", func() float64 { return float64(runtime.NumGoroutine()) })
	return m
}

// certLeaf is the parsed certificate of a TLS configuration, or nil.
func certLeaf(c *tls.Config) *x509.Certificate {
	if c == nil || len(c.Certificates) == 0 {
		return nil
	}
	return c.Certificates[0].Leaf
}

// countReplies counts the replies in out, the final line of each (a line
// whose code is followed by a space; "250-" continues a reply).
func (m *serverMetrics) countReplies(out []byte) {
	if m == nil {
		return
	}
	for len(out) >= 4 {
		if out[3] == ' ' {
			if d := out[0] - '0'; d < 6 {
				m.replies[d].Add(1)
			}
		}
		i := bytes.IndexByte(out, '\n')
		if i < 0 {
			return
		}
		out = out[i+1:]
	}
}

// delivered counts a message answered 250: its size, and d, the time
// from the end of its data.
func (m *serverMetrics) delivered(size int64, d time.Duration) {
	if m == nil {
		return
	}
	m.deliveredBytes.Add(uint64(size))
	m.delivery.ObserveDuration(d)
}

// tlsSession counts a handshake by version.
func (m *serverMetrics) tlsSession(v uint16) {
	if m == nil {
		return
	}
	switch v {
	case tls.VersionTLS12:
		m.tlsVersions[0].Add(1)
	case tls.VersionTLS13:
		m.tlsVersions[1].Add(1)
	default:
		m.tlsVersions[2].Add(1)
	}
}

// refusedConn counts a connection refused for reason (refused*).
func (m *serverMetrics) refusedConn(reason int) {
	if m != nil {
		m.refused[reason].Add(1)
	}
}

// commit observes one group commit (the spool's OnCommit hook).
func (m *serverMetrics) commit(messages int, flush time.Duration) {
	m.batch.Observe(int64(messages))
	m.flush.ObserveDuration(flush)
}

// countCommands makes lv's sessions count their commands into the
// metrics (a Dialect is immutable: it is made again with the counters).
func (s *Server) countCommands(lv *live) {
	if s.m == nil {
		return
	}
	pc := lv.dialect.Config()
	pc.Counters = &s.m.commands
	lv.dialect = proto.NewDialect(pc)
}

// serveMetrics starts the metrics endpoint, if any, and returns what
// stops it.
func (s *Server) serveMetrics() (stop func()) {
	if s.m == nil {
		return func() {}
	}
	s.m.http.Serve(s.m.reg, func(err error) { s.log.Error().Err(err).Msg("metrics server") })
	s.log.Info().Str("addr", s.m.http.Addr().String()).Msg("metrics listening")
	return func() { _ = s.m.http.Close() }
}

// Metrics returns the registry the metrics endpoint serves, for more
// series (before Serve), or nil when metrics are off.
func (s *Server) Metrics() *metrics.Registry {
	if s.m == nil {
		return nil
	}
	return s.m.reg
}
