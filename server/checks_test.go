package server

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/check"
)

// stageChecker answers every stage at once except one, whose verdict comes
// after delay (on a timer: no goroutine), for the clients it applies to.
type stageChecker struct {
	stage   uint8
	delay   time.Duration
	verdict check.Verdict
	only    netip.Addr // if valid: only sessions from this address wait
	later   bool       // start the data verdict at MAIL (Info.Later)

	mu   sync.Mutex
	seen []string // what each stage saw
}

func (s *stageChecker) at(st uint8, i *Info, what string) *check.Result {
	s.mu.Lock()
	s.seen = append(s.seen, what)
	s.mu.Unlock()
	if st != s.stage || (s.only.IsValid() && i.IP != s.only) {
		return nil
	}
	return check.After(s.delay, s.verdict)
}

func (s *stageChecker) Connect(i *Info) *check.Result {
	return s.at(stageConnect, i, "connect "+i.IP.String())
}
func (s *stageChecker) Helo(i *Info, name string) *check.Result {
	return s.at(stageHelo, i, "helo "+name)
}
func (s *stageChecker) Mail(i *Info, from proto.Address, p proto.MailParams) *check.Result {
	if s.later {
		i.Later(check.After(s.delay, s.verdict)) // decided at the end of data
		return nil
	}
	return s.at(stageMail, i, fmt.Sprintf("mail %s size=%d", from, p.Size))
}
func (s *stageChecker) Rcpt(i *Info, rcpt proto.Address) *check.Result {
	return s.at(stageRcpt, i, "rcpt "+rcpt.String())
}
func (s *stageChecker) Data(i *Info, body []byte) *check.Result {
	return s.at(stageData, i, fmt.Sprintf("data %d bytes from %s for %d", len(body), i.From, len(i.Rcpts)))
}

// pipelined is one whole session written at once.
const pipelined = "EHLO c.example.org\r\nMAIL FROM:<a@example.org> SIZE=40\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: check\r\n\r\nhello\r\n.\r\nNOOP\r\nQUIT\r\n"

