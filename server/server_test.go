package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/smtp"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/bench/smtpc"
	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/spool"
)

// freePort returns a loopback address nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func testServerConfig(t *testing.T) Config {
	cfg := Defaults()
	cfg.Hostname = "mx.example.test"
	cfg.Listen = []string{freePort(t)}
	cfg.MaildirRoot = t.TempDir()
	cfg.Domains = []string{"example.test"}
	cfg.Mailboxes = []string{"bob@example.test", "alice@example.test"}
	cfg.Postmaster = "alice@example.test"
	cfg.Aliases = map[string][]string{"team@example.test": {"bob@example.test", "alice@example.test"}}
	cfg.ShutdownTimeout = 5 * time.Second
	if testing.Verbose() {
		cfg.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	}
	return cfg
}

type running struct {
	srv  *Server
	addr string
	stop func() error
}

// start runs a server until the test ends (or stop is called).
func start(t testing.TB, cfg Config) *running {
	t.Helper()
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx) }()
	// Wait until it accepts.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", cfg.Listen[0])
		if err == nil {
			// Read the greeting so that the server has counted the probe,
			// then let its slot go before the test counts connections.
			sc := smtpc.New(c)
			sc.Timeout = 5 * time.Second
			_, _ = sc.Reply()
			c.Close()
			for srv.connCount() > 0 {
				time.Sleep(5 * time.Millisecond)
			}
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("server did not start: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-errc:
			case <-time.After(30 * time.Second):
				stopErr = errors.New("server did not stop")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return &running{srv: srv, addr: cfg.Listen[0], stop: stop}
}

// client is the server tests' SMTP client: the shared test client
// (bench/smtpc) bound to a test, which fails it on any I/O error or
// malformed reply. Replies are whole, multi-line ones joined with "\n".
type client struct {
	t  *testing.T
	c  net.Conn // what it speaks over (TLS after starttls): raw writes, deadlines, Close
	sc *smtpc.Conn
}

// newClient wraps nc, closed when the test ends.
func newClient(t *testing.T, nc net.Conn) *client {
	t.Helper()
	sc := smtpc.New(nc)
	sc.Timeout = 10 * time.Second
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, c: nc, sc: sc}
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return newClient(t, c)
}

// reply reads one reply.
func (c *client) reply() string {
	c.t.Helper()
	if _, err := c.sc.Reply(); err != nil {
		c.t.Fatalf("read reply: %v (so far %q)", err, c.sc.Text())
	}
	return c.sc.Text()
}

// send writes s as it is.
func (c *client) send(s string) {
	c.t.Helper()
	if err := c.sc.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// cmd sends one line and returns the reply.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.reply()
}

// expect sends one line and requires a reply starting with wantPrefix.
func (c *client) expect(line, wantPrefix string) {
	c.t.Helper()
	if got := c.cmd(line); !strings.HasPrefix(got, wantPrefix) {
		c.t.Fatalf("%q: got %q, want %q...", line, got, wantPrefix)
	}
}

// expectClosed asserts the server closes the connection, sending nothing
// more, within 10 seconds.
func (c *client) expectClosed() {
	c.t.Helper()
	if err := c.sc.ExpectClose(); err != nil {
		c.t.Fatalf("expected close: %v", err)
	}
}

// expectSilence asserts the server sends nothing for d.
func (c *client) expectSilence(d time.Duration) {
	c.t.Helper()
	if err := c.sc.ExpectSilence(d); err != nil {
		c.t.Fatal(err)
	}
}

