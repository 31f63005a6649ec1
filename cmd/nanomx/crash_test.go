package main

// Crash-safety tests: the real binary under concurrent load, killed with
// SIGKILL at random moments and restarted on the same port, or stopped with
// SIGTERM mid-load; then every Maildir file is checked against what the
// senders were told (README, "Durability: what a 250 promises").
//
// TestCrashSafety runs a few kills per durability mode in `make test`;
// NANOMX_CRASH_KILLS=N (the issue asks for N >= 20; `make crashtest` sets
// it) runs N kills per mode. NANOMX_CRASH_SEED=S replays the kill schedule
// and the senders' choices of seed S (timing still varies). Under -race the
// server itself is built with -race too, and a race report in any of its
// logs fails the test.
//
// A kill -9 tests the order of operations (write, sync, rename, sync,
// answer): the page cache survives the process, so it cannot show a
// missing fsync. Power loss needs a VM or dm-log-writes.

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench"
	"github.com/nanomx/nanomx/bench/smtpc"
)

// Load shape.
const (
	crashSenders    = 16               // concurrent sending connections
	crashStepWait   = 20 * time.Second // per reply; a hang costs the sender one message
	crashShortKills = 3                // kills per mode in `make test`
)

// crashRcptSets are the envelopes a sender picks from: recipients, and the
// Maildirs (under maildir_root) they resolve to.
var crashRcptSets = []struct {
	rcpts []string
	boxes []string
}{
	{[]string{"alice@example.test"}, []string{"example.test/alice"}},
	{[]string{"bob@example.test"}, []string{"example.test/bob"}},
	{[]string{"carol@example.test"}, []string{"example.test/carol"}},
	{[]string{"team@example.test"}, []string{"example.test/alice", "example.test/bob"}},
	{[]string{"alice@example.test", "carol@example.test"}, []string{"example.test/alice", "example.test/carol"}},
	{[]string{"team@example.test", "carol@example.test"}, []string{"example.test/alice", "example.test/bob", "example.test/carol"}},
}

var crashBoxes = []string{"alice", "bob", "carol"}

// crashConfig returns a config file for addr and root.
func crashConfig(addr, root string, groupCommit bool, shutdown time.Duration) string {
	return fmt.Sprintf(`hostname = "mx.example.test"
listen = [%q]
maildir_root = %q
domains = ["example.test"]
postmaster = "alice@example.test"
mailboxes = ["alice@example.test", "bob@example.test", "carol@example.test"]
max_connections_per_ip = 100
group_commit = %v
shutdown_timeout = %q

[aliases]
"team@example.test" = ["alice@example.test", "bob@example.test"]
`, addr, root, groupCommit, shutdown.String())
}

