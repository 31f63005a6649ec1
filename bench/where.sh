#!/usr/bin/env bash
# where.sh: where nanomx's CPU goes, kernel included, for the cells of
# issue 14 whose targets are CPU: durable plaintext (50 sessions × 10 KB,
# fsync on), STARTTLS with a connection and full handshake per message
# (ECDSA P-256), and the same plaintext load with the sender checks on
# (every message DKIM-signed, rsa-sha256 2048 bits, a local DNS server).
# The Go profiler does not see the kernel, and on this load the kernel is
# most of the server's time; perf(1) samples both.
#
# nanomx runs as in bench/nanode.sh (CPU 0, GOMAXPROCS=1, GOMEMLIMIT=700MiB,
# a fresh mailbox on the repository's file system after fs_wait), the load
# on CPU 1; perf samples the server alone (-p) for WHERE_SAMPLE seconds in
# the middle of a WHERE_DURATION run. Each category is perf's "children"
# share of the server's samples (its own time and everything it called),
# and µs/msg is that share of the run's server CPU per message. The
# categories do not overlap, except that an indented row is part of the
# one above it; "the rest" is what no other row holds: nanomx's own SMTP,
# spool and TLS record code, Go's runtime but for the rows, and the
# kernel's interrupts and scheduling.
#
# Usage: bash bench/where.sh [OUT.md] (make build first; needs perf, from
# Debian's linux-perf, run as root or with perf_event_paranoid ≤ 1).
# About a minute. Environment: WHERE_DURATION (12s), WHERE_SAMPLE (6).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/nanomx
OUTMD=${1:-/dev/stdout}
DURATION=${WHERE_DURATION:-12s}
SAMPLE=${WHERE_SAMPLE:-6}
SERVER_CPU=0
LOAD_CPU=1