// TestCheckPendingAtEachStage: a check that answers 200 ms late at any
// stage holds the session there, pipelined input waiting, and the replies
// come in order; refusals are answered as the session would answer them
// at once; an accepting end-of-data verdict adds its header fields.
func TestCheckPendingAtEachStage(t *testing.T) {
	refuse := proto.NewReply(550, "5.7.1", "Refused by check")
	for _, tc := range []struct {
		name  string
		stage uint8
		v     check.Verdict
		want  []string // reply prefixes after the greeting (or instead of it)
		files int
	}{
		{"connect", stageConnect, check.Verdict{}, []string{"220 ", "250 CHUNKING", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0 OK", "221"}, 1},
		{"connect refused", stageConnect, check.Verdict{Reply: proto.NewReply(554, "5.7.1", "Go away")}, []string{"554 5.7.1"}, 0},
		{"helo", stageHelo, check.Verdict{}, []string{"220 ", "250 CHUNKING", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0 OK", "221"}, 1},
		{"helo refused", stageHelo, check.Verdict{Reply: proto.NewReply(550, "", "Bad HELO")}, []string{"220 ", "550 Bad", "503 5.5.1", "503 5.5.1", "503 5.5.1"}, 0},
		{"mail refused", stageMail, check.Verdict{Reply: refuse}, []string{"220 ", "250 CHUNKING", "550 5.7.1", "503 5.5.1", "503 5.5.1"}, 0},
		{"rcpt refused", stageRcpt, check.Verdict{Reply: refuse}, []string{"220 ", "250 CHUNKING", "250 2.1.0", "550 5.7.1", "554 5.5.1"}, 0},
		{"rcpt", stageRcpt, check.Verdict{}, []string{"220 ", "250 CHUNKING", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0 OK", "221"}, 1},
		{"data refused", stageData, check.Verdict{Reply: refuse}, []string{"220 ", "250 CHUNKING", "250 2.1.0", "250 2.1.5", "354", "550 5.7.1", "250 2.0.0 OK", "221"}, 0},
		{"data headers", stageData, check.Verdict{Headers: []byte("X-Check: yes\n")}, []string{"220 ", "250 CHUNKING", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0 OK", "221"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testServerConfig(t)
			sc := &stageChecker{stage: tc.stage, delay: 200 * time.Millisecond, verdict: tc.v}
			cfg.checks = []Checker{sc}
			r := start(t, cfg)
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			begun := time.Now()
			if _, err := c.Write([]byte(pipelined)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var got []string
			for len(got) < len(tc.want) {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("after %q: %v", got, err)
				}
				if len(line) > 3 && line[3] == '-' {
					continue // a multi-line reply: its last line counts
				}
				got = append(got, strings.TrimRight(line, "\r\n"))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(got[i], w) {
					t.Fatalf("replies %q, want prefixes %q", got, tc.want)
				}
			}
			if d := time.Since(begun); d < 200*time.Millisecond {
				t.Fatalf("answered after %v, before the check", d)
			}
			files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
			if len(files) != tc.files {
				t.Fatalf("%d files, want %d", len(files), tc.files)
			}
			if tc.v.Headers != nil && !strings.Contains(files[0], "\nX-Check: yes\nSubject: check\n") {
				t.Fatalf("header fields not prepended:\n%s", files[0])
			}
		})
	}
}

// TestCheckStartedEarly: a check started at MAIL and consumed at the end of
// data; its header lands in the message. Over STARTTLS too.
func TestCheckStartedEarly(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	sc := &stageChecker{later: true, delay: 300 * time.Millisecond, verdict: check.Verdict{Headers: []byte("X-Early: 1\n")}}
	cfg.checks = []Checker{sc}
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	tc := c.starttls(t, p.Client())
	tc.expect("EHLO c", "250")
	tc.expect("MAIL FROM:<a@example.org>", "250 2.1.0") // at once: the check runs on
	tc.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	tc.expect("DATA", "354")
	tc.expect("Subject: early\r\n\r\nhi\r\n.", "250 2.0.0")
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 || !strings.Contains(files[0], "\nX-Early: 1\nSubject: early\n") {
		t.Fatalf("files %q", files)
	}
}

// TestCheckTLSPending: a pending RCPT check over STARTTLS, pipelined.
func TestCheckTLSPending(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.checks = []Checker{&stageChecker{stage: stageRcpt, delay: 200 * time.Millisecond, verdict: check.Verdict{Reply: proto.NewReply(450, "4.7.1", "Later")}}}
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	tc := c.starttls(t, p.Client())
	tc.expect("EHLO c", "250")
	tc.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nNOOP\r\n")
	for _, w := range []string{"250 2.1.0", "450 4.7.1", "250 2.0.0"} {
		if g := tc.reply(); !strings.HasPrefix(g, w) {
			t.Fatalf("got %q, want %q", g, w)
		}
	}
}

// parkWaiting opens n sessions from 127.0.0.2 whose RCPT check waits
// (stageChecker.only) and returns when all are waiting.
func parkWaiting(t testing.TB, addr string, n int) []net.Conn {
	var conns []net.Conn
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("EHLO w\r\nMAIL FROM:<w@example.org>\r\nRCPT TO:<bob@example.test>\r\n"))
		conns = append(conns, c)
	}
	for _, c := range conns { // greeting, EHLO, MAIL: then the RCPT waits
		br := bufio.NewReader(c)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for got := 0; got < 3; {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if l[3] == ' ' {
				got++
			}
		}
	}
	return conns
}

// TestThousandWaitingChecks: 1,000 sessions each waiting on a check hold
// no goroutine each, and a normal sender is served meanwhile.
func TestThousandWaitingChecks(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MaxConnections = 2000
	cfg.MaxConnectionsPerIP = 2000
	cfg.checks = []Checker{&stageChecker{stage: stageRcpt, delay: 20 * time.Second, only: netip.MustParseAddr("127.0.0.2")}}
	r := start(t, cfg)
	g0 := runtime.NumGoroutine()
	conns := parkWaiting(t, r.addr, 1000)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if g := runtime.NumGoroutine() - g0; g > 50 {
		t.Fatalf("%d more goroutines with 1,000 checks pending", g)
	}
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	for range 20 {
		c.expect("MAIL FROM:<a@example.org>", "250")
		c.expect("RCPT TO:<bob@example.test>", "250")
		c.expect("DATA", "354")
		c.expect("Subject: x\r\n\r\nhi\r\n.", "250 2.0.0")
	}
}

// BenchmarkWaitingChecks measures a normal sender's throughput (one
// connection, 10 KB messages, fsync off so that the event loop's cost is
// what is measured, not the disk's latency) with and without 1,000 other
// sessions each waiting on a 1 s check that is renewed (a RCPT every
// second each: 1,000 timers and wake-ups a second): the waiting sessions
// must cost nothing measurable.
//
//	go test -run '^$' -bench WaitingChecks -benchtime 2000x ./server/
func BenchmarkWaitingChecks(b *testing.B) {
	for _, parked := range []int{0, 1000} {
		b.Run(fmt.Sprintf("waiting=%d", parked), func(b *testing.B) {
			cfg := benchConfig(b)
			cfg.MaxConnections, cfg.MaxConnectionsPerIP = 3000, 3000
			cfg.checks = []Checker{&stageChecker{stage: stageRcpt, delay: time.Second, only: netip.MustParseAddr("127.0.0.2"),
				verdict: check.Verdict{Reply: proto.NewReply(450, "4.7.1", "Later")}}}
			r := start(b, cfg)
			conns := parkWaiting(b, r.addr, parked)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for _, c := range conns { // each renews its wait: RCPT after RCPT
				wg.Add(1)
				go func(c net.Conn) {
					defer wg.Done()
					br := bufio.NewReader(c)
					for {
						select {
						case <-stop:
							return
						default:
						}
						_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
						if _, err := br.ReadString('\n'); err != nil {
							return
						}
						c.Write([]byte("RCPT TO:<bob@example.test>\r\n"))
					}
				}(c)
			}
			body := "Subject: x\r\n\r\n" + strings.Repeat(strings.Repeat("b", 98)+"\r\n", 100) + ".\r\n"
			nc, err := net.Dial("tcp", r.addr)
			if err != nil {
				b.Fatal(err)
			}
			br := bufio.NewReader(nc)
			read := func() string {
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						b.Fatal(err)
					}
					if l[3] == ' ' {
						return l
					}
				}
			}
			read()
			nc.Write([]byte("EHLO c\r\n"))
			read()
			b.ResetTimer()
			for range b.N {
				nc.Write([]byte("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"))
				read()
				read()
				read()
				nc.Write([]byte(body))
				if l := read(); !strings.HasPrefix(l, "250 2.0.0") {
					b.Fatal(l)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			nc.Close()
			close(stop)
			for _, c := range conns {
				c.Close()
			}
			wg.Wait()
		})
	}
}

// TestCheckFolder: an end-of-data verdict naming a folder delivers into
// the mailbox's Maildir++ folder (.Junk/new/, which Dovecot shows as Junk),
// with the verdict's header fields, and not into the inbox.
func TestCheckFolder(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.checks = []Checker{&stageChecker{stage: stageData, delay: 50 * time.Millisecond,
		verdict: check.Verdict{Folder: "Junk", Headers: []byte("X-Spam: yes\n")}}}
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<team@example.test>", "250") // bob and alice
	c.expect("DATA", "354")
	c.expect("Subject: junk\r\n\r\nbuy\r\n.", "250 2.0.0")
	// A message past spill_threshold, on disk before the verdict, gets
	// the header fields and the folder too.
	big := strings.Repeat(strings.Repeat("z", 998)+"\r\n", 400) // 400 KB
	c.expect("MAIL FROM:<a@example.org>", "250")
	c.expect("RCPT TO:<team@example.test>", "250")
	c.expect("DATA", "354")
	c.expect("Subject: big junk\r\n\r\n"+big+".", "250 2.0.0")
	for _, box := range []string{"bob", "alice"} {
		if n := len(newFiles(t, cfg.MaildirRoot, "example.test", box)); n != 0 {
			t.Fatalf("%s: %d files in the inbox", box, n)
		}
		files := newFiles(t, cfg.MaildirRoot, "example.test", box+"/.Junk")
		if len(files) != 2 {
			t.Fatalf("%s/.Junk: %d files, want 2", box, len(files))
		}
		var small, large int
		for _, f := range files {
			switch {
			case strings.Contains(f, "X-Spam: yes\nSubject: junk\n"):
				small++
			case strings.Contains(f, "X-Spam: yes\nSubject: big junk\n") && len(f) > 390_000:
				large++
			}
		}
		if small != 1 || large != 1 {
			t.Fatalf("%s/.Junk: small %d large %d", box, small, large)
		}
		junkNew := filepath.Join(cfg.MaildirRoot, "example.test", box, ".Junk", "new")
		ents, _ := os.ReadDir(junkNew)
		for _, e := range ents {
			fi, err := os.Stat(filepath.Join(junkNew, e.Name()))
			if err != nil || !strings.HasSuffix(e.Name(), fmt.Sprintf(",S=%d", fi.Size())) {
				t.Fatalf("%s: S= is not the file size (%v)", e.Name(), err)
			}
		}
		if ents, _ := os.ReadDir(filepath.Join(cfg.MaildirRoot, "example.test", box, "tmp")); len(ents) != 0 {
			t.Fatalf("%s/tmp: %d files left", box, len(ents))
		}
	}
}

// benchConfig is a benchmark server's configuration: a free loopback
// port, a fresh Maildir under benchDir (removed with b), bob@example.test
// the only mailbox, fsync off.
func benchConfig(b *testing.B) Config {
	cfg := Defaults()
	cfg.Hostname = "mx.example.test"
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	cfg.Listen = []string{l.Addr().String()}
	l.Close()
	dir, err := os.MkdirTemp(benchDir(), "nanomx-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	cfg.MaildirRoot = dir
	cfg.Domains = []string{"example.test"}
	cfg.Mailboxes = []string{"bob@example.test"}
	cfg.Postmaster = "bob@example.test"
	cfg.Fsync = false
	return cfg
}

// waitVerdict waits up to 5 s for r's verdict (nil accepts at once).
func waitVerdict(t testing.TB, r *check.Result) check.Verdict {
	t.Helper()
	if r == nil {
		return check.Verdict{}
	}
	ch := make(chan check.Verdict, 1)
	r.Notify(func(v check.Verdict) { ch <- v })
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("no verdict")
		return check.Verdict{}
	}
}

// benchDir is where benchmark Maildirs go: tmpfs when there is one, so
// that the figures are the server's, not the disk's (ext4 here slows
// file creation for minutes after many deletions).
func benchDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// TestHalfCloseWhileCheckPending: Exim's ending (BDAT LAST, QUIT, then
// shutdown(SHUT_WR)) while the end-of-data check is still pending: the
// client still gets the 250 and the 221.
func TestHalfCloseWhileCheckPending(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.checks = []Checker{&stageChecker{stage: stageData, delay: 300 * time.Millisecond}}
	r := start(t, cfg)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT 34 LAST\r\nSubject: nc-halfclose-1\r\n\r\nhello\r\nQUIT\r\n"))
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	lines := readAll(t, c)
	if n := len(lines); n < 2 || !strings.HasPrefix(lines[n-2], "250 2.0.0 OK: queued as") || !strings.HasPrefix(lines[n-1], "221 2.0.0") {
		t.Fatalf("replies %q", lines)
	}
	if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")); n != 1 {
		t.Fatalf("%d files, want 1", n)
	}
}
