package server

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/check"
	"github.com/nanomx/nanomx/server/servertest"
)

// syncBuffer is a log sink the loops may write while the test reads.
type syncBuffer = servertest.SyncBuffer

// proxyConfig is testServerConfig with a proxy_listen address trusting
// 127.0.0.1; its log goes to the returned buffer.
func proxyConfig(t *testing.T) (Config, *syncBuffer) {
	t.Helper()
	cfg := testServerConfig(t)
	// freePort closes its listener: the kernel may hand the same port out
	// twice in a row.
	for cfg.ProxyListen = []string{freePort(t)}; cfg.ProxyListen[0] == cfg.Listen[0]; {
		cfg.ProxyListen[0] = freePort(t)
	}
	cfg.ProxyTrusted = []string{"127.0.0.1/32"}
	logs := &syncBuffer{}
	cfg.Log = zerolog.New(logs).Level(zerolog.DebugLevel)
	return cfg, logs
}

// v2Header builds a PROXY v2 header: command (0x20 LOCAL, 0x21 PROXY),
// family byte, and the address block and TLVs.
func v2Header(verCmd, fam byte, body ...[]byte) string {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n")
	var all []byte
	for _, p := range body {
		all = append(all, p...)
	}
	b = append(b, verCmd, fam, byte(len(all)>>8), byte(len(all)))
	return string(append(b, all...))
}

// v2Addrs is the address block of src and dst (both IPv4 or both IPv6).
func v2Addrs(src, dst string) []byte {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	b := append(s.Addr().AsSlice(), d.Addr().AsSlice()...)
	return append(b, byte(s.Port()>>8), byte(s.Port()), byte(d.Port()>>8), byte(d.Port()))
}

func v2TLV(typ byte, v string) []byte {
	return append([]byte{typ, byte(len(v) >> 8), byte(len(v))}, v...)
}

// deliver runs a whole session after the greeting (which it reads) and
// returns the message as stored in bob's Maildir, the only one there.
func deliver(t *testing.T, c *client, root string) string {
	t.Helper()
	if g := c.reply(); !strings.HasPrefix(g, "220 mx.example.test") {
		t.Fatalf("greeting: %q", g)
	}
	c.expect("EHLO client.example.org", "250")
	c.expect("MAIL FROM:<sender@example.org>", "250")
	c.expect("RCPT TO:<bob@example.test>", "250")
	c.expect("DATA", "354")
	c.send("Subject: proxied\r\n\r\nhello\r\n")
	c.expect(".", "250")
	c.expect("QUIT", "221")
	files := newFiles(t, root, "example.test", "bob")
	if len(files) != 1 {
		t.Fatalf("%d messages stored, want 1", len(files))
	}
	return files[0]
}

// received returns the Received field's first line of a stored message.
func received(t *testing.T, msg string) string {
	t.Helper()
	for _, l := range strings.Split(msg, "\n") {
		if strings.HasPrefix(l, "Received: ") {
			return l
		}
	}
	t.Fatalf("no Received field in %q", msg)
	return ""
}

