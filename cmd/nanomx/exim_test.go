package main

// Interoperability with a real Exim (4.96, Debian 12's default MTA) sending
// to the real binary, in plaintext and over STARTTLS. Exim pipelines
// "BDAT n LAST" + data and QUIT, then half-closes its side (shutdown
// SHUT_WR): a server that closes on that EOF before answering makes Exim
// defer and send the message again, and a TLS session that ends without a
// close_notify makes Exim log "The TLS connection was non-properly
// terminated". Each variant queues eximMessages messages, runs Exim's queue
// and checks that every message was delivered once, with CHUNKING, and
// stored once.
//
// Exim is the exim4-daemon-light package unpacked (never installed) by
// .ci/run into /opt/nanomx-test/exim; NANOMX_EXIM names another binary. It
// runs as root with its own configuration, spool and logs in a temporary
// folder; its deliveries run as the Debian-exim user compiled into Debian's
// build (.ci/run creates it).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/servertest"
)

const (
	eximDefault   = "/opt/nanomx-test/exim/usr/sbin/exim4"
	eximUser      = "Debian-exim" // EXIM_USER of Debian's build
	eximMessages  = 20
	eximQueueRuns = 3 // a message deferred by the first run is sent again by the next
	eximRunLimit  = 20 * time.Second
)

// eximMissing fails the test in CI and skips it elsewhere, saying why.
func eximMissing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; .ci/run must install Exim", msg)
	}
	t.Skipf("%s (.ci/run shows how to unpack exim4-daemon-light there)", msg)
}

