#!/usr/bin/env bash
# nanode.sh: the "nanode" benchmark profile, a 1-CPU, 1 GB VPS. Run by
# `make bench` after `make build`; see README.md, "Benchmarking".
#
# nanomx runs pinned to CPU 0 with GOMAXPROCS=1, GOMEMLIMIT=700MiB and
# fsync on; the load generator (`nanomx bench`, and Postfix's smtp-source
# for the agreement check) runs pinned to CPU 1. Every run is bounded and
# aimed at 127.0.0.1 only. Results: bench/RESULTS.md, bench/throughput.svg.
#
# Discipline: every scenario runs BENCH_ROUNDS times (default 3), the
# scenarios in turn within each round (smtp-sink's among them), every run
# into a fresh, never-used mailbox after waiting for file creation to be
# fast (fs_wait, bench/lib.sh); the table gives each scenario's median and
# min–max and flags a spread over 25 %. Besides the matrix: STARTTLS rows
# (sessions reused; a connection and full handshake per message with an
# ECDSA P-256 certificate; the same with session resumption offered), the
# internet profile (-profile internet) and an open-loop search for the
# highest rate whose p99 stays within 100 ms (-rate -slo), and the
# sender authentication rows (bench/auth.sh: checks off / on / on with a
# DNS server answering after 500 ms, warm and from a restart, about 160 s). About 17 minutes with
# the defaults.
#
# Environment: BENCH_DURATION (default 10s per scenario), BENCH_ROUNDS (3),
# BENCH_IDLE (default 10000 idle sessions), BENCH_AGREE_REPS (default 3),
# BENCH_SLO (100ms), BENCH_SLO_START (500 msgs/s), BENCH_SLO_STEP (5s).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/nanomx
OUT=$ROOT/bench
DURATION=${BENCH_DURATION:-10s}
IDLE=${BENCH_IDLE:-10000}
REPS=${BENCH_AGREE_REPS:-3}
ROUNDS=${BENCH_ROUNDS:-3}
SLO=${BENCH_SLO:-100ms}
SLO_START=${BENCH_SLO_START:-500}
SLO_STEP=${BENCH_SLO_STEP:-5s}
SEED=1
SERVER_CPU=0
LOAD_CPU=1