// TestProxyHeaders: each kind of header is read before the greeting and
// the session then works; the stored Received field names the client the
// header carried (the real peer for UNKNOWN and LOCAL), and the log line
// of the connection names both.
func TestProxyHeaders(t *testing.T) {
	for _, tc := range []struct {
		name, header, from string
		local              bool
	}{
		{"v1 tcp4", "PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n", "([192.0.2.7])", false},
		{"v1 tcp6", "PROXY TCP6 2001:db8::7 2001:db8::25 40000 25\r\n", "([IPv6:2001:db8::7])", false},
		{"v1 tcp6 mapped", "PROXY TCP6 ::ffff:192.0.2.9 ::ffff:198.51.100.1 40000 25\r\n", "([192.0.2.9])", false},
		{"v1 unknown", "PROXY UNKNOWN\r\n", "([127.0.0.1])", false},
		{"v2 tcp4 tlvs", v2Header(0x21, 0x11, v2Addrs("192.0.2.7:56324", "198.51.100.1:25"), v2TLV(0x05, "id-1"), v2TLV(0x02, "mx.example.test")), "([192.0.2.7])", false},
		{"v2 tcp6 tlvs", v2Header(0x21, 0x21, v2Addrs("[2001:db8::7]:40000", "[2001:db8::25]:25"), v2TLV(0x04, strings.Repeat("x", 100))), "([IPv6:2001:db8::7])", false},
		{"v2 local", v2Header(0x20, 0x00), "([127.0.0.1])", true},
		{"v2 local with addresses", v2Header(0x20, 0x11, v2Addrs("192.0.2.7:1", "198.51.100.1:25")), "([127.0.0.1])", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, logs := proxyConfig(t)
			r := start(t, cfg)
			c := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
			c.send(tc.header)
			got := received(t, deliver(t, c, cfg.MaildirRoot))
			if !strings.Contains(got, tc.from) {
				t.Errorf("Received: %q, want %s", got, tc.from)
			}
			if tc.from != "([127.0.0.1])" && strings.Contains(got, "127.0.0.1") {
				t.Errorf("Received names the proxy: %q", got)
			}
			c.expectClosed()
			st := r.srv.Stats()
			if st.ProxyHeaders.Load() != 1 || (st.ProxyLocal.Load() == 1) != tc.local {
				t.Errorf("ProxyHeaders %d, ProxyLocal %d", st.ProxyHeaders.Load(), st.ProxyLocal.Load())
			}
			// The connection's log line: the client, and the proxy.
			client := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(tc.from, "(["), "IPv6:"), "])")
			waitLog(t, logs, `"remote":"`+client+`","proxy":"127.0.0.1"`, `"message":"connection closed"`)
		})
	}
}