func newFiles(t *testing.T, root, domain, user string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, domain, user, "new"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(root, domain, user, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// TestDeliverNetSMTP sends with Go's net/smtp and checks the Maildir file.
func TestDeliverNetSMTP(t *testing.T) {
	cfg := testServerConfig(t)
	r := start(t, cfg)
	body := "From: sender@example.org\r\nTo: bob@example.test\r\nSubject: hello\r\n\r\nline one\r\n.leading dot\r\n"
	if err := smtp.SendMail(r.addr, nil, "sender@example.org", []string{"bob@example.test"}, []byte(body)); err != nil {
		t.Fatal(err)
	}
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 {
		t.Fatalf("%d files in new/, want 1", len(files))
	}
	got := files[0]
	// Go's net/smtp uses SMTPUTF8 whenever offered, so "with UTF8SMTP"
	// (RFC 6531 3.7.3).
	wantTail := strings.ReplaceAll(body, "\r\n", "\n")
	if !strings.HasPrefix(got, "Return-Path: <sender@example.org>\n") {
		t.Errorf("no Return-Path first: %q", got)
	}
	if !strings.Contains(got, "Received: from ") || !strings.Contains(got, "by mx.example.test (nanomx) with UTF8SMTP id ") {
		t.Errorf("no Received header: %q", got)
	}
	if !strings.HasSuffix(got, wantTail) {
		t.Errorf("body differs:\n got %q\nwant suffix %q", got, wantTail)
	}
}

// TestPipelinedSession sends a whole pipelined transaction in one write
// and two messages on one connection, then checks every reply in order.
func TestPipelinedSession(t *testing.T) {
	cfg := testServerConfig(t)
	r := start(t, cfg)
	c := dial(t, r.addr)
	if g := c.reply(); !strings.HasPrefix(g, "220 mx.example.test") {
		t.Fatalf("greeting %q", g)
	}
	c.expect("EHLO client.example.org", "250-mx.example.test")
	c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n")
	for _, want := range []string{"250 2.1.0", "250 2.1.5", "550 5.1.1", "550 5.7.1", "354 "} {
		if g := c.reply(); !strings.HasPrefix(g, want) {
			t.Fatalf("got %q, want %q", g, want)
		}
	}
	c.send("Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<team@example.test>\r\nDATA\r\n")
	for _, want := range []string{"250 2.0.0 OK: queued as ", "250 2.1.0", "250 2.1.5", "354 "} {
		if g := c.reply(); !strings.HasPrefix(g, want) {
			t.Fatalf("got %q, want %q", g, want)
		}
	}
	c.send("Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
	if g := c.reply(); !strings.HasPrefix(g, "250 2.0.0 OK: queued as ") {
		t.Fatalf("second message: %q", g)
	}
	if g := c.reply(); !strings.HasPrefix(g, "221 2.0.0") {
		t.Fatalf("QUIT: %q", g)
	}
	bob := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	alice := newFiles(t, cfg.MaildirRoot, "example.test", "alice")
	if len(bob) != 2 || len(alice) != 1 {
		t.Fatalf("bob has %d, alice %d messages; want 2 and 1", len(bob), len(alice))
	}
	if !strings.HasPrefix(alice[0], "Return-Path: <>\n") || !strings.HasSuffix(alice[0], "\n\nsecond\n") {
		t.Errorf("alice's message: %q", alice[0])
	}
}

// TestConnectionLimits checks the per-IP and total caps answer 421 4.7.0.
func TestConnectionLimits(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MaxConnectionsPerIP = 2
	r := start(t, cfg)
	a, b := dial(t, r.addr), dial(t, r.addr)
	for _, x := range []*client{a, b} {
		if g := x.reply(); !strings.HasPrefix(g, "220") {
			t.Fatalf("within the limit: %q", g)
		}
	}
	c := dial(t, r.addr)
	if g := c.reply(); !strings.HasPrefix(g, "421 4.7.0") {
		t.Fatalf("third connection: %q", g)
	}
	c.expectClosed()
	a.expect("QUIT", "221")
	a.expectClosed()
	// A slot came free.
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := dial(t, r.addr)
		if g := d.reply(); strings.HasPrefix(g, "220") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slot never freed")
		}
		time.Sleep(20 * time.Millisecond)
	}

	cfg2 := testServerConfig(t)
	cfg2.MaxConnections = 1
	r2 := start(t, cfg2)
	x := dial(t, r2.addr)
	if g := x.reply(); !strings.HasPrefix(g, "220") {
		t.Fatalf("first connection: %q", g)
	}
	y := dial(t, r2.addr)
	if g := y.reply(); !strings.HasPrefix(g, "421 4.7.0") {
		t.Fatalf("over total: %q", g)
	}
}

// TestCommandTimeout checks that an idle session and a session trickling
// bytes are both cut with 421 4.4.2: reads do not extend the deadline.
func TestCommandTimeout(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.CommandTimeout = time.Second
	cfg.SessionTimeout = time.Minute
	r := start(t, cfg)

	idle := dial(t, r.addr)
	idle.reply()
	if g := idle.reply(); !strings.HasPrefix(g, "421 4.4.2") {
		t.Fatalf("idle: %q", g)
	}
	idle.expectClosed()

	trickle := dial(t, r.addr)
	trickle.reply()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, b := range []byte("NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP") {
			if _, err := trickle.c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	if g := trickle.reply(); !strings.HasPrefix(g, "421 4.4.2") {
		t.Fatalf("trickle: %q", g)
	}
	trickle.c.Close()
	<-done
	if n := r.srv.Stats().TimedOut.Load(); n != 2 {
		t.Errorf("TimedOut = %d, want 2", n)
	}
}

// blockingSyncer holds every file sync until release is closed, so tests
// can catch messages while they wait on storage.
type blockingSyncer struct {
	entered chan struct{}
	release chan struct{}
	fail    error
}

func (b *blockingSyncer) SyncFile(f *os.File) error {
	b.entered <- struct{}{}
	<-b.release
	return b.fail
}
func (b *blockingSyncer) SyncDir(string) error { return nil }

func sendEnvelope(t *testing.T, c *client) {
	t.Helper()
	c.reply()
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@example.org>", "250 2.1.0")
	c.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	c.expect("DATA", "354")
	c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
}

// TestReplyWaitsForStorage checks that the 250 comes only after the sync,
// that pipelined commands behind it wait, and that a failed sync answers
// 451 4.3.0 with nothing in new/.
func TestReplyWaitsForStorage(t *testing.T) {
	cfg := testServerConfig(t)
	bs := &blockingSyncer{entered: make(chan struct{}, 8), release: make(chan struct{})}
	cfg.syncer = bs
	r := start(t, cfg)
	c := dial(t, r.addr)
	sendEnvelope(t, c)
	c.send("NOOP\r\n")
	<-bs.entered
	c.expectSilence(300 * time.Millisecond) // no reply before the sync finished
	close(bs.release)
	if g := c.reply(); !strings.HasPrefix(g, "250 2.0.0 OK: queued as") {
		t.Fatalf("after sync: %q", g)
	}
	if g := c.reply(); !strings.HasPrefix(g, "250 2.0.0 OK") {
		t.Fatalf("pipelined NOOP: %q", g)
	}
	if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")); n != 1 {
		t.Fatalf("%d files after 250", n)
	}

	cfg2 := testServerConfig(t)
	cfg2.syncer = &blockingSyncer{entered: make(chan struct{}, 8), release: make(chan struct{}), fail: errors.New("injected EIO")}
	close(cfg2.syncer.(*blockingSyncer).release)
	r2 := start(t, cfg2)
	c2 := dial(t, r2.addr)
	sendEnvelope(t, c2)
	if g := c2.reply(); !strings.HasPrefix(g, "451 4.3.0") {
		t.Fatalf("failed sync: %q", g)
	}
	if n := len(newFiles(t, cfg2.MaildirRoot, "example.test", "bob")); n != 0 {
		t.Fatalf("%d files after a failed sync", n)
	}
	c2.expect("NOOP", "250") // the session goes on
}

// TestPendingInputOverflow checks that a client flooding pipelined input
// while its reply waits on storage is answered 421 and closed.
func TestPendingInputOverflow(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MaxPendingInput = 4096
	bs := &blockingSyncer{entered: make(chan struct{}, 8), release: make(chan struct{})}
	cfg.syncer = bs
	r := start(t, cfg)
	c := dial(t, r.addr)
	sendEnvelope(t, c)
	<-bs.entered
	flood := strings.Repeat("NOOP\r\n", 2000)
	go func() { _, _ = c.c.Write([]byte(flood)) }()
	if g := c.reply(); !strings.HasPrefix(g, "421 4.7.0") {
		t.Fatalf("flood: %q", g)
	}
	close(bs.release)
}

// TestQueueFull checks 451 4.3.2 when every worker is busy and the queue
// is full.
func TestQueueFull(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.Workers, cfg.QueueLength = 1, 1
	bs := &blockingSyncer{entered: make(chan struct{}, 8), release: make(chan struct{})}
	cfg.syncer = bs
	r := start(t, cfg)
	a, b, c := dial(t, r.addr), dial(t, r.addr), dial(t, r.addr)
	sendEnvelope(t, a)
	<-bs.entered // a's message is with the worker
	sendEnvelope(t, b)
	time.Sleep(100 * time.Millisecond) // b's message sits in the queue
	sendEnvelope(t, c)
	if g := c.reply(); !strings.HasPrefix(g, "451 4.3.2") {
		t.Fatalf("queue full: %q", g)
	}
	close(bs.release)
	for _, x := range []*client{a, b} {
		if g := x.reply(); !strings.HasPrefix(g, "250 2.0.0") {
			t.Fatalf("queued message: %q", g)
		}
	}
}

// TestGracefulShutdown checks the drain: an idle session gets 421 4.3.2,
// a message waiting on storage is answered 250 (then 421), new
// connections are refused, and Serve returns nil.
func TestGracefulShutdown(t *testing.T) {
	cfg := testServerConfig(t)
	bs := &blockingSyncer{entered: make(chan struct{}, 8), release: make(chan struct{})}
	cfg.syncer = bs
	r := start(t, cfg)
	idle := dial(t, r.addr)
	idle.reply()
	busy := dial(t, r.addr)
	sendEnvelope(t, busy)
	<-bs.entered
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	if g := idle.reply(); !strings.HasPrefix(g, "421 4.3.2") {
		t.Fatalf("idle at shutdown: %q", g)
	}
	time.Sleep(100 * time.Millisecond)
	close(bs.release)
	if g := busy.reply(); !strings.HasPrefix(g, "250 2.0.0") {
		t.Fatalf("in-flight at shutdown: %q", g)
	}
	if g := busy.reply(); !strings.HasPrefix(g, "421 4.3.2") {
		t.Fatalf("after in-flight: %q", g)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")); n != 1 {
		t.Fatalf("%d files, want 1", n)
	}
}

// TestCheckConfig checks that address-book errors name their key.
func TestCheckConfig(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.Postmaster = ""
	var ce *ConfigError
	if err := Check(cfg); !errors.As(err, &ce) || ce.Key != "postmaster" {
		t.Fatalf("no postmaster: %v", err)
	}
	cfg = testServerConfig(t)
	cfg.Mailboxes = append(cfg.Mailboxes, "../etc@example.test")
	if err := Check(cfg); !errors.As(err, &ce) || ce.Key != "mailboxes" {
		t.Fatalf("bad mailbox: %v", err)
	}
	if err := Check(testServerConfig(t)); err != nil {
		t.Fatalf("good config: %v", err)
	}
}

// TestReplyFor pins the spool outcome → reply mapping; the codes must
// stay distinct (STYLE.md, Replies).
func TestReplyFor(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{spool.ErrQueueFull, "451 4.3.2"},
		{spool.ErrClosed, "451 4.3.2"},
		{fmt.Errorf("write: %w", spool.ErrNoSpace), "452 4.3.1"},
		{spool.ErrMailLoop, "554 5.4.6"},
		{errors.New("rename: EIO"), "451 4.3.0"},
		{proto.ReplyTooBig, "552 5.3.4"},
	} {
		if got := replyFor(tc.err).Error(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%v → %q, want %s", tc.err, got, tc.want)
		}
	}
}