// crashSeed is NANOMX_CRASH_SEED or a fresh seed; the caller logs it.
func crashSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("NANOMX_CRASH_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("NANOMX_CRASH_SEED=%q: %v", s, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

var (
	raceBinOnce sync.Once
	raceBinPath string
	raceBinErr  error
)

// crashBinary is the nanomx binary the crash tests run: TestMain's, or,
// when this test binary was built with -race, one built with -race too.
func crashBinary(t *testing.T) string {
	t.Helper()
	if !crashRaceBuild() {
		return binPath
	}
	raceBinOnce.Do(func() {
		raceBinPath = filepath.Join(filepath.Dir(binPath), "nanomx-race")
		out, err := exec.Command("go", "build", "-race", "-o", raceBinPath, ".").CombinedOutput()
		if err != nil {
			raceBinErr = fmt.Errorf("go build -race: %v\n%s", err, out)
		}
	})
	if raceBinErr != nil {
		t.Fatal(raceBinErr)
	}
	return raceBinPath
}

// crashRaceBuild reports whether this test binary was built with -race.
func crashRaceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// --- The server under test ---------------------------------------------

// crashProc is one run of the binary. err is written before done closes.
type crashProc struct {
	cmd     *exec.Cmd
	pid     int
	logPath string
	done    chan struct{}
	err     error
}

// crashServer starts, kills and restarts the binary on one config and port.
// Only the test goroutine uses it.
type crashServer struct {
	t    *testing.T
	bin  string
	dir  string // config and one log per run
	conf string
	addr string

	runs        []*crashProc
	cur         *crashProc
	bindRetries int // starts that failed to bind the port and were retried
}

func newCrashServer(t *testing.T, dir, addr, conf string) *crashServer {
	t.Helper()
	path := filepath.Join(dir, "nanomx.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &crashServer{t: t, bin: crashBinary(t), dir: dir, conf: path, addr: addr}
	t.Cleanup(func() {
		// Only a failed test leaves a run behind; it is ours, by PID.
		if p := s.cur; p != nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return s
}

func (s *crashServer) spawn() *crashProc {
	s.t.Helper()
	logPath := filepath.Join(s.dir, fmt.Sprintf("nanomx.%03d.log", len(s.runs)+1))
	f, err := os.Create(logPath)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.bin, "serve", "-config", s.conf)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		s.t.Fatal(err)
	}
	p := &crashProc{cmd: cmd, pid: cmd.Process.Pid, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	s.runs = append(s.runs, p)
	return p
}

// start runs the binary and waits until it accepts connections. A start
// that cannot bind the port is retried: see the note on the reset in
// crashLoad.sender.
func (s *crashServer) start() *crashProc {
	s.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		p := s.spawn()
		s.cur = p
		if s.waitListening(p, deadline) {
			return p
		}
		s.cur = nil
		log := crashReadLog(p.logPath)
		if !strings.Contains(log, `"error":"listen [`) || time.Now().After(deadline) {
			s.t.Fatalf("nanomx (pid %d) exited at start: %v\n%s", p.pid, p.err, log)
		}
		s.bindRetries++
		time.Sleep(50 * time.Millisecond)
	}
}

// waitListening reports whether p accepts connections before deadline;
// false means it exited.
func (s *crashServer) waitListening(p *crashProc, deadline time.Time) bool {
	s.t.Helper()
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			_ = c.(*net.TCPConn).SetLinger(0) // see crashLoad.sender
			c.Close()
			return true
		}
		select {
		case <-p.done:
			return false
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("nanomx (pid %d) not listening on %s\n%s", p.pid, s.addr, crashReadLog(p.logPath))
		}
	}
}

// kill sends SIGKILL to the current run, by PID, and reaps it.
func (s *crashServer) kill() *crashProc {
	s.t.Helper()
	p := s.cur
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatalf("kill -9 %d: %v", p.pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		s.t.Fatalf("pid %d survived SIGKILL", p.pid)
	}
	s.cur = nil
	return p
}

// term sends SIGTERM to the current run and waits up to limit for it to
// exit; it returns the exit error and how long the exit took.
func (s *crashServer) term(limit time.Duration) (time.Duration, error) {
	s.t.Helper()
	p := s.cur
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatalf("SIGTERM %d: %v", p.pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.done
		s.cur = nil
		s.t.Fatalf("nanomx (pid %d) still running %v after SIGTERM\n%s", p.pid, limit, crashTail(crashReadLog(p.logPath), 40))
	}
	s.cur = nil
	return time.Since(start), p.err
}

// checkLogs fails the test on a race report, panic or fatal error in any
// run's output, and returns how many error-level log lines there were.
func (s *crashServer) checkLogs() (errorLines int) {
	s.t.Helper()
	for _, p := range s.runs {
		log := crashReadLog(p.logPath)
		for _, bad := range []string{"WARNING: DATA RACE", "panic", "fatal error"} {
			if i := strings.Index(log, bad); i >= 0 {
				s.t.Errorf("%s: %q in the log of pid %d:\n%s", filepath.Base(p.logPath), bad, p.pid, log[i:min(len(log), i+4000)])
			}
		}
		errorLines += strings.Count(log, `"level":"error"`)
	}
	return errorLines
}

func crashReadLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func crashTail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(parts[max(0, len(parts)-lines):], "\n")
}

// --- Senders ------------------------------------------------------------

