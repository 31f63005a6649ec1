// Package bench is a load generator for SMTP servers. It speaks only SMTP
// over TCP, so it measures nanomx, Postfix's smtp-sink, Postfix or any
// other server side by side.
//
// Run sends messages over a number of concurrent sessions, bounded by count
// and by time, and measures throughput and latency (connect, greeting, and
// the wait from the end of the data to its 250, where the server stores
// and fsyncs) with HdrHistogram. A message counts as delivered only when
// its end of data is answered 250. Each message carries a marker header,
// "X-Nanomx-Bench: <runid>-<seq>", so that VerifyMaildir can check
// afterwards that every acknowledged message was stored, once and intact
// (its size, its SHA-256 and the ,S= of its file name). The crash test of
// nanomx uses VerifyMaildir for its own load.
//
// Sessions speak SMTP through package smtpc, the client the tests of
// nanomx share.
//
// With Config.TLS every session, the held ones included, upgrades with
// STARTTLS (RFC 3207) after EHLO and says EHLO again; the handshakes of
// the load sessions are measured too. A server that does not offer
// STARTTLS fails the session.
//
// Besides the load, a run can hold idle sessions open (Config.Idle) or
// trickle transactions a byte at a time (Config.Slow) and report what the
// server did to them, and, given a local server's PID, read its CPU time
// and memory from /proc.
//
// The generator is meant to stay cheap: message bodies are generated once
// per run and shared, a message costs one header build and one writev, and
// a session is one goroutine with reused buffers.
package bench
