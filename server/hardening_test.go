package server

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench/smtpc"
	"github.com/nanomx/nanomx/proto"
)

// heapInUse returns the live heap after two collections.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestRepliesNobodyReads: a client that pipelines commands and never reads
// its replies must not grow the server's memory. The server stops reading
// commands once its unsent output passes a small cap, and when the unread
// input then passes max_pending_input it answers 421 4.7.0 and closes.
// (Before the fix, 24 MiB of "EHLO a" grew the server by 324 MiB.)
func TestRepliesNobodyReads(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MaxJunkCommands = 1 << 30 // repeated EHLOs are junk: test the output bound alone
	r := start(t, cfg)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
	before := heapInUse()

	const total = 24 << 20
	chunk := []byte(strings.Repeat("EHLO a\r\n", 8<<10)) // 64 KiB
	sent := 0
	_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	for sent < total {
		n, err := c.Write(chunk)
		sent += n
		if err != nil {
			break // the server closed: what we wanted
		}
	}
	var grown uint64
	if h := heapInUse(); h > before {
		grown = h - before
	}
	t.Logf("sent %d KiB before the server stopped taking input; heap grew %d KiB", sent>>10, grown>>10)
	if sent >= total {
		t.Fatalf("the server took all %d MiB without closing", total>>20)
	}
	// Each EHLO reply is ~150 bytes for 8 bytes of input: had every
	// command been answered, the output held would be ~19x the input.
	if grown > 8<<20 {
		t.Fatalf("heap grew by %d KiB for a client that does not read", grown>>10)
	}
	waitFor(t, func() bool { return r.srv.connCount() == 0 })
	if n := r.srv.Stats().NotReading.Load(); n != 1 {
		t.Fatalf("NotReading = %d, want 1", n)
	}
}

// TestRepliesNobodyReadsTLS: the same over STARTTLS, where the session's
// goroutine blocks in its write (bounded by the command deadline) instead
// of buffering: memory stays bounded and the server stays responsive.
func TestRepliesNobodyReadsTLS(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.MaxJunkCommands = 1 << 30
	cfg.CommandTimeout = 2 * time.Second
	cfg.SessionTimeout = time.Minute
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	tc := c.starttls(t, p.Client())
	before := heapInUse()
	chunk := []byte(strings.Repeat("EHLO a\r\n", 8<<10))
	sent := 0
	_ = tc.c.SetWriteDeadline(time.Now().Add(3 * time.Second))
	for sent < 24<<20 {
		n, err := tc.c.Write(chunk)
		sent += n
		if err != nil {
			break
		}
	}
	var grown uint64
	if h := heapInUse(); h > before {
		grown = h - before
	}
	t.Logf("sent %d KiB; heap grew %d KiB", sent>>10, grown>>10)
	if grown > 8<<20 {
		t.Fatalf("heap grew by %d KiB", grown>>10)
	}
	// Another client is served meanwhile.
	other := dial(t, r.addr)
	other.reply()
	other.expect("EHLO d", "250")
	other.expect("QUIT", "221")
	// The blocked write ends at the command deadline and frees the slot.
	waitFor(t, func() bool { return r.srv.connCount() == 0 })
}

// TestSilentBDATTakesNoBudget: sessions that declare a huge BDAT chunk
// (or SIZE) and then send nothing hold no body budget, so other senders
// are unaffected. (Before: 11 such sessions from one address spent the
// default budget, and every other sender got 452 4.3.1.)
func TestSilentBDATTakesNoBudget(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MaxMessageBytes = 25 << 20
	cfg.BodyBudgetBytes = 25 << 20
	cfg.BodyBudgetPerIP = 4 << 20
	cfg.MaxConnectionsPerIP = 100
	r := start(t, cfg)
	for i := 0; i < 40; i++ {
		c := dial(t, r.addr)
		c.reply()
		c.expect("EHLO c", "250")
		c.expect("MAIL FROM:<> SIZE=25000000", "250")
		c.expect("RCPT TO:<postmaster@example.test>", "250")
		c.send("BDAT 999999999999\r\n")
	}
	waitFor(t, func() bool { return r.srv.connCount() == 40 })
	if got := r.srv.budget.Load(); got != cfg.BodyBudgetBytes {
		t.Fatalf("silent sessions hold %d bytes of budget", cfg.BodyBudgetBytes-got)
	}
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	for i := 0; i < 5; i++ {
		c.expect("MAIL FROM:<a@example.org> SIZE=20000000", "250")
		c.expect("RCPT TO:<bob@example.test>", "250")
		c.expect("DATA", "354")
		c.expect(strings.Repeat("x", 500)+"\r\n.", "250 2.0.0")
	}
}