die() { echo "nanode: $*" >&2; exit 1; }
log() { echo "nanode: $*" >&2; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

tool() {
	local t
	t=$(command -v "$1" 2>/dev/null || true)
	[ -z "$t" ] && [ -x "/usr/sbin/$1" ] && t=/usr/sbin/$1
	[ -n "$t" ] || die "$1 not found (apt-get install ${2:-$1})"
	echo "$t"
}
[ -x "$BIN" ] || die "$BIN missing: run make build"
TASKSET=$(tool taskset util-linux)
SINK=$(tool smtp-sink postfix)
SOURCE=$(tool smtp-source postfix)
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (server and load generator each pinned to one)"

# The maildir lives in the repository's folder, on the same disk as the
# work tree, in a temporary folder removed at the end.
WORK=$(mktemp -d "$OUT/.run.XXXXXX")
SERVER_PID=
SINK_PID=
cleanup() {
	local rc=$?
	# shellcheck disable=SC2086 # empty when not started
	stop_pids 30 $SERVER_PID $SINK_PID
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Connections need descriptors on both sides: 10,000 idle sessions each.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$IDLE" -gt $((NOFILE - 1000)) ]; then
	log "ulimit -n is $NOFILE: holding $((NOFILE - 1000)) idle sessions instead of $IDLE"
	IDLE=$((NOFILE - 1000))
fi

PORT=$(free_port 2701)
SINK_PORT=$(free_port $((PORT + 1)))
MAILDIR=$WORK/mail
RES=$WORK/results
mkdir -p "$MAILDIR" "$RES"
PROBE_DIR=$MAILDIR/bench.test/.probe
ecdsa_cert "$WORK"
BOXES=100
CONFIG=$WORK/nanomx.toml
# One mailbox per scenario (see next_box).
cat >"$CONFIG" <<EOF
hostname = "mx.bench.test"
listen = ["127.0.0.1:$PORT"]
maildir_root = "$MAILDIR"
domains = ["bench.test"]
postmaster = "bench@bench.test"
# The sender-authentication checks (on with a config file) need DNS;
# these rows measure the receiver itself (bench/auth.sh measures them).
spf = false
dkim = false
dmarc = false
iprev = false
mailboxes = [$(for i in $(seq $BOXES); do printf '"b%d@bench.test", ' "$i"; done)"bench@bench.test"]
max_connections = 20000
max_connections_per_ip = 20000
tls_cert = "$WORK/cert.pem"
tls_key = "$WORK/key.pem"
fsync = true
log_level = "warn"
EOF

log "starting nanomx on 127.0.0.1:$PORT (CPU $SERVER_CPU), maildir $MAILDIR"
"$TASKSET" -c $SERVER_CPU env GOMAXPROCS=1 GOMEMLIMIT=700MiB "$BIN" serve -config "$CONFIG" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_port "$PORT" || die "nanomx did not start"

SINK_ARGS=()
[ "$(id -u)" = 0 ] && SINK_ARGS=(-u nobody) # smtp-sink refuses to run as root
log "starting smtp-sink on 127.0.0.1:$SINK_PORT (CPU $SERVER_CPU)"
"$TASKSET" -c $SERVER_CPU "$SINK" "${SINK_ARGS[@]}" "127.0.0.1:$SINK_PORT" 1000 >/dev/null 2>&1 &
SINK_PID=$!
wait_port "$SINK_PORT" || die "smtp-sink did not start"

# next_box gives each run a Maildir of its own, b1, b2, ..., flushes the
# disk so that it does not pay for the last one's writeback, and waits
# for file creation to be fast. Fresh, not emptied: on ext4, a new/ folder
# that once held tens of thousands of files stays several times slower to
# deliver into after they are deleted, which would make the order of
# scenarios matter.
BOX=0
FS_SLOW=()
next_box() {
	BOX=$((BOX + 1))
	[ $BOX -le $BOXES ] || die "out of mailboxes"
	TO=b$BOX@bench.test
	sync
	fs_wait "$PROBE_DIR"
	[ "$FS_US" -le "$FS_LIMIT_US" ] || FS_SLOW+=("b$BOX ($FS_US µs)")
}

# bench NAME ARGS...: one run of nanomx bench pinned to the load CPU, to
# the current mailbox, its JSON result in $RES/r<round>/NAME.json.
COMMON=(-seed $SEED -from sender@example.net)
bench() {
	local name=$1
	shift
	log "round $ROUND, $name: nanomx bench -to $TO $*"
	local rc=0 out="$RES/r$ROUND/$name.json"
	mkdir -p "$RES/r$ROUND"
	"$TASKSET" -c $LOAD_CPU "$BIN" bench -label "$name" "${COMMON[@]}" -to "$TO" "$@" -json >"$out" || rc=$?
	# Exit 1 (nothing delivered, or a lost message) still wrote a result:
	# it goes in the report, and the check at the end fails the run.
	[ $rc -le 1 ] && [ -s "$out" ] || die "$name failed (exit $rc)"
	[ $rc -eq 0 ] || FAILED+=("$name (round $ROUND)")
	ALL+=("$out")
}
ALL=()
FAILED=()

json_num() { sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" "$1" | head -n 1; }
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}'; }

START=$(date -u '+%Y-%m-%d %H:%M UTC')
T0=$(date +%s)

# A short warm-up: page cache, the server's pools.
TO=bench@bench.test
"$TASKSET" -c $LOAD_CPU "$BIN" bench -target "127.0.0.1:$PORT" "${COMMON[@]}" -to $TO -conns 10 -count 2000 -json >/dev/null

# The scenarios, ROUNDS times in turn: the matrix (concurrency × size,
# sessions reused, as smtp-source -d, no pipelining, as smtp-source has
# none), the extra rows and smtp-sink; every acked message verified.
V() { echo -verify-maildir "$MAILDIR/bench.test/${TO%@*}"; }
for ROUND in $(seq "$ROUNDS"); do
	MATRIX=()
	for size in 1KB 10KB 100KB; do
		for conns in 1 50 200; do
			name="nanomx c$conns $size"
			next_box
			bench "$name" -target "127.0.0.1:$PORT" -conns $conns -size $size -duration "$DURATION" \
				-pid "$SERVER_PID" $(V)
			MATRIX+=("$RES/r$ROUND/$name.json")
		done
	done
	next_box
	bench "nanomx c50 10KB pipelining" -target "127.0.0.1:$PORT" -conns 50 -size 10KB -duration "$DURATION" \
		-pipelining -pid "$SERVER_PID" $(V)
	next_box
	bench "nanomx c50 10KB per-conn 1" -target "127.0.0.1:$PORT" -conns 50 -size 10KB -duration "$DURATION" \
		-per-conn 1 -pid "$SERVER_PID" $(V)
	next_box
	bench "nanomx c50 10KB STARTTLS" -target "127.0.0.1:$PORT" -conns 50 -size 10KB -duration "$DURATION" \
		-tls -pid "$SERVER_PID" $(V)
	next_box
	bench "nanomx c50 10KB STARTTLS per-conn 1" -target "127.0.0.1:$PORT" -conns 50 -size 10KB -duration "$DURATION" \
		-tls -per-conn 1 -pid "$SERVER_PID" $(V)
	next_box
	bench "nanomx c50 10KB STARTTLS per-conn 1 resumed" -target "127.0.0.1:$PORT" -conns 50 -size 10KB -duration "$DURATION" \
		-tls -per-conn 1 -tls-resume -pid "$SERVER_PID" $(V)
	next_box
	bench "nanomx c50 internet profile" -target "127.0.0.1:$PORT" -conns 50 -profile internet -duration "$DURATION" \
		-pid "$SERVER_PID" $(V)
	next_box
	bench "nanomx c50 10KB + $IDLE idle" -target "127.0.0.1:$PORT" -conns 50 -size 10KB -duration "$DURATION" \
		-idle "$IDLE" -pid "$SERVER_PID" $(V)
	next_box
	bench "smtp-sink c50 10KB" -target "127.0.0.1:$SINK_PORT" -conns 50 -size 10KB -duration "$DURATION" \
		-pid "$SINK_PID"
done
REF="$RES/r$ROUNDS/smtp-sink c50 10KB.json"

# Open loop: the highest arrival rate whose p99, from each message's
# scheduled arrival to its 250, stays within $SLO (one search, steps of
# $SLO_STEP into one fresh mailbox).
next_box
log "open-loop search: -rate $SLO_START -slo $SLO"
"$TASKSET" -c $LOAD_CPU "$BIN" bench "${COMMON[@]}" -to "$TO" -target "127.0.0.1:$PORT" -conns 200 -size 10KB \
	-rate "$SLO_START" -slo "$SLO" -duration "$SLO_STEP" >"$WORK/slo.md" || log "the open-loop search found no rate within $SLO"
next_box
"$TASKSET" -c $LOAD_CPU "$BIN" bench "${COMMON[@]}" -to "$TO" -target "127.0.0.1:$PORT" -conns 200 -profile internet \
	-rate "$SLO_START" -slo "$SLO" -duration "$SLO_STEP" >"$WORK/slo-internet.md" || log "the open-loop internet search found no rate within $SLO"

# Agreement with smtp-source: the same count, sessions and size against
# the same server, alternating, $REPS times each; medians compared.
# smtp-source -l is the body alone; its header adds about 200 bytes.
agree() { # agree LABEL PORT COUNT
	local label=$1 port=$2 count=$3 i s e
	: >"$WORK/agree-bench" && : >"$WORK/agree-source"
	for i in $(seq "$REPS"); do
		next_box
		"$TASKSET" -c $LOAD_CPU "$BIN" bench -target "127.0.0.1:$port" "${COMMON[@]}" -to "$TO" -conns 50 -size 10KB \
			-count "$count" -json >"$WORK/agree.json"
		json_num "$WORK/agree.json" msgs_per_s >>"$WORK/agree-bench"
		next_box
		s=$(date +%s.%N)
		"$TASKSET" -c $LOAD_CPU "$SOURCE" -s 50 -m "$count" -l 10000 -d -f sender@example.net -t "$TO" \
			"127.0.0.1:$port"
		e=$(date +%s.%N)
		awk -v n="$count" -v s="$s" -v e="$e" 'BEGIN {printf "%.1f\n", n / (e - s)}' >>"$WORK/agree-source"
	done
	# Each pair ran back to back, under the same conditions: the median of
	# the pairs' ratios is robust to the machine's drift between pairs.
	local b o r
	b=$(median <"$WORK/agree-bench")
	o=$(median <"$WORK/agree-source")
	r=$(paste "$WORK/agree-bench" "$WORK/agree-source" | awk '{print $1 / $2}' | median)
	log "agreement on $label: nanomx bench $b msgs/s, smtp-source $o msgs/s, pairs' ratio $r"
	AGREE_ROWS+="| $label | $count | $(paste -sd' ' "$WORK/agree-bench" | awk '{for (i = 1; i <= NF; i++) printf "%.0f ", $i}')| $(paste -sd' ' "$WORK/agree-source" | awk '{for (i = 1; i <= NF; i++) printf "%.0f ", $i}')| $(printf %.0f "$b") | $(printf %.0f "$o") | $(printf %.2f "$r") |"$'\n'
}
AGREE_ROWS=
agree "smtp-sink" "$SINK_PORT" 30000
agree "nanomx" "$PORT" 10000

# Sender authentication (issue 10): servers of its own, one per run.
log "sender authentication: bench/auth.sh"
bash "$ROOT/bench/auth.sh" "$WORK/auth.md" || FAILED+=("sender authentication (bench/auth.sh)")
AUTH_TEXT=$(cat "$WORK/auth.md" 2>/dev/null || echo "## Sender authentication (issue 10)"$'\n\n'"bench/auth.sh failed.")

"$BIN" bench -chart "$OUT/throughput.svg" -ref "$REF" \
	-title "nanomx on one CPU, fsync on: delivered msgs/s vs concurrent sessions" "${MATRIX[@]}"
CELLS=$("$BIN" bench -cells "${ALL[@]}")
TABLE=$("$BIN" bench -table -ref "$REF" "${ALL[@]}")
SUMMARIES=$("$BIN" bench -summary "${ALL[@]}")
# cellmed NAME: the median msgs/s of scenario NAME over the rounds.
cellmed() {
	for r in $(seq "$ROUNDS"); do json_num "$RES/r$r/$1.json" msgs_per_s; done | median
}
NANO_RATE=$(cellmed "nanomx c50 10KB")
SINK_RATE=$(cellmed "smtp-sink c50 10KB")
TLS_RATE=$(cellmed "nanomx c50 10KB STARTTLS")
PROFILE_TEXT=$(for r in $(seq "$ROUNDS"); do "$BIN" bench -summary "$RES/r$r/nanomx c50 internet profile.json" | awk '/^profile/ {p = 1; print; next} p && /^  / {print; next} {p = 0}'; echo; done)
FS_NOTE="Every run waited until creating a file beside the mailboxes took at most $FS_LIMIT_US µs."
[ ${#FS_SLOW[@]} -eq 0 ] || FS_NOTE="**File creation stayed slow (> $FS_LIMIT_US µs) before: ${FS_SLOW[*]}**; those runs are skewed low."
T1=$(date +%s)

# Machine details.
DEV=$(df --output=source "$WORK" | tail -n 1)
FSTYPE=$(df --output=fstype "$WORK" | tail -n 1)
MOUNTOPTS=$(findmnt -no OPTIONS -T "$WORK" 2>/dev/null || echo unknown)
BLK=$(basename "$(readlink -f "$DEV")")
ROT=$(cat "/sys/class/block/$BLK/queue/rotational" 2>/dev/null || echo "?")
case $ROT in 0) DISK="non-rotational" ;; 1) DISK="rotational" ;; *) DISK="unknown type" ;; esac
VIRT=$(systemd-detect-virt 2>/dev/null || echo unknown)

{
	cat <<EOF
# nanomx benchmark: the "nanode" profile

Generated by \`make bench\` (\`bench/nanode.sh\`) on $START in $((T1 - T0)) s. Do not edit by hand;
run \`make bench\` again. The Go micro-benchmarks of the same run are in
[microbench.txt](microbench.txt).

The profile models a 1-CPU, 1 GB VPS: nanomx runs on CPU $SERVER_CPU alone
(\`taskset -c $SERVER_CPU\`, \`GOMAXPROCS=1\`, which nanomx raises to 2 Ps on that one CPU as
it does everywhere (server/procs.go), \`GOMEMLIMIT=700MiB\`) with fsync on, and
the load generator on CPU $LOAD_CPU. One server runs the whole matrix, as in
production. Every scenario runs $ROUNDS times, the scenarios in turn within
each round (smtp-sink's among them); every run delivers to a fresh, never-used
mailbox of its own after waiting for file creation to be fast, runs for
$DURATION with a fixed seed ($SEED), reuses sessions (\`-per-conn 0\`) and does not
pipeline unless the row says so. Every message acked with 250 is then looked
up in the Maildir (\`-verify-maildir\`): a lost or duplicated message fails
the run. $FS_NOTE

## Machine

| | |
|---|---|
| CPUs | $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') |
| memory | $(free -h | awk '/^Mem:/ {print $2}') |
| virtualisation | $VIRT |
| kernel | $(uname -srm) |
| Go | $(go version 2>/dev/null | sed 's/^go version //') |
| nanomx | $("$BIN" version) |
| maildir file system | $FSTYPE on $DEV ($DISK), $MOUNTOPTS |
| open files | ulimit -n $NOFILE |

Other processes on the machine were not stopped; figures from a shared or
virtual machine vary by 10-30 % from run to run.

## Results

Throughput is delivered messages (250 after the data) per second; "250 wait"
is the time from the last byte of the data to its 250, where the server
stores and fsyncs; server CPU is nanomx's user + system time over the run
divided by the messages (the medians over the rounds).
$(spread_note)

$CELLS

STARTTLS rows: a self-signed ECDSA P-256 certificate, not verified; "per-conn 1"
opens a connection and does a full handshake per message, "resumed" offers
TLS session resumption (one client session cache; the resumed column says how
many connections resumed). The internet profile is \`-profile internet\`
(bench/profile.go): 90 % of connections STARTTLS, 80 % of them one message,
the mix sizes, 8 % unknown recipients, 4 % transactions dropped mid-data, 10 %
idle and 5 % slow bots held 2 s beside the load; its msgs/s counts delivered
messages only. Its plan and outcomes, per round:

\`\`\`
$PROFILE_TEXT
\`\`\`

![throughput vs concurrency](throughput.svg)

(The chart is of the last round.) nanomx at 50 sessions × 10 KB: **$(printf %.0f "$NANO_RATE") msgs/s**,
$(ratio "$NANO_RATE" "$SINK_RATE") × smtp-sink's $(printf %.0f "$SINK_RATE") msgs/s (medians, same run); STARTTLS with
sessions reused: $(printf %.0f "$TLS_RATE") msgs/s, $(ratio "$TLS_RATE" "$NANO_RATE") × plaintext.

## Open loop: the highest rate within the latency bound

\`nanomx bench -rate N -slo $SLO\`: messages arrive on a fixed schedule, N per
second, whether or not earlier ones have finished, over up to 200 sessions; the
latency is measured from each message's scheduled arrival to its 250, so a
server that falls behind shows its queue (no coordinated omission). Steps of
$SLO_STEP from $SLO_START msgs/s, doubling, then bisecting.

10 KB messages, sessions reused:

$(cat "$WORK/slo.md")

The internet profile:

$(cat "$WORK/slo-internet.md")

## Every run

<details>
<summary>one row per run, rounds in order</summary>

$TABLE

</details>

## Agreement with smtp-source

\`nanomx bench\` and Postfix's \`smtp-source\` against the same server, 50
sessions reused, 10 KB, the same message count, run alternately $REPS times each,
each run to a fresh mailbox. The last column is the median over the pairs of
bench ÷ smtp-source (the target is agreement within 15 %, a ratio of
0.85-1.15). smtp-source has no pipelining, so neither pipelines.

| server | messages | nanomx bench msgs/s | smtp-source msgs/s | bench median | source median | bench ÷ source, median of pairs |
|---|--:|---|---|--:|--:|--:|
$AGREE_ROWS
$AUTH_TEXT

## Commands

\`\`\`sh
# server, config below
ulimit -n $NOFILE
taskset -c $SERVER_CPU env GOMAXPROCS=1 GOMEMLIMIT=700MiB bin/nanomx serve -config nanomx.toml
taskset -c $SERVER_CPU smtp-sink ${SINK_ARGS[*]} 127.0.0.1:\$SINK_PORT 1000

# each matrix scenario (conns 1, 50, 200 × size 1KB, 10KB, 100KB), $ROUNDS rounds,
# to a fresh mailbox bN after sync and fs_wait (bench/lib.sh)
taskset -c $LOAD_CPU bin/nanomx bench -label NAME ${COMMON[*]} -to bN@bench.test -target 127.0.0.1:\$PORT \\
    -conns CONNS -size SIZE -duration $DURATION -pid \$SERVER_PID -verify-maildir \$MAILDIR -json
# the extra rows add -pipelining, -per-conn 1, -tls, -tls -per-conn 1,
# -tls -per-conn 1 -tls-resume, -profile internet (instead of -size) or
# -idle $IDLE; smtp-sink's uses -target 127.0.0.1:\$SINK_PORT -pid \$SINK_PID
# the open-loop searches
taskset -c $LOAD_CPU bin/nanomx bench ${COMMON[*]} -to bN@bench.test -target 127.0.0.1:\$PORT -conns 200 -size 10KB -rate $SLO_START -slo $SLO -duration $SLO_STEP
taskset -c $LOAD_CPU bin/nanomx bench ${COMMON[*]} -to bN@bench.test -target 127.0.0.1:\$PORT -conns 200 -profile internet -rate $SLO_START -slo $SLO -duration $SLO_STEP

# agreement, alternately
taskset -c $LOAD_CPU bin/nanomx bench ${COMMON[*]} -to bN@bench.test -target 127.0.0.1:\$PORT -conns 50 -size 10KB -count N -json
taskset -c $LOAD_CPU smtp-source -s 50 -m N -l 10000 -d -f sender@example.net -t bN@bench.test 127.0.0.1:\$PORT

# the table and chart
bin/nanomx bench -cells ALL.json...
bin/nanomx bench -table -ref SINK.json ALL.json...
bin/nanomx bench -chart bench/throughput.svg -ref SINK.json -title TITLE MATRIX.json...
\`\`\`

nanomx.toml:

\`\`\`toml
$(sed "s|$WORK|\$WORK|g" "$CONFIG")
\`\`\`

## Full summaries

<details>
<summary>nanomx bench output of every run</summary>

\`\`\`
$SUMMARIES
\`\`\`

</details>
EOF
} >"$OUT/RESULTS.md"

if [ ${#FAILED[@]} -gt 0 ]; then
	die "failed (nothing delivered, or acked messages lost or duplicated): ${FAILED[*]}; see bench/RESULTS.md"
fi
log "wrote bench/RESULTS.md and bench/throughput.svg in $((T1 - T0)) s"