// waitLog waits for a log line containing every one of parts.
func waitLog(t *testing.T, logs *syncBuffer, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, l := range strings.Split(logs.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", parts, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProxyHeaderByteAtATime: a header that arrives a byte at a time is
// read whole; nothing is sent before its last byte, the greeting right
// after it.
func TestProxyHeaderByteAtATime(t *testing.T) {
	cfg, _ := proxyConfig(t)
	start(t, cfg)
	for _, h := range []string{
		"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n",
		v2Header(0x21, 0x11, v2Addrs("192.0.2.7:56324", "198.51.100.1:25"), v2TLV(0x05, "id")),
	} {
		c := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
		for i := 0; i < len(h)-1; i++ {
			c.send(h[i : i+1])
			time.Sleep(time.Millisecond)
		}
		c.expectSilence(200 * time.Millisecond)
		c.send(h[len(h)-1:])
		if g := c.reply(); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("greeting: %q", g)
		}
		c.expect("HELO c", "250")
		c.expect("MAIL FROM:<a@example.org>", "250")
		c.expect("QUIT", "221")
	}
}

// TestProxyUntrusted: a peer outside proxy_trusted is closed without a
// byte, whatever it sends; a trusted one on the same listener is served;
// an empty proxy_trusted trusts nobody.
func TestProxyUntrusted(t *testing.T) {
	cfg, logs := proxyConfig(t)
	cfg.ProxyTrusted = []string{"127.0.0.2"}
	r := start(t, cfg)
	bad := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
	bad.send("PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n")
	bad.expectClosed()
	if n := r.srv.Stats().ProxyUntrusted.Load(); n != 1 {
		t.Errorf("ProxyUntrusted = %d", n)
	}
	waitLog(t, logs, `"remote":"127.0.0.1"`, "not in proxy_trusted")

	good := dialFrom(t, "127.0.0.2", cfg.ProxyListen[0])
	good.send("PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n")
	if !strings.Contains(received(t, deliver(t, good, cfg.MaildirRoot)), "([192.0.2.7])") {
		t.Error("the trusted proxy's client is not in the Received field")
	}

	t.Run("empty", func(t *testing.T) {
		cfg, _ := proxyConfig(t)
		cfg.ProxyTrusted = nil
		start(t, cfg)
		c := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
		c.send("PROXY UNKNOWN\r\n")
		c.expectClosed()
	})
}

// TestProxyTimeout: a connection that sends no header, or half of one,
// is closed after proxy_timeout without a byte.
func TestProxyTimeout(t *testing.T) {
	cfg, logs := proxyConfig(t)
	cfg.ProxyTimeout = time.Second
	r := start(t, cfg)
	begin := time.Now()
	silent := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
	half := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
	half.send("PROXY TCP4 192.0.2.7 ")
	silent.expectClosed()
	half.expectClosed()
	if d := time.Since(begin); d < cfg.ProxyTimeout {
		t.Errorf("closed after %v, before proxy_timeout", d)
	}
	if n := r.srv.Stats().ProxyFailed.Load(); n != 2 {
		t.Errorf("ProxyFailed = %d", n)
	}
	waitLog(t, logs, "no PROXY header within proxy_timeout", `"proxy":"127.0.0.1"`)
}

// TestProxyGarbage: anything but a valid header is closed at once with
// no greeting: SMTP spoken first, a malformed v1 line, a bad v2 version.
func TestProxyGarbage(t *testing.T) {
	cfg, logs := proxyConfig(t)
	r := start(t, cfg)
	for _, in := range []string{
		"EHLO client.example.org\r\n",
		"PROXY TCP4 192.0.2.07 198.51.100.1 56324 25\r\n", // leading zero
		"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\n",    // bare LF
		"PROXY TCP6 192.0.2.7 198.51.100.1 56324 25\r\n",  // family mismatch
		v2Header(0x31, 0x11, v2Addrs("192.0.2.7:1", "198.51.100.1:25")),
		"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04abcd", // PROXY TCP4, 4 address bytes
	} {
		c := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
		c.send(in)
		c.expectClosed()
	}
	if n := r.srv.Stats().ProxyFailed.Load(); n != 6 {
		t.Errorf("ProxyFailed = %d", n)
	}
	waitLog(t, logs, "bad PROXY header: not a PROXY protocol header")
	waitLog(t, logs, "bad PROXY header: invalid address")
	waitLog(t, logs, "bad PROXY header: v2 version is not 2")
}

// TestProxyEarlyTalker: with greeting_delay the header is not early talk
// (it is read before the delay starts), but a command sent with it is.
func TestProxyEarlyTalker(t *testing.T) {
	cfg, _ := proxyConfig(t)
	cfg.GreetingDelay = 300 * time.Millisecond
	r := start(t, cfg)
	h := "PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n"

	polite := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
	begin := time.Now()
	polite.send(h)
	if g := polite.reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting: %q", g)
	}
	if d := time.Since(begin); d < cfg.GreetingDelay {
		t.Errorf("greeted after %v, before greeting_delay", d)
	}
	polite.expect("EHLO c", "250")

	rude := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
	rude.send(h + "EHLO bot\r\n")
	if g := rude.reply(); !strings.HasPrefix(g, "554 5.5.1") {
		t.Fatalf("early talker behind the proxy: %q", g)
	}
	rude.expectClosed()
	if n := r.srv.Stats().EarlyTalkers.Load(); n != 1 {
		t.Errorf("EarlyTalkers = %d", n)
	}
}

// TestProxyPerIPLimit: max_connections_per_ip counts the client the
// header names, not the proxy every connection comes from.
func TestProxyPerIPLimit(t *testing.T) {
	cfg, _ := proxyConfig(t)
	cfg.MaxConnectionsPerIP = 1
	r := start(t, cfg)
	open := func(client string) *client {
		c := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
		c.send("PROXY TCP4 " + client + " 198.51.100.1 40000 25\r\n")
		return c
	}
	a := open("192.0.2.7")
	if g := a.reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("first client: %q", g)
	}
	b := open("192.0.2.7")
	if g := b.reply(); !strings.HasPrefix(g, "421 4.7.0 Too many connections from your address") {
		t.Fatalf("second connection of the client: %q", g)
	}
	b.expectClosed()
	c := open("192.0.2.8")
	if g := c.reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("another client: %q", g)
	}
	// And the proxy's own address is not used up by its clients.
	d := dial(t, r.addr)
	if g := d.reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("direct connection from the proxy's address: %q", g)
	}
	if n := r.srv.Stats().Refused.Load(); n != 1 {
		t.Errorf("Refused = %d", n)
	}
}

