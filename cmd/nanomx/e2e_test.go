package main

// End-to-end tests: the real binary on a loopback port, real clients (Go's
// net/smtp, swaks, Postfix's smtp-source), and the Maildir files checked
// byte for byte.

import (
	"bytes"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/servertest"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nanomx-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "nanomx")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build nanomx: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needTool returns the path of an external client. In CI (.ci/run
// installs them) a missing tool fails the test; on a developer machine it
// skips with the package to install.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not installed (apt-get install %s); .ci/run must install it", name, pkg)
	}
	t.Skipf("%s not installed: apt-get install %s", name, pkg)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type proc struct {
	cmd  *exec.Cmd
	addr string
	dir  string
	log  *syncBuffer
}

// syncBuffer collects the child's output; the test reads it while the
type syncBuffer = servertest.SyncBuffer

// startNanomx runs the binary in dir with args, waits until addr accepts,
// and on cleanup sends SIGTERM and requires a clean exit.
func startNanomx(t *testing.T, dir, addr string, args ...string) *proc {
	t.Helper()
	var logBuf syncBuffer
	cmd := exec.Command(binPath, args...)
	cmd.Dir = dir
	cmd.Stdout = &logBuf
	cmd.Stderr = &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, addr: addr, dir: dir, log: &logBuf}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("nanomx exit: %v\n%s", err, logBuf.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("nanomx did not stop on SIGTERM\n%s", logBuf.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case err := <-exited:
			t.Fatalf("nanomx exited: %v\n%s", err, logBuf.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nanomx not listening on %s\n%s", addr, logBuf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startWithConfig(t *testing.T) (*proc, string) {
	t.Helper()
	return startWithExtra(t, t.TempDir(), "")
}

// startWithExtra is startWithConfig with more top-level keys, in dir.
func startWithExtra(t *testing.T, dir, extra string) (*proc, string) {
	t.Helper()
	addr := freeAddr(t)
	root := filepath.Join(dir, "maildir")
	conf := fmt.Sprintf(`hostname = "mx.example.test"
listen = [%q]
maildir_root = %q
domains = ["example.test"]
postmaster = "alice@example.test"
mailboxes = ["alice@example.test", "bob@example.test"]
max_connections_per_ip = 100
# Sender authentication off: these tests compare stored files byte for
# byte (auth_e2e_test.go turns it on).
spf = false
dkim = false
dmarc = false
iprev = false
%s
[aliases]
"team@example.test" = ["alice@example.test", "bob@example.test"]
`, addr, root, extra)
	path := filepath.Join(dir, "nanomx.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return startNanomx(t, dir, addr, "serve", "-config", path), root
}

// maildirFiles returns name → content of the files in a mailbox's new/.
func maildirFiles(t *testing.T, mbox string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(mbox, "new"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := make(map[string][]byte)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(mbox, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

var traceRE = regexp.MustCompile(`^Return-Path: <([^>]*)>\nReceived: from (\S+) \(\[127\.0\.0\.1\]\)\n\tby mx\.example\.test \(nanomx\) with (E?SMTP|UTF8SMTP) id ([0-9A-Z]+)\n\tfor <([^>]+)>;\n\t[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}\n`)

// checkFile verifies one stored message: the trace headers nanomx adds,
// then the client's message byte for byte (CRLF stored as LF), and a
// ,S= in the name equal to the file size.
func checkFile(t *testing.T, name string, got []byte, from, rcpt string, sent string) {
	t.Helper()
	m := traceRE.FindSubmatchIndex(got)
	if m == nil {
		t.Fatalf("%s: trace headers malformed:\n%s", name, got)
	}
	if f := string(got[m[2]:m[3]]); f != from {
		t.Errorf("Return-Path <%s>, want <%s>", f, from)
	}
	if r := string(got[m[10]:m[11]]); r != rcpt {
		t.Errorf("for <%s>, want <%s>", r, rcpt)
	}
	want := strings.ReplaceAll(sent, "\r\n", "\n")
	if body := string(got[m[1]:]); body != want {
		t.Errorf("stored message differs:\n got %q\nwant %q", body, want)
	}
	i := strings.Index(name, ",S=")
	if i < 0 {
		t.Fatalf("%s: no ,S=", name)
	}
	size, err := strconv.Atoi(strings.SplitN(name[i+3:], ",", 2)[0])
	if err != nil || size != len(got) {
		t.Errorf("%s: S=%d, file has %d bytes", name, size, len(got))
	}
}

func TestE2ENetSMTP(t *testing.T) {
	p, root := startWithConfig(t)
	msg := "From: Sender <sender@example.org>\r\nTo: bob@example.test\r\nSubject: e2e\r\n\r\nHello,\r\n.dot at start\r\n" +
		strings.Repeat("long line ", 150) + "\r\nbye\r\n"
	if err := smtp.SendMail(p.addr, nil, "sender@example.org", []string{"Bob@Example.TEST"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	files := maildirFiles(t, filepath.Join(root, "example.test", "bob"))
	if len(files) != 1 {
		t.Fatalf("%d files in bob/new, want 1", len(files))
	}
	for name, b := range files {
		checkFile(t, name, b, "sender@example.org", "Bob@Example.TEST", msg)
	}
}

func TestE2ESwaks(t *testing.T) {
	swaks := needTool(t, "swaks", "swaks")
	p, root := startWithConfig(t)
	host, port, _ := net.SplitHostPort(p.addr)
	// swaks ends the data with its own CRLF before the final dot.
	body := "Subject: via swaks\r\nX-Test: 1\r\n\r\nswaks body line\r\n..two dots"
	cmd := exec.Command(swaks, "--server", host, "--port", port, "--from", "s@example.org",
		"--to", "alice@example.test", "--helo", "swaks.example.org", "--data", body, "--hide-all")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swaks: %v\n%s\n%s", err, out, p.log.String())
	}
	files := maildirFiles(t, filepath.Join(root, "example.test", "alice"))
	if len(files) != 1 {
		t.Fatalf("%d files in alice/new, want 1", len(files))
	}
	for name, b := range files {
		// swaks sends the data as given (CRLF) and dot-stuffs ".." to "...".
		checkFile(t, name, b, "s@example.org", "alice@example.test", body+"\r\n")
		if !bytes.Contains(b, []byte("Received: from swaks.example.org ")) {
			t.Errorf("HELO not recorded: %s", b)
		}
	}
}

// TestE2ESmtpSource has Postfix's smtp-source send 1,000 messages over 50
// connections; every one must land exactly once.
func TestE2ESmtpSource(t *testing.T) {
	src := needTool(t, "smtp-source", "postfix")
	p, root := startWithConfig(t)
	const msgs = 1000
	cmd := exec.Command(src, "-s", "50", "-m", strconv.Itoa(msgs), "-l", "2048",
		"-f", "load@example.org", "-t", "bob@example.test", "-M", "client.example.org", p.addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	files := maildirFiles(t, filepath.Join(root, "example.test", "bob"))
	if len(files) != msgs {
		t.Fatalf("%d files in bob/new, want %d", len(files), msgs)
	}
	// smtp-source numbers nothing, so "exactly once" is checked by the
	// queue ids nanomx assigned: all distinct, one file each.
	ids := make(map[string]bool)
	for name, b := range files {
		m := traceRE.FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: trace headers malformed", name)
		}
		id := string(m[4])
		if ids[id] {
			t.Fatalf("queue id %s stored twice", id)
		}
		ids[id] = true
	}
	if strings.Count(p.log.String(), `"message":"delivered"`) != msgs {
		t.Errorf("log has %d delivered lines, want %d", strings.Count(p.log.String(), `"message":"delivered"`), msgs)
	}
}

// TestE2EDevDefault runs `nanomx serve` with no config, as `make run`
// does, and checks that mail to any @localhost address lands in the one
// catch-all Maildir before the 250 is read.
func TestE2EDevDefault(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	p := startNanomx(t, dir, addr, "serve", "-listen", addr)
	for _, to := range []string{"someone@localhost", "Other.Person+tag@LOCALHOST", "../../etc/passwd@localhost"} {
		c, err := smtp.Dial(p.addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("me@example.org"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(to); err != nil {
			if strings.Contains(to, "/") {
				c.Close()
				continue // refused outright is fine too; it must not create a folder
			}
			t.Fatalf("RCPT %s: %v", to, err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "Subject: dev default\r\n\r\nto %s\r\n", to)
		if err := w.Close(); err != nil { // returns once the 250 is read
			t.Fatal(err)
		}
		found := false
		for _, b := range maildirFiles(t, filepath.Join(dir, "mail", "localhost", "catchall")) {
			if bytes.HasSuffix(b, []byte("\nto "+to+"\n")) {
				found = true
			}
		}
		if !found {
			t.Fatalf("message to %s not in mail/localhost/catchall/new after 250", to)
		}
		c.Quit()
	}
	ents, err := os.ReadDir(filepath.Join(dir, "mail", "localhost"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "catchall" {
		t.Fatalf("mail/localhost holds %v, want only catchall", ents)
	}
}

// TestE2EReloadOnHUP rewrites the config file with a new mailbox, sends
// SIGHUP, and checks that an open session survives and the new mailbox is
// served; then a broken file is refused and the old settings stay.
func TestE2EReloadOnHUP(t *testing.T) {
	p, root := startWithConfig(t)
	c, err := smtp.Dial(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example.org"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(p.dir, "nanomx.toml")
	conf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	withCarol := strings.Replace(string(conf), `"bob@example.test"]`, `"bob@example.test", "carol@example.test"]`, 1)
	if err := os.WriteFile(path, []byte(withCarol), 0o600); err != nil {
		t.Fatal(err)
	}
	waitLog := func(what string, n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(p.log.String(), what) < n {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", what, p.log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog("SIGHUP: configuration reloaded", 1)
	// The session opened before the reload goes on, and carol exists now.
	if err := c.Mail("s@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("carol@example.test"); err != nil {
		t.Fatalf("carol after reload: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "Subject: reload\r\n\r\nhi carol\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(maildirFiles(t, filepath.Join(root, "example.test", "carol"))); n != 1 {
		t.Fatalf("carol has %d messages", n)
	}
	// A broken file is refused; carol stays.
	if err := os.WriteFile(path, []byte(withCarol+"\nmax_recipients = \"many\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog("SIGHUP: configuration refused", 1)
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("s@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("carol@example.test"); err != nil {
		t.Fatalf("carol after a refused reload: %v", err)
	}
}

// startTLS runs the binary with a throwaway certificate.
func startTLS(t *testing.T) (*proc, string, *servertest.PKI) {
	t.Helper()
	return startTLSIn(t, t.TempDir(), "")
}

// startTLSIn is startTLS in dir, with more top-level keys.
func startTLSIn(t *testing.T, dir, extra string) (*proc, string, *servertest.PKI) {
	t.Helper()
	pki, err := servertest.NewPKI(dir, "mx.example.test")
	if err != nil {
		t.Fatal(err)
	}
	p, root := startWithExtra(t, dir, fmt.Sprintf("tls_cert = %q\ntls_key = %q\n", pki.CertFile, pki.KeyFile)+extra)
	return p, root, pki
}

// TestE2ESwaksTLS delivers with swaks --tls and checks the stored message
// records the TLS session.
func TestE2ESwaksTLS(t *testing.T) {
	swaks := needTool(t, "swaks", "swaks libnet-ssleay-perl libio-socket-ssl-perl")
	if out, _ := exec.Command(swaks, "--support").CombinedOutput(); !bytes.Contains(out, []byte("=== TLS supported")) {
		if os.Getenv("CI") != "" {
			t.Fatalf("swaks lacks TLS support (libnet-ssleay-perl):\n%s", out)
		}
		t.Skip("swaks lacks TLS support: apt-get install libnet-ssleay-perl libio-socket-ssl-perl")
	}
	p, root, pki := startTLS(t)
	host, port, _ := net.SplitHostPort(p.addr)
	cmd := exec.Command(swaks, "--server", host, "--port", port, "--tls", "--tls-verify",
		"--tls-ca-path", pki.CAFile, "--tls-sni", "mx.example.test",
		"--from", "s@example.org", "--to", "bob@example.test", "--helo", "swaks.example.org",
		"--data", "Subject: swaks tls\r\n\r\nover TLS", "--hide-all")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swaks --tls: %v\n%s\n%s", err, out, p.log.String())
	}
	files := maildirFiles(t, filepath.Join(root, "example.test", "bob"))
	if len(files) != 1 {
		t.Fatalf("%d files", len(files))
	}
	for _, b := range files {
		if !bytes.Contains(b, []byte("with ESMTPS\n\t(using TLSv1.")) || !bytes.HasSuffix(b, []byte("\nover TLS\n")) {
			t.Fatalf("stored: %s", b)
		}
	}
}

// TestE2EOpenSSLStartTLS: openssl s_client -starttls smtp connects and
// shows the configured certificate.
func TestE2EOpenSSLStartTLS(t *testing.T) {
	openssl := needTool(t, "openssl", "openssl")
	p, _, pki := startTLS(t)
	cmd := exec.Command(openssl, "s_client", "-starttls", "smtp", "-connect", p.addr,
		"-servername", "mx.example.test", "-CAfile", pki.CAFile, "-verify_return_error")
	cmd.Stdin = strings.NewReader("QUIT\r\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	for _, want := range []string{"subject=CN = mx.example.test", "issuer=CN = nanomx test CA", "Verify return code: 0 (ok)"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("openssl output lacks %q:\n%s", want, out)
		}
	}
}
