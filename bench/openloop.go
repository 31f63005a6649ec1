package bench

import "time"

// maxQueued bounds the arrivals of an open-loop run waiting for a
// session: past it an arrival is counted unserved at once, so that memory
// stays bounded however far the server falls behind.
const maxQueued = 1 << 16

// arrival is one scheduled message of an open-loop run.
type arrival struct {
	seq int64
	at  time.Time // when it was due
}

// dispatch is the open-loop schedule: arrival i is due at start + i/Rate,
// whether or not the earlier ones have finished. It claims each message
// when it is due, so Count and Duration end the arrivals, and closes the
// queue at the end. A late dispatcher (a busy load CPU) sends the overdue
// arrivals at once, with their due times: the lag counts in their latency.
func (r *runner) dispatch(start time.Time) {
	defer close(r.arrivals)
	interval := float64(time.Second) / r.cfg.Rate
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for i := int64(0); ; i++ {
		at := start.Add(time.Duration(float64(i) * interval))
		if d := time.Until(at); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-r.cut.Done():
			}
		}
		seq, ok := r.claim()
		if !ok {
			return
		}
		select {
		case r.arrivals <- arrival{seq: seq, at: at}:
		default:
			r.unserved.Add(1)
		}
	}
}

// nextMessage returns the next message for a session: claimed now in a
// closed-loop run (with a zero due time), or the next arrival of an
// open-loop one. Arrivals still queued when the run is cut are counted
// unserved.
func (r *runner) nextMessage() (seq int64, due time.Time, ok bool) {
	if r.arrivals == nil {
		seq, ok = r.claim()
		return seq, time.Time{}, ok
	}
	for a := range r.arrivals {
		if r.cut.Err() != nil {
			r.unserved.Add(1)
			continue
		}
		return a.seq, a.at, true
	}
	return 0, time.Time{}, false
}

// dialFor is the dialer of a connection with STARTTLS or without; only a
// profile run has both.
func (r *runner) dialFor(withTLS bool) *dialer {
	if !withTLS && r.dialPlain != nil {
		return r.dialPlain
	}
	return r.dial
}