// TestProxyChecksSeeClient: the check stage's Info.IP is the client the
// header named: a check refusing MAIL for 192.0.2.7 only refuses that
// proxied client, not another one through the same proxy.
func TestProxyChecksSeeClient(t *testing.T) {
	cfg, _ := proxyConfig(t)
	ch := &stageChecker{stage: stageMail, verdict: check.Verdict{Reply: proto.ReplyRelayDenied}, only: netip.MustParseAddr("192.0.2.7")}
	cfg.checks = []Checker{ch}
	start(t, cfg)
	for _, tc := range []struct{ client, want string }{{"192.0.2.7", "550 5.7.1"}, {"192.0.2.8", "250"}} {
		c := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
		c.send("PROXY TCP4 " + tc.client + " 198.51.100.1 40000 25\r\n")
		if g := c.reply(); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("greeting: %q", g)
		}
		c.expect("EHLO c", "250")
		c.expect("MAIL FROM:<a@example.org>", tc.want)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !strings.Contains(strings.Join(ch.seen, ","), "connect 192.0.2.7") {
		t.Errorf("the connect stage saw %q", ch.seen)
	}
}

// TestProxyLineOnPlainPort: on an ordinary listen address a PROXY line is
// an unknown command, and the session goes on with the real peer.
func TestProxyLineOnPlainPort(t *testing.T) {
	cfg, _ := proxyConfig(t)
	r := start(t, cfg)
	c := dial(t, r.addr)
	if g := c.reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting: %q", g)
	}
	c.expect("PROXY TCP4 192.0.2.7 198.51.100.1 56324 25", "500 5.5.1")
	c.send("EHLO client.example.org\r\n")
	if g := c.reply(); !strings.HasPrefix(g, "250") {
		t.Fatalf("EHLO: %q", g)
	}
	c.expect("MAIL FROM:<sender@example.org>", "250")
	c.expect("RCPT TO:<bob@example.test>", "250")
	c.expect("DATA", "354")
	c.send("Subject: direct\r\n\r\nhello\r\n")
	c.expect(".", "250")
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 || !strings.Contains(received(t, files[0]), "([127.0.0.1])") {
		t.Fatalf("stored: %q", files)
	}
	if n := r.srv.Stats().ProxyHeaders.Load(); n != 0 {
		t.Errorf("ProxyHeaders = %d", n)
	}
}

// TestProxyListenerMatch: a connection is a proxy_listen one when gnet's
// LocalAddr (the listener's address as resolved, 0.0.0.0 included) is a
// proxy_listen address; names are resolved as gnet resolves them.
func TestProxyListenerMatch(t *testing.T) {
	binds, err := resolveProxyListen([]string{"0.0.0.0:2526", "[::]:2527", "localhost:2528", ":2529"})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{proxyBinds: binds}
	tcp := func(ip string, port int) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: port} }
	for _, tc := range []struct {
		local net.Addr
		want  bool
	}{
		{tcp("0.0.0.0", 2526), true},
		{tcp("0.0.0.0", 2525), false},
		{tcp("127.0.0.1", 2526), false}, // another listener: gnet reports 0.0.0.0 for this one
		{tcp("::", 2526), false},
		{tcp("::", 2527), true},
		{tcp("0.0.0.0", 2527), false},
		{tcp("127.0.0.1", 2528), true},
		{&net.TCPAddr{Port: 2529}, true},
		{&net.TCPAddr{Port: 2526}, false},
	} {
		if got := s.proxyListener(tc.local); got != tc.want {
			t.Errorf("proxyListener(%v) = %v, want %v", tc.local, got, tc.want)
		}
	}
	if (&Server{}).proxyListener(tcp("0.0.0.0", 2526)) {
		t.Error("no proxy_listen, yet a proxy listener")
	}

	// End to end with a name: gnet's LocalAddr for "localhost:port".
	cfg, _ := proxyConfig(t)
	_, port, _ := net.SplitHostPort(cfg.ProxyListen[0])
	cfg.ProxyListen[0] = "localhost:" + port
	start(t, cfg)
	c := dialFrom(t, "127.0.0.1", "127.0.0.1:"+port)
	c.send("PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n")
	if !strings.Contains(received(t, deliver(t, c, cfg.MaildirRoot)), "([192.0.2.7])") {
		t.Error("the header on a named proxy_listen address was not read")
	}
}