// TestDataTimeout checks that a transaction trickling its data is cut by
// the DATA deadline, which reads do not extend.
func TestDataTimeout(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.CommandTimeout = time.Minute
	cfg.DataTimeout = time.Second
	cfg.SessionTimeout = time.Hour
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<bob@example.test>", "250")
	c.expect("DATA", "354")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if _, err := c.c.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	start := time.Now()
	if g := c.reply(); !strings.HasPrefix(g, "421 4.4.2") {
		t.Fatalf("trickled data: %q", g)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatalf("cut only after %v", time.Since(start))
	}
	if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")); n != 0 {
		t.Fatalf("%d files stored from a timed-out transaction", n)
	}
}

// TestSessionTimeout checks the whole-session cap: a client that keeps
// its command deadline fresh with NOOPs is still cut.
func TestSessionTimeout(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.CommandTimeout = time.Second
	cfg.SessionTimeout = 2 * time.Second
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	for i := 0; ; i++ {
		c.send("NOOP\r\n")
		g := c.reply()
		if strings.HasPrefix(g, "421 4.4.2") {
			break
		}
		if !strings.HasPrefix(g, "250") || i > 100 {
			t.Fatalf("NOOP %d: %q", i, g)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestIPKey checks per-IP accounting: IPv4 per address, IPv6 per /64,
// IPv4-mapped IPv6 as IPv4.
func TestIPKey(t *testing.T) {
	mapped := addrOf(&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 25})
	if mapped.String() != "192.0.2.7" {
		t.Fatalf("mapped address %s, want 192.0.2.7", mapped)
	}
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1", "192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
	} {
		a, b := netip.MustParseAddr(tc.a), netip.MustParseAddr(tc.b)
		if got := ipKey(a) == ipKey(b); got != tc.same {
			t.Errorf("ipKey(%s) == ipKey(%s): %v, want %v", a, b, got, tc.same)
		}
	}
}

// TestReload checks SIGHUP semantics: the address book changes for every
// session at once, limits for new connections, nothing is dropped, and a
// bad or restart-only change is refused whole.
func TestReload(t *testing.T) {
	cfg := testServerConfig(t)
	r := start(t, cfg)
	a := dial(t, r.addr)
	a.reply()
	a.expect("EHLO a", "250")

	next := cfg
	next.Mailboxes = append(slices.Clone(cfg.Mailboxes), "carol@example.test")
	next.MaxRecipients = 1
	if err := r.srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	// The open session sees the new mailbox but keeps its limits.
	a.expect("MAIL FROM:<x@example.org>", "250")
	a.expect("RCPT TO:<carol@example.test>", "250 2.1.5")
	a.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	// A new session gets the new limit.
	b := dial(t, r.addr)
	b.reply()
	b.expect("EHLO b", "250")
	b.expect("MAIL FROM:<x@example.org>", "250")
	b.expect("RCPT TO:<carol@example.test>", "250 2.1.5")
	b.expect("RCPT TO:<bob@example.test>", "452 4.5.3")

	var ce *ConfigError
	moved := next
	moved.Listen = []string{"127.0.0.1:1"}
	if err := r.srv.Reload(moved); !errors.As(err, &ce) || ce.Key != "listen" {
		t.Fatalf("listen change: %v", err)
	}
	bad := next
	bad.Mailboxes = []string{"bob@example.test", "a/b@example.test"}
	bad.Postmaster = "bob@example.test"
	if err := r.srv.Reload(bad); !errors.As(err, &ce) || ce.Key != "mailboxes" {
		t.Fatalf("bad mailbox: %v", err)
	}
	// Still the last good configuration.
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<x@example.org>", "250")
	c.expect("RCPT TO:<carol@example.test>", "250 2.1.5")
	a.expect("QUIT", "221")
}

// TestEarlyTalker: with a greeting delay, a client that talks first is
// refused 554 5.5.1 and closed; a patient one is greeted and served.
func TestEarlyTalker(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.GreetingDelay = 500 * time.Millisecond
	r := start(t, cfg)

	rude := dial(t, r.addr)
	rude.send("EHLO bot\r\n")
	if g := rude.reply(); !strings.HasPrefix(g, "554 5.5.1") {
		t.Fatalf("early talker: %q", g)
	}
	rude.expectClosed()

	begin := time.Now()
	polite := dial(t, r.addr)
	if g := polite.reply(); !strings.HasPrefix(g, "220 mx.example.test") {
		t.Fatalf("greeting: %q", g)
	}
	if d := time.Since(begin); d < cfg.GreetingDelay {
		t.Fatalf("greeted after %v, before the %v delay", d, cfg.GreetingDelay)
	}
	polite.expect("EHLO c", "250")
	if n := r.srv.Stats().EarlyTalkers.Load(); n != 1 {
		t.Fatalf("EarlyTalkers = %d", n)
	}
}

// flakySyncer fails file syncs with err while failing is set.
type flakySyncer struct {
	failing atomic.Bool
	err     error
}

func (f *flakySyncer) SyncFile(*os.File) error {
	if f.failing.Load() {
		return f.err
	}
	return nil
}
func (f *flakySyncer) SyncDir(string) error { return nil }

// TestDiskFull: ENOSPC answers 452 4.3.1 with nothing stored, and service
// resumes once space returns.
func TestDiskFull(t *testing.T) {
	cfg := testServerConfig(t)
	fs := &flakySyncer{err: syscall.ENOSPC}
	fs.failing.Store(true)
	cfg.syncer = fs
	r := start(t, cfg)
	c := dial(t, r.addr)
	sendEnvelope(t, c)
	if g := c.reply(); !strings.HasPrefix(g, "452 4.3.1") {
		t.Fatalf("disk full: %q", g)
	}
	for _, sub := range []string{"tmp", "new"} {
		if ents, _ := os.ReadDir(filepath.Join(cfg.MaildirRoot, "example.test", "bob", sub)); len(ents) != 0 {
			t.Fatalf("%s/ holds %d files after ENOSPC", sub, len(ents))
		}
	}
	fs.failing.Store(false)
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<bob@example.test>", "250")
	c.expect("DATA", "354")
	c.expect("again\r\n.", "250 2.0.0")
	if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")); n != 1 {
		t.Fatalf("%d files after space returned", n)
	}
}

