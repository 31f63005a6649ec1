package bench

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteText writes the human summary of r.
func (r *Result) WriteText(w io.Writer) error {
	c := &r.Config
	ew := &errWriter{w: w}
	pf := ew.printf
	if c.Label != "" {
		pf("%s\n", c.Label)
	}
	pipe := "off"
	if c.Pipelining {
		pipe = "on"
		if !r.PipeliningOffered {
			pipe = "on, but not offered"
		}
	}
	tlsText := ""
	if c.TLS {
		tlsText = "  tls on"
		if c.TLSCA == "" {
			tlsText += " (not verified)"
		}
		if c.TLSResume {
			tlsText += ", resumption offered"
		}
	}
	if c.Rate > 0 {
		tlsText += fmt.Sprintf("  open loop %g msgs/s", c.Rate)
	}
	if c.Profile != "" {
		tlsText += "  profile " + c.Profile
	}
	pf("target %s  run %s  conns %d  size %s  per-conn %s  rcpts %d  pipelining %s%s  seed %d\n",
		c.Target, c.RunID, c.Conns, c.Size, perConnText(c.PerConn), c.Rcpts, pipe, tlsText, c.Seed)
	pf("messages    %d delivered, %d failed, %d attempted in %.2fs (stopped by %s)\n",
		r.Delivered, r.Failed, r.Attempted, r.Elapsed, r.Stopped)
	pf("throughput  %.1f msgs/s  %.2f MB/s  over %d connections\n", r.MsgsPerSec, r.MBPerSec, r.Connections)
	if c.TLSResume {
		pf("tls         %d of %d connections resumed a session\n", r.TLSResumed, r.Connections)
	}
	if c.Rate > 0 {
		pf("open loop   %g arrivals/s scheduled; %d never started (unserved)\n", c.Rate, r.Unserved)
	}
	if p := r.Profile; p != nil {
		pf("profile     %s: planned", p.Name)
		for k := range nKinds {
			if n := p.Planned[k.String()]; n > 0 {
				pf("  %d %s", n, k)
			}
		}
		pf("\n  connections %d with STARTTLS, %d plaintext; %d unknown recipients refused (%d accepted); %d transactions dropped mid-data; %d bots opened\n",
			p.TLSConns, p.PlainConns, p.Refused, p.RefusedAccepted, p.Aborted, p.BotsOpened)
		for _, k := range sortedByCount(p.BotOutcomes) {
			pf("  %8d  %s\n", p.BotOutcomes[k], k)
		}
	}

	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "latency ms\tp50\tp90\tp99\tp99.9\tmax\tcount\t\n")
	rows := []struct {
		name string
		l    Latency
	}{
		{"connect", r.Latency.Connect},
		{"greeting", r.Latency.Greeting},
		{"tls handshake", r.Latency.TLS},
		{"end-of-data → 250", r.Latency.EndOfData},
		{"transaction", r.Latency.Transaction},
		{"scheduled → 250", r.Latency.Scheduled},
	}
	if r.Latency.Scheduled.Count == 0 {
		rows = rows[:len(rows)-1]
	}
	if r.Latency.TLS.Count == 0 {
		rows = slices.Delete(rows, 2, 3)
	}
	for _, l := range rows {
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t\n", l.name, l.l.P50, l.l.P90, l.l.P99, l.l.P999, l.l.Max, l.l.Count)
	}
	_ = tw.Flush()

	if len(r.Errors) == 0 {
		pf("errors      none\n")
	} else {
		pf("errors\n")
		for _, k := range sortedByCount(r.Errors) {
			pf("  %8d  %s\n", r.Errors[k], k)
		}
	}
	if s := r.Server; s != nil {
		pf("server pid %d  CPU %.2fs = %.3f ms/msg  RSS %s at start, peak %s (since %s), %s at end\n",
			s.PID, s.CPUSeconds, s.CPUMsPerMsg, kib(s.RSSStartKB), kib(s.PeakRSSKB), s.PeakSince, kib(s.RSSEndKB))
		if s.Error != "" {
			pf("  /proc: %s\n", s.Error)
		}
	}
	if l := r.Load; l != nil {
		cpus := "CPU"
		if l.CPUs != 1 {
			cpus = "CPUs"
		}
		pf("load        this process CPU %.2fs = %.0f %% of its %d %s", l.CPUSeconds, 100*l.Share, l.CPUs, cpus)
		if l.Bound {
			pf("  ⚠ load-bound: the rate is the load generator's; the server's is at least that")
		}
		pf("\n")
	}
	if u := r.Unread; u != nil {
		first := ""
		if c.UnreadFirst != "" {
			first = fmt.Sprintf(" after %q", c.UnreadFirst)
		}
		pf("unread      %d of %d opened, each to send %s of %q%s without reading; %s sent in %.1fs\n",
			u.Opened, u.Requested, kib(u.BytesPerConn>>10), u.Command, first, kib(u.BytesSent>>10), u.WriteSeconds)
		if u.PeakRSSKB > 0 {
			pf("  server RSS %s before, peak %s (%+.1f MiB), %s after the writing",
				kib(u.RSSBeforeKB), kib(u.PeakRSSKB), float64(u.GrowthKB)/1024, kib(u.RSSAfterKB))
			if u.RSSLimitKB > 0 {
				pf(" (limit %s)", kib(u.RSSLimitKB))
			}
			pf("\n")
		}
		for _, k := range sortedByCount(u.OpenFailed) {
			pf("  %8d  not opened: %s\n", u.OpenFailed[k], k)
		}
		for _, k := range sortedByCount(u.Stops) {
			pf("  %8d  stopped writing: %s\n", u.Stops[k], k)
		}
		pf("  then read %d replies (%s)\n", u.Replies, kib(u.ReplyBytes>>10))
		for _, k := range sortedByCount(u.Outcomes) {
			pf("  %8d  %s\n", u.Outcomes[k], k)
		}
	}
	for _, held := range []struct {
		name string
		h    *HeldReport
	}{{"idle", r.Idle}, {"silent", r.Silent}} {
		h := held.h
		if h == nil {
			continue
		}
		pf("%-11s %d of %d opened in %.1fs", held.name, h.Opened, h.Requested, h.OpenSeconds)
		if h.RSSAfterKB > 0 {
			pf("; server RSS %s → %s (%.2f KiB per session)", kib(h.RSSBeforeKB), kib(h.RSSAfterKB), h.PerConnKB)
		}
		pf("\n")
		if held.name == "idle" && c.IdleRcpts > 0 {
			pf("  after a transaction of %d recipients of %d bytes and RSET: %d accepted\n", c.IdleRcpts, c.IdleRcptLen, h.RcptsAccepted)
			for _, k := range sortedByCount(h.RcptsRefused) {
				pf("  %8d  recipients refused: %s\n", h.RcptsRefused[k], k)
			}
		}
		if held.name == "silent" {
			from := "spread"
			if c.SilentSource != "" {
				from = c.SilentSource
			}
			pf("  MAIL FROM:<> RCPT TO:<%s> BDAT %s, then nothing; from %s\n", c.SilentRcpt, joinInts(c.SilentBDAT, " or "), from)
		}
		writeHeld(ew, h)
	}
	if h := r.Slow; h != nil {
		pf("slow        %d of %d opened, %d bytes trickled, one every %v", h.Opened, h.Requested, h.BytesSent, c.SlowInterval)
		if h.LastClose > 0 {
			pf("; closed by the server after %.1fs to %.1fs", h.FirstClose, h.LastClose)
		}
		pf("\n")
		writeHeld(ew, h)
	}
	if v := r.Verify; v != nil {
		status := "OK"
		if !v.OK() {
			status = "FAILED"
		}
		pf("verify      %s: %d files; %d acked: %d present, %d LOST; %d DUPLICATE; %d present but not acked\n",
			status, v.Files, v.Acked, v.Present, v.Lost, v.Duplicates, v.Unacked)
		pf("  sizes: %d checked, %d WRONG; contents (SHA-256): %d checked, %d WRONG; S= in names: %d checked, %d WRONG; %.1f MB stored\n",
			v.SizeChecked, v.SizeMismatch, v.SumChecked, v.SumMismatch, v.NameSizeChecked, v.NameSizeMismatch, float64(v.Bytes)/1e6)
		if n := v.Incomplete + v.Misplaced + v.Unended + v.Unknown; n > 0 {
			pf("  %d INCOMPLETE, %d MISPLACED, %d stored before their end of data, %d UNKNOWN\n", v.Incomplete, v.Misplaced, v.Unended, v.Unknown)
		}
		if len(v.LostMarkers) > 0 {
			pf("  lost: %s\n", strings.Join(v.LostMarkers, " "))
		}
		if len(v.DuplicateMarkers) > 0 {
			pf("  duplicate: %s\n", strings.Join(v.DuplicateMarkers, " "))
		}
		if len(v.MismatchMarkers) > 0 {
			pf("  wrong size: %s\n", strings.Join(v.MismatchMarkers, " "))
		}
		for _, p := range v.Problems {
			pf("  problem: %s\n", p)
		}
	}
	return ew.err
}