// TestBodyBudget: the budget is charged for bytes that arrive, and one
// client address may hold at most body_budget_per_ip of it; another
// address is still served, and everything is returned.
func TestBodyBudget(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MaxMessageBytes = 4 << 20
	cfg.BodyBudgetBytes = 4 << 20
	cfg.BodyBudgetPerIP = 1 << 20
	cfg.SpillThreshold = 256 << 10
	cfg.MaxConnectionsPerIP = 100
	r := start(t, cfg)
	body := strings.Repeat(strings.Repeat("y", 998)+"\r\n", 200) // 200 KB, under the spill threshold
	holder := func(local string) *client {
		c := dialFrom(t, local, r.addr)
		c.reply()
		c.expect("EHLO c", "250")
		c.expect("MAIL FROM:<a@example.org>", "250")
		c.expect("RCPT TO:<bob@example.test>", "250")
		switch g := c.cmd("DATA"); {
		case strings.HasPrefix(g, "354"):
			c.send(body) // and no end of data: the body is held
		case strings.HasPrefix(g, "452 4.3.1"):
			return nil // the address has spent its share already
		default:
			t.Fatalf("DATA: %q", g)
		}
		return c
	}
	// 127.0.0.1 sends 200 KB bodies without finishing them; each holds up
	// to 256 KiB of budget, so a few exhaust the address's 1 MiB share.
	var held []*client
	refused := 0
	for range 6 {
		if c := holder("127.0.0.1"); c != nil {
			held = append(held, c)
		} else {
			refused++
		}
	}
	waitFor(t, func() bool {
		return cfg.BodyBudgetBytes-r.srv.budget.Load() >= 768<<10
	})
	taken := cfg.BodyBudgetBytes - r.srv.budget.Load()
	if taken > cfg.BodyBudgetPerIP {
		t.Fatalf("one address holds %d bytes, over its share %d", taken, cfg.BodyBudgetPerIP)
	}
	// Sessions over the share are refused 452 4.3.1, at DATA or at the end.
	for _, c := range held {
		c.send(".\r\n")
	}
	for _, c := range held {
		g := c.reply()
		switch {
		case strings.HasPrefix(g, "452 4.3.1"):
			refused++
		case !strings.HasPrefix(g, "250 2.0.0"):
			t.Fatalf("end of data: %q", g)
		}
	}
	if refused == 0 {
		t.Fatal("no session was refused past the per-address share")
	}
	// Another address is not affected by the first one's share.
	for range 3 {
		if holder("127.0.0.2") == nil {
			t.Fatal("a second address was refused by the first one's share")
		}
	}
	waitFor(t, func() bool { return cfg.BodyBudgetBytes-r.srv.budget.Load() >= 600<<10 })
	other := dialFrom(t, "127.0.0.3", r.addr)
	other.reply()
	other.expect("EHLO c", "250")
	other.expect("MAIL FROM:<a@example.org>", "250")
	other.expect("RCPT TO:<bob@example.test>", "250")
	other.expect("DATA", "354")
	other.expect(body+".", "250 2.0.0")
	for _, c := range held {
		c.c.Close()
	}
}

// dialFrom connects from a given loopback source address (every 127/8
// address is local on Linux).
func dialFrom(t *testing.T, local, addr string) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return newClient(t, c)
}

// readAll reads until the server closes and returns the reply lines.
func readAll(t *testing.T, c net.Conn) []string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read to the end: %v (got %q)", err, b)
	}
	return strings.Split(strings.TrimRight(string(b), "\r\n"), "\r\n")
}