// crashMsg is one message a sender tried. Its sender owns it until the
// load generator's wait returns.
type crashMsg struct {
	seq    int64    // its marker is bench.Marker(run, seq)
	boxes  []string // Maildirs it must reach once acknowledged
	sum    [32]byte // sha256 of the message as it must be stored (LF ends)
	size   int      // bytes of the stored message, trace headers excluded
	sentAt time.Time

	slow    bool         // trickled (TestSIGTERMUnderLoad)
	eodSent bool         // the final "." (or the whole body) was written
	acked   bool         // answered 250 after the data: the only "delivered"
	err     *smtpc.Error // how it failed, when not acked
}

// outcome is a short label for reports: "250", "451@end-of-data",
// "closed@rcpt", "timeout@mail".
func (m *crashMsg) outcome() string {
	switch {
	case m.acked:
		return "250"
	case m.err.Code != 0:
		return fmt.Sprintf("%d@%s", m.err.Code, m.err.Stage)
	case m.err.Timeout():
		return "timeout@" + m.err.Stage
	default:
		return "closed@" + m.err.Stage
	}
}

// sent is what the verifier must find of m.
func (m *crashMsg) sent() bench.Sent {
	return bench.Sent{Seq: m.seq, Acked: m.acked, Unended: !m.eodSent, Maildirs: m.boxes, Size: int64(m.size), Sum: m.sum}
}

// crashText is random printable ASCII that message lines are cut from.
var crashText = sync.OnceValue(func() []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = byte(0x20 + rng.IntN(0x7f-0x20))
	}
	return b
})

// crashBody builds a message of about size bytes: its DATA form (CRLF,
// dot-stuffed, with the final ".") and the sha256 and length of the form
// nanomx must store after its trace headers (LF line ends, unstuffed). It
// starts with the header lines bench.VerifyMaildir knows a message by.
func crashBody(rng *rand.Rand, marker, from string, rcpts []string, size int) (wire []byte, sum [32]byte, n int) {
	text := crashText()
	stored := make([]byte, 0, size+512)
	wire = make([]byte, 0, size+size/32+512)
	add := func(line []byte) {
		stored = append(append(stored, line...), '\n')
		if len(line) > 0 && line[0] == '.' {
			wire = append(wire, '.') // RFC 5321 4.5.2
		}
		wire = append(append(wire, line...), '\r', '\n')
	}
	add([]byte("Message-ID: <" + marker + "@crash.nanomx.invalid>"))
	add([]byte(bench.MarkerHeader + ": " + marker))
	add([]byte("From: <" + from + ">"))
	add([]byte("To: " + strings.Join(rcpts, ", ")))
	add([]byte("Subject: crash test " + marker))
	add(nil)
	special := [][]byte{[]byte("."), []byte(".."), []byte(". x"), []byte(".\t."), []byte("From the start"), nil}
	for len(stored) < size {
		if rng.IntN(30) == 0 {
			add(special[rng.IntN(len(special))])
			continue
		}
		l := rng.IntN(120)
		if rng.IntN(10) == 0 {
			l = rng.IntN(990) // long lines are stored, not refused
		}
		off := rng.IntN(len(text) - l)
		add(text[off : off+l])
	}
	wire = append(wire, ".\r\n"...)
	return wire, sha256.Sum256(stored), len(stored)
}

// crashSize picks a message size: mostly small, some tens of KB, a few
// near a megabyte.
func crashSize(rng *rand.Rand) int {
	switch p := rng.IntN(100); {
	case p < 70:
		return 100 + rng.IntN(4000)
	case p < 97:
		return 4<<10 + rng.IntN(124<<10)
	default:
		return 256<<10 + rng.IntN(768<<10)
	}
}

