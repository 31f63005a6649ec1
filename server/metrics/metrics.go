// Package metrics serves nanomx's counters in the Prometheus text
// exposition format (version 0.0.4) at /metrics, on a net/http server of
// its own, never on an event loop.
//
// The values live where they are counted: in sync/atomic fields of the
// package that counts them (server.Stats, spool's commit statistics, a
// check's or the resolver's Stats). A Registry only knows where to read
// them, and reads them when scraped. Counting therefore costs one atomic
// add on the hot path: no allocation, no map lookup, no label formatting.
// Labelled series are registered once at start-up with their labels
// preformatted; a counter per reply class or per reason is a fixed array
// of atomics indexed by a small switch.
//
// # Adding a metric
//
// A package that counts something keeps the counter itself, as a
// sync/atomic value in a Stats struct it exposes, and does not import this
// package. Where the server is built (server.New), register it:
//
//	reg.Counter("nanomx_dns_queries_total", "DNS queries sent.", &st.Queries, "type", "mx", "result", "ok")
//	reg.GaugeFunc("nanomx_things_in_use", "Things in use.", func() float64 { return float64(x.InUse()) })
//	reg.Histogram("nanomx_dns_query_duration_seconds", "DNS query latency.", st.Latency)
//
// Labels are name/value pairs. Series of one name must share type and help
// text; each must have distinct labels. A histogram is a *Histogram the
// counting package may own too (it imports this package then: Histogram is
// the one type worth sharing). Series whose label values are only known
// when scraped (per stage and code, say) are written by Collect. Names
// follow Prometheus practice: a nanomx_ prefix, base units (seconds,
// bytes), _total for counters. Registering is for start-up; it panics on a
// malformed or duplicate name, like a programming error.
package metrics

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a metric family's type.
type Kind uint8

// The metric types of the exposition format.
const (
	KindCounter Kind = iota + 1
	KindGauge
	KindHistogram
)

func (k Kind) String() string {
	switch k {
	case KindCounter:
		return "counter"
	case KindGauge:
		return "gauge"
	case KindHistogram:
		return "histogram"
	}
	return "untyped"
}

// Registry is a set of metric families, written in registration order.
// Its methods are safe for concurrent use.
type Registry struct {
	mu     sync.Mutex // guards everything below
	fams   []*family
	byName map[string]*family
	buf    []byte // the last scrape's text, reused
	em     Emitter
}

type family struct {
	name, help string
	kind       Kind
	series     []series
	collect    []func(*Emitter)
}

// series is one registered series; exactly one value source is set.
type series struct {
	labels string // preformatted `a="b",c="d"`, "" when none
	u      *atomic.Uint64
	i      *atomic.Int64
	uf     func() uint64
	gf     func() float64
	h      *Histogram
	hf     *funcHistogram
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{byName: make(map[string]*family)}
}

// Counter registers a counter read from v.
func (r *Registry) Counter(name, help string, v *atomic.Uint64, labels ...string) {
	r.add(name, help, KindCounter, series{u: v}, labels)
}

// CounterFunc registers a counter whose value f returns when scraped.
func (r *Registry) CounterFunc(name, help string, f func() uint64, labels ...string) {
	r.add(name, help, KindCounter, series{uf: f}, labels)
}

// Gauge registers a gauge read from v.
func (r *Registry) Gauge(name, help string, v *atomic.Int64, labels ...string) {
	r.add(name, help, KindGauge, series{i: v}, labels)
}

// GaugeFunc registers a gauge whose value f returns when scraped. f runs
// on the scraping goroutine: it must not block for long.
func (r *Registry) GaugeFunc(name, help string, f func() float64, labels ...string) {
	r.add(name, help, KindGauge, series{gf: f}, labels)
}

// Histogram registers h.
func (r *Registry) Histogram(name, help string, h *Histogram, labels ...string) {
	r.add(name, help, KindHistogram, series{h: h}, labels)
}

// HistogramFunc registers a histogram whose buckets another package
// counts (one that does not import this one): bounds are the upper
// bounds, ascending, as exported (seconds, say), and read, called at each
// scrape, fills counts (len(bounds)+1 of them: per bucket, not
// cumulative, the last past every bound) and returns the sum of the
// observations, in the same unit.
func (r *Registry) HistogramFunc(name, help string, bounds []float64, read func(counts []uint64) (sum float64), labels ...string) {
	h := &funcHistogram{read: read, counts: make([]uint64, len(bounds)+1)}
	for i, ub := range bounds {
		if i > 0 && ub <= bounds[i-1] {
			panic("metrics: histogram bounds must ascend")
		}
		h.les = append(h.les, string(appendFloat(nil, ub)))
	}
	h.les = append(h.les, "+Inf")
	r.add(name, help, KindHistogram, series{hf: h}, labels)
}

