package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// WideSpread is the spread, (max − min) ÷ median of a cell's rounds,
// above which a cell is flagged: its rounds disagree too much for its
// median to be compared with another's.
const WideSpread = 0.25

// CellSep separates a result label's row from its column in a matrix:
// "STARTTLS reused · nanomx" is row "STARTTLS reused", column "nanomx".
const CellSep = " · "

// Cell is every round of one scenario: the results that share a label.
type Cell struct {
	Label    string // the runs' label
	Row, Col string // Label split at CellSep (Col empty without one)
	// Rates are the rounds' delivered msgs/s, in run order.
	Rates            []float64
	Median, Min, Max float64
	// Spread is (Max − Min) ÷ Median; Wide is Spread > WideSpread.
	Spread float64
	Wide   bool
	// The medians over the rounds of the server's CPU per message (−1
	// without -pid), of the end of data's p99 and of the TLS handshake's
	// p50 (0 without TLS).
	CPUMsPerMsg, EndP99, HandshakeP50 float64
	// LoadShare is the median over the rounds of the load generator's
	// share of its CPUs (−1 when not measured); LoadBound is LoadShare ≥
	// LoadBoundShare: the rate is the load generator's, and the server's
	// is at least that.
	LoadShare float64
	LoadBound bool
	// Summed over the rounds: failed messages, connections and resumed
	// TLS sessions.
	Failed, Connections, Resumed int64
}

// Cells groups results by label, in the order the labels first appear,
// and computes each group's median and spread.
func Cells(results []*Result) []Cell {
	var cells []Cell
	index := map[string]int{}
	groups := map[string][]*Result{}
	for _, r := range results {
		l := r.Config.Label
		if _, ok := index[l]; !ok {
			index[l] = len(cells)
			row, col, _ := strings.Cut(l, CellSep)
			cells = append(cells, Cell{Label: l, Row: row, Col: col})
		}
		groups[l] = append(groups[l], r)
	}
	for i := range cells {
		c := &cells[i]
		var cpu, p99, hs, load []float64
		for _, r := range groups[c.Label] {
			c.Rates = append(c.Rates, r.MsgsPerSec)
			if r.Server != nil {
				cpu = append(cpu, r.Server.CPUMsPerMsg)
			}
			if r.Load != nil {
				load = append(load, r.Load.Share)
			}
			p99 = append(p99, r.Latency.EndOfData.P99)
			if r.Latency.TLS.Count > 0 {
				hs = append(hs, r.Latency.TLS.P50)
			}
			c.Failed += r.Failed
			c.Connections += r.Connections
			c.Resumed += r.TLSResumed
		}
		c.Median, c.Min, c.Max = median(c.Rates), slices.Min(c.Rates), slices.Max(c.Rates)
		if c.Median > 0 {
			c.Spread = (c.Max - c.Min) / c.Median
		}
		c.Wide = c.Spread > WideSpread || (c.Median == 0 && c.Max > 0)
		c.CPUMsPerMsg = -1
		if len(cpu) > 0 {
			c.CPUMsPerMsg = median(cpu)
		}
		c.EndP99, c.HandshakeP50 = median(p99), median(hs)
		c.LoadShare = -1
		if len(load) > 0 {
			c.LoadShare = median(load)
			c.LoadBound = c.LoadShare >= LoadBoundShare
		}
	}
	return cells
}

// median of v (the mean of the middle two for an even count); 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// rateText is "2970 (2650–3100)", with a warning sign when the spread is
// wide.
func (c *Cell) rateText() string {
	t := fmt.Sprintf("%.0f (%.0f–%.0f)", c.Median, c.Min, c.Max)
	if c.Wide {
		t += " ⚠"
	}
	if c.LoadBound {
		t += " load-bound"
	}
	return t
}

// loadText is the load generator's CPU share, "94 % ⚠" when load-bound,
// "–" when not measured.
func (c *Cell) loadText() string {
	if c.LoadShare < 0 {
		return "–"
	}
	return loadText(&LoadStats{Share: c.LoadShare, Bound: c.LoadBound})
}