// crashSend runs one transaction on c (the shared test client, with a
// deadline on every step, so that a killed or draining server costs a
// sender a message, never a hang) and records its end in m. trickle, if
// not zero, spreads the data over that many writes a quarter second apart.
// It reports whether the connection can carry another transaction.
func crashSend(c *smtpc.Conn, m *crashMsg, from string, rcpts []string, wire []byte, trickle int) bool {
	m.sentAt = time.Now()
	var err error
	if trickle == 0 {
		err = c.Send(from, rcpts, wire)
	} else {
		err = func() error {
			err := c.Mail(from)
			for _, r := range rcpts {
				if err == nil {
					err = c.Rcpt(r)
				}
			}
			if err == nil {
				err = c.Data()
			}
			for step := len(wire)/trickle + 1; err == nil && len(wire) > 0; wire = wire[min(step, len(wire)):] {
				if err := c.Write(wire[:min(step, len(wire))]); err != nil {
					return &smtpc.Error{Stage: smtpc.StageSend, Err: err}
				}
				if len(wire) > step {
					time.Sleep(250 * time.Millisecond)
				}
			}
			if err != nil {
				return err
			}
			return c.DataReply()
		}()
	}
	if err == nil {
		m.acked, m.eodSent = true, true
		return true
	}
	if !errors.As(err, &m.err) {
		m.err = &smtpc.Error{Stage: smtpc.StageMail, Err: err}
	}
	m.eodSent = m.err.Stage == smtpc.StageEnd
	// A 4xx after the data leaves the session usable; anything else, start over.
	return m.err.Stage == smtpc.StageEnd && m.err.Code/100 == 4
}

// crashLoad runs senders against one address until stop closes, across
// restarts of the server.
type crashLoad struct {
	addr string
	run  string // marker prefix
	seed uint64
	stop <-chan struct{}

	streams   uint64       // senders started; only start touches it
	next      atomic.Int64 // marker counter
	acked     atomic.Int64
	conns     atomic.Int64 // sessions that got past EHLO
	dialFails atomic.Int64

	wg   sync.WaitGroup
	mu   sync.Mutex
	msgs []*crashMsg // filled by each sender when it ends
}

func (g *crashLoad) stopped() bool {
	select {
	case <-g.stop:
		return true
	default:
		return false
	}
}

// start launches n senders; trickle > 0 makes them slow (see crashSend).
func (g *crashLoad) start(n, trickle int) {
	for range n {
		g.streams++
		g.wg.Add(1)
		go g.sender(g.streams, trickle)
	}
}

func (g *crashLoad) sender(stream uint64, trickle int) {
	defer g.wg.Done()
	rng := rand.New(rand.NewPCG(g.seed, stream))
	from := fmt.Sprintf("s%d@example.org", stream)
	var mine []*crashMsg
	defer func() {
		g.mu.Lock()
		g.msgs = append(g.msgs, mine...)
		g.mu.Unlock()
	}()
	backoff := 5 * time.Millisecond
	for !g.stopped() {
		c, err := smtpc.Dial(g.addr, 2*time.Second)
		if err == nil {
			c.Timeout = crashStepWait
			if err = c.Hello("sender.example.org"); err != nil {
				c.Abort()
			}
		}
		if err != nil {
			// Refused or dropped while the server restarts: back off.
			g.dialFails.Add(1)
			select {
			case <-g.stop:
				return
			case <-time.After(backoff + time.Duration(rng.Int64N(int64(backoff)))):
			}
			backoff = min(2*backoff, 200*time.Millisecond)
			continue
		}
		backoff = 5 * time.Millisecond
		g.conns.Add(1)
		ok := true
		for k := 1 + rng.IntN(4); ok && k > 0 && !g.stopped(); k-- {
			set := crashRcptSets[rng.IntN(len(crashRcptSets))]
			m := &crashMsg{seq: g.next.Add(1), boxes: set.boxes, slow: trickle > 0}
			size := crashSize(rng)
			if trickle > 0 {
				size = 128 << 10
			}
			var wire []byte
			wire, m.sum, m.size = crashBody(rng, bench.Marker(g.run, m.seq), from, set.rcpts, size)
			mine = append(mine, m)
			ok = crashSend(c, m, from, set.rcpts, wire, trickle)
			if m.acked {
				g.acked.Add(1)
			}
		}
		if ok {
			_ = c.Quit()
		}
		// A reset, not a close: the server closes first (after QUIT, on a
		// kill), and its side of the connection would then sit in
		// TIME_WAIT on the listening port for 60 seconds. nanomx does not
		// set SO_REUSEADDR, so a restart could not bind the port
		// meanwhile; an RST from the client ends TIME_WAIT at once.
		c.Abort()
	}
}

