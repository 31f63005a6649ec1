package bench

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what a run measured. -json prints it as one object.
type Result struct {
	Config  Config    `json:"config"`
	Started time.Time `json:"started"`
	// Elapsed is the load phase: from the first connection of the load to
	// the end of the last session (idle and slow sessions are opened
	// before it and checked after it).
	Elapsed float64 `json:"elapsed_s"`
	// Stopped says what ended the load: "count", "duration",
	// "max-duration" or "interrupted".
	Stopped string `json:"stopped"`

	// Attempted messages were claimed by a session; each one is either
	// Delivered (250 to its end of data) or Failed.
	Attempted int64 `json:"attempted"`
	Delivered int64 `json:"delivered"`
	Failed    int64 `json:"failed"`
	// Bytes is the size of the delivered messages, as sent.
	Bytes       int64   `json:"bytes"`
	MsgsPerSec  float64 `json:"msgs_per_s"`
	MBPerSec    float64 `json:"mb_per_s"` // 1 MB = 10^6 bytes
	Connections int64   `json:"connections"`
	// PipeliningOffered is set when the server advertised PIPELINING.
	PipeliningOffered bool `json:"pipelining_offered"`
	// TLSResumed counts the load connections whose handshake resumed a
	// session (-tls-resume).
	TLSResumed int64 `json:"tls_resumed,omitempty"`
	// Unserved counts, in an open-loop run (-rate), the arrivals that
	// never started: the queue of waiting arrivals was full, or the run
	// was cut (max-duration) before a session took them.
	Unserved int64 `json:"unserved,omitempty"`
	// Profile is what a -profile run did besides the messages.
	Profile *ProfileReport `json:"profile,omitempty"`

	Latency Latencies `json:"latency_ms"`
	// Errors counts failed messages by stage and reply or error kind
	// ("end-of-data: 451 4.3.2", "connect: connection refused"), plus
	// events that failed no message (a refused recipient of a message that
	// was delivered to the others, a QUIT without 221).
	Errors map[string]int64 `json:"errors"`

	Server *ServerStats `json:"server,omitempty"`
	// Load is what this process, the load generator, used meanwhile
	// (Linux only).
	Load *LoadStats  `json:"load,omitempty"`
	Idle *HeldReport `json:"idle,omitempty"`
	Slow *HeldReport `json:"slow,omitempty"`
	// Silent are the -silent sessions (an announced BDAT chunk never
	// sent), Unread the -unread ones (commands whose replies are not read).
	Silent *HeldReport   `json:"silent,omitempty"`
	Unread *UnreadReport `json:"unread,omitempty"`
	Verify *Verify       `json:"verify,omitempty"`

	// Acked are the sequence numbers of the delivered messages, sorted;
	// Marker(Config.RunID, seq) is each one's marker.
	Acked []int64 `json:"-"`
}

// Latencies are the latency distributions of a run, in milliseconds.
type Latencies struct {
	// Connect is the TCP connect.
	Connect Latency `json:"connect"`
	// Greeting is from connected to the 220 greeting.
	Greeting Latency `json:"greeting"`
	// EndOfData is from the last byte of the data written to its 250: the
	// server's storage path (fsync included).
	EndOfData Latency `json:"end_of_data"`
	// Transaction is from MAIL written to that 250.
	Transaction Latency `json:"transaction"`
	// TLS is the TLS handshake of each load session (-tls), from the 220
	// answering STARTTLS to the handshake's end; the idle and slow
	// sessions' are not counted.
	TLS Latency `json:"tls_handshake,omitzero"`
	// Scheduled is, in an open-loop run (-rate), from each delivered
	// message's scheduled arrival to its 250: the wait for a free session
	// and for the server included.
	Scheduled Latency `json:"scheduled,omitzero"`
}

// Latency summarises one distribution, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// ServerStats is what /proc said about the server process (-pid).
type ServerStats struct {
	PID int `json:"pid"`
	// CPUSeconds is user plus system time during the load phase.
	CPUSeconds float64 `json:"cpu_s"`
	// CPUMsPerMsg is CPUSeconds per delivered message, in milliseconds.
	CPUMsPerMsg float64 `json:"cpu_ms_per_msg"`
	// RSS in KiB: at the start of the run, the peak (VmHWM) and at the end.
	RSSStartKB int64 `json:"rss_start_kb"`
	PeakRSSKB  int64 `json:"peak_rss_kb"`
	RSSEndKB   int64 `json:"rss_end_kb"`
	// PeakSince is "run" when the peak was reset at the start of the run
	// (/proc/PID/clear_refs), else "process start".
	PeakSince string `json:"peak_since"`
	// Error is why a reading failed, if one did.
	Error string `json:"error,omitempty"`
}

// LoadBoundShare is the share of its CPUs the load generator used, past
// which a run is load-bound: its rate is the load generator's, and the
// server's own is at least that.
const LoadBoundShare = 0.9