// WriteCells writes one Markdown row per cell: its rounds, median,
// min–max, spread (flagged past WideSpread), server CPU, the end of
// data's p99, the TLS handshake, the load generator's CPU share (flagged
// when load-bound) and the failures.
func WriteCells(w io.Writer, cells []Cell) error {
	ew := &errWriter{w: w}
	ew.printf("| scenario | rounds msgs/s | median | min–max | spread | server CPU ms/msg | 250 wait p99 ms | TLS handshake p50 ms | resumed | load CPU | failed |\n")
	ew.printf("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range cells {
		rounds := make([]string, len(c.Rates))
		for i, r := range c.Rates {
			rounds[i] = fmt.Sprintf("%.0f", r)
		}
		spread := fmt.Sprintf("%.0f %%", 100*c.Spread)
		if c.Wide {
			spread = "**" + spread + " ⚠ wide**"
		}
		cpu, hs, res := "–", "–", "–"
		if c.CPUMsPerMsg >= 0 {
			cpu = fmt.Sprintf("%.3f", c.CPUMsPerMsg)
		}
		if c.HandshakeP50 > 0 {
			hs = fmt.Sprintf("%.3f", c.HandshakeP50)
			res = fmt.Sprintf("%d of %d", c.Resumed, c.Connections)
		}
		ew.printf("| %s | %s | %.0f | %.0f–%.0f | %s | %s | %.3f | %s | %s | %s | %d |\n", mdEscape(c.Label),
			strings.Join(rounds, " "), c.Median, c.Min, c.Max, spread, cpu, c.EndP99, hs, res, c.loadText(), c.Failed)
	}
	return ew.err
}

// WriteMatrix writes the cells as a Markdown matrix: a row per Row, a
// column per Col, in the order they first appear, each entry "median
// (min–max)" flagged ⚠ when wide and "load-bound" when the load
// generator was; then a column per ratio {A, B}: the median of A over the
// median of B in that row, marked "?" when either is wide, "≥" when A was
// load-bound (the server's rate is at least A's), "≤" when B was, "?"
// when both were. A line after the table explains "load-bound" when a
// cell is.
func WriteMatrix(w io.Writer, cells []Cell, ratios [][2]string) error {
	var rows, cols []string
	at := map[[2]string]*Cell{}
	for i := range cells {
		c := &cells[i]
		if !slices.Contains(rows, c.Row) {
			rows = append(rows, c.Row)
		}
		if !slices.Contains(cols, c.Col) {
			cols = append(cols, c.Col)
		}
		at[[2]string{c.Row, c.Col}] = c
	}
	ew := &errWriter{w: w}
	ew.printf("| cell |")
	for _, col := range cols {
		ew.printf(" %s msgs/s |", mdEscape(col))
	}
	for _, r := range ratios {
		ew.printf(" %s ÷ %s |", mdEscape(r[0]), mdEscape(r[1]))
	}
	ew.printf("\n|---|%s%s\n", strings.Repeat("--:|", len(cols)), strings.Repeat("--:|", len(ratios)))
	for _, row := range rows {
		ew.printf("| %s |", mdEscape(row))
		for _, col := range cols {
			if c := at[[2]string{row, col}]; c != nil {
				ew.printf(" %s |", c.rateText())
			} else {
				ew.printf(" |")
			}
		}
		for _, r := range ratios {
			a, b := at[[2]string{row, r[0]}], at[[2]string{row, r[1]}]
			if a == nil || b == nil || b.Median == 0 {
				ew.printf(" |")
				continue
			}
			mark, bound := "", ""
			if a.Wide || b.Wide || a.LoadBound && b.LoadBound {
				mark = " ?"
			}
			switch {
			case a.LoadBound && !b.LoadBound:
				bound = "≥ "
			case b.LoadBound && !a.LoadBound:
				bound = "≤ "
			}
			ew.printf(" %s%.2f×%s |", bound, a.Median/b.Median, mark)
		}
		ew.printf("\n")
	}
	if slices.ContainsFunc(cells, func(c Cell) bool { return c.LoadBound }) {
		ew.printf("\nload-bound: the load generator used at least %.0f %% of its CPUs (the median of the rounds), so the figure is its rate; the server's is at least that.\n", 100*LoadBoundShare)
	}
	return ew.err
}
