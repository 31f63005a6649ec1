package bench

import (
	"fmt"
	"time"
)

// startProgress prints a progress line to cfg.Progress every second until
// the returned function is called with the final elapsed time; that one
// prints the last line and a newline. The line is rewritten in place with a
// carriage return, so it suits a terminal only.
func (r *runner) startProgress(start time.Time) func(time.Duration) {
	done := make(chan struct{})
	finished := make(chan struct{})
	line := func(elapsed time.Duration, rate float64) {
		fmt.Fprintf(r.cfg.Progress, "\r%7.1fs  %9d delivered  %8.0f msgs/s  %6d failed  %6d connections ",
			elapsed.Seconds(), r.delivered.Load(), rate, r.failed.Load(), r.conns.Load())
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, lastT := int64(0), start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				d := r.delivered.Load()
				// The rate of the last second, not the average: it shows
				// stalls as they happen.
				line(now.Sub(start), float64(d-last)/now.Sub(lastT).Seconds())
				last, lastT = d, now
			}
		}
	}()
	return func(elapsed time.Duration) {
		close(done)
		<-finished
		rate := 0.0
		if elapsed > 0 {
			rate = float64(r.delivered.Load()) / elapsed.Seconds()
		}
		line(elapsed, rate)
		fmt.Fprintln(r.cfg.Progress)
	}
}