func writeHeld(ew *errWriter, h *HeldReport) {
	for _, k := range sortedByCount(h.OpenFailed) {
		ew.printf("  %8d  not opened: %s\n", h.OpenFailed[k], k)
	}
	for _, k := range sortedByCount(h.Outcomes) {
		ew.printf("  %8d  %s\n", h.Outcomes[k], k)
	}
}

func perConnText(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}

// joinInts formats v joined by sep.
func joinInts(v []int64, sep string) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.FormatInt(n, 10)
	}
	return strings.Join(s, sep)
}

// kib formats a KiB count as MiB.
func kib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/1024) }

// sortedByCount returns the keys of m, largest count first.
func sortedByCount(m map[string]int64) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), strings.Compare(a, b))
	})
	return keys
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

// WriteTable writes results as a Markdown table: one row per result with
// throughput, the end-of-data latency, server CPU and memory, and errors.
// With ref, a column gives each throughput as a multiple of ref's.
func WriteTable(w io.Writer, results []*Result, ref *Result) error {
	ew := &errWriter{w: w}
	head := "| scenario | conns | size | msgs/s | MB/s | 250 wait p50 ms | p99 ms | server CPU ms/msg | peak RSS MiB | load CPU | failed | errors |"
	sep := "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
	if ref != nil {
		head += " × ref |"
		sep += "--:|"
	}
	ew.printf("%s\n%s\n", head, sep)
	for _, r := range results {
		cpu, rss := "–", "–"
		if s := r.Server; s != nil {
			cpu = fmt.Sprintf("%.3f", s.CPUMsPerMsg)
			rss = fmt.Sprintf("%.1f", float64(s.PeakRSSKB)/1024)
		}
		var errs []string
		for _, k := range sortedByCount(r.Errors) {
			errs = append(errs, fmt.Sprintf("%d× %s", r.Errors[k], k))
		}
		if len(errs) > 3 {
			errs = append(errs[:3], "…")
		}
		errText := strings.Join(errs, "; ")
		if errText == "" {
			errText = "none"
		}
		label := r.Config.Label
		if label == "" {
			label = r.Config.Target
		}
		ew.printf("| %s | %d | %s | %.0f | %.1f | %.3f | %.3f | %s | %s | %s | %d | %s |",
			mdEscape(label), r.Config.Conns, r.Config.Size, r.MsgsPerSec, r.MBPerSec,
			r.Latency.EndOfData.P50, r.Latency.EndOfData.P99, cpu, rss, loadText(r.Load), r.Failed, mdEscape(errText))
		if ref != nil {
			if ref.MsgsPerSec > 0 {
				ew.printf(" %.2f |", r.MsgsPerSec/ref.MsgsPerSec)
			} else {
				ew.printf(" – |")
			}
		}
		ew.printf("\n")
	}
	return ew.err
}

// loadText is the load generator's CPU share, "94 % ⚠" when load-bound,
// "–" when not measured.
func loadText(l *LoadStats) string {
	if l == nil {
		return "–"
	}
	t := fmt.Sprintf("%.0f %%", 100*l.Share)
	if l.Bound {
		t += " ⚠"
	}
	return t
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
