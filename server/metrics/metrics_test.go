package metrics

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func text(t *testing.T, r *Registry) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := r.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestText: the exposition of each kind, byte for byte: one HELP and TYPE
// per family, series in registration order, labels escaped, cumulative
// buckets whose +Inf equals _count, and a scaled _sum.
func TestText(t *testing.T) {
	r := New()
	var a, b atomic.Uint64
	var g atomic.Int64
	a.Store(3)
	b.Store(1)
	g.Store(-2)
	r.Counter("x_total", "Some x.", &a, "reason", "one")
	r.Counter("x_total", "Some x.", &b, "reason", `t"w\o`+"\n")
	r.Gauge("y", "A gauge\nwith \\ help.", &g)
	r.GaugeFunc("z", "A float.", func() float64 { return 0.25 })
	r.CounterFunc("w_total", "A func.", func() uint64 { return 7 }, "a", "1", "b", "2")
	h := NewDurationHistogram(time.Millisecond, 10*time.Millisecond)
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, time.Second} {
		h.ObserveDuration(d)
	}
	r.Histogram("d_seconds", "Durations.", h, "stage", "rcpt")
	r.Collect("c_total", "Collected.", KindCounter, func(e *Emitter) {
		e.Uint(5, "code", "550")
		e.Float(math.Inf(1))
	})
	want := `# HELP x_total Some x.
# TYPE x_total counter
x_total{reason="one"} 3
x_total{reason="t\"w\\o\n"} 1
# HELP y A gauge\nwith \\ help.
# TYPE y gauge
y -2
# HELP z A float.
# TYPE z gauge
z 0.25
# HELP w_total A func.
# TYPE w_total counter
w_total{a="1",b="2"} 7
# HELP d_seconds Durations.
# TYPE d_seconds histogram
d_seconds_bucket{stage="rcpt",le="0.001"} 2
d_seconds_bucket{stage="rcpt",le="0.01"} 3
d_seconds_bucket{stage="rcpt",le="+Inf"} 4
d_seconds_sum{stage="rcpt"} 1.0035
d_seconds_count{stage="rcpt"} 4
# HELP c_total Collected.
# TYPE c_total counter
c_total{code="550"} 5
c_total +Inf
`
	if got := text(t, r); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	// And Prometheus' own parser reads it back.
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	if hs := fams["d_seconds"].GetMetric()[0].GetHistogram(); hs.GetSampleCount() != 4 || len(hs.GetBucket()) != 3 {
		t.Errorf("parsed histogram %v", hs)
	}
}

// TestRegisterMistakes: a malformed name, odd labels, a reserved label, a
// duplicate series or a family registered again with another type panic
// at start-up rather than serve a broken exposition.
func TestRegisterMistakes(t *testing.T) {
	var v atomic.Uint64
	for name, f := range map[string]func(r *Registry){
		"bad name":   func(r *Registry) { r.Counter("1x", "h", &v) },
		"bad label":  func(r *Registry) { r.Counter("x", "h", &v, "a-b", "1") },
		"odd labels": func(r *Registry) { r.Counter("x", "h", &v, "a") },
		"le label":   func(r *Registry) { r.Counter("x", "h", &v, "le", "1") },
		"duplicate":  func(r *Registry) { r.Counter("x", "h", &v, "a", "1"); r.Counter("x", "h", &v, "a", "1") },
		"other type": func(r *Registry) {
			r.Counter("x", "h", &v)
			r.GaugeFunc("x", "h", func() float64 { return 0 }, "a", "1")
		},
		"other help":     func(r *Registry) { r.Counter("x", "h", &v); r.Counter("x", "other", &v, "a", "1") },
		"bounds":         func(r *Registry) { NewHistogram(1, 2, 1) },
		"histogram name": func(r *Registry) { r.Counter("h_count", "h", &v); r.Histogram("h", "h", NewHistogram(1, 1)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f(New())
		}()
	}
}

// TestScrapeAllocs: once warm, a scrape of counters, gauges and a
// histogram allocates nothing (its buffer is kept); Collect series
// allocate only what their function does.
func TestScrapeAllocs(t *testing.T) {
	r := New()
	var v atomic.Uint64
	for _, reason := range []string{"a", "b", "c", "d"} {
		r.Counter("x_total", "h", &v, "reason", reason)
	}
	r.GaugeFunc("g", "h", func() float64 { return 1.5 })
	h := NewHistogram(1, 1, 2, 4, 8, 16, 32, 64, 128, 256)
	h.Observe(3)
	r.Histogram("h", "h", h)
	r.Collect("c_total", "h", KindCounter, func(e *Emitter) { e.Uint(v.Load(), "code", "550", "reason", "x") })
	r.HistogramFunc("hf", "h", []float64{0.5, 1}, func(c []uint64) float64 { c[2] = v.Load(); return 1 })
	r.WriteTo(io.Discard)
	if n := testing.AllocsPerRun(100, func() { v.Add(1); r.WriteTo(io.Discard) }); n != 0 {
		t.Errorf("a scrape allocates %v times", n)
	}
}

// TestHistogramUnderLoad: observing from several goroutines while scraping
// never shows a bucket smaller than the one before it, nor a _count other
// than the +Inf bucket; at the end every observation is counted.
func TestHistogramUnderLoad(t *testing.T) {
	r := New()
	h := NewHistogram(1, 1, 10, 100)
	r.Histogram("h", "h", h)
	const writers, each = 4, 5000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				h.Observe(int64((i * (w + 1)) % 200))
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	p := expfmt.NewTextParser(model.LegacyValidation)
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
		default:
		}
		fams, err := p.TextToMetricFamilies(strings.NewReader(text(t, r)))
		if err != nil {
			t.Fatal(err)
		}
		hs := fams["h"].GetMetric()[0].GetHistogram()
		prev := uint64(0)
		for _, b := range hs.GetBucket() {
			if b.GetCumulativeCount() < prev {
				t.Fatalf("buckets descend: %v", hs)
			}
			prev = b.GetCumulativeCount()
		}
		if prev > hs.GetSampleCount() {
			t.Fatalf("count %d below a bucket %d", hs.GetSampleCount(), prev)
		}
	}
	if h.Count() != writers*each {
		t.Errorf("count %d, want %d", h.Count(), writers*each)
	}
}