// funcHistogram is a histogram of HistogramFunc; counts is read's
// scratch, used under the registry's lock.
type funcHistogram struct {
	les    []string
	counts []uint64
	read   func([]uint64) float64
}

// Collect registers series of a counter or gauge family that f writes at
// each scrape with the Emitter's methods, for label values known only
// then. f runs with the registry locked: it must not call the registry.
func (r *Registry) Collect(name, help string, k Kind, f func(e *Emitter)) {
	if k != KindCounter && k != KindGauge {
		panic("metrics: Collect is for counters and gauges")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fam := r.family(name, help, k)
	fam.collect = append(fam.collect, f)
}

func (r *Registry) add(name, help string, k Kind, s series, labels []string) {
	s.labels = formatLabels(labels)
	r.mu.Lock()
	defer r.mu.Unlock()
	fam := r.family(name, help, k)
	for _, o := range fam.series {
		if o.labels == s.labels {
			panic(fmt.Sprintf("metrics: %s{%s} registered twice", name, s.labels))
		}
	}
	fam.series = append(fam.series, s)
}

// family finds or makes name's family; r.mu is held.
func (r *Registry) family(name, help string, k Kind) *family {
	if !validName(name, true) {
		panic(fmt.Sprintf("metrics: bad metric name %q", name))
	}
	if f := r.byName[name]; f != nil {
		if f.kind != k || f.help != help {
			panic(fmt.Sprintf("metrics: %s registered again with another type or help", name))
		}
		return f
	}
	if k == KindHistogram {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if r.byName[name+suffix] != nil {
				panic("metrics: " + name + " clashes with " + name + suffix)
			}
		}
	}
	f := &family{name: name, help: help, kind: k}
	r.fams = append(r.fams, f)
	r.byName[name] = f
	return f
}

