package spool

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/bytebufferpool"
)

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		key    string
	}{
		{"empty hostname", func(c *Config) { c.Hostname = "" }, "hostname"},
		{"bad hostname", func(c *Config) { c.Hostname = "mx/../x" }, "hostname"},
		{"empty root", func(c *Config) { c.Root = "" }, "maildir_root"},
		{"root is a file", func(c *Config) { c.Root = file }, "maildir_root"},
		{"negative workers", func(c *Config) { c.Workers = -1 }, "workers"},
		{"negative queue", func(c *Config) { c.QueueLength = -1 }, "queue_length"},
		{"unsafe mailbox", func(c *Config) { c.Mailboxes = append(c.Mailboxes, Mailbox{Domain: "example.test", User: "../etc"}) }, "mailboxes"},
		{"upper-case domain", func(c *Config) { c.Mailboxes = append(c.Mailboxes, Mailbox{Domain: "Example.test", User: "bob"}) }, "mailboxes"},
	}
	for _, tt := range tests {
		cfg := Config{Root: dir, Hostname: "mx.example.test", Mailboxes: boxes(testNames...)}
		tt.mutate(&cfg)
		s, err := New(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != tt.key {
			t.Errorf("%s: New = %v, %v; want a ConfigError for %s", tt.name, s, err, tt.key)
		}
	}
	// No mailboxes to prepare is fine: they are made on first delivery.
	s, err := New(Config{Root: filepath.Join(dir, "empty"), Hostname: "mx.example.test"})
	if err != nil {
		t.Fatalf("no mailboxes: %v", err)
	}
	s.Close()
}

func TestNewCreatesRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "a", "b", "mail")
	s := newTestSpool(t, func(c *Config) { c.Root = root })
	fi, err := os.Stat(root)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("root: %v, %v", fi, err)
	}
	calls := s.syncer.(*testSyncer).reset()
	for _, dir := range []string{filepath.Dir(root), filepath.Dir(filepath.Dir(root))} {
		if !slices.Contains(calls, "dir "+dir) {
			t.Errorf("parent %s of a new directory not synced: %q", dir, calls)
		}
	}
}

// TestNewCleansTmp checks start-up cleanup: our own leftovers go whatever
// their age, foreign files only after 36 hours.
func TestNewCleansTmp(t *testing.T) {
	root := t.TempDir()
	tmp := filepath.Join(root, "example.test", "bob", "tmp")
	stray := filepath.Join(root, "example.test", "nobody", "tmp") // not a configured mailbox
	for _, d := range []string{tmp, stray, filepath.Join(filepath.Dir(tmp), "new")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-37 * time.Hour)
	files := []struct {
		path string
		old  bool
		keep bool
	}{
		{tmp + "/1700000000.M1P2Q3_nanomx.mx.example.test,S=10", false, false},
		{tmp + "/1600000000.M1P2Q4_nanomx.other-host,S=10", true, false},
		{tmp + "/1700000000.M5P6.dovecot-host", false, true},
		{tmp + "/1600000000.M5P6.dovecot-host", true, false},
		{stray + "/1700000000.M1P2Q3_nanomx.mx.example.test,S=10", false, true},
		{filepath.Dir(tmp) + "/new/1700000000.M1P2Q3_nanomx.mx.example.test,S=10", true, true},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if f.old {
			if err := os.Chtimes(f.path, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	sub := tmp + "/subdir_nanomx.x"
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}

	newTestSpool(t, func(c *Config) { c.Root = root })
	for _, f := range files {
		_, err := os.Stat(f.path)
		if kept := err == nil; kept != f.keep {
			t.Errorf("%s: kept %v, want %v", f.path, kept, f.keep)
		}
	}
	if _, err := os.Stat(sub); err != nil {
		t.Errorf("directory in tmp/ removed: %v", err)
	}
}

// countingRelease replaces bytebufferpool.Put to count releases per buffer.
type countingRelease struct {
	mu sync.Mutex
	n  map[*bytebufferpool.ByteBuffer]int
}

func (c *countingRelease) release(b *bytebufferpool.ByteBuffer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[*bytebufferpool.ByteBuffer]int)
	}
	c.n[b]++
}

func (c *countingRelease) count(b *bytebufferpool.ByteBuffer) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[b]
}

