package logsink

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// blocker is an output whose Write blocks until release is closed, then
// collects what it is given. entered is closed at the first Write.
type blocker struct {
	release chan struct{}
	entered chan struct{}
	once    sync.Once

	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func newBlocker() *blocker {
	return &blocker{release: make(chan struct{}), entered: make(chan struct{})}
}

func (b *blocker) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes++
	return b.b.Write(p)
}

func (b *blocker) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func line(i int) []byte {
	return fmt.Appendf(nil, `{"level":"info","n":%d,"message":"a line of about eighty bytes, padded: .........."}`+"\n", i)
}

var lineRE = regexp.MustCompile(`^\{"level":"info","n":(\d+),"message":"a line of about eighty bytes, padded: \.{10}"\}$`)

// TestBlockedOutput: an output that never returns does not hold up
// Write. 10,000 lines are taken while the output is still blocked, what
// does not fit is dropped and counted, and the buffer stays within its
// bound. Once the output moves, the kept lines come out whole and in
// order, followed by the notice for the dropped ones.
func TestBlockedOutput(t *testing.T) {
	out := newBlocker()
	const bound = 64 << 10
	w := New(out, bound, nil)
	const n = 10_000

	returned := make(chan int, 1)
	go func() {
		over := 0
		for i := range n {
			_, _ = w.Write(line(i))
			if w.Buffered() > bound {
				over++
			}
		}
		returned <- over
	}()
	select {
	case over := <-returned:
		if over > 0 {
			t.Errorf("Buffered() exceeded the bound %d after %d writes", bound, over)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("10,000 Writes did not return while the output was blocked")
	}
	select {
	case <-out.release:
		t.Fatal("the output was released early")
	default:
	}
	<-out.entered // the drainer is inside the blocked Write
	dropped := w.Dropped()
	if dropped == 0 || dropped >= n {
		t.Fatalf("Dropped() = %d of %d with a %d-byte buffer", dropped, n, bound)
	}
	if w.peak > bound {
		t.Errorf("peak %d > bound %d", w.peak, bound)
	}

	close(out.release)
	if err := w.Close(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix([]byte(out.String()), []byte("\n")), []byte("\n"))
	if len(lines) < 2 {
		t.Fatalf("output has %d lines", len(lines))
	}
	notice := string(lines[len(lines)-1])
	if want := fmt.Sprintf("%d log lines dropped", dropped); notice != want {
		t.Errorf("last line = %q, want %q", notice, want)
	}
	kept := lines[:len(lines)-1]
	last := -1
	for _, l := range kept {
		m := lineRE.FindSubmatch(l)
		if m == nil {
			t.Fatalf("not a whole line: %q", l)
		}
		i, _ := strconv.Atoi(string(m[1]))
		if i <= last {
			t.Fatalf("line %d after line %d", i, last)
		}
		last = i
	}
	if uint64(len(kept))+dropped != n {
		t.Errorf("%d kept + %d dropped != %d written", len(kept), dropped, n)
	}
	// Writes after Close are dropped, not written.
	_, _ = w.Write(line(n))
	if w.Dropped() != dropped+1 || bytes.Contains([]byte(out.String()), []byte(`"n":10000,`)) {
		t.Error("a line written after Close was not dropped")
	}
}

// TestNoticeBeforeNextLine: when lines were dropped and the output moves
// again, the notice stands where they went missing: after the lines kept
// before, before the lines written after.
func TestNoticeBeforeNextLine(t *testing.T) {
	out := newBlocker()
	w := New(out, 4*len(line(0)), func(n uint64) []byte { return fmt.Appendf(nil, "DROPPED %d\n", n) })
	_, _ = w.Write(line(0)) // taken by the drainer, which blocks
	<-out.entered
	for i := 1; i <= 5; i++ {
		_, _ = w.Write(line(i)) // 1-3 fit, 4-5 are dropped
	}
	if got := w.Dropped(); got != 2 {
		t.Fatalf("Dropped() = %d, want 2", got)
	}
	close(out.release)
	// Once 1-3 are out, line 6 fits and brings the notice with it.
	deadline := time.Now().Add(10 * time.Second)
	for w.Buffered() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	_, _ = w.Write(line(6))
	if err := w.Close(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	want := string(line(0)) + string(line(1)) + string(line(2)) + string(line(3)) + "DROPPED 2\n" + string(line(6))
	// Whether the drainer wrote the notice on its own or Write brought it
	// with line 6, it stands between line 3 and line 6.
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

// TestConcurrentWrites: many goroutines write at once (run with -race);
// every line comes out whole, each writer's lines in its order, and kept
// plus dropped is what was written.
func TestConcurrentWrites(t *testing.T) {
	var mu sync.Mutex
	var b bytes.Buffer
	out := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		time.Sleep(10 * time.Microsecond) // slower than the writers
		return b.Write(p)
	})
	const bound = 16 << 10
	w := New(out, bound, func(n uint64) []byte { return fmt.Appendf(nil, "dropped %d\n", n) })
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				_, _ = w.Write(fmt.Appendf(nil, "g%d i%06d %s\n", g, i, bytes.Repeat([]byte{'x'}, 40+i%50)))
			}
		}()
	}
	wg.Wait()
	if err := w.Close(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if w.peak > bound {
		t.Errorf("peak %d > bound %d", w.peak, bound)
	}
	re := regexp.MustCompile(`^g(\d) i(\d{6}) x{40,89}$`)
	noticeRE := regexp.MustCompile(`^dropped (\d+)$`)
	last := make([]int, writers)
	for i := range last {
		last[i] = -1
	}
	var kept, reported uint64
	for _, l := range bytes.Split(bytes.TrimSuffix(b.Bytes(), []byte("\n")), []byte("\n")) {
		if m := noticeRE.FindSubmatch(l); m != nil {
			n, _ := strconv.ParseUint(string(m[1]), 10, 64)
			reported += n
			continue
		}
		m := re.FindSubmatch(l)
		if m == nil {
			t.Fatalf("not a whole line: %q", l)
		}
		g, _ := strconv.Atoi(string(m[1]))
		i, _ := strconv.Atoi(string(m[2]))
		if i <= last[g] {
			t.Fatalf("writer %d: line %d after %d", g, i, last[g])
		}
		last[g] = i
		kept++
	}
	if kept+w.Dropped() != writers*each {
		t.Errorf("%d kept + %d dropped != %d", kept, w.Dropped(), writers*each)
	}
	if reported != w.Dropped() {
		t.Errorf("notices report %d dropped lines, Dropped() = %d", reported, w.Dropped())
	}
	t.Logf("%d lines kept, %d dropped", kept, w.Dropped())
}

// TestFailingOutput: lines lost in a failed write are counted, and a
// failing output does not make the Writer spin reporting its own loss.
func TestFailingOutput(t *testing.T) {
	var calls int
	var mu sync.Mutex
	out := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return 0, errors.New("broken pipe")
	})
	w := New(out, 0, nil)
	_, _ = w.Write(line(1))
	deadline := time.Now().Add(10 * time.Second)
	for w.Dropped() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	n := calls
	mu.Unlock()
	if w.Dropped() != 1 || n != 1 {
		t.Errorf("after one failed line: Dropped() = %d, %d writes to the output; want 1, 1", w.Dropped(), n)
	}
	_ = w.Close(time.Second)
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
