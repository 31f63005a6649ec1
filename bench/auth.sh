#!/usr/bin/env bash
# auth.sh: issue 10's sender authentication scenario. nanomx pinned to CPU
# 0 (GOMAXPROCS=1, raised to 2 by nanomx, as in bench/nanode.sh) receives 50 sessions × 10 KB,
# every message DKIM-signed (rsa-sha256, 2048 bits, relaxed/relaxed) from
# 127.0.0.2-51 (each with a confirming PTR name), with the checks off, on
# against a local DNS server (bench/authdns, on CPU 1 with the load), and
# on with that server answering every query after 500 ms. Each run starts a
# fresh server and first sends one message from each of the 50 sources,
# not counted (it fills the DNS cache and warms the new process: the
# first second of a fresh server is slower even without checks), then
# measures for AUTH_DURATION: the rates a running server keeps. A fourth
# variant, the slow DNS measured from the server's start ("restart"),
# adds the cold cache's cost: each session's first message waits for the
# lookups. Every acked message is looked up in the Maildir. The variants
# alternate within each of AUTH_ROUNDS rounds; the table gives medians,
# min-max and the ratios, for each fsync setting in AUTH_FSYNC.
#
# Usage: bash bench/auth.sh OUT.md (make build first). Called by
# bench/nanode.sh; about 160 s with the defaults.
#
# Environment: AUTH_DURATION (default 10s), AUTH_ROUNDS (3), AUTH_FSYNC
# ("true": durable, as users run it; "true false" adds fsync off),
# AUTH_SERVER_BIN (the nanomx that serves; default bin/nanomx).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/nanomx
SERVER_BIN=${AUTH_SERVER_BIN:-$BIN} # another build's server, to compare
OUTMD=${1:-$ROOT/bench/AUTH.md}
DURATION=${AUTH_DURATION:-10s}
ROUNDS=${AUTH_ROUNDS:-3}
FSYNCS=${AUTH_FSYNC:-true}
SERVER_CPU=0
LOAD_CPU=1

log() { echo "auth: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
[ -x "$BIN" ] || die "$BIN missing: run make build"
command -v taskset >/dev/null || die "taskset not found (util-linux)"

WORK=$(mktemp -d "$ROOT/bench/.auth.XXXXXX")
PIDS=()
cleanup() {
	local rc=$?
	stop_pids 10 "${PIDS[@]}"
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$WORK/authdns" ./bench/authdns

# Two DNS servers with the same zone and key: one prompt, one slow. They
# run on the load CPU: the DNS server is the network, not the MX.
start_dns() { # NAME DELAY
	taskset -c $LOAD_CPU "$WORK/authdns" -key "$WORK/dkim-$1.pem" -delay "$2" >"$WORK/dns-$1.addr" 2>"$WORK/dns-$1.log" &
	PIDS+=($!)
	for _ in $(seq 100); do [ -s "$WORK/dns-$1.addr" ] && break; sleep 0.1; done
	[ -s "$WORK/dns-$1.addr" ] || die "authdns $1 did not start: $(cat "$WORK/dns-$1.log")"
}
start_dns fast 0s
start_dns slow 500ms
DNS_FAST=$(cat "$WORK/dns-fast.addr")
DNS_SLOW=$(cat "$WORK/dns-slow.addr")

# The slow DNS once more, measured from the server's start: a restart.
COLD="checks on (DNS 500 ms; restart)"

PORT=$(free_port 2801)
RES=$WORK/results
mkdir -p "$RES"
ALL=()
FAILED=()
N=0

# run FSYNC VARIANT: one fresh server, one bench run into a fresh Maildir.
run() {
	local fsync=$1 variant=$2 checks=false dns=$DNS_FAST key=$WORK/dkim-fast.pem
	case $variant in
	"checks on") checks=true ;;
	"checks on (DNS 500 ms)" | "$COLD") checks=true dns=$DNS_SLOW key=$WORK/dkim-slow.pem ;;
	esac
	N=$((N + 1))
	local dir=$WORK/m$N
	mkdir -p "$dir"
	sync
	fs_wait "$WORK/probe"
	checks_config "$WORK/n$N.toml" "$PORT" "$dir" "$fsync" "$checks" "$dns" bench@bench.test warm@bench.test
	taskset -c $SERVER_CPU env GOMAXPROCS=1 GOMEMLIMIT=700MiB "$SERVER_BIN" serve -config "$WORK/n$N.toml" >"$WORK/s$N.log" 2>&1 &
	local pid=$!
	PIDS+=($pid)
	wait_port "$PORT" || die "nanomx did not start: $(cat "$WORK/s$N.log")"
	local label="fsync $([ "$fsync" = true ] && echo on || echo off) · $variant"
	local out="$RES/$N.json" rc=0
	log "round $ROUND, $label"
	if [ "$variant" != "$COLD" ]; then
		# One message from each of the 50 sources fills the server's DNS
		# cache (each waits for its lookups); then the measured run.
		taskset -c $LOAD_CPU "$BIN" bench -target "127.0.0.1:$PORT" -seed 2 \
			-from alice@sender.test -to warm@bench.test -dkim-key "$key" \
			-conns 50 -count 50 -size 10KB >"$WORK/warm$N.txt" 2>&1 || die "$label: warming failed: $(cat "$WORK/warm$N.txt")"
	fi
	taskset -c $LOAD_CPU "$BIN" bench -label "$label" -target "127.0.0.1:$PORT" -seed 1 \
		-from alice@sender.test -to bench@bench.test -dkim-key "$key" \
		-conns 50 -size 10KB -duration "$DURATION" -pid "$pid" \
		-verify-maildir "$dir/bench.test/bench" -json >"$out" || rc=$?
	[ $rc -le 1 ] && [ -s "$out" ] || die "$label failed (exit $rc)"
	[ $rc -eq 0 ] || FAILED+=("$label (round $ROUND)")
	if [ "$checks" = true ]; then
		# The checks ran and passed: the last message stored says so.
		local f
		f=$(find "$dir/bench.test/bench/new" -type f -print -quit)
		for want in spf=pass dkim=pass dmarc=pass iprev=pass; do
			grep -q "$want" "$f" || FAILED+=("$label: no $want in a stored message (round $ROUND)")
		done
	fi
	kill "$pid"
	for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	ALL+=("$out")
}

