// Package dovecottest starts a private Dovecot LMTP server for tests:
// its own configuration, state, log and mail in a temporary directory, a
// loopback port and a Unix socket, a passwd-file of users, stopped by PID
// at the end of the test. The LMTP listener part of its configuration is
// the example the README shows (server/lmtp/testdata/dovecot-lmtp.conf),
// with the address and port rewritten.
//
// Without Dovecot the test is skipped, except under CI=true, where it
// fails: CI installs dovecot-core and dovecot-lmtpd (.ci/run).
package dovecottest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a running private Dovecot.
type Server struct {
	// Addr is the LMTP listener, 127.0.0.1:port; Socket the Unix socket.
	Addr, Socket string
	// Dir holds everything: config, state, log, mail.
	Dir string

	t       testing.TB
	bin     string
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	mailDir string
	conf    string
	probes  int // start's own connections, which Connections leaves out
}

// Example returns the README's Dovecot example (the LMTP listener).
func Example() ([]byte, error) { return os.ReadFile(examplePath()) }

func examplePath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "dovecot-lmtp.conf")
}

// Start starts Dovecot with users (full addresses, user@domain) and
// stops it when the test ends.
func Start(t testing.TB, users ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		for _, p := range []string{"/usr/sbin/dovecot", "/usr/local/sbin/dovecot"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err == nil {
		if _, serr := os.Stat("/usr/lib/dovecot/lmtp"); serr != nil {
			err = fmt.Errorf("dovecot-lmtpd is not installed: %w", serr)
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dovecot needed under CI: %v", err)
		}
		t.Skipf("dovecot not available: %v", err)
	}

	// A short path: Unix socket names are bounded (108 bytes).
	dir, err := os.MkdirTemp("", "dvc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{t: t, Dir: dir, logPath: filepath.Join(dir, "dovecot.log"), mailDir: filepath.Join(dir, "mail")}
	for _, d := range []string{"base", "state", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	internal, login, mailUser := "dovecot", "dovenull", "mail"
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		internal, login, mailUser = u.Username, u.Username, u.Username
	}
	mu, err := user.Lookup(mailUser)
	if err != nil {
		t.Fatalf("dovecottest: mail user: %v", err)
	}
	uid, _ := strconv.Atoi(mu.Uid)
	gid, _ := strconv.Atoi(mu.Gid)
	if os.Geteuid() == 0 {
		if err := os.Chown(s.mailDir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}

	var pw bytes.Buffer
	for _, u := range users {
		fmt.Fprintf(&pw, "%s:{PLAIN}secret::::::\n", u)
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), pw.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	example, err := Example()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.Socket = filepath.Join(dir, "base", "lmtp")
	listener := strings.NewReplacer("address = 10.0.0.5", "address = 127.0.0.1", "port = 24\n", "port = "+strconv.Itoa(port)+"\n").Replace(string(example))
	if err := os.WriteFile(filepath.Join(dir, "20-nanomx.conf"), []byte(listener), 0o644); err != nil {
		t.Fatal(err)
	}
	s.conf = filepath.Join(dir, "dovecot.conf")
	conf := fmt.Sprintf(`protocols = lmtp
base_dir = %[1]s/base
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
info_log_path = %[1]s/dovecot.log
ssl = no
listen = 127.0.0.1
default_internal_user = %[2]s
default_internal_group = %[5]s
default_login_user = %[3]s
first_valid_uid = %[4]d
mail_uid = %[4]d
mail_gid = %[6]d
mail_location = maildir:%[1]s/mail/%%d/%%n
passdb {
  driver = passwd-file
  args = %[1]s/users
}
userdb {
  driver = passwd-file
  args = %[1]s/users
}
service anvil {
  chroot =
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
!include %[1]s/20-nanomx.conf
`, dir, internal, login, uid, groupName(internal), gid)
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.bin = bin
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// groupName is the primary group of user name.
func groupName(name string) string {
	u, err := user.Lookup(name)
	if err != nil {
		return name
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return name
	}
	return g.Name
}

func (s *Server) start() {
	t := s.t
	cmd := exec.Command(s.bin, "-F", "-c", s.conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			// A greeting: the lmtp process answers, not only master.
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "220 ") {
				s.probes++
				return
			}
		}
		select {
		case <-s.exited:
			t.Fatalf("dovecot exited: %s\n%s", out.String(), s.Log())
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			t.Fatalf("dovecot did not come up on %s: %v\n%s", s.Addr, err, s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops Dovecot (SIGTERM to its master, by PID; SIGKILL after 5 s)
// and waits for it. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
	// The master's children (lmtp, auth) end with it; wait until the port
	// is free so that a restart can bind it.
	for i := 0; i < 100; i++ {
		c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
}

// Restart starts a stopped server again, on the same port and store.
func (s *Server) Restart() {
	if s.cmd == nil {
		s.start()
	}
}

// MailDir is the store: <MailDir>/<domain>/<user>/{new,cur,tmp}, the
// layout of nanomx's maildir_root, so bench.VerifyMaildir reads it.
func (s *Server) MailDir() string { return s.mailDir }

// Log returns Dovecot's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// Connections counts the LMTP connections Dovecot logged (each begins
// with its greeting and our LHLO), start's readiness probes left out.
// Dovecot logs a connection once its lmtp process took it: count after
// the client's transactions are done.
func (s *Server) Connections() int {
	return strings.Count(s.Log(), ": Info: Connect from ") - s.probes
}

// Messages returns the messages in user's (user@domain) INBOX, new/ and
// cur/, by file name.
func (s *Server) Messages(addr string) map[string][]byte {
	s.t.Helper()
	local, domain, _ := strings.Cut(addr, "@")
	out := make(map[string][]byte)
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(s.mailDir, domain, local, sub)
		entries, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			s.t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				s.t.Fatal(err)
			}
			out[e.Name()] = b
		}
	}
	return out
}

// Stored strips what Dovecot puts in front of a delivered message
// (Return-Path, Delivered-To and its own Received field: the fields
// before the first line that starts with prefix) and returns the rest.
// With no such line it returns msg whole.
func Stored(msg []byte, prefix string) []byte {
	if bytes.HasPrefix(msg, []byte(prefix)) {
		return msg
	}
	if i := bytes.Index(msg, []byte("\n"+prefix)); i >= 0 {
		return msg[i+1:]
	}
	return msg
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