// wait stops nothing itself: it waits for the senders after stop closed,
// and fails the test if one hangs.
func (g *crashLoad) wait(t *testing.T) []*crashMsg {
	t.Helper()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2*crashStepWait + 10*time.Second):
		t.Fatal("senders did not stop")
	}
	slices.SortFunc(g.msgs, func(a, b *crashMsg) int { return a.sentAt.Compare(b.sentAt) })
	return g.msgs
}

// --- Verification -------------------------------------------------------

// crashCheck checks every file under root against msgs with the bench's
// verifier (bench.VerifyMaildir, every message listed): each file complete
// (its ,S= is its size, its content hashes to what was sent), known, in
// the right mailbox, never twice, never stored before its end of data;
// and every acked message present in each of its mailboxes. Each broken
// promise fails t; malformed replies do too.
func crashCheck(t *testing.T, root, run string, msgs []*crashMsg) *bench.Verify {
	t.Helper()
	sent := make([]bench.Sent, len(msgs))
	for i, m := range msgs {
		sent[i] = m.sent()
		if m.err != nil && errors.Is(m.err, smtpc.ErrMalformed) {
			t.Errorf("message %s: %v", bench.Marker(run, m.seq), m.err)
		}
	}
	v, err := bench.VerifyMaildir(root, run, sent, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range v.Problems {
		t.Error(p)
	}
	if !v.OK() {
		t.Errorf("verify: %d lost, %d incomplete, %d duplicates, %d wrong sizes, %d wrong contents, %d wrong S=, %d misplaced, %d stored unended, %d unknown",
			v.Lost, v.Incomplete, v.Duplicates, v.SizeMismatch, v.SumMismatch, v.NameSizeMismatch, v.Misplaced, v.Unended, v.Unknown)
	}
	if v.Acked == 0 {
		t.Error("no message was acked: the load did not run")
	}
	return v
}

// crashSummary is the verifier's report in one line.
func crashSummary(msgs []*crashMsg, v *bench.Verify) string {
	return fmt.Sprintf("attempted %d, acked %d, files %d, acked-and-present %d, unacked-but-present %d (in only some mailboxes %d); checked: %d sizes, %d contents, %d S=; lost %d, duplicated %d, partial %d",
		len(msgs), v.Acked, v.Files, v.Present-v.Incomplete, v.Unacked, v.UnackedPartial,
		v.SizeChecked, v.SumChecked, v.NameSizeChecked, v.Lost+v.Incomplete, v.Duplicates, v.SizeMismatch+v.SumMismatch+v.NameSizeMismatch)
}

// crashTmpFiles lists nanomx's files in the tmp/ of every mailbox.
func crashTmpFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	for _, box := range crashBoxes {
		ents, err := os.ReadDir(filepath.Join(root, "example.test", box, "tmp"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.Contains(e.Name(), "_nanomx.") {
				out = append(out, box+"/tmp/"+e.Name())
			}
		}
	}
	return out
}

// crashOutcomes counts messages by outcome label, for the log.
func crashOutcomes(msgs []*crashMsg) string {
	n := make(map[string]int)
	for _, m := range msgs {
		n[m.outcome()]++
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(n)) {
		fmt.Fprintf(&b, " %s:%d", k, n[k])
	}
	return strings.TrimSpace(b.String())
}

// --- Tests ----------------------------------------------------------------

// TestCrashSafety kills the server with SIGKILL at random moments under
// load from 16 senders, restarts it on the same port, and at the end checks
// (crashCheck) that every message answered 250 is in new/ of each of its
// mailboxes exactly once and complete, that no file is partial, altered or
// unknown, and that nanomx's tmp/ leftovers are removed at each start. It runs once
// with group commit and once with per-file fsync.
func TestCrashSafety(t *testing.T) {
	kills := crashShortKills
	if s := os.Getenv("NANOMX_CRASH_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("NANOMX_CRASH_KILLS=%q: want a number of kills", s)
		}
		kills = n
	}
	seed := crashSeed(t)
	t.Logf("seed %d (NANOMX_CRASH_SEED=%d replays it), %d kills per mode, race-enabled server %v", seed, seed, kills, crashRaceBuild())
	for i, mode := range []struct {
		name        string
		groupCommit bool
	}{{"group_commit", true}, {"per_file_fsync", false}} {
		t.Run(mode.name, func(t *testing.T) {
			crashRun(t, seed+uint64(i), kills, mode.groupCommit)
		})
	}
}

