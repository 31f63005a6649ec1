package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench/fakesmtp"
	"github.com/nanomx/nanomx/server/servertest"
)

// startFake starts a fake server configured by setup and stops it at the
// end of the test.
func startFake(t *testing.T, setup func(*fakesmtp.Server)) *fakesmtp.Server {
	t.Helper()
	s := &fakesmtp.Server{}
	if setup != nil {
		setup(s)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// run runs the bench against s with cfg, filling in the target and a
// short timeout.
func run(t *testing.T, s *fakesmtp.Server, cfg Config) *Result {
	t.Helper()
	res := runRaw(t, s, cfg)
	if res.Delivered+res.Failed != res.Attempted {
		t.Errorf("delivered %d + failed %d != attempted %d", res.Delivered, res.Failed, res.Attempted)
	}
	return res
}

// A message counts only when its end of data gets 250; the rest are
// failures grouped by reply code or error kind.
func TestCountsOnly250(t *testing.T) {
	s := startFake(t, func(s *fakesmtp.Server) {
		s.Decide = func(seq int64) fakesmtp.Action {
			switch seq % 5 {
			case 1:
				return fakesmtp.Action{Reply: 451}
			case 2:
				return fakesmtp.Action{Reply: 554}
			case 3:
				return fakesmtp.Action{Drop: true}
			}
			return fakesmtp.Action{}
		}
	})
	res := run(t, s, Config{Conns: 4, Count: 50, SpreadSources: true})
	if res.Attempted != 50 || res.Delivered != 20 || res.Failed != 30 {
		t.Errorf("attempted %d delivered %d failed %d, want 50 20 30", res.Attempted, res.Delivered, res.Failed)
	}
	want := map[string]int64{
		"end-of-data: 451 4.3.2":         10,
		"end-of-data: 554 5.6.0":         10,
		"end-of-data: connection closed": 10,
	}
	if !maps.Equal(res.Errors, want) {
		t.Errorf("errors = %v, want %v", res.Errors, want)
	}
	var wantAcked []int64
	for seq := int64(1); seq <= 50; seq++ {
		if seq%5 == 0 || seq%5 == 4 {
			wantAcked = append(wantAcked, seq)
		}
	}
	if !slices.Equal(res.Acked, wantAcked) {
		t.Errorf("acked = %v, want %v", res.Acked, wantAcked)
	}
	if res.Latency.EndOfData.Count != 20 {
		t.Errorf("end-of-data latency count %d, want 20 (only 250s)", res.Latency.EndOfData.Count)
	}
}

// Refusals before the data: MAIL refused (and RSET, the session goes on),
// and a 421 that closes the session.
func TestEnvelopeRefusals(t *testing.T) {
	for _, pipelining := range []bool{false, true} {
		t.Run(fmt.Sprint("pipelining=", pipelining), func(t *testing.T) {
			s := startFake(t, func(s *fakesmtp.Server) {
				s.Pipelining = pipelining
				s.Decide = func(seq int64) fakesmtp.Action {
					if seq == 3 {
						return fakesmtp.Action{Reply: 421}
					}
					return fakesmtp.Action{}
				}
			})
			res := run(t, s, Config{Conns: 1, Count: 6, Pipelining: pipelining})
			if res.Delivered != 5 || res.Failed != 1 || res.Errors["end-of-data: 421 4.3.0"] != 1 {
				t.Errorf("delivered %d failed %d errors %v", res.Delivered, res.Failed, res.Errors)
			}
			// One connection before the 421, one after it.
			if res.Connections != 2 || s.Conns.Load() != 2 {
				t.Errorf("connections %d (server saw %d), want 2", res.Connections, s.Conns.Load())
			}
		})
	}
}

// A connection that cannot be opened fails the message it was opened for,
// so -count bounds a run against a dead server too.
func TestConnectRefused(t *testing.T) {
	s := startFake(t, nil)
	addr := s.Addr()
	s.Close()
	res, err := Run(context.Background(), Config{Target: addr, Conns: 2, Count: 5, RunID: "rtest"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempted != 5 || res.Failed != 5 || res.Errors["connect: connection refused"] != 5 {
		t.Errorf("attempted %d failed %d errors %v", res.Attempted, res.Failed, res.Errors)
	}
}

// -count is exact: the server sees exactly that many messages, whatever the
// concurrency.
func TestCountExact(t *testing.T) {
	s := startFake(t, nil)
	res := run(t, s, Config{Conns: 7, Count: 500, Size: Size{Bytes: 1000}})
	if res.Attempted != 500 || res.Delivered != 500 || s.Messages.Load() != 500 {
		t.Errorf("attempted %d delivered %d, server saw %d; want 500", res.Attempted, res.Delivered, s.Messages.Load())
	}
	if res.Stopped != stopCount {
		t.Errorf("stopped by %q, want count", res.Stopped)
	}
	// Every marker is unique and each seq was sent once.
	seen := map[string]bool{}
	for _, m := range s.Markers() {
		if seen[m] || !strings.HasPrefix(m, "rtest-") {
			t.Fatalf("marker %q duplicated or malformed", m)
		}
		seen[m] = true
	}
}

// -duration stops the run without a count, and max-duration cuts a run
// whose messages hang.
func TestDurationStops(t *testing.T) {
	s := startFake(t, func(s *fakesmtp.Server) {
		s.Decide = func(int64) fakesmtp.Action { return fakesmtp.Action{Delay: time.Millisecond} }
	})
	start := time.Now()
	res := run(t, s, Config{Conns: 3, Duration: 300 * time.Millisecond})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("run took %v for -duration 300ms", took)
	}
	if res.Stopped != stopDuration || res.Delivered == 0 || res.Failed != 0 {
		t.Errorf("stopped by %q, delivered %d, failed %d", res.Stopped, res.Delivered, res.Failed)
	}

	hang := startFake(t, func(s *fakesmtp.Server) {
		s.Decide = func(int64) fakesmtp.Action { return fakesmtp.Action{Delay: time.Hour} }
	})
	start = time.Now()
	res = run(t, hang, Config{Conns: 2, Count: 10, MaxDuration: 300 * time.Millisecond})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("run took %v for -max-duration 300ms", took)
	}
	if res.Stopped != stopMaxDuration || res.Delivered != 0 || res.Failed != 2 {
		t.Errorf("stopped by %q, delivered %d, failed %d, errors %v", res.Stopped, res.Delivered, res.Failed, res.Errors)
	}
}

// -per-conn 1 opens a connection per message; -per-conn N one per N.
func TestPerConn(t *testing.T) {
	for _, tc := range []struct {
		conns, perConn int
		wantConns      int64
	}{
		{3, 1, 20},
		{1, 5, 4},
		{1, 0, 1}, // unlimited
	} {
		s := startFake(t, nil)
		res := run(t, s, Config{Conns: tc.conns, Count: 20, PerConn: tc.perConn, SpreadSources: true})
		if res.Connections != tc.wantConns || s.Conns.Load() != tc.wantConns || res.Delivered != 20 {
			t.Errorf("per-conn %d: %d connections (server saw %d), %d delivered; want %d connections",
				tc.perConn, res.Connections, s.Conns.Load(), res.Delivered, tc.wantConns)
		}
		if len(res.Errors) != 0 {
			t.Errorf("per-conn %d: errors %v", tc.perConn, res.Errors)
		}
	}
}

// -pipelining sends MAIL, RCPTs and DATA in one write only when the server
// offers PIPELINING.
func TestPipelining(t *testing.T) {
	for _, tc := range []struct {
		offered, asked bool
		wantPipelined  bool
	}{
		{true, true, true},
		{false, true, false},
		{true, false, false},
	} {
		s := startFake(t, func(s *fakesmtp.Server) { s.Pipelining = tc.offered })
		res := run(t, s, Config{Conns: 2, Count: 10, Rcpts: 3, Pipelining: tc.asked})
		p, q := s.Pipelined.Load(), s.Serial.Load()
		if tc.wantPipelined && (p != 10 || q != 0) || !tc.wantPipelined && (p != 0 || q != 10) {
			t.Errorf("offered %v, asked %v: %d envelopes in one write, %d not", tc.offered, tc.asked, p, q)
		}
		if res.Delivered != 10 || res.PipeliningOffered != tc.offered {
			t.Errorf("offered %v, asked %v: delivered %d, offered seen %v", tc.offered, tc.asked, res.Delivered, res.PipeliningOffered)
		}
	}
}

// Two replies to one end of data: the message counts once, and the
// session is restarted rather than read out of step.
func TestDoubleReply(t *testing.T) {
	s := startFake(t, func(s *fakesmtp.Server) {
		s.Decide = func(seq int64) fakesmtp.Action { return fakesmtp.Action{ReplyTwice: seq == 2} }
	})
	res := run(t, s, Config{Conns: 1, Count: 4})
	if res.Delivered != 4 || res.Errors["end-of-data: unsolicited reply"] != 1 || res.Connections != 2 {
		t.Errorf("delivered %d, connections %d, errors %v", res.Delivered, res.Connections, res.Errors)
	}
}

// Messages are the size asked for, to the byte or one short.
func TestMessageSize(t *testing.T) {
	s := startFake(t, nil)
	run(t, s, Config{Conns: 1, Count: 3, Size: Size{Bytes: 10_000}})
	for _, n := range s.Sizes() {
		if n != 10_000 && n != 9_999 {
			t.Errorf("message of %d bytes, want 10000", n)
		}
	}
	s = startFake(t, nil)
	run(t, s, Config{Conns: 2, Count: 50, Size: Size{Mix: true}, Seed: 7})
	for _, n := range s.Sizes() {
		if n < 1999 || n > 5_000_000 {
			t.Errorf("mix message of %d bytes", n)
		}
	}
}

// -verify-maildir: LOST for an acked message missing from the Maildir,
// DUPLICATE for one stored twice, and stored-but-unacked counted apart.
func TestVerifyMaildir(t *testing.T) {
	dir := t.TempDir()
	s := startFake(t, func(s *fakesmtp.Server) {
		s.Maildir = filepath.Join(dir, "bench.test", "bench")
		s.Decide = func(seq int64) fakesmtp.Action {
			switch seq {
			case 3:
				return fakesmtp.Action{NoStore: true} // 250, not stored
			case 5:
				return fakesmtp.Action{StoreTwice: true}
			case 7:
				return fakesmtp.Action{Drop: true} // stored, never acked
			}
			return fakesmtp.Action{}
		}
	})
	res := run(t, s, Config{Conns: 2, Count: 10, VerifyMaildir: dir})
	v := res.Verify
	if v == nil {
		t.Fatal("no verify report")
	}
	// Every file holds a message of this run; the sizes of the 9 files of
	// acked messages are checked.
	var stored int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if info, ierr := d.Info(); err == nil && ierr == nil && info.Mode().IsRegular() {
			stored += info.Size()
		}
		return nil
	})
	want := Verify{Dir: dir, Files: 10, Acked: 9, Present: 8, Lost: 1, Duplicates: 1, Unacked: 1,
		Bytes: stored, SizeChecked: 9, SumChecked: 9, LostMarkers: []string{"rtest-3"}, DuplicateMarkers: []string{"rtest-5"},
		Problems: []string{"rtest-5 stored 2 times in bench.test/bench", "rtest-3 acked, and in no Maildir"}}
	if !reflect.DeepEqual(*v, want) {
		t.Errorf("verify = %+v\nwant %+v", *v, want)
	}
	if v.OK() {
		t.Error("OK() with a lost and a duplicated message")
	}
	var buf bytes.Buffer
	if err := res.WriteText(&buf); err != nil || !strings.Contains(buf.String(), "1 LOST; 1 DUPLICATE") {
		t.Errorf("summary: %v\n%s", err, buf.String())
	}

	// A Maildir the server never made holds nothing: lost, if acked.
	none, err := VerifyMaildir(filepath.Join(dir, "none"), "rtest", acked(1), false)
	if err != nil || none.Files != 0 || none.Lost != 1 {
		t.Errorf("missing Maildir: %+v, %v", none, err)
	}
	none, err = VerifyMaildir(filepath.Join(dir, "none"), "rtest", nil, false)
	if err != nil || !none.OK() {
		t.Errorf("missing Maildir, nothing acked: %+v, %v", none, err)
	}

	// The same messages under another run id are not this run's.
	other, err := VerifyMaildir(dir, "rother", acked(res.Acked...), false)
	if err != nil || other.Lost != 9 || other.Unacked != 0 {
		t.Errorf("other run: %+v, %v", other, err)
	}
}