// TestHalfCloseAfterPipelinedQuit is Exim's way of ending a session: the
// last command group (BDAT LAST or DATA, then QUIT) is pipelined and the
// client calls shutdown(SHUT_WR) while the message is being stored. The
// client must still get the 250 and the 221, and the message must be
// stored once. (Before, gnet closed at the EOF: the message landed, the
// replies were lost, and Exim sent it again.)
func TestHalfCloseAfterPipelinedQuit(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"BDAT", "BDAT 34 LAST\r\nSubject: nc-halfclose-1\r\n\r\nhello\r\n"},
		{"DATA", "DATA\r\nSubject: nc-halfclose-1\r\n\r\nhello\r\n.\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testServerConfig(t)
			bs := &blockingSyncer{entered: make(chan struct{}, 8), release: make(chan struct{})}
			cfg.syncer = bs
			r := start(t, cfg)
			c := dial(t, r.addr)
			c.send("EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<bob@example.test>\r\n" + tc.data + "QUIT\r\n")
			if err := c.sc.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			<-bs.entered // the message is with the spool; the EOF has arrived
			time.Sleep(100 * time.Millisecond)
			close(bs.release)
			lines := readAll(t, c.c)
			want := []string{"250 2.1.0", "250 2.1.5"}
			if tc.name == "DATA" {
				want = append(want, "354")
			}
			want = append(want, "250 2.0.0 OK: queued as", "221 2.0.0")
			got := lines[len(lines)-len(want):]
			for i, w := range want {
				if !strings.HasPrefix(got[i], w) {
					t.Fatalf("replies %q, want prefixes %q", lines, want)
				}
			}
			if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")); n != 1 {
				t.Fatalf("%d files, want 1", n)
			}
			waitFor(t, func() bool { return r.srv.connCount() == 0 })
		})
	}
}

// recordTypes wraps a connection and records the TLS record content types
// it reads (TLS 1.2 shows alerts as type 21 on the wire).
type recordTypes struct {
	net.Conn
	mu    sync.Mutex
	buf   []byte
	types []byte
}

func (r *recordTypes) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.buf = append(r.buf, p[:n]...)
	for len(r.buf) >= 5 {
		l := int(r.buf[3])<<8 | int(r.buf[4])
		if len(r.buf) < 5+l {
			break
		}
		r.types = append(r.types, r.buf[0])
		r.buf = r.buf[5+l:]
	}
	r.mu.Unlock()
	return n, err
}

// TestTLSCloseNotify: a TLS session ends with a close_notify alert before
// the connection closes (RFC 8446 6.1), after QUIT and after a timeout.
// (Before, the raw socket was closed and Exim logged "The TLS connection
// was non-properly terminated" for every delivery.)
func TestTLSCloseNotify(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.CommandTimeout = time.Second
	r := start(t, cfg)
	for _, end := range []string{"QUIT", "timeout"} {
		t.Run(end, func(t *testing.T) {
			c := dial(t, r.addr)
			c.reply()
			c.expect("EHLO c", "250")
			c.expect("STARTTLS", "220 2.0.0")
			rec := &recordTypes{Conn: c.c}
			conf := p.Client()
			conf.MaxVersion = tls.VersionTLS12 // alerts are visible as such
			tc := tls.Client(rec, conf)
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			tl := newClient(t, tc)
			tl.expect("EHLO c", "250")
			want := "221 2.0.0"
			if end == "QUIT" {
				tl.send("QUIT\r\n")
			} else {
				want = "421 4.4.2"
			}
			if g := tl.reply(); !strings.HasPrefix(g, want) {
				t.Fatalf("got %q, want %q", g, want)
			}
			// The end of the stream, not a reset: a close_notify came.
			_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := tc.Read(make([]byte, 1)); err != io.EOF || tl.sc.Buffered() > 0 {
				t.Fatalf("after %s: %v, want io.EOF", end, err)
			}
			rec.mu.Lock()
			types := slices.Clone(rec.types)
			rec.mu.Unlock()
			if len(types) == 0 || types[len(types)-1] != 21 {
				t.Fatalf("record types %v: the last is not an alert (21)", types)
			}
		})
	}
}

// TestTLSPanicAnswers421: a panic in a TLS session's goroutine answers 421
// 4.3.0 like the event loop's, and the server goes on.
func TestTLSPanicAnswers421(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	r := start(t, cfg)
	hook := func(c *conn, in []byte) {
		if c.tlsInfo != "" && strings.HasPrefix(string(in), "NOOP") {
			panic("injected")
		}
	}
	testHookFeed.Store(&hook)
	defer testHookFeed.Store(nil)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	tc := c.starttls(t, p.Client())
	tc.expect("EHLO c", "250")
	tc.expect("NOOP", "421 4.3.0")
	waitFor(t, func() bool { return r.srv.connCount() == 0 })
	testHookFeed.Store(nil)
	d := dial(t, r.addr)
	d.reply()
	d.expect("EHLO c", "250")
}