// LoadStats is the load generator's own CPU time over the load phase. A
// load-bound run measured the client, not the server.
type LoadStats struct {
	// CPUSeconds is this process's user plus system time.
	CPUSeconds float64 `json:"cpu_s"`
	// CPUs is how many CPUs it may run on (its affinity mask, as
	// runtime.NumCPU reads it).
	CPUs int `json:"cpus"`
	// Share is CPUSeconds ÷ (CPUs × the load phase): 1 is every CPU it
	// may use busy all along.
	Share float64 `json:"share"`
	// Bound is Share ≥ LoadBoundShare.
	Bound bool `json:"bound"`
}

// loadStats makes LoadStats of cpu seconds used on cpus over elapsed.
func loadStats(cpu float64, cpus int, elapsed float64) *LoadStats {
	l := &LoadStats{CPUSeconds: cpu, CPUs: cpus}
	if cpus > 0 && elapsed > 0 {
		l.Share = cpu / (float64(cpus) * elapsed)
	}
	l.Bound = l.Share >= LoadBoundShare
	return l
}

// HeldReport is what the server did to the idle (-idle) or slow (-slow)
// sessions held during the load.
type HeldReport struct {
	Requested int `json:"requested"`
	Opened    int `json:"opened"`
	// OpenFailed counts sessions that could not be opened, by reason.
	OpenFailed map[string]int64 `json:"open_failed,omitempty"`
	// OpenSeconds is how long opening them took.
	OpenSeconds float64 `json:"open_s"`
	// Outcomes counts the opened sessions by what had happened to them
	// when the load ended: "still open", "closed after 421 4.4.2",
	// "closed without reply", "reset", or a reply with "still open".
	Outcomes map[string]int64 `json:"outcomes"`
	// For -idle with -pid: the server's RSS (KiB) before and after the
	// idle sessions were opened, and the difference per session.
	RSSBeforeKB int64   `json:"rss_before_kb,omitempty"`
	RSSAfterKB  int64   `json:"rss_after_kb,omitempty"`
	PerConnKB   float64 `json:"per_conn_kb,omitempty"`
	// For -idle with -idle-rcpts: the recipients accepted in the
	// sessions' transactions, and the refused ones by reply.
	RcptsAccepted int64            `json:"rcpts_accepted,omitempty"`
	RcptsRefused  map[string]int64 `json:"rcpts_refused,omitempty"`
	// For -slow: bytes trickled in total, and when the server closed the
	// first and the last of those it closed (seconds after opening).
	BytesSent  int64   `json:"bytes_sent,omitempty"`
	FirstClose float64 `json:"first_close_s,omitempty"`
	LastClose  float64 `json:"last_close_s,omitempty"`
}

// UnreadReport is what the -unread sessions did and what it cost the
// server.
type UnreadReport struct {
	Requested int `json:"requested"`
	Opened    int `json:"opened"`
	// OpenFailed counts sessions that could not be opened, by reason.
	OpenFailed map[string]int64 `json:"open_failed,omitempty"`
	// Command is the line each session repeats, BytesPerConn how much of
	// it each was to send, BytesSent how much the sockets took in all.
	Command      string `json:"command"`
	BytesPerConn int64  `json:"bytes_per_conn"`
	BytesSent    int64  `json:"bytes_sent"`
	// WriteSeconds is from the first write to the last session's stop.
	WriteSeconds float64 `json:"write_s"`
	// Stops counts the sessions by why they stopped writing: "all sent",
	// "stalled" (the server took nothing for a while), "rss limit",
	// "time bound", "cut off" or a write error ("write: connection
	// reset").
	Stops map[string]int64 `json:"stops"`
	// The server's RSS (KiB, with -pid): before the sessions opened, the
	// peak (VmHWM) until they were closed, and a moment after the writing
	// stopped; GrowthKB is the peak less before. RSSLimitKB is -rss-limit.
	RSSBeforeKB int64 `json:"rss_before_kb,omitempty"`
	PeakRSSKB   int64 `json:"peak_rss_kb,omitempty"`
	RSSAfterKB  int64 `json:"rss_after_kb,omitempty"`
	GrowthKB    int64 `json:"growth_kb,omitempty"`
	RSSLimitKB  int64 `json:"rss_limit_kb,omitempty"`
	// Replies and ReplyBytes are what the sessions read once they
	// stopped writing: complete replies and bytes, all sessions together.
	Replies    int64 `json:"replies"`
	ReplyBytes int64 `json:"reply_bytes"`
	// Outcomes counts the sessions by how they ended when read: "closed
	// after 421 4.7.0", "still open" (nothing more came for a while),
	// "reset after ...". A reply named is the first one not 2xx.
	Outcomes map[string]int64 `json:"outcomes"`
}

// Histograms record microseconds from 1 µs to one hour, 3 significant
// digits.
func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
}

// recordDuration records d in h, clamped to its range.
func recordDuration(h *hdrhistogram.Histogram, d time.Duration) {
	us := max(int64(d/time.Microsecond), 1)
	_ = h.RecordValue(min(us, h.HighestTrackableValue()))
}

// latencyOf summarises h in milliseconds.
func latencyOf(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}