// TestProxyConfig: the keys are validated; proxy_listen needs a restart.
func TestProxyConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"bad cidr", func(c *Config) { c.ProxyTrusted = []string{"10.0.0.0/33"} }, "proxy_trusted: "},
		{"bad address", func(c *Config) { c.ProxyTrusted = []string{"proxy.example"} }, "proxy_trusted: "},
		{"zone", func(c *Config) { c.ProxyTrusted = []string{"fe80::1%eth0"} }, "proxy_trusted: "},
		{"mapped", func(c *Config) { c.ProxyTrusted = []string{"::ffff:10.0.0.0/104"} }, "proxy_trusted: "},
		{"in listen", func(c *Config) { c.ProxyListen = []string{c.Listen[0]} }, "proxy_listen: "},
		{"no port", func(c *Config) { c.ProxyListen = []string{"127.0.0.1"} }, "proxy_listen: "},
		{"port 0", func(c *Config) { c.ProxyListen = []string{"127.0.0.1:0"} }, "proxy_listen: "},
		{"timeout", func(c *Config) { c.ProxyTimeout = 0 }, "proxy_timeout: "},
		{"timeout long", func(c *Config) { c.ProxyTimeout = time.Hour }, "proxy_timeout: "},
	} {
		cfg := testServerConfig(t)
		tc.set(&cfg)
		err := cfg.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %s...", tc.name, err, tc.want)
		}
	}
	cfg := testServerConfig(t)
	cfg.ProxyTrusted = []string{"10.0.0.0/8", "192.0.2.10", "2001:db8::/32", "10.1.2.3/8"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p, _ := parseTrusted(cfg.ProxyTrusted)
	lv := &live{trusted: p}
	for ip, want := range map[string]bool{"10.9.9.9": true, "192.0.2.10": true, "192.0.2.11": false, "2001:db8::1": true, "11.0.0.1": false} {
		if lv.trusts(netip.MustParseAddr(ip)) != want {
			t.Errorf("trusts(%s) != %v", ip, want)
		}
	}

	// A bound proxy_listen address is refused by New like a listen one.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg = testServerConfig(t)
	cfg.ProxyListen = []string{taken.Addr().String()}
	var le *ListenError
	if _, err := New(cfg); !errors.As(err, &le) {
		t.Errorf("New with a taken proxy_listen port: %v", err)
	}

	cfg, _ = proxyConfig(t)
	r := start(t, cfg)
	next := cfg
	next.ProxyListen = []string{freePort(t)}
	if err := r.srv.Reload(next); err == nil || !strings.HasPrefix(err.Error(), "proxy_listen: cannot change") {
		t.Errorf("Reload changing proxy_listen: %v", err)
	}
	next = cfg
	next.ProxyTrusted = []string{"127.0.0.2"}
	if err := r.srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	c := dialFrom(t, "127.0.0.1", cfg.ProxyListen[0])
	c.send("PROXY UNKNOWN\r\n")
	c.expectClosed() // no longer trusted after the reload
}