// result collects done callbacks, checking that each runs once.
type result struct {
	t    *testing.T
	mu   sync.Mutex
	errs map[string][]error // by message id
	wg   sync.WaitGroup
}

func newResult(t *testing.T) *result { return &result{t: t, errs: make(map[string][]error)} }

func (r *result) done(id string) func(error) {
	r.wg.Add(1)
	return func(err error) {
		r.mu.Lock()
		r.errs[id] = append(r.errs[id], err)
		r.mu.Unlock()
		r.wg.Done()
	}
}

func (r *result) get(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.errs[id]); n != 1 {
		r.t.Errorf("%s: done called %d times", id, n)
		return nil
	}
	return r.errs[id][0]
}

func TestSubmit(t *testing.T) {
	s := newTestSpool(t, nil)
	var rel countingRelease
	s.release = rel.release
	res := newResult(t)

	ok := newMessage("Subject: ok\n\nbody\n", "bob@example.test")
	ok.ID = "ok"
	bad := newMessage("x\n", "../nobody@example.test")
	bad.ID = "bad"
	okBody, badBody := ok.Body, bad.Body
	for _, m := range []*Message{ok, bad} {
		if err := s.Submit(m, res.done(m.ID)); err != nil {
			t.Fatal(err)
		}
	}
	res.wg.Wait()
	if err := res.get("ok"); err != nil {
		t.Errorf("ok: %v", err)
	}
	if err := res.get("bad"); err == nil || !strings.Contains(err.Error(), "not a valid mailbox") {
		t.Errorf("bad: %v, want an invalid mailbox", err)
	}
	only(t, s, "bob@example.test")
	// Success or failure, the body goes back to the pool once.
	for _, b := range []*bytebufferpool.ByteBuffer{okBody, badBody} {
		if n := rel.count(b); n != 1 {
			t.Errorf("body released %d times, want 1", n)
		}
	}
	if ok.Body != nil || bad.Body != nil {
		t.Error("Message.Body kept after release")
	}

	// A nil done is allowed.
	if err := s.Submit(newMessage("x\n", "bob@example.test"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(nil, nil); err == nil {
		t.Error("Submit(nil): no error")
	}
}

// gate blocks every delivery in SyncFile until opened.
type gate struct {
	entered chan struct{}
	open    chan struct{}
}

func newGate(s *Spool) *gate {
	g := &gate{entered: make(chan struct{}, 100), open: make(chan struct{})}
	s.syncer.(*testSyncer).hook = func(call string) error {
		if strings.HasPrefix(call, "file ") {
			g.entered <- struct{}{}
			<-g.open
		}
		return nil
	}
	return g
}

func TestSubmitQueueFull(t *testing.T) {
	s := newTestSpool(t, func(c *Config) { c.Workers, c.QueueLength = 1, 2 })
	var rel countingRelease
	s.release = rel.release
	g := newGate(s)
	res := newResult(t)

	var fullBody *bytebufferpool.ByteBuffer
	submit := func(id string) (*Message, error) {
		m := newMessage("x\n", "bob@example.test")
		m.ID, fullBody = id, m.Body
		return m, s.Submit(m, res.done(id))
	}
	if _, err := submit("m1"); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the worker holds m1; the queue is empty
	for _, id := range []string{"m2", "m3"} {
		if _, err := submit(id); err != nil {
			t.Fatal(err)
		}
	}
	full, err := submit("m4")
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("4th Submit = %v, want ErrQueueFull", err)
	}
	res.wg.Done() // m4's done is never called
	if full.Body != nil || rel.count(fullBody) != 1 {
		t.Error("rejected message's body not released exactly once")
	}

	close(g.open)
	res.wg.Wait()
	for _, id := range []string{"m1", "m2", "m3"} {
		if err := res.get(id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	if n := len(files(t, filepath.Join(maildir(s, "bob@example.test"), "new"))); n != 3 {
		t.Errorf("%d delivered, want 3", n)
	}
}

func TestCloseDrains(t *testing.T) {
	s := newTestSpool(t, func(c *Config) { c.Workers, c.QueueLength = 2, 10 })
	g := newGate(s)
	var done atomic.Int32
	for range 8 {
		if err := s.Submit(newMessage("x\n", "bob@example.test"), func(err error) {
			if err != nil {
				t.Error(err)
			}
			done.Add(1)
		}); err != nil {
			t.Fatal(err)
		}
	}
	<-g.entered
	<-g.entered

	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	// Close stops accepting at once, but waits for the deliveries.
	for !isClosed(s) {
		time.Sleep(time.Millisecond)
	}
	if err := s.Submit(newMessage("x\n", "bob@example.test"), nil); err != ErrClosed {
		t.Errorf("Submit while closing = %v, want ErrClosed", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned with deliveries in flight")
	case <-time.After(20 * time.Millisecond):
	}
	close(g.open)
	<-closed
	if n := done.Load(); n != 8 {
		t.Errorf("Close returned after %d of 8 done callbacks", n)
	}
	if n := len(files(t, filepath.Join(maildir(s, "bob@example.test"), "new"))); n != 8 {
		t.Errorf("%d delivered, want 8", n)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func isClosed(s *Spool) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

func TestSubmitAfterClose(t *testing.T) {
	s := newTestSpool(t, nil)
	var rel countingRelease
	s.release = rel.release
	s.Close()
	called := false
	m := newMessage("x\n", "bob@example.test")
	body := m.Body
	if err := s.Submit(m, func(error) { called = true }); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close = %v, want ErrClosed", err)
	}
	if called {
		t.Error("done called for a rejected message")
	}
	if m.Body != nil || rel.count(body) != 1 {
		t.Error("rejected message's body not released exactly once")
	}
}

// TestSubmitCloseRace submits from many goroutines while Close runs: every
// accepted message gets exactly one done call, every rejected one none.
func TestSubmitCloseRace(t *testing.T) {
	s := newTestSpool(t, func(c *Config) { c.Syncer, c.QueueLength = NoSync{}, 4 })
	var accepted, called atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				var once atomic.Int32
				err := s.Submit(newMessage("x\n", "bob@example.test"), func(error) {
					if once.Add(1) != 1 {
						t.Error("done called twice")
					}
					called.Add(1)
				})
				switch {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, ErrQueueFull):
				case errors.Is(err, ErrClosed):
					return
				default:
					t.Error(err)
				}
			}
		})
	}
	time.Sleep(2 * time.Millisecond)
	s.Close()
	wg.Wait()
	if accepted.Load() != called.Load() {
		t.Errorf("%d accepted, %d done calls", accepted.Load(), called.Load())
	}
}