// acked lists messages acked, without sizes or sums.
func acked(seqs ...int64) []Sent {
	var s []Sent
	for _, seq := range seqs {
		s = append(s, Sent{Seq: seq, Acked: true})
	}
	return s
}

// A message in two Maildirs (two recipients) is not a duplicate.
func TestVerifyTwoMailboxes(t *testing.T) {
	dir := t.TempDir()
	for _, box := range []string{"a", "b"} {
		d := filepath.Join(dir, box, "cur")
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		msg := "Return-Path: <x@y>\nX-Nanomx-Bench: r1-1\n\nbody\nX-Nanomx-Bench: r1-2\n"
		if err := os.WriteFile(filepath.Join(d, "1:2,S"), []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	v, err := VerifyMaildir(dir, "r1", acked(1, 2), false)
	if err != nil {
		t.Fatal(err)
	}
	// r1-2 is in the body, not the header: lost.
	if v.Present != 1 || v.Lost != 1 || v.Duplicates != 0 || v.Files != 2 {
		t.Errorf("verify = %+v", v)
	}
}

// Idle sessions that the server times out are reported with its reply;
// slow senders too, and those it leaves alone are still open.
func TestIdleAndSlow(t *testing.T) {
	s := startFake(t, func(s *fakesmtp.Server) { s.IdleTimeout = 100 * time.Millisecond })
	res := run(t, s, Config{Conns: 1, Duration: 400 * time.Millisecond, Idle: 5, Slow: 2, SlowInterval: 300 * time.Millisecond})
	if res.Idle == nil || res.Idle.Opened != 5 || res.Idle.Outcomes["closed after 421 4.4.2"] != 5 {
		t.Errorf("idle: %+v", res.Idle)
	}
	if res.Slow == nil || res.Slow.Opened != 2 || res.Slow.Outcomes["closed after 421 4.4.2"] != 2 || res.Slow.LastClose == 0 {
		t.Errorf("slow: %+v", res.Slow)
	}
	// The load itself keeps its session busy enough not to time out.
	if res.Delivered == 0 {
		t.Errorf("delivered nothing: %v", res.Errors)
	}

	s = startFake(t, nil)
	res = run(t, s, Config{Conns: 1, Count: 5, Idle: 3, Slow: 2, SlowInterval: 10 * time.Millisecond})
	if res.Idle.Outcomes["still open"] != 3 || res.Slow.Outcomes["still open"] != 2 {
		t.Errorf("idle %+v\nslow %+v", res.Idle, res.Slow)
	}
}

// Held sessions outlive the set-up's timeout: a server that cuts them
// later than -timeout is still seen doing it.
func TestHeldOutliveTimeout(t *testing.T) {
	s := startFake(t, func(s *fakesmtp.Server) { s.IdleTimeout = 600 * time.Millisecond })
	res := run(t, s, Config{Conns: 1, Duration: 1200 * time.Millisecond, Timeout: 300 * time.Millisecond,
		Idle: 2, Slow: 2, SlowInterval: time.Hour})
	if res.Idle.Outcomes["closed after 421 4.4.2"] != 2 || res.Slow.Outcomes["closed after 421 4.4.2"] != 2 {
		t.Errorf("idle %+v\nslow %+v", res.Idle, res.Slow)
	}
}

// The JSON form reads back, durations included, and feeds the table and
// the chart.
func TestJSONAndReports(t *testing.T) {
	s := startFake(t, nil)
	var results []*Result
	for _, conns := range []int{1, 2} {
		for _, size := range []Size{{Bytes: 1000}, {Bytes: 10_000}} {
			res := run(t, s, Config{Conns: conns, Count: 10, Size: size, Duration: time.Minute, MaxDuration: time.Hour, Label: "fake"})
			b, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, []byte(`"duration":"1m0s"`)) || !bytes.Contains(b, []byte(`"size":"`+size.String()+`"`)) {
				t.Errorf("JSON: %s", b)
			}
			var back Result
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.Config.Duration != time.Minute || back.Config.Size != size || back.Delivered != 10 {
				t.Errorf("read back: %+v", back.Config)
			}
			results = append(results, &back)
		}
	}
	var table, chart bytes.Buffer
	if err := WriteTable(&table, results, results[0]); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(table.String(), "\n| fake |"); n != 4 {
		t.Errorf("table has %d rows:\n%s", n, table.String())
	}
	if err := WriteChart(&chart, "test", results, results[0]); err != nil {
		t.Fatal(err)
	}
	if c := chart.String(); !strings.HasPrefix(c, "<svg") || strings.Count(c, "<path") != 2 {
		t.Errorf("chart:\n%s", c)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Size
		wantErr bool
	}{
		// Plain bytes and units of 1000.
		{"512", Size{Bytes: 512}, false},
		{"1KB", Size{Bytes: 1000}, false},
		{"10kb", Size{Bytes: 10_000}, false},
		{"2MB", Size{Bytes: 2_000_000}, false},
		{"100 KB", Size{Bytes: 100_000}, false},
		// Units of 1024.
		{"1KiB", Size{Bytes: 1024}, false},
		{"3MiB", Size{Bytes: 3 << 20}, false},
		// The mix.
		{"mix", Size{Mix: true}, false},
		{"MIX", Size{Mix: true}, false},
		// Errors.
		{"", Size{}, true},
		{"KB", Size{}, true},
		{"0", Size{}, true},
		{"-1KB", Size{}, true},
		{"10XB", Size{}, true},
		{"1.5MB", Size{}, true},
		{"1GB", Size{}, true}, // past the 64 MiB bound
	} {
		got, err := ParseSize(tc.in)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("ParseSize(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err == nil {
			if back, err := ParseSize(got.String()); err != nil || back != got {
				t.Errorf("ParseSize(%q.String() = %q) = %v, %v", tc.in, got.String(), back, err)
			}
		}
	}
}

// The mix is a function of (seed, seq): the same for a seed, different
// for another, and close to its advertised shares.
func TestMixDeterministic(t *testing.T) {
	mix := Size{Mix: true}
	const n = 100_000
	var classes [len(mixClasses)]int
	differs := 0
	for seq := int64(1); seq <= n; seq++ {
		a := mix.Of(42, seq)
		if b := mix.Of(42, seq); a != b {
			t.Fatalf("seq %d: %d then %d for the same seed", seq, a, b)
		}
		if mix.Of(43, seq) != a {
			differs++
		}
		found := false
		for i, c := range mixClasses {
			if a >= c.lo && a <= c.hi {
				classes[i]++
				found = true
			}
		}
		if !found {
			t.Fatalf("seq %d: size %d in no class", seq, a)
		}
	}
	if differs < n*9/10 {
		t.Errorf("seeds 42 and 43 differ on only %d of %d sizes", differs, n)
	}
	for i, c := range mixClasses {
		want := float64(c.share) / 10000
		got := float64(classes[i]) / n
		if got < want*0.85 || got > want*1.15 {
			t.Errorf("class %d-%d: share %.4f, want %.4f", c.lo, c.hi, got, want)
		}
	}
	if (Size{Bytes: 5000}).Of(1, 99) != 5000 {
		t.Error("a fixed size varies")
	}
}

// The body pool needs no dot-stuffing and ends lines in CRLF.
func TestBodyPool(t *testing.T) {
	p := newBodyPool(100_000, 1)
	if !bytes.Equal(p, newBodyPool(100_000, 1)) {
		t.Error("the pool differs for the same seed")
	}
	for i, line := range bytes.SplitAfter(p, []byte("\r\n")) {
		if len(line) == 0 {
			continue
		}
		if len(line) != lineLen+2 || line[0] == '.' || !bytes.HasSuffix(line, []byte("\r\n")) || bytes.ContainsAny(line[:lineLen], "\r\n") {
			t.Fatalf("line %d: %q", i, line)
		}
	}
	for _, size := range []int64{1, 300, 1000, 10_000} {
		b := p.body(size, 250)
		if len(b) > 0 && b[len(b)-1] == '\r' {
			t.Errorf("body(%d) ends in CR", size)
		}
	}
}

// Source addresses spread over 127/8, never 127.0.0.1 or the target.
func TestNextSource(t *testing.T) {
	r := &runner{dial: &dialer{}}
	r.dial.addr = mustTCPAddr(t, "127.0.0.2:25")
	seen := map[string]bool{}
	for range 70_000 {
		a := r.nextSource()
		ip := a.IP.To4()
		if ip == nil || ip[0] != 127 || ip[3] == 0 || ip[3] == 255 || a.IP.String() == "127.0.0.1" || a.IP.String() == "127.0.0.2" {
			t.Fatalf("source %v", a)
		}
		seen[a.IP.String()] = true
	}
	if len(seen) != 256*254-2 {
		t.Errorf("%d distinct sources", len(seen))
	}
}

func mustTCPAddr(t *testing.T, s string) *net.TCPAddr {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// startTLSFake starts a fake server offering STARTTLS with a throwaway
// certificate for mx.bench.test.
func startTLSFake(t *testing.T, setup func(*fakesmtp.Server)) (*fakesmtp.Server, *servertest.PKI) {
	t.Helper()
	pki, err := servertest.NewPKI(t.TempDir(), "mx.bench.test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := startFake(t, func(s *fakesmtp.Server) {
		s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		if setup != nil {
			setup(s)
		}
	})
	return s, pki
}

// With TLS, every session, idle and slow ones included, upgrades before
// its first MAIL; the handshakes of the load sessions are measured.
func TestTLS(t *testing.T) {
	s, pki := startTLSFake(t, func(s *fakesmtp.Server) { s.Pipelining = true })
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"verified", Config{TLSCA: pki.CAFile, TLSServerName: "mx.bench.test"}},
		{"verified by IP", Config{TLSCA: pki.CAFile}},
		{"not verified", Config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.TLSSessions.Load()
			cfg := tc.cfg
			cfg.TLS, cfg.Conns, cfg.Count, cfg.PerConn, cfg.Pipelining = true, 3, 30, 4, true
			cfg.Idle, cfg.Slow, cfg.SlowInterval = 2, 1, time.Hour
			res := run(t, s, cfg)
			if res.Delivered != 30 || len(res.Errors) != 0 || !res.PipeliningOffered {
				t.Fatalf("delivered %d, errors %v, pipelining offered %v", res.Delivered, res.Errors, res.PipeliningOffered)
			}
			// 30 messages, 4 a session: at least 8 sessions, each one
			// handshake; plus the 3 held ones.
			if res.Latency.TLS.Count != res.Connections || res.Connections < 8 {
				t.Errorf("%d handshakes measured over %d connections", res.Latency.TLS.Count, res.Connections)
			}
			if got := s.TLSSessions.Load() - before; got != res.Connections+3 {
				t.Errorf("server saw %d handshakes, want %d", got, res.Connections+3)
			}
			if res.Idle.Outcomes["still open"] != 2 || res.Slow.Outcomes["still open"] != 1 {
				t.Errorf("idle %+v\nslow %+v", res.Idle, res.Slow)
			}
			var text strings.Builder
			if err := res.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(text.String(), "tls on") || !strings.Contains(text.String(), "tls handshake") {
				t.Errorf("summary:\n%s", text.String())
			}
		})
	}
}

