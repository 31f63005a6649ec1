package server

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/check"
)

// logLines collects a server's log lines, safe for its goroutines.
type logLines struct{ syncBuffer }

// lines returns the lines whose message is msg, decoded.
func (l *logLines) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// waitLines waits until there are n lines with message msg.
func (l *logLines) waitLines(t *testing.T, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := l.lines(t, msg)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logTo makes cfg log at info into a logLines.
func logTo(cfg *Config) *logLines {
	l := &logLines{}
	cfg.Log = zerolog.New(l).Level(zerolog.InfoLevel)
	return l
}

// fields compares a line with what it must carry (numbers as JSON has
// them) and that it carries nothing it must not.
func fields(t *testing.T, what string, line map[string]any, want map[string]any, absent ...string) {
	t.Helper()
	for k, v := range want {
		if fmt.Sprint(line[k]) != fmt.Sprint(v) {
			t.Errorf("%s: %s = %v, want %v (line %v)", what, k, line[k], v, line)
		}
	}
	for _, k := range absent {
		if _, ok := line[k]; ok {
			t.Errorf("%s: has %s (line %v)", what, k, line)
		}
	}
}

// TestRejectLines: each kind of refusal logs one "reject" info line with
// its code, enhanced code, reason, client address and what the session
// knew (HELO name, sender, recipient): unknown user, relaying denied, a
// connection over the per-IP limit, a sender refused by a check, a
// message refused by a check, an early talker.
func TestRejectLines(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MaxConnectionsPerIP = 1
	log := logTo(&cfg)
	cfg.checks = []Checker{
		&stageChecker{stage: stageMail, only: netip.MustParseAddr("127.0.0.2"),
			verdict: check.Verdict{Reply: proto.NewReply(550, "5.7.1", "Sender refused")}},
		&stageChecker{stage: stageData, only: netip.MustParseAddr("127.0.0.3"),
			verdict: check.Verdict{Reply: proto.NewReply(554, "5.7.1", "Looks like spam")}},
	}
	r := start(t, cfg)

	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO client.example.org", "250")
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<nobody@example.test>", "550 5.1.1")
	c.expect("RCPT TO:<bob@elsewhere.test>", "550 5.7.1")
	second := dial(t, r.addr) // over max_connections_per_ip
	if got := second.reply(); !strings.HasPrefix(got, "421 4.7.0") {
		t.Fatalf("second connection: %q", got)
	}
	c2 := dialFrom(t, "127.0.0.2", r.addr)
	c2.reply()
	c2.expect("EHLO two.example.org", "250")
	c2.expect("MAIL FROM:<spammer@example.net>", "550 5.7.1")
	c3 := dialFrom(t, "127.0.0.3", r.addr)
	c3.reply()
	c3.expect("EHLO three.example.org", "250")
	c3.expect("MAIL FROM:<<>>", "501") // a syntax error is no reject line
	c3.expect("MAIL FROM:<>", "250")
	c3.expect("RCPT TO:<bob@example.test>", "250")
	c3.expect("RCPT TO:<alice@example.test>", "250")
	c3.expect("DATA", "354")
	c3.send(message)
	if got := c3.reply(); !strings.HasPrefix(got, "554 5.7.1") {
		t.Fatalf("data: %q", got)
	}

	lines := log.waitLines(t, "reject", 5)
	if len(lines) != 5 {
		t.Fatalf("%d reject lines, want 5: %v", len(lines), lines)
	}
	byReason := map[string]map[string]any{}
	for _, l := range lines {
		byReason[fmt.Sprint(l["reason"])] = l
		if l["level"] != "info" {
			t.Errorf("level %v", l["level"])
		}
	}
	fields(t, "unknown user", byReason["unknown_user"], map[string]any{
		"stage": "rcpt", "code": 550, "status": "5.1.1", "remote": "127.0.0.1",
		"helo": "client.example.org", "from": "a@example.org", "rcpt": "nobody@example.test",
	})
	if byReason["unknown_user"]["sid"] == nil {
		t.Error("no sid")
	}
	fields(t, "relaying", byReason["relay_denied"], map[string]any{
		"stage": "rcpt", "code": 550, "status": "5.7.1", "remote": "127.0.0.1",
		"helo": "client.example.org", "from": "a@example.org", "rcpt": "bob@elsewhere.test",
	})
	fields(t, "per-IP limit", byReason["max_connections_per_ip"], map[string]any{
		"stage": "connect", "code": 421, "status": "4.7.0", "remote": "127.0.0.1",
	}, "helo", "from", "rcpt")
	fields(t, "sender check", byReason["mail_check"], map[string]any{
		"stage": "mail", "code": 550, "status": "5.7.1", "remote": "127.0.0.2",
		"helo": "two.example.org", "from": "spammer@example.net", "text": "Sender refused",
	}, "rcpt")
	fields(t, "data check", byReason["data_check"], map[string]any{
		"stage": "data", "code": 554, "status": "5.7.1", "remote": "127.0.0.3",
		"helo": "three.example.org", "from": "", "rcpt": "bob@example.test", "rcpts": 2, "text": "Looks like spam",
	})

	// An early talker (greeting_delay, from the next connection on).
	for _, cl := range []*client{c, second, c2, c3} {
		cl.c.Close()
	}
	waitIdle(t, r.srv)
	next := cfg
	next.GreetingDelay = 300 * time.Millisecond
	next.checks = nil
	if err := r.srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	rude := dial(t, r.addr)
	rude.send("EHLO bot\r\n")
	if g := rude.reply(); !strings.HasPrefix(g, "554 5.5.1") {
		t.Fatalf("early talker: %q", g)
	}
	lines = log.waitLines(t, "reject", 6)
	if len(lines) != 6 {
		t.Fatalf("%d reject lines, want 6", len(lines))
	}
	fields(t, "early talker", lines[5], map[string]any{
		"stage": "connect", "code": 554, "status": "5.5.1", "reason": "early_talker", "remote": "127.0.0.1",
	}, "helo", "from")

	// The README's fail2ban filter finds the client of every 5xx reject
	// line and of no other line.
	re := fail2banRegexp(t)
	raw := strings.Split(strings.TrimSpace(log.String()), "\n")
	var banned []string
	for _, line := range raw {
		if m := re.FindStringSubmatch(line); m != nil {
			banned = append(banned, m[re.SubexpIndex("host")])
		}
	}
	if want := []string{"127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"}; !slices.Equal(banned, want) {
		t.Errorf("fail2ban filter matches %v, want %v", banned, want)
	}
}

// fail2banRegexp is the README's failregex with <HOST> as fail2ban
// expands it (an address, in group "host").
func fail2banRegexp(t *testing.T) *regexp.Regexp {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^failregex = (.*)$`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no failregex")
	}
	return regexp.MustCompile(strings.Replace(string(m[1]), "<HOST>", `(?P<host>[0-9A-Fa-f.:]+)`, 1))
}

// TestRejectLinesLimited: 1,000 refused recipients from one client write
// at most rejectLogLimit lines; the rest are counted (the rejects metric
// still sees all 1,000) and reported in one "suppressed" line once the
// minute is over. Another client meanwhile logs as usual.
func TestRejectLinesLimited(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MaxBadCommands = 2000
	cfg.MetricsAddr = freePort(t)
	log := logTo(&cfg)
	r := start(t, cfg)

	const n = 1000
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO flood.example.org", "250")
	c.expect("MAIL FROM:<a@example.org>", "250")
	for i := 0; i < n; i += 100 {
		var b strings.Builder
		for j := range 100 {
			fmt.Fprintf(&b, "RCPT TO:<u%d@example.test>\r\n", i+j)
		}
		c.send(b.String())
		for range 100 {
			if got := c.reply(); !strings.HasPrefix(got, "550 5.1.1") {
				t.Fatalf("RCPT: %q", got)
			}
		}
	}
	other := dialFrom(t, "127.0.0.2", r.addr)
	other.reply()
	other.expect("EHLO other.example.org", "250")
	other.expect("MAIL FROM:<b@example.org>", "250")
	other.expect("RCPT TO:<nobody@example.test>", "550 5.1.1")

	lines := log.waitLines(t, "reject", rejectLogLimit+1)
	from := map[string]int{}
	for _, l := range lines {
		from[fmt.Sprint(l["remote"])]++
	}
	if from["127.0.0.1"] != rejectLogLimit || from["127.0.0.2"] != 1 {
		t.Errorf("reject lines by client: %v, want %d and 1", from, rejectLogLimit)
	}
	m := scrape(t, cfg.MetricsAddr)
	if got := m.value(t, "nanomx_rejects_total", "code", "550", "reason", "unknown_user"); got != n+1 {
		t.Errorf("rejects_total %v, want %d", got, n+1)
	}
	if got := m.value(t, "nanomx_reject_lines_suppressed_total"); got != n-rejectLogLimit {
		t.Errorf("suppressed_total %v, want %d", got, n-rejectLogLimit)
	}
	if s := log.lines(t, "reject lines suppressed"); len(s) != 0 {
		t.Errorf("suppressed reported within the minute: %v", s)
	}

	// A minute later (OnTick's sweep, here with the clock moved on), one
	// line reports the rest; the other client wrote all its lines.
	r.srv.rejectLog.sweep(&r.srv.log, time.Now().Add(rejectLogWindow+time.Second))
	s := log.lines(t, "reject lines suppressed")
	if len(s) != 1 {
		t.Fatalf("%d suppressed lines, want 1: %v", len(s), s)
	}
	fields(t, "suppressed", s[0], map[string]any{"remote": "127.0.0.1", "suppressed": n - rejectLogLimit, "logged": rejectLogLimit})
}

// TestRejectLimiter: the window restarts after a minute with the count of
// the last one reported; an address pushed out of its full set has its
// count reported then; any number of addresses fits the fixed table.
func TestRejectLimiter(t *testing.T) {
	var out logLines
	log := zerolog.New(&out)
	l := newRejectLimiter()
	a := netip.MustParseAddr("192.0.2.1")
	t0 := time.Now()
	allowed := 0
	for range 25 {
		if l.allow(&log, a, t0) {
			allowed++
		}
	}
	if allowed != rejectLogLimit {
		t.Errorf("allowed %d of 25, want %d", allowed, rejectLogLimit)
	}
	if !l.allow(&log, a, t0.Add(rejectLogWindow)) {
		t.Error("refused in the next window")
	}
	s := out.lines(t, "reject lines suppressed")
	if len(s) != 1 || fmt.Sprint(s[0]["suppressed"]) != "5" || s[0]["remote"] != "192.0.2.1" {
		t.Errorf("rollover: %v", s)
	}

	// 5,000 addresses, each over its limit once: the table keeps only
	// rejectSets*rejectWays of them; every count is reported, early
	// for those pushed out, by the sweep for the rest.
	l = newRejectLimiter()
	out = logLines{}
	const addrs = 5000
	for i := range addrs {
		b := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		for range rejectLogLimit + 1 {
			l.allow(&log, b, t0)
		}
	}
	l.sweep(&log, t0.Add(rejectLogWindow))
	total := 0
	for _, s := range out.lines(t, "reject lines suppressed") {
		total += int(s["suppressed"].(float64))
	}
	if total != addrs || l.suppressed.Load() != addrs {
		t.Errorf("reported %d suppressed, counted %d, want %d", total, l.suppressed.Load(), addrs)
	}
	for s := range l.slots {
		for _, w := range l.slots[s] {
			if !w.start.IsZero() {
				t.Fatal("the sweep left a window open")
			}
		}
	}
}
