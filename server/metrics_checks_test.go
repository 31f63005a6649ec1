package server

import (
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/auth"
	"github.com/nanomx/nanomx/server/metrics"
	"github.com/nanomx/nanomx/server/resolver"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// checkValues compares every series of name, by its labels (as
// "a=b,c=d" in label order), with want; a series want does not name must
// be 0.
func checkValues(t *testing.T, m scraped, name string, want map[string]float64) {
	t.Helper()
	f := m[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
	seen := map[string]bool{}
	for _, s := range f.GetMetric() {
		var ls []string
		for _, l := range s.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		k := strings.Join(ls, ",")
		v := s.GetCounter().GetValue()
		if s.GetGauge() != nil {
			v = s.GetGauge().GetValue()
		}
		if v != want[k] {
			t.Errorf("%s{%s} = %v, want %v", name, k, v, want[k])
		}
		seen[k] = true
	}
	for k := range want {
		if !seen[k] {
			t.Errorf("no series %s{%s}", name, k)
		}
	}
}

// TestMetricsAuth: after real messages through every authentication
// check (against the in-process DNS server), the results and the DMARC
// actions are counted exactly, as the Authentication-Results fields
// show them; the resolver's lookups are counted by type and result, as
// the resolver counted them, and its latency histogram holds every query
// sent. With spf_fail_action = "reject" an SPF fail refused at MAIL is
// counted too.
func TestMetricsAuth(t *testing.T) {
	_, cfg, key := authSetup(t)
	cfg.MetricsAddr = freePort(t)
	r := start(t, cfg)

	c := dialFrom(t, "127.0.0.2", r.addr)
	c.reply()
	c.expect("EHLO c.sender.test", "250")
	// SPF pass, DKIM fail (the body changed after signing), DMARC pass
	// (SPF aligned), iprev pass.
	good := signed(t, key, "From: Alice <alice@sender.test>\r\nSubject: hi\r\n\r\nHello.\r\n")
	if got := sendMsg(t, c, "alice@sender.test", "bob@example.test", strings.Replace(good, "Hello.", "Hellp.", 1)); !strings.HasPrefix(got, "250") {
		t.Fatalf("tampered: %q", got)
	}
	c.expect("QUIT", "221")
	c = dialFrom(t, "127.0.0.3", r.addr)
	c.reply()
	c.expect("EHLO forger.test", "250")
	// No PTR (iprev permerror), no SPF record (none), unsigned: DMARC
	// fails under p=reject, p=quarantine and p=none.
	for _, tc := range []struct{ from, reply string }{
		{"service@sender.test", "550 5.7.1"},
		{"a@q.test", "250"},
		{"a@none.test", "250"},
	} {
		if got := sendMsg(t, c, "x@elsewhere.test", "bob@example.test", "From: "+tc.from+"\r\nSubject: s\r\n\r\nbody\r\n"); !strings.HasPrefix(got, tc.reply) {
			t.Fatalf("From %s: %q, want %s", tc.from, got, tc.reply)
		}
	}
	c.expect("QUIT", "221")
	waitIdle(t, r.srv)

	m := scrape(t, cfg.MetricsAddr)
	checkValues(t, m, "nanomx_auth_results_total", map[string]float64{
		"method=iprev,result=pass": 1, "method=iprev,result=permerror": 3,
		"method=spf,result=pass": 1, "method=spf,result=none": 3,
		"method=dkim,result=fail": 1, "method=dkim,result=none": 3,
		"method=dmarc,result=pass": 1, "method=dmarc,result=fail": 3,
	})
	checkValues(t, m, "nanomx_dmarc_actions_total", map[string]float64{"action=reject": 1, "action=junk": 1, "action=header": 1})
	if got := m.value(t, "nanomx_rejects_total", "code", "550", "reason", "data_check"); got != 1 {
		t.Errorf("data_check rejects: %v, want 1", got)
	}

	// DNS: what the resolver counted, series by series; the PTR lookups
	// are start's probe from 127.0.0.1 and the two clients (.2 found).
	counts := r.srv.resolver.Counts()
	want := map[string]float64{}
	var lookups uint64
	for ti, byResult := range counts.Lookups {
		for ri, n := range byResult {
			want["type="+resolver.TypeNames[ti]+",result="+resolver.ResultNames[ri]] = float64(n)
			lookups += n
		}
	}
	checkValues(t, m, "nanomx_dns_queries_total", want)
	if want["type=PTR,result=ok"] != 1 || want["type=PTR,result=notfound"] != 2 || want["type=TXT,result=ok"] < 3 || want["type=TXT,result=notfound"] < 1 {
		t.Errorf("lookups %v", want)
	}
	if got := m.value(t, "nanomx_dns_cache_hits_total") + m.value(t, "nanomx_dns_cache_misses_total") + m.value(t, "nanomx_dns_collapsed_total"); got != float64(lookups) || got == 0 {
		t.Errorf("hits + misses + collapsed = %v, lookups %d", got, lookups)
	}
	if got := m.value(t, "nanomx_dns_cache_misses_total"); got != float64(counts.CacheMisses) || got != float64(counts.Flights) {
		t.Errorf("misses %v, want %d (one flight each: %d)", got, counts.CacheMisses, counts.Flights)
	}
	if got := m.value(t, "nanomx_dns_cache_entries"); got != float64(counts.CacheEntries) || got == 0 {
		t.Errorf("cache entries %v, want %d", got, counts.CacheEntries)
	}
	if got := m.value(t, "nanomx_dns_tcp_fallbacks_total"); got != 0 {
		t.Errorf("TCP fallbacks %v", got)
	}
	if h := m.histogram(t, "nanomx_dns_query_duration_seconds"); h.GetSampleCount() != counts.Flights || h.GetSampleSum() <= 0 || len(h.GetBucket()) != len(resolver.LatencyBounds)+1 {
		t.Errorf("latency histogram: %d samples, sum %v, %d buckets; %d flights", h.GetSampleCount(), h.GetSampleSum(), len(h.GetBucket()), counts.Flights)
	}
	// The scrape stays allocation-free with the checks' series.
	r.srv.m.reg.WriteTo(io.Discard)
	if n := testing.AllocsPerRun(20, func() { r.srv.m.reg.WriteTo(io.Discard) }); n > 0 {
		t.Errorf("a scrape allocates %v times", n)
	}

	// spf_fail_action = "reject": refused at MAIL, counted as spf fail;
	// no message, so nothing else.
	_, cfg, _ = authSetup(t)
	cfg.MetricsAddr = freePort(t)
	cfg.SPFFailAction = ActionReject
	r = start(t, cfg)
	c = dialFrom(t, "127.0.0.3", r.addr)
	c.reply()
	c.expect("EHLO forger.test", "250")
	c.expect("MAIL FROM:<alice@sender.test>", "550 5.7.23")
	c.expect("QUIT", "221")
	checkValues(t, scrape(t, cfg.MetricsAddr), "nanomx_auth_results_total", map[string]float64{"method=spf,result=fail": 1})
}

// TestMetricsDNSBL: after real sessions, the DNS lists' queries,
// listings, error codes and the last one are counted per list, and the
// refusal under its check's reason.
func TestMetricsDNSBL(t *testing.T) {
	ns := dnstest.New(t, dnsblZone)
	cfg := dnsblConfig(t, ns, 3, append(readmeSites, "bl.example")...)
	cfg.MetricsAddr = freePort(t)
	r := start(t, cfg)
	c := screenSession(t, "127.0.0.5", r.addr) // in ZEN
	c.expect("RCPT TO:<bob@example.test>", "550 5.7.1")
	c = screenSession(t, "127.0.0.7", r.addr) // nowhere
	c.expect("RCPT TO:<bob@example.test>", "250")
	c = screenSession(t, "127.0.0.10", r.addr) // an error code from bl.example
	c.expect("RCPT TO:<bob@example.test>", "250")

	m := scrape(t, cfg.MetricsAddr)
	// Four clients each: start's probe from 127.0.0.1 too.
	checkValues(t, m, "nanomx_dnsbl_queries_total", map[string]float64{"site=zen.spamhaus.org": 4, "site=list.dnswl.org": 4, "site=bl.example": 4})
	checkValues(t, m, "nanomx_dnsbl_listed_total", map[string]float64{"site=zen.spamhaus.org": 1})
	checkValues(t, m, "nanomx_dnsbl_errors_total", map[string]float64{"site=bl.example,kind=error_code": 1, "site=zen.spamhaus.org,kind=error_code": 0})
	checkValues(t, m, "nanomx_dnsbl_last_error_code", map[string]float64{"site=bl.example,code=127.255.255.254": 1})
	if got := m.value(t, "nanomx_rejects_total", "code", "550", "reason", "rcpt_check"); got != 1 {
		t.Errorf("rcpt_check rejects %v, want 1", got)
	}
	if got := m.value(t, "nanomx_dns_queries_total", "type", "A", "result", "ok"); got != 2 {
		t.Errorf("A lookups found: %v, want 2 (ZEN for .5, bl.example for .10)", got)
	}
	if got := m.value(t, "nanomx_dns_queries_total", "type", "A", "result", "notfound"); got != 10 {
		t.Errorf("A lookups not found: %v, want 10", got)
	}
	if _, ok := m["nanomx_auth_results_total"]; ok {
		t.Error("auth results without the checks")
	}
}

// TestMetricsRates: each rate's refusals are counted under its kind.
func TestMetricsRates(t *testing.T) {
	cfg := rateConfig(t, 2, 1, 1)
	cfg.MetricsAddr = freePort(t)
	r := start(t, cfg)
	c := dialFrom(t, "127.0.0.5", r.addr)
	c.reply()
	c.expect("EHLO c.example.org", "250")
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<bob@example.test>", "250")
	c.expect("RCPT TO:<alice@example.test>", "451 4.7.1")
	c.expect("RSET", "250")
	c.expect("MAIL FROM:<a@example.org>", "451 4.7.1")
	c.expect("MAIL FROM:<b@example.org>", "451 4.7.1")
	dialFrom(t, "127.0.0.5", r.addr).reply()
	if g := dialFrom(t, "127.0.0.5", r.addr).reply(); !strings.HasPrefix(g, "421 4.7.0") {
		t.Fatalf("third connection: %q", g)
	}
	checkValues(t, scrape(t, cfg.MetricsAddr), "nanomx_rate_limited_total", map[string]float64{"kind=connections": 1, "kind=messages": 2, "kind=recipients": 1})
}

// TestMetricsScannerHook: registerScanner, the hook for rspamd's check,
// serves the requests by result, read at each scrape, and the latency
// histogram.
func TestMetricsScannerHook(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MetricsAddr = freePort(t)
	r := start(t, cfg)
	st := scanStats{OK: 7, Failed: 1, Timeouts: 2}
	h := metrics.NewDurationHistogram(10*time.Millisecond, 100*time.Millisecond)
	h.ObserveDuration(20 * time.Millisecond)
	r.srv.registerScanner("rspamd", func() scanStats { return st }, h)
	st.Busy = 3 // read when scraped
	m := scrape(t, cfg.MetricsAddr)
	checkValues(t, m, "nanomx_check_requests_total", map[string]float64{
		"check=rspamd,result=ok": 7, "check=rspamd,result=failed": 1, "check=rspamd,result=timeout": 2, "check=rspamd,result=busy": 3,
	})
	if hs := m.metric(t, "nanomx_check_duration_seconds", "check", "rspamd").GetHistogram(); hs.GetSampleCount() != 1 || hs.GetSampleSum() != 0.02 {
		t.Errorf("histogram %v", hs)
	}
	off := start(t, testServerConfig(t))
	off.srv.registerScanner("rspamd", func() scanStats { return st }, h) // no metrics: nothing, no panic
}

// TestCheckCountingAllocs: counting a message's authentication results
// and its DMARC action allocates nothing; neither does a rate refusal's
// count (an atomic add).
func TestCheckCountingAllocs(t *testing.T) {
	var s authStats
	iprev := auth.IPRevResult{Status: auth.Pass, IP: netip.MustParseAddr("192.0.2.1")}
	spf := auth.SPFResult{Status: auth.SoftFail}
	res := auth.Results{
		IPRev: &iprev, SPF: &spf, DKIMChecked: true, DMARCChecked: true,
		DKIM:  []auth.DKIMResult{{Status: auth.Pass}, {Status: auth.Fail}},
		DMARC: []auth.DMARCResult{{Status: auth.Fail}},
	}
	count := func() {
		s.count(&res)
		s.action(ActionJunk)
	}
	if n := testing.AllocsPerRun(100, count); n != 0 {
		t.Errorf("counting allocates %v times", n)
	}
	for _, tc := range []struct {
		method int
		st     auth.Status
		want   uint64
	}{
		{authIPRev, auth.Pass, 101}, {authSPF, auth.SoftFail, 101}, {authDKIM, auth.Pass, 101},
		{authDKIM, auth.Fail, 101}, {authDMARC, auth.Fail, 101}, {authDMARC, auth.Pass, 0},
	} {
		if got := s.results[tc.method][statusIndex(tc.st)].Load(); got != tc.want {
			t.Errorf("%s=%s counted %d, want %d", authMethodNames[tc.method], tc.st, got, tc.want)
		}
	}
	if got := s.actions[1].Load(); got != 101 {
		t.Errorf("junk counted %d", got)
	}
	for i, st := range authStatuses {
		if statusIndex(st) != i {
			t.Errorf("statusIndex(%s) = %d, want %d", st, statusIndex(st), i)
		}
	}
	var none auth.Results
	none.DKIMChecked, none.DMARCChecked = true, true
	s.count(&none)
	if s.results[authDKIM][statusIndex(auth.None)].Load() != 1 || s.results[authDMARC][statusIndex(auth.None)].Load() != 1 {
		t.Error("dkim=none / dmarc=none not counted")
	}
}

// BenchmarkAuthCounting is TestCheckCountingAllocs' counting, timed.
//
//	go test -run '^$' -bench AuthCounting -benchmem ./server/
func BenchmarkAuthCounting(b *testing.B) {
	var s authStats
	spf := auth.SPFResult{Status: auth.Pass}
	res := auth.Results{SPF: &spf, DKIMChecked: true, DMARCChecked: true, DKIM: []auth.DKIMResult{{Status: auth.Pass}}, DMARC: []auth.DMARCResult{{Status: auth.Pass}}}
	b.ReportAllocs()
	for range b.N {
		s.count(&res)
	}
}