// needExim returns the Exim binary and the uid and gid its deliveries run
// as. In CI a missing Exim fails the test; elsewhere it skips, saying why.
func needExim(t *testing.T) (bin string, uid, gid int) {
	t.Helper()
	missing := func(format string, args ...any) { t.Helper(); eximMissing(t, format, args...) }
	bin = os.Getenv("NANOMX_EXIM")
	if bin == "" {
		bin = eximDefault
	}
	if !fileExists(bin) {
		missing("Exim not found at %s (set NANOMX_EXIM)", bin)
	}
	if os.Geteuid() != 0 {
		missing("the Exim test runs Exim as root with its own configuration; not root")
	}
	u, err := user.Lookup(eximUser)
	if err != nil {
		missing("user %s missing: %v", eximUser, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return bin, uid, gid
}

// eximEnv is one private Exim: configuration, spool and logs in dir.
type eximEnv struct {
	t    *testing.T
	bin  string
	dir  string
	conf string
}

// newExim writes a configuration that routes every address to 127.0.0.1
// on port with CHUNKING and PIPELINING (Exim's defaults), and with TLS
// required (verifying the certificate against pki) or avoided.
func newExim(t *testing.T, bin string, uid, gid int, port string, pki *servertest.PKI) *eximEnv {
	t.Helper()
	// Deliveries run as Debian-exim, so the spool must be reachable by it:
	// a folder of its own under /tmp, not inside t.TempDir (mode 0700).
	dir, err := os.MkdirTemp("", "nanomx-exim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"spool", "log"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	tlsOpts := "  hosts_avoid_tls = *\n"
	if pki != nil {
		ca := filepath.Join(dir, "ca.pem")
		b, err := os.ReadFile(pki.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ca, b, 0o644); err != nil {
			t.Fatal(err)
		}
		tlsOpts = fmt.Sprintf("  hosts_require_tls = *\n  tls_verify_hosts = *\n  tls_verify_certificates = %s\n  tls_sni = %s\n", ca, pki.Host)
	}
	conf := fmt.Sprintf(`primary_hostname = sender.test
qualify_domain = sender.test
spool_directory = %[1]s/spool
log_file_path = %[1]s/log/%%slog
pid_file_path = %[1]s/exim.pid
host_lookup =
rfc1413_hosts =
keep_environment =
log_selector = +outgoing_port +deliver_time

begin routers
nanomx:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = nanomx_smtp
  self = send

begin transports
nanomx_smtp:
  driver = smtp
  port = %[2]s
  allow_localhost
  connect_timeout = 5s
  command_timeout = 10s
  data_timeout = 10s
  final_timeout = 10s
  hosts_try_chunking = *
%[3]s
begin retry
* * F,1h,15m
`, dir, port, tlsOpts)
	path := filepath.Join(dir, "exim.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// -bV with this configuration (never without: Exim would create
	// /var/spool/exim4) shows Exim can run here: its libraries are there.
	out, err := exec.Command(bin, "-C", path, "-bV").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("Exim version 4.")) {
		eximMissing(t, "%s -bV: %v\n%s", bin, err, out)
	}
	return &eximEnv{t: t, bin: bin, dir: dir, conf: path}
}

// run runs Exim with the configuration, bounded in time; the whole process
// group (the queue runner forks a delivery per message) is killed on
// timeout.
func (e *eximEnv) run(stdin string, args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eximRunLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, append([]string{"-C", e.conf}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("exim %s: %v\n%s\nmainlog:\n%s", strings.Join(args, " "), err, out, e.log("mainlog"))
	}
	return string(out)
}

// log returns one of Exim's logs (mainlog, paniclog, rejectlog), "" if absent.
func (e *eximEnv) log(name string) string {
	b, err := os.ReadFile(filepath.Join(e.dir, "log", name))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatal(err)
	}
	return string(b)
}

// queued is the number of messages in Exim's queue.
func (e *eximEnv) queued() int {
	e.t.Helper()
	out := strings.TrimSpace(e.run("", "-bpc"))
	n, err := strconv.Atoi(out)
	if err != nil {
		e.t.Fatalf("exim -bpc: %q", out)
	}
	return n
}

var eximSubjectRE = regexp.MustCompile(`(?m)^Subject: (exim-[a-z]+-\d+)$`)

func TestEximPlain(t *testing.T) { testExim(t, false) }
func TestEximTLS(t *testing.T)   { testExim(t, true) }

func testExim(t *testing.T, useTLS bool) {
	bin, uid, gid := needExim(t)
	variant := "plain"
	var p *proc
	var root string
	var pki *servertest.PKI
	if useTLS {
		variant = "tls"
		p, root, pki = startTLS(t)
	} else {
		p, root = startWithConfig(t)
	}
	_, port, _ := net.SplitHostPort(p.addr)
	e := newExim(t, bin, uid, gid, port, pki)

	// Queue the messages, each with its own Subject and Message-ID; -odq
	// routes nothing yet, so the queue run sends each on a connection of
	// its own, ending with the pipelined BDAT LAST and QUIT.
	for i := 1; i <= eximMessages; i++ {
		tag := fmt.Sprintf("exim-%s-%02d", variant, i)
		msg := fmt.Sprintf("From: s@sender.test\nTo: bob@example.test\nSubject: %s\nMessage-ID: <%s@sender.test>\n\nmessage %s\n", tag, tag, tag)
		e.run(msg, "-odq", "-f", "s@sender.test", "bob@example.test")
	}
	if n := e.queued(); n != eximMessages {
		t.Fatalf("%d messages queued, want %d\n%s", n, eximMessages, e.log("mainlog"))
	}
	// A message Exim deferred is forced out again by the next run, as a
	// real Exim's retry would (the duplicate this test looks for).
	runs := 0
	for runs < eximQueueRuns && e.queued() > 0 {
		e.run("", "-qff")
		runs++
	}
	mainlog := e.log("mainlog")
	t.Logf("Exim's main log after %d queue run(s):\n%s", runs, mainlog)

	// What landed: each message exactly once.
	stored := make(map[string]int)
	for name, b := range maildirFiles(t, filepath.Join(root, "example.test", "bob")) {
		m := eximSubjectRE.FindSubmatch(b)
		if m == nil {
			t.Errorf("%s: no exim Subject:\n%s", name, b)
			continue
		}
		stored[string(m[1])]++
		if useTLS && !bytes.Contains(b, []byte(" with ESMTPS\n\t(using TLSv1.")) {
			t.Errorf("%s: not received over TLS:\n%s", name, b)
		}
	}
	var dup, lost []string
	for i := 1; i <= eximMessages; i++ {
		tag := fmt.Sprintf("exim-%s-%02d", variant, i)
		switch n := stored[tag]; {
		case n == 0:
			lost = append(lost, tag)
		case n > 1:
			dup = append(dup, fmt.Sprintf("%s ×%d", tag, n))
		}
	}
	if len(dup) > 0 {
		t.Errorf("%d of %d messages stored more than once: %s", len(dup), eximMessages, strings.Join(dup, ", "))
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d messages not stored: %s", len(lost), eximMessages, strings.Join(lost, ", "))
	}

	// What Exim saw: one delivery per message, with CHUNKING (the K flag)
	// and, for TLS, a verified TLS session (X=..., CV=yes); no defer, no
	// retry, no complaint about the end of the session.
	var delivered int
	for _, line := range strings.Split(mainlog, "\n") {
		if !strings.Contains(line, " => bob@example.test ") {
			continue
		}
		delivered++
		if !strings.Contains(line, " K C=\"250") {
			t.Errorf("delivered without CHUNKING (no K flag): %s", line)
		}
		if useTLS && (!strings.Contains(line, " X=TLS1.") || !strings.Contains(line, " CV=yes")) {
			t.Errorf("delivered without a verified TLS session: %s", line)
		}
	}
	if delivered != eximMessages {
		t.Errorf("Exim logged %d deliveries (=>), want %d", delivered, eximMessages)
	}
	for _, bad := range []string{
		"Remote host closed connection in response to pipelined end of data",
		"TLS connection was non-properly terminated",
		" == ", // a deferred delivery
		" ** ", // a bounce
		"retry time not reached",
	} {
		if n := strings.Count(mainlog, bad); n > 0 {
			t.Errorf("Exim's main log has %q on %d line(s)", bad, n)
		}
	}
	if runs != 1 {
		t.Errorf("Exim's queue needed %d runs, want 1", runs)
	}
	if n := e.queued(); n != 0 {
		t.Errorf("%d messages still in Exim's queue", n)
	}
	if pl := e.log("paniclog"); pl != "" {
		t.Errorf("Exim's panic log:\n%s", pl)
	}
	if t.Failed() {
		t.Logf("nanomx log:\n%s", p.log.String())
	}
}
