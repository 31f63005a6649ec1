package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/metrics"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// scraped is one scrape of /metrics, parsed by Prometheus' own parser.
type scraped map[string]*dto.MetricFamily

func scrape(t *testing.T, addr string) scraped {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", res.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// metric finds the series of name with exactly these label pairs.
func (s scraped) metric(t *testing.T, name string, labels ...string) *dto.Metric {
	t.Helper()
	f := s[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no series %s%v", name, labels)
	return nil
}

// value is a counter's or gauge's value.
func (s scraped) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m := s.metric(t, name, labels...)
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// histogram checks a histogram's shape (buckets ascend, +Inf == count)
// and returns it.
func (s scraped) histogram(t *testing.T, name string) *dto.Histogram {
	t.Helper()
	h := s.metric(t, name).GetHistogram()
	prev := uint64(0)
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() < prev {
			t.Errorf("%s: bucket le=%v holds %d, below the one before (%d)", name, b.GetUpperBound(), b.GetCumulativeCount(), prev)
		}
		prev = b.GetCumulativeCount()
	}
	if prev != h.GetSampleCount() {
		t.Errorf("%s: +Inf bucket %d, count %d", name, prev, h.GetSampleCount())
	}
	return h
}

func waitIdle(t *testing.T, srv *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.connCount() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("connections still open")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// message is the body every metrics test sends: 18 octets as stored.
const message = "Subject: m\r\n\r\nhello\r\n.\r\n"

func sendMessage(t *testing.T, c *client, rcpts ...string) {
	t.Helper()
	c.expect("MAIL FROM:<a@example.org>", "250")
	for _, r := range rcpts {
		c.expect("RCPT TO:<"+r+">", "250")
	}
	c.expect("DATA", "354")
	c.send(message)
	if got := c.reply(); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("end of data: %q", got)
	}
}

// TestMetricsAfterTraffic: after real sessions (two messages in plaintext
// with two unknown users and a relaying attempt refused, one over
// STARTTLS), /metrics shows exactly that, read by Prometheus' parser.
func TestMetricsAfterTraffic(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.MetricsAddr = freePort(t)
	r := start(t, cfg)

	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO client.example.org", "250")
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<nobody@example.test>", "550 5.1.1")
	c.expect("RCPT TO:<bob@example.test>", "250")
	c.expect("DATA", "354")
	c.send(message)
	c.reply()
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<ghost@example.test>", "550 5.1.1")
	c.expect("RCPT TO:<bob@elsewhere.test>", "550 5.7.1")
	c.expect("RCPT TO:<alice@example.test>", "250")
	c.expect("DATA", "354")
	c.send(message)
	c.reply()
	c.expect("QUIT", "221")

	c = dial(t, r.addr)
	c.reply()
	c.expect("EHLO client.example.org", "250")
	tc := c.starttls(t, p.Client())
	tc.expect("EHLO client.example.org", "250")
	sendMessage(t, tc, "bob@example.test")
	tc.expect("QUIT", "221")
	waitIdle(t, r.srv)

	m := scrape(t, cfg.MetricsAddr)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"nanomx_messages_delivered_total", nil, 3},
		{"nanomx_messages_failed_total", nil, 0},
		{"nanomx_messages_delivered_bytes_total", nil, 3 * 18},
		{"nanomx_rejects_total", []string{"code", "550", "reason", "unknown_user"}, 2},
		{"nanomx_rejects_total", []string{"code", "550", "reason", "relay_denied"}, 1},
		{"nanomx_rejects_total", []string{"code", "421", "reason", "max_connections_per_ip"}, 0},
		{"nanomx_connections_accepted_total", nil, 3}, // start's probe too
		{"nanomx_connections_open", nil, 0},
		{"nanomx_connections_refused_total", []string{"reason", "max_connections"}, 0},
		{"nanomx_tls_sessions_total", []string{"version", "TLSv1.3"}, 1},
		{"nanomx_tls_sessions_total", []string{"version", "TLSv1.2"}, 0},
		{"nanomx_tls_sessions_open", nil, 0},
		{"nanomx_commands_total", []string{"verb", "ehlo"}, 3},
		{"nanomx_commands_total", []string{"verb", "starttls"}, 1},
		{"nanomx_commands_total", []string{"verb", "mail"}, 3},
		{"nanomx_commands_total", []string{"verb", "rcpt"}, 6},
		{"nanomx_commands_total", []string{"verb", "data"}, 3},
		{"nanomx_commands_total", []string{"verb", "quit"}, 2},
		{"nanomx_commands_total", []string{"verb", "other"}, 0},
		// Greetings (3), EHLO (3), 220 for TLS, MAIL (3), RCPT (3),
		// queued (3), 221 (2).
		{"nanomx_replies_total", []string{"class", "2xx"}, 18},
		{"nanomx_replies_total", []string{"class", "3xx"}, 3},
		{"nanomx_replies_total", []string{"class", "4xx"}, 0},
		{"nanomx_replies_total", []string{"class", "5xx"}, 3},
		{"nanomx_spool_queue_depth", nil, 0},
		{"nanomx_spool_queue_capacity", nil, float64(cfg.QueueLength)},
		{"nanomx_body_budget_bytes", nil, float64(cfg.BodyBudgetBytes)},
		{"nanomx_body_budget_in_use_bytes", nil, 0},
		{"nanomx_reject_lines_suppressed_total", nil, 0},
	} {
		if got := m.value(t, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if h := m.histogram(t, "nanomx_delivery_duration_seconds"); h.GetSampleCount() != 3 || h.GetSampleSum() <= 0 {
		t.Errorf("delivery histogram: count %d, sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	batches, msgs := r.srv.spool.CommitStats()
	if h := m.histogram(t, "nanomx_commit_batch_messages"); h.GetSampleCount() != batches || uint64(h.GetSampleSum()) != msgs {
		t.Errorf("batch histogram: count %d, sum %v; the spool made %d commits of %d messages", h.GetSampleCount(), h.GetSampleSum(), batches, msgs)
	}
	if h := m.histogram(t, "nanomx_commit_flush_duration_seconds"); h.GetSampleCount() != batches {
		t.Errorf("flush histogram: count %d, %d commits", h.GetSampleCount(), batches)
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.value(t, "nanomx_tls_certificate_expiry_seconds"), time.Until(cert.Leaf.NotAfter).Seconds(); got <= 0 || math.Abs(got-want) > 60 {
		t.Errorf("certificate expires in %vs, want %vs", got, want)
	}
	// No check refused anything: no series for one.
	for _, s := range m["nanomx_rejects_total"].GetMetric() {
		for _, l := range s.GetLabel() {
			if strings.HasSuffix(l.GetValue(), "_check") {
				t.Errorf("series %v", s)
			}
		}
	}

	// A scrape allocates boundedly: nothing for the registry's own text.
	r.srv.m.reg.WriteTo(io.Discard)
	if n := testing.AllocsPerRun(20, func() { r.srv.m.reg.WriteTo(io.Discard) }); n > 0 {
		t.Errorf("a scrape allocates %v times", n)
	}
}

// TestMetricsAddr: a public metrics address is refused unless allowed; a
// taken port fails New (before the spool is opened); no key, no endpoint.
func TestMetricsAddr(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MetricsAddr = "0.0.0.0:9125"
	var ce *ConfigError
	if _, err := New(cfg); !errors.As(err, &ce) || ce.Key != "metrics" || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("public address: %v", err)
	}
	cfg.MetricsAllowPublic = true
	if err := cfg.Validate(); err != nil {
		t.Errorf("allowed public address: %v", err)
	}
	cfg.MetricsAllowPublic = false
	cfg.MetricsAddr = "[::]:9125"
	if err := cfg.Validate(); err == nil {
		t.Error("[::] accepted")
	}

	taken := start(t, func() Config { c := testServerConfig(t); c.MetricsAddr = freePort(t); return c }())
	cfg.MetricsAddr = taken.srv.cfg.MetricsAddr
	var le *ListenError
	if _, err := New(cfg); !errors.As(err, &le) || le.Addr != cfg.MetricsAddr {
		t.Errorf("taken port: %v", err)
	}

	off := start(t, testServerConfig(t))
	if off.srv.m != nil || off.srv.Metrics() != nil {
		t.Error("metrics without the key")
	}
}

// TestMetricsReload: a reload that changes the metrics address is refused
// (it needs a restart); one that keeps it leaves the counters counting.
func TestMetricsReload(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MetricsAddr = freePort(t)
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO client.example.org", "250")
	next := cfg
	next.MetricsAddr = freePort(t)
	var ce *ConfigError
	if err := r.srv.Reload(next); !errors.As(err, &ce) || ce.Key != "metrics" {
		t.Errorf("reload with another address: %v", err)
	}
	next = cfg
	next.MaxRecipients = 50
	if err := r.srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	c = dial(t, r.addr) // a session with the reloaded dialect
	c.reply()
	c.expect("EHLO client.example.org", "250")
	c.expect("NOOP", "250")
	if got := scrape(t, cfg.MetricsAddr).value(t, "nanomx_commands_total", "verb", "ehlo"); got != 2 {
		t.Errorf("EHLO counted %v times, want 2", got)
	}
}

// BenchmarkDeliveryMetrics delivers messages to two servers in the same
// run, one with metrics off and one with them on, alternating message by
// message (and which goes first), so that both see the same machine: one
// connection each, MAIL, RCPT and DATA pipelined, on tmpfs with fsync off
// so that the figure is the server's own work. It reports the median time
// per message of each and their ratio: the counters on the hot path must
// cost nothing measurable.
//
//	go test -run '^$' -bench DeliveryMetrics -benchtime 5000x ./server/
func BenchmarkDeliveryMetrics(b *testing.B) {
	type target struct {
		srv  *Server
		nc   net.Conn
		br   *bufio.Reader
		took []time.Duration
	}
	var ts [2]*target // off, on
	for i, on := range []bool{false, true} {
		cfg := Defaults()
		cfg.Hostname = "mx.example.test"
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		cfg.Listen = []string{l.Addr().String()}
		l.Close()
		if on {
			l, _ := net.Listen("tcp", "127.0.0.1:0")
			cfg.MetricsAddr = l.Addr().String()
			l.Close()
		}
		dir, _ := os.MkdirTemp(benchDir(), "nanomx-bench-")
		defer os.RemoveAll(dir)
		cfg.MaildirRoot = dir
		cfg.Domains = []string{"example.test"}
		cfg.Mailboxes = []string{"bob@example.test"}
		cfg.Postmaster = "bob@example.test"
		cfg.Fsync = false
		r := start(b, cfg)
		if (r.srv.m != nil) != on {
			b.Fatal("metrics not as asked")
		}
		nc, err := net.Dial("tcp", r.addr)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		ts[i] = &target{srv: r.srv, nc: nc, br: bufio.NewReader(nc), took: make([]time.Duration, 0, b.N)}
	}
	read := func(t *target) string {
		for {
			l, err := t.br.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			if l[3] == ' ' {
				return l
			}
		}
	}
	for _, t := range ts {
		read(t)
		t.nc.Write([]byte("EHLO c\r\n"))
		read(t)
	}
	txn := []byte("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	body := []byte("Subject: x\r\n\r\n" + strings.Repeat(strings.Repeat("b", 98)+"\r\n", 10) + ".\r\n")
	deliver := func(t *target) {
		start := time.Now()
		t.nc.Write(txn)
		read(t)
		read(t)
		read(t)
		t.nc.Write(body)
		if l := read(t); !strings.HasPrefix(l, "250 2.0.0") {
			b.Fatal(l)
		}
		t.took = append(t.took, time.Since(start))
	}
	b.ResetTimer()
	for i := range b.N {
		deliver(ts[i%2])
		deliver(ts[1-i%2])
	}
	b.StopTimer()
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Nanoseconds()) / 1e3
	}
	off, on := median(ts[0].took), median(ts[1].took)
	b.ReportMetric(off, "off-µs/msg")
	b.ReportMetric(on, "on-µs/msg")
	b.ReportMetric(on/off, "on/off")
	if got := ts[1].srv.stats.Delivered.Load(); ts[1].srv.m.delivery.Count() != got {
		b.Errorf("histogram counted %d of %d", ts[1].srv.m.delivery.Count(), got)
	}
}

// hotPath is what metrics add to one delivered message in server: its
// replies counted (MAIL, RCPT, DATA and the queued one), and the
// delivery's bytes and latency. (The commands are proto's, below.)
func hotPath(m *serverMetrics, replies [][]byte, d time.Duration) {
	for _, r := range replies {
		m.countReplies(r)
	}
	m.delivered(1000, d)
}

func newHotPath() (*serverMetrics, [][]byte) {
	s := &Server{rejectLog: newRejectLimiter()}
	m := s.newMetrics()
	return m, [][]byte{proto.ReplyMailOK.Bytes(), proto.ReplyRcptOK.Bytes(), proto.ReplyStartData.Bytes(), []byte("250 2.0.0 OK: queued as 0123456789ABCDEF\r\n")}
}

// TestHotPathAllocs: counting a message's replies and its delivery
// allocates nothing, and neither does counting a session's commands
// (proto.Counters, through a real session).
func TestHotPathAllocs(t *testing.T) {
	m, replies := newHotPath()
	if n := testing.AllocsPerRun(1000, func() { hotPath(m, replies, 3*time.Millisecond) }); n != 0 {
		t.Errorf("the hot path allocates %v times", n)
	}
	if got := m.replies[2].Load(); got != 3*1001 {
		t.Errorf("2xx counted %d times, want %d", got, 3*1001)
	}
	d := proto.NewDialect(proto.Config{Hostname: "mx", MaxLineBytes: 512, MaxRcpts: 10, MaxMessageBytes: 1 << 20, MaxBadCommands: 100, Counters: &m.commands})
	sess := d.NewSession(nopHandler{})
	in := []byte("NOOP\r\nHELP\r\nXYZZY\r\nRSET\r\n")
	feed := func() { sess.Feed(in); sess.ClearOutput() }
	feed()
	if n := testing.AllocsPerRun(20, feed); n != 0 {
		t.Errorf("counting commands allocates %v times", n)
	}
	if m.commands.Commands[proto.VerbNoop].Load() != 22 || m.commands.Commands[proto.VerbOther].Load() != 22 {
		t.Errorf("NOOP %d, other %d, want 22 each (a warm-up run, AllocsPerRun's own and 20)", m.commands.Commands[proto.VerbNoop].Load(), m.commands.Commands[proto.VerbOther].Load())
	}
}

// nopHandler accepts everything.
type nopHandler struct{}

func (nopHandler) CheckHelo([]byte, bool) *proto.Reply             { return nil }
func (nopHandler) CheckMail([]byte, proto.MailParams) *proto.Reply { return nil }
func (nopHandler) CheckRcpt([]byte) *proto.Reply                   { return nil }
func (nopHandler) CheckData() *proto.Reply                         { return nil }
func (nopHandler) BeginBody(int64) *proto.Reply                    { return nil }
func (nopHandler) WriteBody([]byte) *proto.Reply                   { return nil }
func (nopHandler) AbortBody()                                      {}
func (nopHandler) StartTLS() *proto.Reply                          { return nil }

// BenchmarkHotPath is TestHotPathAllocs' counting, timed.
//
//	go test -run '^$' -bench HotPath -benchmem ./server/
func BenchmarkHotPath(b *testing.B) {
	m, replies := newHotPath()
	b.ReportAllocs()
	for range b.N {
		hotPath(m, replies, 3*time.Millisecond)
	}
}

// TestREADMEListsEveryMetric: the README's metrics table names every
// family the server registers, with every check on (and the scanner
// hook rspamd's check uses).
func TestREADMEListsEveryMetric(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.MetricsAddr = freePort(t)
	cfg.DNSServers = []string{dnstest.New(t, dnsblZone).Addr()}
	cfg.DNSTimeout = 300 * time.Millisecond
	cfg.SPF, cfg.DKIM, cfg.DMARC, cfg.IPRev = true, true, true, true
	cfg.DNSBLSites = []string{"bl.example"}
	cfg.MaxConnectionsPerMinute = 100
	r := start(t, cfg)
	r.srv.registerScanner("rspamd", func() scanStats { return scanStats{} }, metrics.NewDurationHistogram(time.Second))
	fams := scrape(t, cfg.MetricsAddr)
	for _, name := range []string{"nanomx_auth_results_total", "nanomx_dnsbl_queries_total", "nanomx_rate_limited_total", "nanomx_check_duration_seconds", "nanomx_dns_query_duration_seconds"} {
		if fams[name] == nil {
			t.Errorf("no %s with every check on", name)
		}
	}
	for name := range fams {
		if !regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(name) + "[`{]").Match(readme) {
			t.Errorf("README.md's metrics table has no row for %s", name)
		}
	}
}