T0=$(date +%s)
for ROUND in $(seq "$ROUNDS"); do
	for fsync in $FSYNCS; do
		for variant in "checks off" "checks on" "checks on (DNS 500 ms)" "$COLD"; do
			run "$fsync" "$variant"
		done
	done
done
T1=$(date +%s)

MATRIX=$("$BIN" bench -matrix -ratios "checks on/checks off,checks on (DNS 500 ms)/checks off,checks on (DNS 500 ms)/checks on,$COLD/checks off" "${ALL[@]}")
CELLS=$("$BIN" bench -cells "${ALL[@]}")
# cpu LABEL: the median over the rounds of the server's CPU ms per message.
json_num() { sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" "$1" | head -n 1; }
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
cpu() {
	for f in "${ALL[@]}"; do
		if grep -q "\"label\":\"$1\"" "$f"; then json_num "$f" cpu_ms_per_msg; fi
	done | median
}
# busy LABEL: the median over the rounds of the share of its one CPU the
# server used (msgs/s × CPU per message), in %.
busy() {
	for f in "${ALL[@]}"; do
		if grep -q "\"label\":\"$1\"" "$f"; then
			awk -v r="$(json_num "$f" msgs_per_s)" -v c="$(json_num "$f" cpu_ms_per_msg)" 'BEGIN {print r * c / 10}'
		fi
	done | median
}
EXTRA=
for fsync in $FSYNCS; do
	row="fsync $([ "$fsync" = true ] && echo on || echo off)"
	off=$(cpu "$row · checks off")
	on=$(cpu "$row · checks on")
	EXTRA+="- $row: the checks cost $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.0f", 1000 * (a - b)}') µs of server CPU per message ($(awk -v a="$on" 'BEGIN {printf "%.0f", 1000 * a}') µs on, $(awk -v b="$off" 'BEGIN {printf "%.0f", 1000 * b}') µs off; medians)."$'\n'
	EXTRA+="  The server used $(busy "$row · checks off" | awk '{printf "%.0f", $1}') % of its one CPU with the checks off and $(busy "$row · checks on" | awk '{printf "%.0f", $1}') % with them on (msgs/s × CPU per message, medians). The nearer the checks on come to 100 %, the more the ratio is the CPU per message's (off ÷ on); the more CPU is left idle, waiting for the disk, the nearer it is to 1."$'\n'
done
{
	cat <<EOF
## Sender authentication (issue 10)

50 sessions × 10 KB, every message DKIM-signed (rsa-sha256, 2048 bits,
relaxed/relaxed) for sender.test from 127.0.0.2-51, each with a confirming
PTR name: the checks off, all on (SPF, DKIM, DMARC, iprev) against a local
DNS server, and all on with that server answering every query after
500 ms. Each run starts a fresh server on CPU $SERVER_CPU (GOMAXPROCS=1,
raised to 2 by nanomx) and sends it one message from each of the 50
sources first, not counted: the lookups are then cached and the process
warm, and the $DURATION measured are the rates a running server keeps.
"$COLD" is measured from the server's start
instead: each session's first message waits for iprev (PTR, then A/AAAA)
and the SPF, DKIM and DMARC lookups, as after a restart; its ratio to
the others is what a restart costs a $DURATION run, not a steady
rate. The variants alternate within each of $ROUNDS
rounds ($((T1 - T0)) s in all); every acked message was found in the
Maildir, and the checks on said spf, dkim, dmarc and iprev pass. Server
CPU per message is nanomx's own (\`bash bench/auth.sh\`; the DNS server
and the load run on CPU $LOAD_CPU).

$MATRIX

$EXTRA
$CELLS
EOF
} >"$OUTMD"
[ ${#FAILED[@]} -eq 0 ] || die "failed: ${FAILED[*]}"
log "wrote $OUTMD in $((T1 - T0)) s"