// TestBodyReservationCoversCapacity: the body budget counts the buffer's
// capacity, so pooled buffers grown by earlier messages cannot hold memory
// the budget does not know about.
func TestBodyReservationCoversCapacity(t *testing.T) {
	cfg := testServerConfig(t)
	s := &Server{cfg: cfg}
	lv, err := newLive(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lv.cfg.SpillThreshold = 8 << 20 // all in memory: there is no spool here
	s.budget.Store(64 << 20)
	c := &conn{srv: s, lv: lv, ip: &ipState{}}
	chunk := bytes.Repeat([]byte("x"), 10000)
	for round := 0; round < 3; round++ {
		if r := c.BeginBody(0); r != nil {
			t.Fatal(r)
		}
		for i := 0; i < 300; i++ { // 3 MB
			if r := c.WriteBody(chunk); r != nil {
				t.Fatal(r)
			}
			if int64(cap(c.body.B)) > c.reserved {
				t.Fatalf("capacity %d, reserved %d", cap(c.body.B), c.reserved)
			}
		}
		if got := 64<<20 - s.budget.Load(); got != c.reserved {
			t.Fatalf("budget taken %d, connection holds %d", got, c.reserved)
		}
		c.AbortBody() // back to the pool, large
		if s.budget.Load() != 64<<20 {
			t.Fatalf("budget not returned: %d", s.budget.Load())
		}
	}
}

// TestByteAtATime sends commands one byte per write, so that gnet keeps a
// partial line in its inbound ring between reads and a line's CR and LF
// arrive in different reads.
func TestByteAtATime(t *testing.T) {
	cfg := testServerConfig(t)
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	for _, b := range []byte("EHLO c\r\nMAIL FROM:<a@example.org>\r\n") {
		if _, err := c.c.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if g := c.reply(); !strings.HasPrefix(g, "250-mx.example.test") {
		t.Fatalf("EHLO: %q", g)
	}
	if g := c.reply(); !strings.HasPrefix(g, "250 2.1.0") {
		t.Fatalf("MAIL: %q", g)
	}
}