// TestDataRate: the data timeout is an idle timeout per read, so a slow
// but steady sender outlasts data_timeout and session_timeout, while a
// client trickling below min_data_rate is cut.
func TestDataRate(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.CommandTimeout = time.Second
	cfg.SessionTimeout = 2 * time.Second
	cfg.DataTimeout = time.Second
	cfg.MinDataRate = 200
	r := start(t, cfg)

	steady := dial(t, r.addr)
	steady.reply()
	steady.expect("EHLO c", "250")
	steady.expect("MAIL FROM:<a@example.org>", "250")
	steady.expect("RCPT TO:<bob@example.test>", "250")
	steady.expect("DATA", "354")
	line := strings.Repeat("z", 98) + "\r\n" // 100 bytes every 200 ms: 500 B/s
	begun := time.Now()
	for time.Since(begun) < 4*time.Second {
		steady.send(line)
		time.Sleep(200 * time.Millisecond)
	}
	steady.expect(".", "250 2.0.0")

	slow := dial(t, r.addr)
	slow.reply()
	slow.expect("EHLO c", "250")
	slow.expect("MAIL FROM:<a@example.org>", "250")
	slow.expect("RCPT TO:<bob@example.test>", "250")
	slow.expect("DATA", "354")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for { // 10 bytes every 200 ms: 50 B/s, never idle for a second
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				if _, err := slow.c.Write([]byte("0123456789")); err != nil {
					return
				}
			}
		}
	}()
	begun = time.Now()
	if g := slow.reply(); !strings.HasPrefix(g, "421 4.4.2") {
		t.Fatalf("trickler: %q", g)
	}
	if d := time.Since(begun); d < cfg.DataTimeout {
		t.Fatalf("trickler cut after %v, before data_timeout", d)
	}
}

// TestReloadBetweenRcptAndData: recipients are resolved against the
// address book in force at MAIL, so a reload that removes a mailbox
// between RCPT and the end of data does not fail the message.
func TestReloadBetweenRcptAndData(t *testing.T) {
	cfg := testServerConfig(t)
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<bob@example.test>", "250")
	c.expect("RCPT TO:<alice@example.test>", "250")
	next := cfg
	next.Mailboxes = []string{"alice@example.test"}
	next.Aliases = nil
	if err := r.srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	c.expect("DATA", "354")
	c.expect("Subject: reload\r\n\r\nhi\r\n.", "250 2.0.0")
	for _, box := range []string{"bob", "alice"} {
		if n := len(newFiles(t, cfg.MaildirRoot, "example.test", box)); n != 1 {
			t.Fatalf("%s: %d files", box, n)
		}
	}
	// The next transaction sees the new address book.
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<bob@example.test>", "550 5.1.1")
}

// TestQueueIDsAcrossRestarts: queue ids carry the start time to the
// microsecond, so two runs started within one second never share ids.
func TestQueueIDsAcrossRestarts(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	seen := map[string]bool{}
	for i := range 1000 {
		b := idBase(t0.Add(time.Duration(i) * time.Microsecond))
		if len(b) != 10 || seen[b] {
			t.Fatalf("idBase %q (len %d) repeated or not 10 digits", b, len(b))
		}
		seen[b] = true
	}
	a, b := idBase(t0), idBase(t0.Add(time.Hour))
	if a >= b {
		t.Fatalf("ids do not sort by start time: %q >= %q", a, b)
	}
}

