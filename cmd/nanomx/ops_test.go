package main

// Start-up, logging and reload as an operator sees them: listen failures,
// restart-only keys, the log writer in front of stdout.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/nanomx/nanomx/server"
)

// runBinary runs the built nanomx with args in dir until it exits (at
// most 20 s) and returns its exit code and output.
func runBinary(t *testing.T, dir string, cred *syscall.Credential, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("nanomx %q did not exit\n%s%s", args, out.String(), errOut.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// listenConfig is a complete config listening on addr, storing under root.
func listenConfig(addr, root string) string {
	return fmt.Sprintf(`hostname = "mx.example.test"
listen = [%q]
maildir_root = %q
domains = ["example.test"]
postmaster = "bob@example.test"
mailboxes = ["bob@example.test"]
`, addr, root)
}

// TestListenTakenBinary: the real binary on a port another process holds
// says so and exits 1, before the spool starts: no "spool ready", and a
// file in tmp/ that start-up would clean is still there.
func TestListenTakenBinary(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	root := filepath.Join(dir, "mail")
	stale := filepath.Join(root, "example.test", "bob", "tmp", "1700000000.M1P1Q1_nanomx.mx.example.test")
	if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("in flight"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := writeConfig(t, listenConfig(taken.Addr().String(), root))

	code, out, errOut := runBinary(t, dir, nil, binPath, "serve", "-config", conf)
	want := `"error":"listen ` + taken.Addr().String() + `: address already in use"`
	if code != exitError || !strings.Contains(out, want) {
		t.Errorf("exit %d, want %d and %s in the log:\n%s%s", code, exitError, want, out, errOut)
	}
	if strings.Contains(out, "spool ready") || strings.Contains(out, "setsockopt") {
		t.Errorf("log:\n%s", out)
	}
	if _, err := os.Stat(stale); err != nil {
		t.Errorf("the tmp/ file in flight was removed: %v", err)
	}

	// The development default does not claim "Listening on" first.
	code, out, errOut = runBinary(t, dir, nil, binPath, "serve", "-listen", taken.Addr().String())
	if code != exitError || !strings.Contains(out, want) || strings.Contains(errOut, "Listening on") {
		t.Errorf("development default: exit %d\n%s%s", code, out, errOut)
	}
}

// TestListenMalformedBinary: a port out of range is a configuration error
// (exit 2) naming the flag and the key, and nothing starts.
func TestListenMalformedBinary(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runBinary(t, dir, nil, binPath, "serve", "-listen", "127.0.0.1:99999")
	want := `nanomx: flag -listen: listen: "127.0.0.1:99999": port 99999 is out of range (1-65535)` + "\n"
	if code != exitUsage || errOut != want || out != "" {
		t.Errorf("exit %d, stderr %q, stdout %q; want %d, %q, nothing", code, errOut, out, exitUsage, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "mail")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mail/ was created: %v", err)
	}
}

// TestListenPermissionDenied: a privileged port without the privilege
// says "permission denied". The tests run as root here, so the binary
// runs as nobody (uid 65534); as another user it runs as that user.
func TestListenPermissionDenied(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		t.Skip("no ip_unprivileged_port_start:", err)
	}
	start, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || start <= 1 {
		t.Skipf("ip_unprivileged_port_start is %q: no port is privileged here", b)
	}
	addr := "127.0.0.1:" + strconv.Itoa(start-1)

	// A folder nobody can read and write: the config, the binary, the
	// maildir root.
	dir, err := os.MkdirTemp("", "nanomx-eacces")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := binPath
	var cred *syscall.Credential
	root := filepath.Join(dir, "mail")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		const nobody = 65534
		cred = &syscall.Credential{Uid: nobody, Gid: nobody}
		bin = filepath.Join(dir, "nanomx")
		exe, err := os.ReadFile(binPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, exe, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(root, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "nanomx.toml")
	if err := os.WriteFile(conf, []byte(listenConfig(addr, root)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runBinary(t, dir, cred, bin, "serve", "-config", conf)
	want := `"error":"listen ` + addr + `: permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"`
	if start > 1024 {
		want = `"error":"listen ` + addr + `: permission denied`
	}
	if code != exitError || !strings.Contains(out, want) || strings.Contains(out, "spool ready") {
		t.Errorf("exit %d, want %d and %s before any spool ready:\n%s%s", code, exitError, want, out, errOut)
	}
}

// fakeServer records what reload hands the server.
type fakeServer struct {
	got []server.Config
	err error
}

func (f *fakeServer) Reload(cfg server.Config) error {
	f.got = append(f.got, cfg)
	return f.err
}

// restartOnlyChange sets each restart-only key to something other than
// the value in reloadBase.
var restartOnlyChange = map[string]string{
	"listen":       `listen = ["127.0.0.1:2600"]`,
	"maildir_root": `maildir_root = "/srv/other"`,
	"hostname":     `hostname = "other.example.test"`,
	"workers":      `workers = 9`,
	"queue_length": `queue_length = 17`,
	"fsync":        `fsync = false`,
	"group_commit": `group_commit = false`,
	"event_loops":  `event_loops = 3`,
	"sched_batch":  `sched_batch = false`,
	"log_format":   `log_format = "console"`,
	"pprof":        `pprof = "127.0.0.1:6061"`,
	"dns_servers":  `dns_servers = ["127.0.0.1:5300"]`,
	"dns_timeout":  `dns_timeout = "2s"`,

	"dnsbl_sites":                `dnsbl_sites = ["bl.example.test"]`,
	"dnsbl_threshold":            `dnsbl_threshold = 2`,
	"dnsbl_action":               `dnsbl_action = "connect"`,
	"screen_allow":               `screen_allow = ["192.0.2.0/24"]`,
	"max_connections_per_minute": `max_connections_per_minute = 60`,
	"max_messages_per_minute":    `max_messages_per_minute = 60`,
	"max_recipients_per_minute":  `max_recipients_per_minute = 60`,

	"delivery":                `delivery = "lmtp"`,
	"lmtp":                    `lmtp = "127.0.0.1:24"`,
	"lmtp_check_rcpt":         `lmtp_check_rcpt = true`,
	"lmtp_connections":        `lmtp_connections = 7`,
	"lmtp_timeout":            `lmtp_timeout = "9s"`,
	"proxy_listen":            `proxy_listen = ["127.0.0.1:2601"]`,
	"metrics":                 `metrics = "127.0.0.1:9126"`,
	"metrics_allow_public":    `metrics_allow_public = true`,
	"spf":                     `spf = false`,
	"dkim":                    `dkim = false`,
	"dmarc":                   `dmarc = false`,
	"iprev":                   `iprev = false`,
	"authserv_id":             `authserv_id = "auth.example.test"`,
	"dmarc_reject_action":     `dmarc_reject_action = "junk"`,
	"dmarc_quarantine_action": `dmarc_quarantine_action = "header"`,
	"spf_fail_action":         `spf_fail_action = "reject"`,
	"junk_folder":             `junk_folder = "Spam"`,

	"rspamd_url":            `rspamd_url = "http://127.0.0.1:11333"`,
	"rspamd_timeout":        `rspamd_timeout = "20s"`,
	"rspamd_max_size":       `rspamd_max_size = "100KiB"`,
	"rspamd_max_concurrent": `rspamd_max_concurrent = 4`,
	"rspamd_on_error":       `rspamd_on_error = "tempfail"`,
	"rspamd_junk":           `rspamd_junk = true`,
}

const reloadBase = `postmaster = "a@example.test"
domains = ["example.test"]
mailboxes = ["a@example.test"]
log_level = "info"
`

// TestRestartOnlyKeys: a reload that changes a restart-only key is
// refused whole, naming the key and its line, without reaching the
// server; log_level and the other keys apply, log_level at once.
func TestRestartOnlyKeys(t *testing.T) {
	defer zerolog.SetGlobalLevel(zerolog.GlobalLevel())
	running, _, err := loadDoc(t, reloadBase)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range restartOnlyKeys() {
		change, ok := restartOnlyChange[key]
		if !ok {
			t.Errorf("restartOnlyChange has no value for %q", key)
			continue
		}
		next, path, err := loadDoc(t, reloadBase+change+"\n")
		if err != nil {
			t.Fatal(err)
		}
		var srv fakeServer
		wantErr(t, reload(running, next, &srv), "config "+path+":5: "+key+": cannot change without a restart")
		if len(srv.got) != 0 {
			t.Errorf("%s: the refused config reached the server", key)
		}
	}

	// log_level and ordinary keys go through, and the level applies.
	zerolog.SetGlobalLevel(zerolog.InfoLevel)
	next, _, err := loadDoc(t, strings.Replace(reloadBase, `"info"`, `"debug"`, 1)+"max_connections = 7\n")
	if err != nil {
		t.Fatal(err)
	}
	var srv fakeServer
	if err := reload(running, next, &srv); err != nil {
		t.Fatal(err)
	}
	if len(srv.got) != 1 || srv.got[0].MaxConnections != 7 {
		t.Errorf("server got %+v", srv.got)
	}
	if zerolog.GlobalLevel() != zerolog.DebugLevel {
		t.Errorf("global level %v after reloading log_level = debug", zerolog.GlobalLevel())
	}
	// When the server refuses, the level stays.
	next, path, err := loadDoc(t, strings.Replace(reloadBase, `"info"`, `"error"`, 1)+"max_connections = 7\n")
	if err != nil {
		t.Fatal(err)
	}
	srv.err = &server.ConfigError{Key: "max_connections", Err: errors.New("no")}
	wantErr(t, reload(running, next, &srv), "config "+path+":5: max_connections: no")
	if zerolog.GlobalLevel() != zerolog.DebugLevel {
		t.Errorf("a refused reload changed the level to %v", zerolog.GlobalLevel())
	}
}

// TestRestartOnlyCoversServer: every key server.Reload refuses as fixed
// at start-up is in restartOnly, so the usage text and the README do not
// call a key reloadable that the server refuses. It reads Reload's table
// from server/server.go.
func TestRestartOnlyCoversServer(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "server", "server.go"))
	if err != nil {
		t.Fatal(err)
	}
	body := string(src)
	i := strings.Index(body, "func (s *Server) Reload(")
	if i < 0 {
		t.Fatal("server.go has no Reload")
	}
	body = body[i:]
	if j := strings.Index(body, "\n}\n"); j > 0 {
		body = body[:j]
	}
	m := regexp.MustCompile(`\{"([a-z_]+)", cfg\.`).FindAllStringSubmatch(body, -1)
	if len(m) == 0 {
		t.Fatal("found no restart-only table in server.Reload; update this test")
	}
	for _, k := range m {
		if !slices.Contains(restartOnlyKeys(), k[1]) {
			t.Errorf("server.Reload refuses %q, which restartOnly does not list", k[1])
		}
	}
}

// restartListRE finds "a, b and c need a restart" with optional `quotes`.
var restartListRE = regexp.MustCompile("((?:`?[a-z_]+`?, )*`?[a-z_]+`? and `?[a-z_]+`?) need a restart")

func restartList(t *testing.T, where, text string) []string {
	t.Helper()
	m := restartListRE.FindStringSubmatch(strings.Join(strings.Fields(text), " "))
	if m == nil {
		t.Fatalf("%s lists no keys that need a restart", where)
	}
	var keys []string
	for _, k := range regexp.MustCompile("[a-z_]+").FindAllString(strings.ReplaceAll(m[1], " and ", ", "), -1) {
		keys = append(keys, k)
	}
	return keys
}

// TestRestartOnlyDocumented: "nanomx help serve" and README.md list the
// keys restartOnly holds.
func TestRestartOnlyDocumented(t *testing.T) {
	var usage strings.Builder
	if code := run([]string{"help", "serve"}, &usage, io.Discard); code != exitOK {
		t.Fatal(code)
	}
	if got := restartList(t, "nanomx help serve", usage.String()); !slices.Equal(got, restartOnlyKeys()) {
		t.Errorf("help serve lists %v, want %v", got, restartOnlyKeys())
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if got := restartList(t, "README.md", string(readme)); !slices.Equal(got, restartOnlyKeys()) {
		t.Errorf("README.md lists %v, want %v", got, restartOnlyKeys())
	}
}

// openPTY returns the terminal end of a new pseudo-terminal and its
// controlling end.
func openPTY(t *testing.T) (tty, ptm *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skip("no /dev/ptmx:", err)
	}
	t.Cleanup(func() { ptm.Close() })
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty, ptm
}

// TestConsoleColor: the console format has colours on a terminal and
// none anywhere else.
func TestConsoleColor(t *testing.T) {
	tty, _ := openPTY(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if !isTerminal(tty) || isTerminal(w) || isTerminal(&bytes.Buffer{}) {
		t.Fatalf("isTerminal: tty %v, pipe %v, buffer %v", isTerminal(tty), isTerminal(w), isTerminal(&bytes.Buffer{}))
	}
	for _, color := range []bool{false, true} {
		var b bytes.Buffer
		lg := formatLogger(&b, logConsole, color)
		lg.Info().Str("k", "v").Msg("hello")
		if got := strings.Contains(b.String(), "\x1b["); got != color {
			t.Errorf("color %v: escape codes %v in %q", color, got, b.String())
		}
	}
}

// TestDropNotice: the notice is a line in the log's format, a warning,
// and written even when log_level is above warn.
func TestDropNotice(t *testing.T) {
	defer zerolog.SetGlobalLevel(zerolog.GlobalLevel())
	zerolog.SetGlobalLevel(zerolog.ErrorLevel)
	line := dropNotice(logJSON, false)(42)
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil || !bytes.HasSuffix(line, []byte("\n")) {
		t.Fatalf("notice %q: %v", line, err)
	}
	if m["level"] != "warn" || m["dropped"] != 42.0 || !strings.HasPrefix(m["message"].(string), "42 log lines dropped") || m["time"] == nil {
		t.Errorf("notice %s", line)
	}
	if c := string(dropNotice(logConsole, false)(3)); !strings.Contains(c, "WRN") || !strings.Contains(c, "3 log lines dropped") || strings.Contains(c, "{") {
		t.Errorf("console notice %q", c)
	}
}

// gate is a stdout that takes nothing until opened, like a stuck
// journald: the child's pipe fills and its writes would block.
type gate struct {
	open chan struct{}
	once sync.Once
	buf  syncBuffer
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	return g.buf.Write(p)
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// TestBlockedStdout: while nothing reads the binary's stdout, it keeps
// serving (with synchronous logging the event loop would stop once the
// 64 KiB pipe is full), and once stdout moves again the log comes out in
// order up to the last line, "nanomx stopped".
func TestBlockedStdout(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	root := filepath.Join(dir, "mail")
	// Debug logs every reply: each session writes ~2 KB of log.
	conf := writeConfig(t, listenConfig(addr, root)+"log_level = \"debug\"\nfsync = false\nmax_connections_per_ip = 100\n")
	g := &gate{open: make(chan struct{})}
	cmd := exec.Command(binPath, "serve", "-config", conf)
	cmd.Dir = dir
	var errOut syncBuffer
	cmd.Stdout, cmd.Stderr = g, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			// Wait returns only once the copy into g has ended.
			_ = cmd.Process.Kill()
			g.release()
			<-exited
		}
	}()

	// Wait until it listens; the log is blocked, so ask the port.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not listening: %v\n%s", err, errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// 200 sessions: ~400 KB of log, six times the pipe, a third of the
	// writer's buffer.
	const sessions = 200
	for i := range sessions {
		done := make(chan error, 1)
		go func() {
			done <- smtp.SendMail(addr, nil, "s@example.org", []string{"bob@example.test"},
				fmt.Appendf(nil, "Subject: blocked stdout %d\r\n\r\nhello\r\n", i))
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d got no answer in 10 s while stdout was blocked", i)
		}
	}
	if n := len(maildirFiles(t, filepath.Join(root, "example.test", "bob"))); n != sessions {
		t.Errorf("%d messages stored, want %d", n, sessions)
	}

	g.release()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("exit: %v\n%s", waitErr, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("did not stop on SIGTERM")
	}
	log := strings.TrimSuffix(g.buf.String(), "\n")
	lines := strings.Split(log, "\n")
	if !strings.Contains(lines[len(lines)-1], `"message":"nanomx stopped"`) {
		t.Errorf("last log line %q, want nanomx stopped", lines[len(lines)-1])
	}
	delivered := 0
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("not a whole JSON line: %q", l)
		}
		if strings.HasPrefix(l, `{"level":"info",`) && strings.Contains(l, `"message":"delivered"`) {
			delivered++
		}
	}
	if delivered != sessions {
		t.Errorf("%d delivered lines, want %d", delivered, sessions)
	}
	t.Logf("%d log lines, %d bytes", len(lines), len(log))
}

// TestE2EReloadLogLevel: a SIGHUP that raises log_level to debug brings
// the session's debug lines at once; one that changes log_format is
// refused, naming the key.
func TestE2EReloadLogLevel(t *testing.T) {
	dir := t.TempDir()
	p, _ := startWithExtra(t, dir, "log_level = \"info\"\n")
	path := filepath.Join(p.dir, "nanomx.toml")
	conf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	waitLog := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(p.log.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", what, p.log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	session := func() {
		t.Helper()
		c, err := smtp.Dial(p.addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	}
	session()
	waitLog(`"message":"connection closed"`)
	if strings.Contains(p.log.String(), `"level":"debug"`) {
		t.Fatalf("debug lines at log_level info:\n%s", p.log.String())
	}

	debug := strings.Replace(string(conf), `log_level = "info"`, `log_level = "debug"`, 1)
	if err := os.WriteFile(path, []byte(debug), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog("SIGHUP: configuration reloaded")
	session()
	waitLog(`"level":"debug","sid"`)
	waitLog(`"message":"connection opened"`)

	console := "log_format = \"console\"\n" + debug // before the tables
	if err := os.WriteFile(path, []byte(console), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog("SIGHUP: configuration refused")
	if !strings.Contains(p.log.String(), `log_format: cannot change without a restart`) {
		t.Errorf("refusal does not name log_format:\n%s", p.log.String())
	}
}