log() { echo "where: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
[ -x "$BIN" ] || die "$BIN missing: run make build"
for t in perf taskset jq; do command -v $t >/dev/null || die "$t not found"; done

WORK=$(mktemp -d "$ROOT/bench/.where.XXXXXX")
PIDS=()
cleanup() {
	local rc=$?
	stop_pids 10 "${PIDS[@]}"
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ecdsa_cert "$WORK"
go build -o "$WORK/authdns" ./bench/authdns
taskset -c $LOAD_CPU "$WORK/authdns" -key "$WORK/dkim.pem" >"$WORK/dns.addr" 2>"$WORK/dns.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/dns.addr" ] && break; sleep 0.1; done
[ -s "$WORK/dns.addr" ] || die "authdns did not start: $(cat "$WORK/dns.log")"

# The categories: a label and the symbol perf shows for it.
CATS=(
	"replies sent (write(2) on sockets, the loopback delivery to the client included)|[k] ksys_write"
	"commands and data read (read(2))|[k] ksys_read"
	"files created in tmp/ (openat)|[k] __x64_sys_openat"
	"files written (writev)|[k] __x64_sys_writev"
	"renames into new/ (renameat2)|[k] __x64_sys_renameat2"
	"flushes (syncfs)|[k] __x64_sys_syncfs"
	"close(2)|[k] __x64_sys_close"
	"epoll_wait and epoll_ctl|[k] __x64_sys_epoll_pwait"
	"accept4|[k] __x64_sys_accept4"
	"Go scheduler's monitor (sysmon)|[.] runtime.sysmon"
	"garbage collection (background marking)|[.] runtime.gcBgMarkWorker"
	"TLS handshake (its goroutine)|[.] github.com/nanomx/nanomx/server.(*loopTLS).handshake"
	"  X25519 and ML-KEM-768 key exchange|[.] crypto/tls.(*hybridKeyExchange).serverSharedSecret"
	"  ECDSA P-256 signature|[.] crypto.SignMessage"
	"checks at the end of data|[.] github.com/nanomx/nanomx/server.(*authChecker).Data"
	"  DKIM (header and body hashes, signature)|[.] github.com/nanomx/nanomx/server/auth.(*Message).VerifyDKIM"
	"  RSA-2048 verification (the key's cached Montgomery constants)|[.] github.com/nanomx/nanomx/server/auth.(*rsaMont).verifySHA256"
	"  RSA-2048 verification (crypto/rsa, a CPU without MULX and ADX)|[.] crypto/rsa.VerifyPKCS1v15"
	"  SHA-256 of the body, canonicalized|[.] github.com/nanomx/nanomx/server/auth.(*Message).hashBody"
)

PORT=$(free_port 2901)
N=0
OUT=""

# measure NAME CHECKS BENCH-FLAGS...: one server, one run, one perf sample.
measure() {
	local name=$1 checks=$2
	shift 2
	N=$((N + 1))
	local dir=$WORK/m$N
	mkdir -p "$dir"
	sync
	fs_wait "$WORK/probe"
	checks_config "$WORK/n$N.toml" "$PORT" "$dir" true "$checks" "$(cat "$WORK/dns.addr")" bench@bench.test -- \
		"tls_cert = \"$WORK/cert.pem\"" "tls_key = \"$WORK/key.pem\""
	taskset -c $SERVER_CPU env GOMAXPROCS=1 GOMEMLIMIT=700MiB "$BIN" serve -config "$WORK/n$N.toml" >"$WORK/s$N.log" 2>&1 &
	local pid=$!
	PIDS+=($pid)
	wait_port "$PORT" || die "nanomx did not start: $(cat "$WORK/s$N.log")"
	log "$name"
	taskset -c $LOAD_CPU "$BIN" bench -target "127.0.0.1:$PORT" -seed 1 -from alice@sender.test \
		-to bench@bench.test -conns 50 -size 10KB -duration "$DURATION" -pid "$pid" -json "$@" >"$WORK/r$N.json" &
	local bp=$!
	sleep 3
	perf record -q -F 999 -g -p "$pid" -o "$WORK/p$N.data" -- sleep "$SAMPLE" >/dev/null 2>&1 || die "perf record failed"
	wait $bp || die "$name: the bench failed"
	stop_pids 10 "$pid"
	perf report -i "$WORK/p$N.data" --no-children --sort dso -q 2>/dev/null >"$WORK/dso$N.txt"
	perf report -i "$WORK/p$N.data" --children --sort sym -q -g none --percent-limit 0 2>/dev/null >"$WORK/sym$N.txt"
	local rate cpu load kernel
	rate=$(jq -r '.msgs_per_s | floor' "$WORK/r$N.json")
	cpu=$(jq -r '.server.cpu_ms_per_msg * 1000' "$WORK/r$N.json")
	load=$(jq -r '(.load.share // 0) * 100 | floor' "$WORK/r$N.json")
	kernel=$(awk '/kernel.kallsyms/ {gsub("%", "", $1); print $1}' "$WORK/dso$N.txt")
	OUT+="### $name"$'\n\n'
	OUT+="$rate msgs/s, server CPU $(printf %.0f "$cpu") µs per message, of which the kernel ${kernel:-?} %; the load generator at $load % of its CPU."$'\n\n'
	OUT+="| where | share of the server's CPU | µs/msg |"$'\n'"|---|--:|--:|"$'\n'
	local c label sym share rest=100
	for c in "${CATS[@]}"; do
		label=${c%%|*} sym=${c#*|}
		share=$(awk -v s="$sym" 'index($0, s) && substr($0, index($0, s)) == s {gsub("%", "", $1); print $1; exit}' "$WORK/sym$N.txt")
		[ -n "$share" ] && awk -v s="$share" 'BEGIN {exit !(s >= 0.5)}' || continue
		[ "${label:0:2}" = "  " ] || rest=$(awk -v r="$rest" -v s="$share" 'BEGIN {print r - s}')
		OUT+="| $label | $share % | $(us "$share" "$cpu") |"$'\n'
	done
	OUT+="| the rest | $(printf %.2f "$rest") % | $(us "$rest" "$cpu") |"$'\n\n'
}
us() { awk -v s="$1" -v c="$2" 'BEGIN {printf "%.0f", s * c / 100}'; }

T0=$(date +%s)
measure "Durable plaintext, 50 sessions × 10 KB" false
measure "STARTTLS, a connection and full handshake per message" false -tls -per-conn 1
measure "Durable plaintext with the checks on (SPF, DKIM, DMARC, iprev)" true -dkim-key "$WORK/dkim.pem"
T1=$(date +%s)

{
	echo "## Where the server's CPU goes"
	echo
	echo "Sampled with perf by \`bash bench/where.sh\` ($((T1 - T0)) s), $(date -u +%Y-%m-%d), on $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r). nanomx on CPU $SERVER_CPU (GOMAXPROCS=1, raised to 2 by nanomx), fsync on, the load on CPU $LOAD_CPU. A share is perf's \"children\" share (the function and all it called) of the server's samples over $SAMPLE s in the middle of a $DURATION run; µs/msg is that share of the run's CPU per message. Rows under 0.5 % are left out."
	echo
	printf '%s' "$OUT"
} >"$OUTMD"