// TestCheckAddr: only loopback addresses, unless public ones are allowed.
func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		public bool
		ok     bool
	}{
		{"127.0.0.1:9125", false, true},
		{"127.1.2.3:9125", false, true},
		{"[::1]:9125", false, true},
		{"localhost:9125", false, true},
		{"0.0.0.0:9125", false, false},
		{":9125", false, false},
		{"[::]:9125", false, false},
		{"192.0.2.1:9125", false, false},
		{"metrics.example:9125", false, false},
		{"0.0.0.0:9125", true, true},
		{"127.0.0.1", false, false},
		{"127.0.0.1:", false, false},
	} {
		if err := CheckAddr(tc.addr, tc.public); (err == nil) != tc.ok {
			t.Errorf("CheckAddr(%q, %v) = %v", tc.addr, tc.public, err)
		}
	}
}

// TestServe: the endpoint answers GET /metrics in the text format, and
// only that path and method.
func TestServe(t *testing.T) {
	r := New()
	var v atomic.Uint64
	v.Store(42)
	r.Counter("x_total", "h", &v)
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(r, func(err error) { t.Error(err) })
	defer s.Close()
	base := "http://" + s.Addr().String()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != ContentType || !strings.Contains(string(body), "\nx_total 42\n") {
		t.Errorf("GET /metrics: %s %q\n%s", res.Status, res.Header.Get("Content-Type"), body)
	}
	if res, err := http.Get(base + "/"); err != nil || res.StatusCode != 404 {
		t.Errorf("GET /: %v %v", res.Status, err)
	}
	if res, err := http.Post(base+"/metrics", "text/plain", nil); err != nil || res.StatusCode != 405 {
		t.Errorf("POST /metrics: %v %v", res.Status, err)
	}
}

// TestHistogramFunc: a histogram another package counts is written like
// one of ours: cumulative buckets from per-bucket counts, the sum as
// read returns it, _count the +Inf bucket; each scrape starts from zero
// counts; descending bounds panic.
func TestHistogramFunc(t *testing.T) {
	r := New()
	var mu sync.Mutex
	counts := []uint64{2, 0, 3, 1}
	sum := 4.25
	r.HistogramFunc("q_seconds", "Queries.", []float64{0.001, 0.01, 0.1}, func(c []uint64) float64 {
		mu.Lock()
		defer mu.Unlock()
		for i, n := range counts {
			c[i] += n // += : the registry must clear its scratch between scrapes
		}
		return sum
	}, "type", "MX")
	want := `# HELP q_seconds Queries.
# TYPE q_seconds histogram
q_seconds_bucket{type="MX",le="0.001"} 2
q_seconds_bucket{type="MX",le="0.01"} 2
q_seconds_bucket{type="MX",le="0.1"} 5
q_seconds_bucket{type="MX",le="+Inf"} 6
q_seconds_sum{type="MX"} 4.25
q_seconds_count{type="MX"} 6
`
	for range 2 {
		if got := text(t, r); got != want {
			t.Errorf("got:\n%s\nwant:\n%s", got, want)
		}
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	if hs := fams["q_seconds"].GetMetric()[0].GetHistogram(); hs.GetSampleCount() != 6 || hs.GetSampleSum() != 4.25 {
		t.Errorf("parsed %v", hs)
	}
	defer func() {
		if recover() == nil {
			t.Error("descending bounds: no panic")
		}
	}()
	r.HistogramFunc("bad_seconds", "h", []float64{1, 0.5}, func([]uint64) float64 { return 0 })
}