// TestForcedDrainReply: a session still waiting on storage when the
// drain's deadline passes is answered with the shutdown reply, not a
// pipelining error.
func TestForcedDrainReply(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.ShutdownTimeout = 500 * time.Millisecond
	bs := &blockingSyncer{entered: make(chan struct{}, 8), release: make(chan struct{})}
	cfg.syncer = bs
	r := start(t, cfg)
	c := dial(t, r.addr)
	sendEnvelope(t, c)
	<-bs.entered
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	if g := c.reply(); g != strings.TrimRight(string(proto.ReplyShutdown.Bytes()), "\r\n") {
		t.Fatalf("forced drain: %q", g)
	}
	close(bs.release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// TestHalfCloseTLS: the same ending over STARTTLS, where the client's
// CloseWrite sends close_notify and shuts the socket's write side.
func TestHalfCloseTLS(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	bs := &blockingSyncer{entered: make(chan struct{}, 8), release: make(chan struct{})}
	cfg.syncer = bs
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	tl := c.starttls(t, p.Client())
	tl.send("EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT 34 LAST\r\nSubject: nc-halfclose-1\r\n\r\nhello\r\nQUIT\r\n")
	if err := tl.sc.CloseWrite(); err != nil { // close_notify, then shutdown(SHUT_WR)
		t.Fatal(err)
	}
	<-bs.entered
	time.Sleep(100 * time.Millisecond)
	close(bs.release)
	lines := readAll(t, tl.c)
	if n := len(lines); n < 2 || !strings.HasPrefix(lines[n-2], "250 2.0.0 OK: queued as") || !strings.HasPrefix(lines[n-1], "221 2.0.0") {
		t.Fatalf("replies %q", lines)
	}
	if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")); n != 1 {
		t.Fatalf("%d files, want 1", n)
	}
}

// TestLargeMessagesSpill: bodies past spill_threshold go to disk as they
// arrive, so ten concurrent 6 MB messages from one address (60 MB) fit in
// a 32 MiB per-address share (each session holds its current chunk and
// the chunks not yet on disk; a disk slower than the senders would make
// the excess 452 4.3.1) and all land intact, with the exact S= size; an
// abandoned transfer leaves nothing in tmp/; the budget comes back whole.
func TestLargeMessagesSpill(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MaxMessageBytes = 8 << 20
	cfg.BodyBudgetBytes = 64 << 20
	cfg.BodyBudgetPerIP = 32 << 20
	cfg.SpillThreshold = 256 << 10
	cfg.MaxConnectionsPerIP = 50
	r := start(t, cfg)
	const n = 10
	body := func(i int) string {
		var b strings.Builder
		fmt.Fprintf(&b, "Subject: big-%d\r\n\r\n", i)
		line := fmt.Sprintf("%d-", i) + strings.Repeat("x", 76) + "\r\n"
		for b.Len() < 6<<20 {
			b.WriteString(line)
		}
		return b.String()
	}
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := smtpc.Dial(r.addr, 60*time.Second)
			if err == nil {
				defer c.Close()
				err = c.Hello("c")
			}
			if err == nil {
				err = c.Send("a@example.org", []string{"bob@example.test"}, []byte(body(i)+".\r\n"))
			}
			if err == nil && !strings.HasPrefix(c.Text(), "250 2.0.0") {
				err = fmt.Errorf("end of data: %q", c.Text())
			}
			if err != nil {
				errs <- fmt.Sprintf("message %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	dir := filepath.Join(cfg.MaildirRoot, "example.test", "bob", "new")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != n {
		t.Fatalf("%d files, want %d", len(ents), n)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(e.Name(), fmt.Sprintf(",S=%d", len(b))) {
			t.Errorf("%s: S= is not the size %d", e.Name(), len(b))
		}
		i := strings.Index(string(b), "Subject: big-")
		if i < 0 {
			t.Fatalf("%s: no Subject", e.Name())
		}
		var k int
		fmt.Sscanf(string(b[i:]), "Subject: big-%d", &k)
		if want := strings.ReplaceAll(body(k), "\r\n", "\n"); string(b[i:]) != want {
			t.Errorf("%s: body differs from message %d (%d vs %d bytes)", e.Name(), k, len(b)-i, len(want))
		}
	}

	// An abandoned transfer: 3 MB, then the client goes away.
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<bob@example.test>", "250")
	c.expect("DATA", "354")
	c.send(body(99)[:3<<20])
	tmp := filepath.Join(cfg.MaildirRoot, "example.test", "bob", "tmp")
	waitFor(t, func() bool { ents, _ := os.ReadDir(tmp); return len(ents) == 1 })
	c.c.Close()
	waitFor(t, func() bool { ents, _ := os.ReadDir(tmp); return len(ents) == 0 })
	waitFor(t, func() bool { return r.srv.budget.Load() == cfg.BodyBudgetBytes })
}
