#!/usr/bin/env bash
# idlemem.sh: section a's idle-session RSS of hardening.sh alone: a fresh
# server (CPU 0, GOMAXPROCS=1, GOMEMLIMIT=700MiB), warmed up with 200
# messages plaintext and 200 over STARTTLS, then N idle sessions (after
# EHLO; over TLS with KIND=tls) and the server's RSS growth per session.
# With PROFILE=1 the sessions are held longer and a heap profile
# (inuse_space, after a GC) and the goroutines' stack figures are taken
# while they are open (a separate run: the GC of the profile would move
# the RSS figure).
#
#   bench/idlemem.sh [tls|plain] [N]   (BIN, default bin/nanomx; PROFILE)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/bin/nanomx}
KIND=${1:-tls}
N=${2:-5000}
PROFILE=${PROFILE:-0}
[ -x "$BIN" ] || { echo "idlemem: $BIN missing: run make build" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d "$ROOT/bench/.idlemem.XXXXXX")
PID=
cleanup() {
	if [ -n "$PID" ]; then
		stop_pids 10 "$PID" # bench/lib.sh, sourced before the server starts
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "idlemem: $*" >&2; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh" # free_port, ecdsa_cert
ecdsa_cert "$WORK"
PORT=$(free_port 3700)
PPROF=$(free_port $((PORT + 1)))
mkdir -p "$WORK/mail"
cat >"$WORK/c.toml" <<C
hostname = "mx.bench.test"
listen = ["127.0.0.1:$PORT"]
maildir_root = "$WORK/mail"
domains = ["bench.test"]
postmaster = "bench@bench.test"
spf = false
dkim = false
dmarc = false
iprev = false
mailboxes = ["b1@bench.test", "b2@bench.test", "bench@bench.test"]
max_connections = 20000
max_connections_per_ip = 20000
fsync = true
log_level = "warn"
tls_cert = "$WORK/cert.pem"
tls_key = "$WORK/key.pem"
max_tls_sessions = $((N + 1000))
pprof = "127.0.0.1:$PPROF"
C
taskset -c 0 env GOMAXPROCS=1 GOMEMLIMIT=700MiB ${SERVER_ENV:-} "$BIN" serve -config "$WORK/c.toml" >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do [ -n "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ] && break; sleep 0.1; done
B=(taskset -c 1 "$BIN" bench -seed 1 -from sender@example.net -target "127.0.0.1:$PORT")
TLS=()
[ "$KIND" = tls ] && TLS=(-tls -tls-ca "$WORK/cert.pem" -tls-servername mx.bench.test)
"${B[@]}" -to b1@bench.test -conns 10 -count 200 -json >/dev/null
"${B[@]}" -to b1@bench.test -conns 10 -count 200 -tls -json >/dev/null
if [ "$PROFILE" = 1 ]; then
	# One message a second for 40 s holds the idle sessions that long.
	"${B[@]}" -to b2@bench.test -conns 1 -rate 1 -duration 40s -idle "$N" "${TLS[@]}" -json >"$WORK/r.json" &
	BP=$!
	for _ in $(seq 300); do
		g=$(ss -Htn state established "sport = :$PORT" | wc -l)
		[ "$g" -ge "$N" ] && break
		sleep 0.2
	done
	sleep 8
	echo "goroutines: $(curl -s "http://127.0.0.1:$PPROF/debug/pprof/goroutine?debug=1" | head -1)"
	grep -E 'VmRSS|Threads' "/proc/$PID/status"
	curl -s "http://127.0.0.1:$PPROF/debug/pprof/heap?gc=1" >"$WORK/heap.pb.gz"
	cp "$WORK/heap.pb.gz" "${PROFILE_OUT:-/tmp/idlemem-heap.pb.gz}"
	go tool pprof -sample_index=inuse_space -top "$WORK/heap.pb.gz" 2>/dev/null | head -25
	curl -s "http://127.0.0.1:$PPROF/debug/pprof/heap?debug=1" | grep -E '^# (HeapAlloc|HeapInuse|HeapSys|HeapIdle|HeapReleased|Stack|MSpan|GCSys|OtherSys|Sys|NumGC) ' || true
	curl -s "http://127.0.0.1:$PPROF/debug/pprof/goroutine?debug=1" >"$WORK/g.txt"
	cp "$WORK/g.txt" "${PROFILE_OUT:-/tmp/idlemem-heap.pb.gz}.goroutines.txt"
	wait "$BP" || true
else
	"${B[@]}" -to b2@bench.test -conns 1 -count 20 -idle "$N" "${TLS[@]}" -pid "$PID" -json >"$WORK/r.json" || true
	jq -c '{kind: "'"$KIND"'", opened: .idle.opened, rss_before_kb: .idle.rss_before_kb, rss_after_kb: .idle.rss_after_kb, per_conn_kib: .idle.per_conn_kb}' "$WORK/r.json"
fi
