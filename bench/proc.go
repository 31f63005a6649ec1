package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// procWatch measures a local server process from /proc: CPU time over the
// load phase and resident memory. A nil *procWatch measures nothing.
type procWatch struct {
	pid        int
	peakSince  string
	cpu0, cpu1 uint64 // utime+stime ticks at the start and end of the load
	rss0       int64  // KiB at the start of the run
	hwm, rss1  int64  // KiB at the end
	errs       []error
}

// watchProc starts watching pid: it resets the process's peak RSS
// (writing 5 to /proc/PID/clear_refs, Linux 4.0+; allowed for the owner or
// root) so that the peak is this run's, and reads its RSS.
func watchProc(pid int) (*procWatch, error) {
	p := &procWatch{pid: pid, peakSince: "process start"}
	if _, err := readProcStat(pid); err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err == nil {
		p.peakSince = "run"
	}
	p.rss0 = p.rss()
	return p, nil
}

// rss returns the current RSS in KiB, or 0 if it cannot be read.
func (p *procWatch) rss() int64 {
	if p == nil {
		return 0
	}
	_, rss, err := readProcMem(p.pid)
	if err != nil {
		p.errs = append(p.errs, err)
	}
	return rss
}

// startLoad reads the CPU time at the start of the load.
func (p *procWatch) startLoad() {
	if p == nil {
		return
	}
	var err error
	if p.cpu0, err = readProcStat(p.pid); err != nil {
		p.errs = append(p.errs, err)
	}
}

// endLoad reads the CPU time and memory at the end of the load.
func (p *procWatch) endLoad() {
	if p == nil {
		return
	}
	var err error
	if p.cpu1, err = readProcStat(p.pid); err != nil {
		p.errs = append(p.errs, err)
	}
	if p.hwm, p.rss1, err = readProcMem(p.pid); err != nil {
		p.errs = append(p.errs, err)
	}
}

// stats reports what was measured; delivered is the message count the CPU
// time is divided by.
func (p *procWatch) stats(delivered int64) *ServerStats {
	s := &ServerStats{
		PID:        p.pid,
		RSSStartKB: p.rss0,
		PeakRSSKB:  p.hwm,
		RSSEndKB:   p.rss1,
		PeakSince:  p.peakSince,
	}
	if p.cpu1 >= p.cpu0 && len(p.errs) == 0 {
		s.CPUSeconds = float64(p.cpu1-p.cpu0) / clockTicks
		if delivered > 0 {
			s.CPUMsPerMsg = s.CPUSeconds * 1000 / float64(delivered)
		}
	}
	if err := errors.Join(p.errs...); err != nil {
		s.Error = err.Error()
	}
	return s
}

// readProcStat returns utime+stime of pid in clock ticks.
func readProcStat(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields from the last ')'. Field 3 is then first; utime and
	// stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return utime + stime, nil
}

// readProcMem returns VmHWM (peak RSS) and VmRSS of pid in KiB.
func readProcMem(pid int) (hwm, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(k) {
		case "VmHWM":
			dst = &hwm
		case "VmRSS":
			dst = &rss
		default:
			continue
		}
		// "    12345 kB"
		v = bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))
		if *dst, err = strconv.ParseInt(string(v), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
	}
	return hwm, rss, nil
}

// settledRSS returns the server's RSS once it has stopped falling: three
// readings a second apart none lower than the one before, or limit. Memory
// a burst freed (an idle session's transaction) is given back to the
// kernel by the Go runtime's scavenger over seconds, not at once: reading
// at once would charge it to the idle sessions.
func (p *procWatch) settledRSS(ctx context.Context, limit time.Duration) int64 {
	if p == nil {
		return 0
	}
	end := time.Now().Add(limit)
	last, steady := p.rss(), 0
	for steady < 3 && time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return last
		case <-time.After(time.Second):
		}
		now := p.rss()
		if now < last {
			steady = 0
		} else {
			steady++
		}
		last = min(last, now)
	}
	return last
}
