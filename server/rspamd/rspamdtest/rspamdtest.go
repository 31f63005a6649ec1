// Package rspamdtest starts a private rspamd (Debian's rspamd package) for
// tests: its own configuration, database, run and log folders in
// t.TempDir(), one normal worker on a free loopback port, no controller,
// no proxy, no redis, and every module that would ask the network (DNS
// lists, SPF, DKIM, DMARC, fuzzy, ...) off, so that scores are the same on
// every run and a scan takes milliseconds. It is stopped by PID when the
// test ends.
//
// rspamd compiles its hyperscan databases at start-up (the TLD list alone
// takes ~12 s of CPU); they are kept in one cache folder under
// os.TempDir() (nanomx-rspamdtest-hs), shared by every instance, so only
// the first start on a machine pays for it.
//
// Test rules, on top of rspamd's own (the GTUBE pattern rejects):
//   - a header field X-Nanomx-Test-Score: N adds N to the score (symbol
//     NANOMX_TEST_SCORE), so a test picks the action: under 4 "no action",
//     4 "greylist", 6 "add header", 10 "rewrite subject", 15 "reject";
//   - X-Nanomx-Test-Action: ACTION forces that action (a prefilter's
//     pre-result), with X-Nanomx-Test-Message as its SMTP message.
//
// Where rspamd is not installed, Start skips the test, or fails it when
// the environment variable CI is "true".
package rspamdtest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// ConfDir is rspamd's stock configuration, which the private one includes.
const ConfDir = "/etc/rspamd"

// startTimeout bounds a start: the first on a machine compiles the
// hyperscan cache, on a shared CPU.
const startTimeout = 90 * time.Second

// Instance is a running private rspamd.
type Instance struct {
	// URL is the normal worker's base URL, e.g. "http://127.0.0.1:41333".
	URL string
	// Addr is its host:port.
	Addr string
	// PID is rspamd's main process.
	PID int
	// Dir holds its configuration and log (log/rspamd.log).
	Dir string
}

// Binary returns the path of the rspamd binary, or "".
func Binary() string {
	if p, err := exec.LookPath("rspamd"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/rspamd", "/usr/sbin/rspamd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Require skips tb (or fails it under CI=true) when rspamd is missing, and
// returns the binary's path.
func Require(tb testing.TB) string {
	tb.Helper()
	bin := Binary()
	_, cerr := os.Stat(filepath.Join(ConfDir, "common.conf"))
	if bin != "" && cerr == nil {
		return bin
	}
	msg := "rspamd is not installed (apt-get install rspamd)"
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// Start starts a private rspamd and waits until it answers GET /ping.
func Start(tb testing.TB) *Instance {
	tb.Helper()
	bin := Require(tb)
	dir := tb.TempDir()
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		in, err := start(tb, bin, filepath.Join(dir, strconv.Itoa(attempt)))
		if err == nil {
			return in
		}
		last = err
	}
	tb.Fatalf("rspamd did not start: %v", last)
	return nil
}

func start(tb testing.TB, bin, dir string) (*Instance, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	cache := filepath.Join(os.TempDir(), "nanomx-rspamdtest-hs")
	for _, d := range []string{"local.d", "db", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	if err := writeConfig(dir, addr, cache); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "log", "stdout.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(bin, "-f", "-i", "-c", filepath.Join(dir, "rspamd.conf"),
		"--var=CONFDIR="+ConfDir,
		"--var=LOCAL_CONFDIR="+dir,
		"--var=DBDIR="+filepath.Join(dir, "db"),
		"--var=RUNDIR="+filepath.Join(dir, "run"),
		"--var=LOGDIR="+filepath.Join(dir, "log"),
	)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: rspamd forks its workers, and a stop that
	// has to force them kills that group, and only it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	in := &Instance{URL: "http://" + addr, Addr: addr, PID: cmd.Process.Pid, Dir: dir}
	stop := func() {
		_ = syscall.Kill(in.PID, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-in.PID, syscall.SIGKILL)
			<-exited
		}
	}
	deadline := time.Now().Add(startTimeout)
	hc := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-exited:
			return nil, fmt.Errorf("rspamd exited: %s", logTail(dir))
		default:
		}
		if resp, err := hc.Get(in.URL + "/ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				tb.Cleanup(stop)
				return in, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("no answer to /ping within %v: %s", startTimeout, logTail(dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// logTail is the end of rspamd's logs, for a failure message.
func logTail(dir string) string {
	var b bytes.Buffer
	for _, name := range []string{"stdout.log", "rspamd.log"} {
		data, _ := os.ReadFile(filepath.Join(dir, "log", name))
		if len(data) > 2000 {
			data = data[len(data)-2000:]
		}
		b.Write(data)
	}
	return b.String()
}

// Modules off: each asks the network (DNS lists, SPF, DKIM, DMARC,
// fuzzy storage, map downloads) or needs redis.
var modulesOff = []string{
	"arc", "asn", "dcc", "dkim", "dmarc", "emails", "fuzzy_check", "greylist",
	"hfilter", "multimap", "mx_check", "neural", "phishing", "ratelimit",
	"rbl", "replies", "reputation", "rspamd_update", "spf", "surbl",
	"url_redirector", "whitelist",
}

func writeConfig(dir, addr, cache string) error {
	files := map[string]string{
		// The stock top level, minus the controller, proxy and fuzzy
		// workers; one normal worker on addr.
		"rspamd.conf": `.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging {
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "warning";
}
worker "normal" {
    bind_socket = "` + addr + `";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}
`,
		// DNS goes nowhere (a closed loopback port) and fails fast.
		"local.d/options.inc": `dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }
hs_cache_dir = "` + cache + `";
`,
		"local.d/actions.conf": `rewrite_subject = 10;
subject = "***SPAM*** %s";
`,
		// Tests connect from loopback, which rspamd would spare the headers.
		"local.d/milter_headers.conf": `use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-level"];
skip_local = false;
`,
		"rspamd.local.lua": `rspamd_config:register_symbol({
  name = 'NANOMX_TEST_SCORE', score = 1.0, group = 'nanomx',
  callback = function(task)
    local v = task:get_header('X-Nanomx-Test-Score')
    if v then task:insert_result('NANOMX_TEST_SCORE', tonumber(v)) end
  end,
})
rspamd_config:register_symbol({
  name = 'NANOMX_TEST_ACTION', type = 'prefilter', priority = 10,
  callback = function(task)
    local a = task:get_header('X-Nanomx-Test-Action')
    if a then task:set_pre_result(a, task:get_header('X-Nanomx-Test-Message'), 'nanomx') end
  end,
})
`,
	}
	for _, m := range modulesOff {
		files["local.d/"+m+".conf"] = "enabled = false;\n"
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}
