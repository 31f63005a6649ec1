package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench/smtpc"
	"github.com/nanomx/nanomx/server/lmtp/dovecottest"
	"github.com/nanomx/nanomx/server/proxyproto/haproxytest"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// clusterHAProxyExample is the README's HAProxy configuration for the MXes
// of "More than one machine", which TestCluster runs.
const clusterHAProxyExample = "haproxy.cluster.example.cfg"

// clusterZone: the two clients' addresses have PTR names that resolve
// back (iprev=pass), and example.org's SPF allows those two addresses
// only, so that a check that saw HAProxy's 127.0.0.1 would say otherwise.
const clusterZone = `
5.0.0.127.in-addr.arpa. PTR client5.example.org.
6.0.0.127.in-addr.arpa. PTR client6.example.org.
client5.example.org.    A   127.0.0.5
client6.example.org.    A   127.0.0.6
example.org.            TXT "v=spf1 ip4:127.0.0.5 ip4:127.0.0.6 -all"
`

// clusterSources are the client addresses TestCluster sends from.
var clusterSources = []string{"127.0.0.5", "127.0.0.6"}

// replaceAll applies each replacement once, failing the test when the
// text lacks one: the examples must keep the lines the test rewrites.
func replaceAll(t *testing.T, name, text string, rs [][2]string) string {
	t.Helper()
	for _, r := range rs {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("%s has no %s", name, r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	return text
}

// clusterMXConf is the README's nanomx example for an MX (lmtpExample)
// with its commented PROXY protocol lines switched on for this test's
// addresses (HAProxy connects from 127.0.0.1), and the checks' DNS server.
func clusterMXConf(t *testing.T, host, addr, proxyAddr, root, lmtp, dns string) string {
	return replaceAll(t, "nanomx.lmtp.example.toml", lmtpExample(t, host, addr, root, lmtp), [][2]string{
		{`# proxy_listen = ["0.0.0.0:2526"]`, fmt.Sprintf("proxy_listen = [%q]", proxyAddr)},
		{`# proxy_trusted = ["10.0.0.10"]`, fmt.Sprintf("proxy_trusted = [\"127.0.0.1\"]\ndns_servers = [%q]\ndns_timeout = \"500ms\"", dns)},
	})
}

// clusterHAProxyConf is haproxy.cluster.example.cfg with this test's
// addresses and stats socket, nothing else changed.
func clusterHAProxyConf(t *testing.T, front, mx1, mx2, sock string) string {
	b, err := os.ReadFile(clusterHAProxyExample)
	if err != nil {
		t.Fatal(err)
	}
	return replaceAll(t, clusterHAProxyExample, string(b), [][2]string{
		{"/run/haproxy/admin.sock", sock},
		{"bind :25\n", "bind " + front + "\n"},
		{"10.0.0.11:2526", mx1},
		{"10.0.0.12:2526", mx2},
	})
}

// clusterMsg is one message of TestCluster and what became of it. Only
// its sender goroutine writes it, until the load is waited for.
type clusterMsg struct {
	marker string
	src    string   // the client address it is sent from
	rcpts  []string // all known to Dovecot
	acked  bool
	tries  int
	// mayDup: an attempt failed once the data was sent, so that try may
	// have been stored too (a duplicate beats a loss).
	mayDup bool
	err    error       // the last attempt's failure
	fails  []error     // every attempt's failure
	failAt []time.Time // when each failed
}

// clusterDial connects to addr from the loopback address src and reads
// the greeting and EHLO reply.
func clusterDial(addr, src string) (*smtpc.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, &smtpc.Error{Stage: smtpc.StageConnect, Err: err}
	}
	c := smtpc.New(nc)
	c.Timeout = 10 * time.Second
	helo := "client" + src[strings.LastIndexByte(src, '.')+1:] + ".example.org"
	if err := c.Hello(helo); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// clusterWire is m in its DATA form.
func clusterWire(m *clusterMsg) []byte {
	return []byte(fmt.Sprintf("From: <sender@example.org>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@example.org>\r\nX-Cluster-Marker: %s\r\n\r\nline one\r\n..a line that needs dot-stuffing\r\n.\r\n",
		strings.Join(m.rcpts, ">, <"), m.marker, m.marker, m.marker))
}

// send makes one attempt at m, on a connection of its own.
func (m *clusterMsg) send(addr string) error {
	m.tries++
	c, err := clusterDial(addr, m.src)
	if err == nil {
		err = c.Send("sender@example.org", m.rcpts, clusterWire(m))
		if err == nil {
			m.acked = true
			_ = c.Quit()
		}
		c.Close()
	}
	var se *smtpc.Error
	if errors.As(err, &se) && (se.Stage == smtpc.StageSend || se.Stage == smtpc.StageEnd) {
		m.mayDup = true
	}
	m.err = err
	if err != nil {
		m.fails = append(m.fails, err)
		m.failAt = append(m.failAt, time.Now())
	}
	return err
}

// sendRetrying tries m until it is acked, as a sender's queue would, at
// most tries times, 100 ms apart.
func (m *clusterMsg) sendRetrying(addr string, tries int) {
	for i := 0; i < tries && m.send(addr) != nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// clusterReceived matches the Received field nanomx writes (Dovecot's own
// comes first and names nanomx): the client's HELO, its checked name and
// address, and the MX.
var clusterReceived = regexp.MustCompile(`\nReceived: from (\S+) \(([^)]*)\)\n\tby (\S+) \(nanomx\)`)

// clusterStored is one stored copy of a TestCluster message.
type clusterStored struct {
	user, received, by string
	authResults        string
}

// clusterStore reads Dovecot's store: marker → the copies in users'
// INBOXes. Only messages of run are kept.
func clusterStore(t *testing.T, d *dovecottest.Server, run string, users []string) map[string][]clusterStored {
	t.Helper()
	out := map[string][]clusterStored{}
	marker := regexp.MustCompile(`\nX-Cluster-Marker: (` + regexp.QuoteMeta(run) + `-\d+)\n`)
	for _, u := range users {
		for name, b := range d.Messages(u) {
			b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
			mm := marker.FindSubmatch(b)
			if mm == nil {
				continue
			}
			s := clusterStored{user: u}
			if r := clusterReceived.FindSubmatch(b); r != nil {
				s.received, s.by = string(r[2]), string(r[3])
			} else {
				t.Errorf("%s/%s: no nanomx Received field:\n%s", u, name, b)
			}
			s.authResults = clusterField(b, "Authentication-Results")
			out[string(mm[1])] = append(out[string(mm[1])], s)
		}
	}
	return out
}

// clusterField returns the first field called name in msg (LF line
// ends), with its folded lines, or "".
func clusterField(msg []byte, name string) string {
	i := bytes.Index(msg, []byte("\n"+name+": "))
	if i < 0 {
		return ""
	}
	f := msg[i+1:]
	end := 0
	for {
		j := bytes.IndexByte(f[end:], '\n')
		if j < 0 {
			return string(f)
		}
		end += j + 1
		if end == len(f) || (f[end] != ' ' && f[end] != '\t') {
			return string(f[:end-1])
		}
	}
}

// TestCluster runs the README's "More than one machine" as it is shown:
// a private Dovecot, two nanomx processes (mx1, mx2) configured from
// nanomx.lmtp.example.toml with its PROXY protocol lines on, delivering
// over LMTP with lmtp_check_rcpt, and a private HAProxy in front running
// haproxy.cluster.example.cfg (roundrobin, send-proxy-v2, smtpchk checks).
// Clients connect to HAProxy from 127.0.0.5 and 127.0.0.6.
//
// Phase 1: 40 messages and a few to an unknown user. Every message is
// acked and stored once in each of its mailboxes; the unknown user gets
// 550 5.1.1 at RCPT; both MXes took a fair share; each stored Received
// field names the client's own address and checked name, and SPF (which
// allows only the clients' addresses) and iprev passed: the MXes saw the
// clients, not HAProxy.
//
// Phase 2: mx1 gets SIGTERM while messages flow. HAProxy's check marks it
// DOWN within a bounded time, no connection is cut (each failed attempt
// got a 4xx reply), every message of the load is acked in the end (a
// sender retries a 4xx), and after that every message goes through
// mx2 at the first try.
func TestCluster(t *testing.T) {
	d := dovecottest.Start(t, lmtpUsers...)
	dns := dnstest.New(t, clusterZone)
	run := fmt.Sprintf("c%d", time.Now().UnixNano()%1e9)

	hosts := []string{"mx1.example.test", "mx2.example.test"}
	var srvs []*crashServer
	var proxyAddrs []string
	for _, host := range hosts {
		dir := t.TempDir()
		addr, proxyAddr := freeAddr(t), freeAddr(t)
		srv := newCrashServer(t, dir, addr, clusterMXConf(t, host, addr, proxyAddr, filepath.Join(dir, "spool"), d.Addr, dns.Addr()))
		srv.start()
		srvs, proxyAddrs = append(srvs, srv), append(proxyAddrs, proxyAddr)
	}
	front := freeAddr(t)
	h := haproxytest.Start(t, func(sock string) string {
		return clusterHAProxyConf(t, front, proxyAddrs[0], proxyAddrs[1], sock)
	})
	up := func(st map[string]string) bool { return st["status"] == "UP" && st["check_status"] == "L7OK" }
	for _, mx := range []string{"mx1", "mx2"} {
		h.WaitStat(t, "nanomx", mx, 10*time.Second, up)
	}

	var msgs []*clusterMsg
	var mu sync.Mutex // guards msgs and seq while senders run
	seq := 0
	newMsg := func(src string) *clusterMsg {
		mu.Lock()
		defer mu.Unlock()
		seq++
		rcpts := [][]string{{"alice@example.test"}, {"bob@example.test"}, {"carol@example.test"}, {"alice@example.test", "carol@example.test"}}[seq%4]
		m := &clusterMsg{marker: fmt.Sprintf("%s-%d", run, seq), src: src, rcpts: rcpts}
		msgs = append(msgs, m)
		return m
	}

	// Phase 1: 4 senders, 10 messages each, no failure expected.
	const phase1 = 40
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		src := clusterSources[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < phase1/4; j++ {
				newMsg(src).send(front)
			}
		}()
	}
	wg.Wait()
	for _, m := range msgs {
		if !m.acked {
			t.Errorf("%s from %s: %v", m.marker, m.src, m.err)
		}
	}

	// The unknown user: refused at RCPT by Dovecot's answer, alone and
	// beside a known one (who still gets the message).
	for i, src := range []string{"127.0.0.5", "127.0.0.6", "127.0.0.5"} {
		c, err := clusterDial(front, src)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("sender@example.org"); err != nil {
			t.Fatal(err)
		}
		var se *smtpc.Error
		if err := c.Rcpt("nobody@example.test"); !errors.As(err, &se) || se.Status() != "550 5.1.1" {
			t.Errorf("unknown user %d from %s: %v, want 550 5.1.1 at RCPT", i, src, err)
		}
		if i == 2 {
			m := newMsg(src)
			m.rcpts = []string{"bob@example.test"}
			m.tries++
			if err := c.Rcpt("bob@example.test"); err != nil {
				t.Fatal(err)
			}
			if err := c.Data(); err != nil {
				t.Fatal(err)
			}
			if err := c.WriteData(clusterWire(m)); err != nil {
				t.Fatal(err)
			}
			if err := c.DataReply(); err != nil {
				t.Fatalf("known beside unknown: %v", err)
			}
			m.acked = true
		}
		_ = c.Quit()
		c.Close()
	}

	stored := clusterStore(t, d, run, lmtpUsers)
	byHost := map[string]int{}
	for _, m := range msgs {
		for _, s := range stored[m.marker] {
			byHost[s.by]++
			name := "client" + m.src[strings.LastIndexByte(m.src, '.')+1:] + ".example.org"
			if want := name + " [" + m.src + "]"; s.received != want {
				t.Errorf("%s (%s): Received from (%s), want (%s)", m.marker, s.user, s.received, want)
			}
			for _, want := range []string{"spf=pass smtp.mailfrom=sender@example.org", "iprev=pass policy.iprev=" + m.src + " "} {
				if !strings.Contains(s.authResults, want) {
					t.Errorf("%s (%s): Authentication-Results lacks %q:\n%s", m.marker, s.user, want, s.authResults)
				}
			}
		}
	}
	t.Logf("phase 1: %d messages, stored copies by MX: %v", len(msgs), byHost)
	for _, host := range hosts {
		// Roundrobin over two: about half each; the health checks take
		// no turn of it.
		if byHost[host] < phase1/4 {
			t.Errorf("%s stored %d copies of %d messages: HAProxy did not balance over both", host, byHost[host], len(msgs))
		}
	}
	if dir := filepath.Join(d.MailDir(), "example.test", "nobody"); fileExists(dir) {
		t.Errorf("the unknown user has a mailbox: %s", dir)
	}

	// Phase 2: a load through HAProxy while mx1 stops.
	first := len(msgs)
	stop := make(chan struct{})
	for _, src := range clusterSources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				newMsg(src).sendRetrying(front, 30)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	stopped := time.Now()
	if took, err := srvs[0].term(15 * time.Second); err != nil {
		t.Errorf("mx1 SIGTERM: %v after %v", err, took)
	}
	exited := time.Since(stopped)
	st := h.WaitStat(t, "nanomx", "mx1", 10*time.Second, func(st map[string]string) bool { return st["status"] == "DOWN" })
	down := time.Since(stopped)
	close(stop)
	wg.Wait()
	mu.Lock()
	load := msgs[first:]
	mu.Unlock()
	retried := map[string]int{} // failure → attempts
	for _, m := range load {
		for i, err := range m.fails {
			retried[err.Error()]++
			// A stopping nanomx answers 421 4.3.2 until it exits; then
			// its refused connections go to mx2 (option redispatch 1).
			// A cut connection means HAProxy gave a client a dead MX. The
			// listeners take no new handshake and have an empty accept
			// queue before they close (server/quiesce.go): closing them
			// resets nobody.
			var se *smtpc.Error
			if !errors.As(err, &se) || se.Code/100 != 4 {
				t.Errorf("%s from %s: %v, %v after SIGTERM (mx1 exited after %v): a connection cut, not a 4xx reply",
					m.marker, m.src, err, m.failAt[i].Sub(stopped).Round(time.Millisecond), exited.Round(time.Millisecond))
			}
		}
		if !m.acked {
			t.Errorf("%s from %s not acked after %d tries while mx2 was up: %v", m.marker, m.src, m.tries, m.err)
		}
	}
	t.Logf("phase 2: mx1 exited %v after SIGTERM, DOWN (%s, %s) after %v; %d messages under the load, failed attempts %v",
		exited.Round(time.Millisecond), st["check_status"], st["check_desc"], down.Round(time.Millisecond), len(load), retried)
	if len(load) == 0 {
		t.Error("no message was sent while mx1 stopped")
	}

	// mx1 is out: every message goes through mx2 at its first try.
	var after []*clusterMsg
	for i := 0; i < 10; i++ {
		m := newMsg(clusterSources[i%2])
		if err := m.send(front); err != nil {
			t.Errorf("with mx1 down, %s: %v", m.marker, err)
		}
		after = append(after, m)
	}
	if took, err := srvs[1].term(15 * time.Second); err != nil {
		t.Errorf("mx2 SIGTERM: %v after %v", err, took)
	}
	for _, srv := range srvs {
		srv.checkLogs()
	}

	// Every acked message is in each of its mailboxes exactly once (more
	// only if an attempt failed after its data), the unacked nowhere
	// more often than they were tried.
	stored = clusterStore(t, d, run, lmtpUsers)
	for _, m := range msgs {
		n := map[string]int{}
		for _, s := range stored[m.marker] {
			n[s.user]++
		}
		for _, u := range m.rcpts {
			switch {
			case m.acked && n[u] == 0:
				t.Errorf("%s acked but not in %s's mailbox", m.marker, u)
			case n[u] > 1 && (!m.mayDup || n[u] > m.tries):
				t.Errorf("%s stored %d times for %s after %d tries", m.marker, n[u], u, m.tries)
			}
			delete(n, u)
		}
		for u, k := range n {
			t.Errorf("%s: %d copies in %s's mailbox, not a recipient", m.marker, k, u)
		}
	}
	for _, m := range after {
		for _, s := range stored[m.marker] {
			if s.by != "mx2.example.test" {
				t.Errorf("%s went through %s with mx1 down", m.marker, s.by)
			}
		}
	}
}

// TestClusterExamplesInREADME: the README's "More than one machine" shows
// the HAProxy configuration TestCluster runs, as it is (the nanomx and
// Dovecot files: TestLMTPExamplesInREADME).
func TestClusterExamplesInREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(clusterHAProxyExample)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(readme), "\n## More than one machine\n")
	if i < 0 {
		t.Fatal(`README.md has no "## More than one machine"`)
	}
	sec, _, _ := strings.Cut(string(readme)[i+1:], "\n## ")
	if !strings.Contains(sec, "\n```\n"+string(b)+"```\n") {
		t.Errorf("README.md's \"More than one machine\" does not show %s as it is", clusterHAProxyExample)
	}
}