func crashRun(t *testing.T, seed uint64, kills int, groupCommit bool) {
	began := time.Now()
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	root := filepath.Join(dir, "maildir")
	addr := freeAddr(t)
	srv := newCrashServer(t, dir, addr, crashConfig(addr, root, groupCommit, 10*time.Second))
	srv.start()

	stop := make(chan struct{})
	g := &crashLoad{addr: addr, run: fmt.Sprintf("%x", seed), seed: seed, stop: stop}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop) // a failed run: let the senders go
		}
	}()
	g.start(crashSenders, 0)

	tmpLeft := 0
	var oldPIDs []int
	for k := 1; k <= kills; k++ {
		// A fifth of the kills come soon after a start: during the tmp/
		// cleanup, greetings and first handshakes.
		d := time.Duration(500+rng.IntN(2500)) * time.Millisecond
		if rng.IntN(5) == 0 {
			d = time.Duration(10+rng.IntN(290)) * time.Millisecond
		}
		time.Sleep(d)
		p := srv.kill()
		left := crashTmpFiles(t, root)
		tmpLeft += len(left)
		oldPIDs = append(oldPIDs, p.pid)
		t.Logf("kill %d/%d: pid %d after %v up; acked so far %d; %d nanomx files in tmp/",
			k, kills, p.pid, d.Round(time.Millisecond), g.acked.Load(), len(left))
		np := srv.start()
		// Start-up has run cleanTmp: nothing of a killed run may remain.
		// (A file of the new run has its own pid in the name.)
		for _, f := range crashTmpFiles(t, root) {
			for _, pid := range oldPIDs {
				if pid != np.pid && strings.Contains(f, fmt.Sprintf("P%dQ", pid)) {
					t.Errorf("after restart (pid %d): %s of killed pid %d still in tmp/", np.pid, f, pid)
				}
			}
		}
	}
	time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
	close(stop)
	msgs := g.wait(t)
	if took, err := srv.term(30 * time.Second); err != nil {
		t.Errorf("final SIGTERM: exit %v after %v\n%s", err, took, crashTail(crashReadLog(srv.runs[len(srv.runs)-1].logPath), 40))
	}
	if left := crashTmpFiles(t, root); len(left) > 0 {
		t.Errorf("after a clean stop, nanomx files remain in tmp/: %v", left[:min(len(left), 10)])
	}
	errLines := srv.checkLogs()

	v := crashCheck(t, root, g.run, msgs)
	t.Logf("kills %d, starts %d (bind retries %d), sessions %d, refused/dropped connects %d, tmp leftovers after kills %d (all removed at start), server error log lines %d",
		kills, len(srv.runs), srv.bindRetries, g.conns.Load(), g.dialFails.Load(), tmpLeft, errLines)
	t.Logf("outcomes: %s", crashOutcomes(msgs))
	t.Logf("%s; %v", crashSummary(msgs, v), time.Since(began).Round(100*time.Millisecond))
}