// A server without STARTTLS, one refusing it, or a certificate that does
// not verify: every session fails, the held ones too, with the reason.
func TestTLSFailures(t *testing.T) {
	plain := startFake(t, nil)
	refusing, _ := startTLSFake(t, func(s *fakesmtp.Server) { s.StartTLSReply = 454 })
	other, err := servertest.NewPKI(t.TempDir(), "mx.bench.test")
	if err != nil {
		t.Fatal(err)
	}
	tlsFake, pki := startTLSFake(t, nil)
	for _, tc := range []struct {
		name string
		s    *fakesmtp.Server
		cfg  Config
		key  string
	}{
		{"not offered", plain, Config{}, "starttls: not offered"},
		{"refused", refusing, Config{}, "starttls: 454 4.7.0"},
		{"unknown CA", tlsFake, Config{TLSCA: other.CAFile},
			"tls-handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{"wrong name", tlsFake, Config{TLSCA: pki.CAFile, TLSServerName: "other.test"},
			"tls-handshake: tls: failed to verify certificate: x509: certificate is valid for mx.bench.test, not other.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.TLS, cfg.Conns, cfg.Count, cfg.Idle = true, 2, 6, 3
			res := run(t, tc.s, cfg)
			// Go's x509 errors may add detail after the key.
			only := func(m map[string]int64, n int64) bool {
				for k, v := range m {
					return len(m) == 1 && v == n && strings.HasPrefix(k, tc.key)
				}
				return false
			}
			if res.Delivered != 0 || res.Failed != 6 || !only(res.Errors, 6) {
				t.Errorf("delivered %d failed %d errors %v", res.Delivered, res.Failed, res.Errors)
			}
			if res.Idle.Opened != 0 || !only(res.Idle.OpenFailed, 3) {
				t.Errorf("idle: %+v", res.Idle)
			}
		})
	}
	if n := plain.Messages.Load() + refusing.Messages.Load() + tlsFake.Messages.Load(); n != 0 {
		t.Errorf("%d messages reached a server", n)
	}
}

// -tls-ca and -tls-servername need -tls; a CA file must hold a certificate.
func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{TLSCA: junk}, "need tls"},
		{Config{TLSServerName: "x"}, "need tls"},
		{Config{TLS: true, TLSCA: junk}, "no PEM certificate"},
		{Config{TLS: true, TLSCA: filepath.Join(dir, "missing.pem")}, "no such file"},
	} {
		tc.cfg.Target = "127.0.0.1:1"
		if _, err := Run(context.Background(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
