package bench

import (
	"cmp"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
)

// WriteChart writes an SVG line chart of throughput (delivered msgs/s)
// against concurrency, one line per message size, from results. Runs with
// idle or slow sessions are left out: they measure something else. With
// ref, a dashed line marks its throughput (e.g. smtp-sink's).
func WriteChart(w io.Writer, title string, results []*Result, ref *Result) error {
	type point struct {
		conns int
		rate  float64
	}
	series := map[Size][]point{}
	var connsSeen []int
	for _, r := range results {
		if r.Config.Idle > 0 || r.Config.Slow > 0 {
			continue
		}
		series[r.Config.Size] = append(series[r.Config.Size], point{r.Config.Conns, r.MsgsPerSec})
		if !slices.Contains(connsSeen, r.Config.Conns) {
			connsSeen = append(connsSeen, r.Config.Conns)
		}
	}
	slices.Sort(connsSeen)
	sizes := make([]Size, 0, len(series))
	for s := range series {
		sizes = append(sizes, s)
	}
	slices.SortFunc(sizes, func(a, b Size) int {
		return cmp.Or(cmp.Compare(btoi(a.Mix), btoi(b.Mix)), cmp.Compare(a.Bytes, b.Bytes))
	})
	top := 0.0
	for _, pts := range series {
		for _, p := range pts {
			top = max(top, p.rate)
		}
	}
	if ref != nil {
		top = max(top, ref.MsgsPerSec)
	}
	// Headroom above the highest point for its label.
	step := niceStep(top * 1.1 / 5)
	yMax := step * math.Max(1, math.Ceil(top*1.1/step))

	const (
		width, height            = 760, 440
		left, right, upper, base = 80, 150, 50, 60
	)
	plotW, plotH := float64(width-left-right), float64(height-upper-base)
	x := func(conns int) float64 {
		i := slices.Index(connsSeen, conns)
		if len(connsSeen) == 1 {
			return left + plotW/2
		}
		return left + plotW*float64(i)/float64(len(connsSeen)-1)
	}
	y := func(v float64) float64 { return upper + plotH*(1-v/yMax) }
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"}

	ew := &errWriter{w: w}
	pf := ew.printf
	pf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	pf(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	pf(`<text x="%d" y="28" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	// Horizontal grid and y labels.
	for v := 0.0; v <= yMax+step/2; v += step {
		pf(`<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), left+plotW, y(v))
		pf(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y(v)+4, fmtRate(v))
	}
	// X ticks.
	for _, c := range connsSeen {
		pf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999"/>`+"\n", x(c), upper+plotH, x(c), upper+plotH+5)
		pf(`<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x(c), upper+plotH+20, c)
	}
	pf(`<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, upper+plotH, left+plotW, upper+plotH)
	pf(`<line x1="%d" y1="%d" x2="%d" y2="%.1f" stroke="#333"/>`+"\n", left, upper, left, upper+plotH)
	pf(`<text x="%.1f" y="%d" text-anchor="middle">concurrent sessions</text>`+"\n", left+plotW/2, height-15)
	pf(`<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">delivered msgs/s</text>`+"\n", upper+plotH/2)
	if ref != nil {
		name := ref.Config.Label
		if name == "" {
			name = ref.Config.Target
		}
		ry := y(ref.MsgsPerSec)
		pf(`<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#555" stroke-dasharray="6 4"/>`+"\n", left, ry, left+plotW, ry)
		pf(`<text x="%d" y="%.1f" fill="#555">%s: %s</text>`+"\n", left+6, ry-6, html.EscapeString(name), fmtRate(ref.MsgsPerSec))
	}
	// Value labels sit beside their points (right of them, left in the
	// last column), pushed apart vertically where they would overlap.
	type label struct {
		y    float64
		text string
		col  string
	}
	columns := map[int][]label{}
	for i, s := range sizes {
		pts := series[s]
		slices.SortFunc(pts, func(a, b point) int { return cmp.Compare(a.conns, b.conns) })
		col := colors[i%len(colors)]
		path := ""
		for j, p := range pts {
			op := "L"
			if j == 0 {
				op = "M"
			}
			path += fmt.Sprintf("%s%.1f %.1f ", op, x(p.conns), y(p.rate))
			columns[p.conns] = append(columns[p.conns], label{y(p.rate) + 4, fmtRate(p.rate), col})
		}
		pf(`<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", path, col)
		for _, p := range pts {
			pf(`<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x(p.conns), y(p.rate), col)
		}
		ly := upper + 20 + 22*float64(i)
		lx := left + plotW + 20
		pf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", lx, ly, lx+24, ly, col)
		pf(`<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+30, ly+4, html.EscapeString(s.String()))
	}
	for i, c := range connsSeen {
		labels := columns[c]
		slices.SortFunc(labels, func(a, b label) int { return cmp.Compare(a.y, b.y) })
		for j := 1; j < len(labels); j++ {
			labels[j].y = max(labels[j].y, labels[j-1].y+14)
		}
		lx, anchor := x(c)+8, "start"
		if i == len(connsSeen)-1 && len(connsSeen) > 1 {
			lx, anchor = x(c)-8, "end"
		}
		for _, l := range labels {
			// A white halo keeps the label readable where it crosses a line.
			pf(`<text x="%.1f" y="%.1f" text-anchor="%s" fill="%s" stroke="white" stroke-width="3" paint-order="stroke">%s</text>`+"\n", lx, l.y, anchor, l.col, l.text)
		}
	}
	pf("</svg>\n")
	return ew.err
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtRate(v float64) string {
	if v >= 10000 {
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