// TestSIGTERMUnderLoad stops the server with SIGTERM while 16 senders and
// one slow sender are busy: every message answered 250 must be in new/,
// every other one must have been answered 4xx or had its connection
// closed, and the process must exit 0 within shutdown_timeout and a margin.
func TestSIGTERMUnderLoad(t *testing.T) {
	const (
		shutdown = 3 * time.Second
		margin   = 5 * time.Second
	)
	seed := crashSeed(t)
	t.Logf("seed %d", seed)
	dir := t.TempDir()
	root := filepath.Join(dir, "maildir")
	addr := freeAddr(t)
	srv := newCrashServer(t, dir, addr, crashConfig(addr, root, true, shutdown))
	p := srv.start()

	// The senders stop once the process is gone; the slow one trickles a
	// message over ~10 s, so the drain deadline must cut it off.
	g := &crashLoad{addr: addr, run: fmt.Sprintf("%x", seed), seed: seed, stop: p.done}
	g.start(crashSenders, 0)
	g.start(1, 40)

	deadline := time.Now().Add(15 * time.Second)
	for g.acked.Load() < 100 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	ackedBefore := g.acked.Load()
	took, err := srv.term(shutdown + 30*time.Second)
	if err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, crashTail(crashReadLog(p.logPath), 40))
	}
	if took > shutdown+margin {
		t.Errorf("exit took %v after SIGTERM; shutdown_timeout %v + margin %v", took, shutdown, margin)
	}
	msgs := g.wait(t)
	srv.checkLogs()

	v := crashCheck(t, root, g.run, msgs)
	var refused, closed, slowCut int
	for _, m := range msgs {
		switch {
		case m.acked:
		case m.err.Code/100 == 4:
			refused++
		case m.err.Code != 0:
			t.Errorf("message %s: %s; after SIGTERM only 250, 4xx or a closed connection are right", bench.Marker(g.run, m.seq), m.outcome())
		case m.err.Timeout():
			t.Errorf("message %s: no reply within %v (%s)", bench.Marker(g.run, m.seq), crashStepWait, m.outcome())
		default:
			closed++
		}
		if m.slow && !m.eodSent {
			slowCut++
		}
	}
	t.Logf("SIGTERM after %d acked; exit 0 in %v (shutdown_timeout %v)", ackedBefore, took.Round(time.Millisecond), shutdown)
	t.Logf("outcomes: %s", crashOutcomes(msgs))
	t.Logf("%s; not acked: answered 4xx %d, connection closed %d (slow transfers cut %d)", crashSummary(msgs, v), refused, closed, slowCut)
}

// TestCrashBody: a message's DATA form decodes to the stored form it
// hashed, and the verifier knows a file holding it (the glue between the
// crash test's load and bench.VerifyMaildir).
func TestCrashBody(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	root := t.TempDir()
	var msgs []*crashMsg
	for i, size := range []int{100, 3000, 200000} {
		m := &crashMsg{seq: int64(i + 1), boxes: []string{"example.test/bob"}, acked: true, eodSent: true}
		wire, sum, n := crashBody(rng, bench.Marker("v", m.seq), "s@example.org", []string{"bob@example.test"}, size)
		m.sum, m.size = sum, n
		msg := crashUnstuff(wire)
		if sha256.Sum256(msg) != sum || len(msg) != n {
			t.Fatalf("crashBody: the DATA form does not decode to what it hashed")
		}
		dir := filepath.Join(root, "example.test", "bob", "new")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		file := append([]byte("Return-Path: <s@example.org>\nReceived: from x\n\tby mx.example.test (nanomx);\n\tMon, 02 Jan 2006 15:04:05 -0700\n"), msg...)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("17000000%02d.M1P1Q1_nanomx.mx,S=%d", i, len(file))), file, 0o600); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	v := crashCheck(t, root, "v", msgs)
	if v.SumChecked != 3 || v.SizeChecked != 3 || v.NameSizeChecked != 3 || v.Present != 3 {
		t.Fatalf("verifier saw %+v", v)
	}
}

// crashUnstuff decodes a DATA form back to the stored form: the final dot
// dropped, dot-stuffing undone, CRLF to LF.
func crashUnstuff(wire []byte) []byte {
	wire = bytes.TrimSuffix(wire, []byte(".\r\n"))
	var out []byte
	for _, line := range bytes.SplitAfter(wire, []byte("\r\n")) {
		if len(line) == 0 {
			continue
		}
		line = bytes.TrimPrefix(line, []byte("."))
		out = append(out, bytes.TrimSuffix(line, []byte("\r\n"))...)
		out = append(out, '\n')
	}
	return out
}