// formatLabels turns name/value pairs into `a="b",c="d"`, escaped.
func formatLabels(pairs []string) string {
	if len(pairs)%2 != 0 {
		panic(fmt.Sprintf("metrics: labels %q are not name/value pairs", pairs))
	}
	var b strings.Builder
	for i := 0; i < len(pairs); i += 2 {
		if !validName(pairs[i], false) || pairs[i] == "le" || strings.HasPrefix(pairs[i], "__") {
			panic(fmt.Sprintf("metrics: bad label name %q", pairs[i]))
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(pairs[i])
		b.WriteString(`="`)
		b.Write(appendEscaped(nil, pairs[i+1]))
		b.WriteByte('"')
	}
	return b.String()
}

// validName reports a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) or,
// without colons, a label name.
func validName(s string, colon bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c == ':' && colon:
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// appendEscaped appends a label value with \, " and newline escaped.
func appendEscaped(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// ContentType is the exposition format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WriteTo writes every family to w in the text format. Its buffer is kept
// for the next scrape, so a steady scrape allocates nothing here.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = r.appendText(r.buf[:0])
	n, err := w.Write(r.buf)
	return int64(n), err
}

// appendText appends the exposition; r.mu is held.
func (r *Registry) appendText(b []byte) []byte {
	for _, f := range r.fams {
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = appendHelp(b, f.help)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, f.kind.String()...)
		b = append(b, '\n')
		for i := range f.series {
			b = f.series[i].appendTo(b, f.name)
		}
		if len(f.collect) > 0 {
			r.em = Emitter{b: b, name: f.name}
			for _, c := range f.collect {
				c(&r.em)
			}
			b = r.em.b
			r.em = Emitter{}
		}
	}
	return b
}

// appendHelp appends help text with \ and newline escaped.
func appendHelp(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

func (s *series) appendTo(b []byte, name string) []byte {
	if s.h != nil {
		return s.h.appendTo(b, name, s.labels)
	}
	if s.hf != nil {
		clear(s.hf.counts)
		sum := s.hf.read(s.hf.counts)
		return appendBuckets(b, name, s.labels, s.hf.les, s.hf.counts, sum)
	}
	b = appendName(b, name, "", s.labels)
	switch {
	case s.u != nil:
		b = strconv.AppendUint(b, s.u.Load(), 10)
	case s.i != nil:
		b = strconv.AppendInt(b, s.i.Load(), 10)
	case s.uf != nil:
		b = strconv.AppendUint(b, s.uf(), 10)
	default:
		b = appendFloat(b, s.gf())
	}
	return append(b, '\n')
}

// appendName appends name, suffix and the labels in braces, and a space.
func appendName(b []byte, name, suffix, labels string) []byte {
	b = append(b, name...)
	b = append(b, suffix...)
	if labels != "" {
		b = append(b, '{')
		b = append(b, labels...)
		b = append(b, '}')
	}
	return append(b, ' ')
}

// appendFloat appends v as the text format writes values.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// Emitter writes the series of a Collect function.
type Emitter struct {
	b    []byte
	name string
}

// Uint writes one series with an integer value; labels are name/value
// pairs, escaped here.
func (e *Emitter) Uint(v uint64, labels ...string) {
	e.start(labels)
	e.b = strconv.AppendUint(e.b, v, 10)
	e.b = append(e.b, '\n')
}

// Float writes one series with a float value.
func (e *Emitter) Float(v float64, labels ...string) {
	e.start(labels)
	e.b = appendFloat(e.b, v)
	e.b = append(e.b, '\n')
}

func (e *Emitter) start(labels []string) {
	e.b = append(e.b, e.name...)
	if len(labels) > 0 {
		e.b = append(e.b, '{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.b = append(e.b, labels[i]...)
			e.b = append(e.b, `="`...)
			e.b = appendEscaped(e.b, labels[i+1])
			e.b = append(e.b, '"')
		}
		e.b = append(e.b, '}')
	}
	e.b = append(e.b, ' ')
}

// Histogram counts observations into fixed buckets (Prometheus "le"
// buckets, which histogram_quantile reads). Observing is lock-free: a
// short scan of the bounds and two atomic adds. Values are integers in the
// histogram's unit (nanoseconds for a duration, a count for a size) and
// exported multiplied by its scale (1e-9: seconds).
type Histogram struct {
	bounds []int64 // inclusive upper bounds, ascending, in units
	les    []string
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    atomic.Int64
	scale  float64
}

// NewHistogram makes a histogram of integer values with the given upper
// bounds (ascending), exported times scale.
func NewHistogram(scale float64, bounds ...int64) *Histogram {
	h := &Histogram{bounds: bounds, scale: scale, counts: make([]atomic.Uint64, len(bounds)+1)}
	for i, ub := range bounds {
		if i > 0 && ub <= bounds[i-1] {
			panic("metrics: histogram bounds must ascend")
		}
		h.les = append(h.les, string(appendFloat(nil, float64(ub)*scale)))
	}
	h.les = append(h.les, "+Inf")
	return h
}

// NewDurationHistogram makes a histogram of durations, exported in
// seconds.
func NewDurationHistogram(bounds ...time.Duration) *Histogram {
	ns := make([]int64, len(bounds))
	for i, d := range bounds {
		ns[i] = int64(d)
	}
	return NewHistogram(1e-9, ns...)
}

// Observe counts one value (in the histogram's unit).
func (h *Histogram) Observe(v int64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(v)
}

// ObserveDuration counts one duration of a histogram from
// NewDurationHistogram.
func (h *Histogram) ObserveDuration(d time.Duration) { h.Observe(int64(d)) }

// Count returns the number of observations so far.
func (h *Histogram) Count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// appendTo writes the buckets, sum and count. Each bucket is read once
// and summed here, so the buckets ascend and _count equals the +Inf
// bucket even while observations land.
func (h *Histogram) appendTo(b []byte, name, labels string) []byte {
	var counts [32]uint64 // most histograms: no allocation
	c := counts[:0]
	for i := range h.counts {
		c = append(c, h.counts[i].Load())
	}
	return appendBuckets(b, name, labels, h.les, c, float64(h.sum.Load())*h.scale)
}

// appendBuckets writes a histogram's cumulative buckets, sum and count
// from per-bucket counts, so that the buckets ascend and _count equals
// the +Inf bucket.
func appendBuckets(b []byte, name, labels string, les []string, counts []uint64, sum float64) []byte {
	var cum uint64
	for i, n := range counts {
		cum += n
		b = append(b, name...)
		b = append(b, "_bucket{"...)
		if labels != "" {
			b = append(b, labels...)
			b = append(b, ',')
		}
		b = append(b, `le="`...)
		b = append(b, les[i]...)
		b = append(b, `"} `...)
		b = strconv.AppendUint(b, cum, 10)
		b = append(b, '\n')
	}
	b = appendName(b, name, "_sum", labels)
	b = appendFloat(b, sum)
	b = append(b, '\n')
	b = appendName(b, name, "_count", labels)
	b = strconv.AppendUint(b, cum, 10)
	return append(b, '\n')
}