// TestWorkerSurvivesPanics makes a delivery and a done callback panic: the
// message fails, its body is released and the worker goes on.
func TestWorkerSurvivesPanics(t *testing.T) {
	s := newTestSpool(t, func(c *Config) { c.Workers = 1 })
	var rel countingRelease
	s.release = rel.release
	s.syncer.(*testSyncer).hook = func(call string) error {
		if strings.HasPrefix(call, "file ") {
			panic("injected")
		}
		return nil
	}
	res := newResult(t)
	m := newMessage("x\n", "bob@example.test")
	m.ID = "panics"
	body := m.Body
	if err := s.Submit(m, res.done("panics")); err != nil {
		t.Fatal(err)
	}
	res.wg.Wait()
	if err := res.get("panics"); err == nil || !strings.Contains(err.Error(), "panic") {
		t.Errorf("err = %v", err)
	}
	if rel.count(body) != 1 {
		t.Error("body not released after a panic")
	}

	s.syncer.(*testSyncer).hook = nil
	if err := s.Submit(newMessage("x\n", "bob@example.test"), func(error) { panic("done panics") }); err != nil {
		t.Fatal(err)
	}
	m = newMessage("x\n", "bob@example.test")
	if err := s.Submit(m, res.done("after")); err != nil {
		t.Fatal(err)
	}
	res.wg.Wait()
	if err := res.get("after"); err != nil {
		t.Errorf("after the panics: %v", err)
	}
}

func TestFreeBytes(t *testing.T) {
	s := newTestSpool(t, nil)
	if n := s.FreeBytes(); n <= 0 {
		t.Errorf("FreeBytes = %d", n)
	}
	if err := os.RemoveAll(s.root); err != nil {
		t.Fatal(err)
	}
	s.refreshFree()
	if n := s.FreeBytes(); n != -1 {
		t.Errorf("FreeBytes without a root = %d, want -1", n)
	}
}
