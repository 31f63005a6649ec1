package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// SLOStep is one open-loop run of an SLO search.
type SLOStep struct {
	Rate      float64 `json:"rate"`       // offered, messages/s
	Achieved  float64 `json:"msgs_per_s"` // delivered, messages/s
	P50       float64 `json:"p50_ms"`     // from the scheduled arrival to the 250
	P99       float64 `json:"p99_ms"`
	Attempted int64   `json:"attempted"`
	Delivered int64   `json:"delivered"`
	Failed    int64   `json:"failed"`
	Unserved  int64   `json:"unserved"`
	// OK: p99 within the bound, at most 1 % failed, none unserved.
	OK bool `json:"ok"`
}

// SLOResult is what SearchSLO found.
type SLOResult struct {
	SLO time.Duration `json:"-"`
	// SLOMs is SLO in milliseconds, for the JSON.
	SLOMs float64 `json:"slo_ms"`
	// Best is the highest rate tried whose step was OK (0 when none was),
	// BestResult that step's full result.
	Best       float64   `json:"best_rate"`
	Steps      []SLOStep `json:"steps"`
	BestResult *Result   `json:"best_result,omitempty"`
}

// Bounds of the search.
const (
	sloMaxSteps  = 14
	sloPrecision = 0.05 // stop bisecting when the bracket is within 5 %
	sloMaxRate   = 1e6
)

// SearchSLO finds the highest open-loop rate at which the p99 of
// Latencies.Scheduled stays within slo: it runs cfg (Duration per step,
// default 5 s) at cfg.Rate, doubles the rate while the step is OK, then
// bisects between the last OK rate and the first one that was not until
// they are within 5 % (at most 14 steps in all). Every step is a fresh
// run with its own run ID; cfg.Count is ignored. progress, if not nil,
// gets one line per step.
func SearchSLO(ctx context.Context, cfg Config, slo time.Duration, progress io.Writer) (*SLOResult, error) {
	if cfg.Rate <= 0 {
		return nil, errors.New("slo: needs a starting rate (-rate)")
	}
	if slo <= 0 {
		return nil, errors.New("slo: must be positive")
	}
	if cfg.Duration == 0 {
		cfg.Duration = 5 * time.Second
	}
	cfg.Count = 0
	// A step whose queue does not drain soon after its arrivals end has
	// failed anyway: cut it, and count what is left unserved.
	cfg.MaxDuration = cfg.Duration + max(cfg.Duration, 10*slo, 5*time.Second)
	base, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	res := &SLOResult{SLO: slo, SLOMs: float64(slo) / float64(time.Millisecond)}
	step := func(rate float64) (bool, error) {
		c := cfg
		c.Rate = rate
		c.RunID = fmt.Sprintf("%s-s%d", base.RunID, len(res.Steps)+1)
		r, err := Run(ctx, c)
		if err != nil {
			return false, err
		}
		s := SLOStep{Rate: rate, Achieved: r.MsgsPerSec, P50: r.Latency.Scheduled.P50, P99: r.Latency.Scheduled.P99,
			Attempted: r.Attempted, Delivered: r.Delivered, Failed: r.Failed, Unserved: r.Unserved}
		s.OK = r.Delivered > 0 && s.P99 <= res.SLOMs && s.Failed*100 <= s.Attempted && s.Unserved == 0
		res.Steps = append(res.Steps, s)
		if progress != nil {
			fmt.Fprintf(progress, "slo: rate %.0f/s: %.0f msgs/s delivered, p99 %.1f ms, %d failed, %d unserved: %s\n",
				rate, s.Achieved, s.P99, s.Failed, s.Unserved, map[bool]string{true: "ok", false: "over"}[s.OK])
		}
		if s.OK && rate > res.Best {
			res.Best, res.BestResult = rate, r
		}
		return s.OK, ctx.Err()
	}
	lo, hi := 0.0, 0.0
	for rate := cfg.Rate; len(res.Steps) < sloMaxSteps && rate <= sloMaxRate; rate *= 2 {
		ok, err := step(rate)
		if err != nil {
			return res, err
		}
		if !ok {
			hi = rate
			break
		}
		lo = rate
	}
	for hi > 0 && len(res.Steps) < sloMaxSteps && (hi-lo)/hi > sloPrecision {
		mid := (lo + hi) / 2
		ok, err := step(mid)
		if err != nil {
			return res, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return res, nil
}

// WriteText writes the steps of the search as a table and its finding.
func (s *SLOResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("| offered msgs/s | delivered msgs/s | p50 ms | p99 ms | failed | unserved | p99 ≤ %g ms |\n|--:|--:|--:|--:|--:|--:|---|\n", s.SLOMs)
	for _, st := range s.Steps {
		ok := "no"
		if st.OK {
			ok = "yes"
		}
		ew.printf("| %.0f | %.0f | %.1f | %.1f | %d | %d | %s |\n", st.Rate, st.Achieved, st.P50, st.P99, st.Failed, st.Unserved, ok)
	}
	if s.Best > 0 {
		ew.printf("\nhighest rate with p99 ≤ %g ms (from the scheduled arrival to the 250): %.0f msgs/s\n", s.SLOMs, s.Best)
	} else {
		ew.printf("\nno rate tried kept p99 ≤ %g ms\n", s.SLOMs)
	}
	return ew.err
}
