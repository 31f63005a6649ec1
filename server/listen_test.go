package server

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
)

// plantStale puts a file in bob's tmp/ that spool.New removes as its own
// leftover, and returns its path.
func plantStale(t *testing.T, root string) string {
	t.Helper()
	tmp := filepath.Join(root, "example.test", "bob", "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(tmp, "1700000000.M1P1Q1_nanomx.mx.example.test")
	if err := os.WriteFile(p, []byte("in flight"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestListenTakenPort: a port another process listens on fails New with
// the cause spelled out, before the spool logs "spool ready" or cleans tmp/
// (a second nanomx must not delete the running one's files in flight).
func TestListenTakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	cfg := testServerConfig(t)
	var logBuf bytes.Buffer
	cfg.Log = zerolog.New(&logBuf)
	cfg.Listen = []string{freePort(t), taken.Addr().String()}
	stale := plantStale(t, cfg.MaildirRoot)

	srv, err := New(cfg)
	if err == nil {
		t.Fatal("New succeeded on a taken port")
	}
	if want := "listen " + taken.Addr().String() + ": address already in use"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	var le *ListenError
	if !errors.As(err, &le) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %#v is not a *ListenError wrapping EADDRINUSE", err)
	}
	if _, err := os.Stat(stale); err != nil {
		t.Errorf("the stale tmp/ file is gone: the spool was started: %v", err)
	}
	if logBuf.Len() != 0 {
		t.Errorf("New logged before failing:\n%s", logBuf.String())
	}
	// The first address was probed and released again.
	ln, err := net.Listen("tcp", cfg.Listen[0])
	if err != nil {
		t.Fatalf("probe did not release %s: %v", cfg.Listen[0], err)
	}
	ln.Close()

	// Control: with the port free the same New starts the spool, which
	// cleans the file and says so; the assertions above are not vacuous.
	taken.Close()
	srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.spool.Close()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spool.New left the stale file: %v", err)
	}
	if !strings.Contains(logBuf.String(), "spool ready") {
		t.Errorf("no spool ready line:\n%s", logBuf.String())
	}
}

// TestListenOverlap: two listen addresses that overlap ("0.0.0.0:P" and
// "127.0.0.1:P") fail in New, as they would in gnet, not after the spool.
func TestListenOverlap(t *testing.T) {
	cfg := testServerConfig(t)
	_, port, _ := net.SplitHostPort(freePort(t))
	cfg.Listen = []string{"0.0.0.0:" + port, "127.0.0.1:" + port}
	_, err := New(cfg)
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.HasPrefix(err.Error(), "listen 127.0.0.1:"+port+": ") {
		t.Errorf("New = %v, want listen 127.0.0.1:%s: address already in use", err, port)
	}
}

// TestServeReportsBind: with keep-alive no longer set on the listener,
// gnet's own bind failure (the port taken between New and Serve) reads as
// the errno, not "setsockopt: bad file descriptor".
func TestServeReportsBind(t *testing.T) {
	cfg := testServerConfig(t)
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", cfg.Listen[0])
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	err = srv.Serve(t.Context())
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "setsockopt") {
		t.Errorf("Serve = %v, want listen %s: address already in use", err, cfg.Listen[0])
	}
}

func TestListenAddrValidate(t *testing.T) {
	for _, tc := range []struct{ addr, err string }{
		// Accepted: IPv4, IPv6 in brackets, every address, a name.
		{"127.0.0.1:25", ""},
		{"[::1]:2525", ""},
		{":25", ""},
		{"mx.example.test:25", ""},
		{"127.0.0.1:65535", ""},
		// A configuration error naming the address.
		{"127.0.0.1:99999", `listen: "127.0.0.1:99999": port 99999 is out of range (1-65535)`},
		{"127.0.0.1:0", `listen: "127.0.0.1:0": port 0 is out of range (1-65535)`},
		{"127.0.0.1:", `listen: "127.0.0.1:": missing port`},
		{"127.0.0.1", `listen: "127.0.0.1": missing port in address (write host:port, an IPv6 address in brackets: "[::]:25")`},
		{"::1:25", `listen: "::1:25": too many colons in address (write host:port, an IPv6 address in brackets: "[::]:25")`},
		{"127.0.0.1:smtp", `listen: "127.0.0.1:smtp": port "smtp" is not a number`},
		{"127.0.0.1:-1", `listen: "127.0.0.1:-1": port "-1" is not a number`},
	} {
		cfg := testServerConfig(t)
		cfg.Listen = []string{"127.0.0.1:2525", tc.addr}
		err := cfg.Validate()
		var ce *ConfigError
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.addr, err)
		case tc.err != "" && (err == nil || err.Error() != tc.err || !errors.As(err, &ce)):
			t.Errorf("%q: Validate = %v, want ConfigError %s", tc.addr, err, tc.err)
		}
	}
}

// TestGnetInfoAtDebug: gnet's banner ("Launching gnet with ...") is
// written at debug, so an info log starts with nanomx's own lines.
func TestGnetInfoAtDebug(t *testing.T) {
	var b bytes.Buffer
	g := gnetLogger{zerolog.New(&b).Level(zerolog.InfoLevel)}
	g.Infof("Launching gnet with %d event-loops", 1)
	if b.Len() != 0 {
		t.Errorf("gnet's Infof wrote at info: %s", b.String())
	}
	g = gnetLogger{zerolog.New(&b).Level(zerolog.DebugLevel)}
	g.Infof("Launching gnet with %d event-loops", 1)
	if !strings.Contains(b.String(), `"level":"debug"`) || !strings.Contains(b.String(), "Launching gnet with 1 event-loops") {
		t.Errorf("gnet's Infof at debug: %s", b.String())
	}
}
