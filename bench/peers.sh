#!/usr/bin/env bash
# peers.sh: nanomx side by side with its peers on this machine, in one run,
# written to bench/PEERS.md:
#
#   nanomx          fsync on, group commit (the default)
#   nanomx-nosync   fsync = false (a benchmark-only setting)
#   smtp-sink       Postfix's test server, which stores nothing
#   postfix         a real Postfix delivering to Maildir (virtual(8))
#   go-smtp         emersion/go-smtp v0.25.1 with a Maildir backend that
#                   fsyncs the file and new/ per message (bench/peers/gosmtp,
#                   a module of its own)
#   go-smtp-nosync  the same without fsync
#
# Cells (rows): plaintext with sessions reused; plaintext with a connection
# per message; STARTTLS with sessions reused; STARTTLS with a connection and
# a full handshake per message (ECDSA P-256 certificate); the same with TLS
# session resumption offered by the client. smtp-sink has no STARTTLS and
# the -nosync servers run the first row only.
#
# Discipline: every run writes into a fresh, never-used mailbox (bN, N
# counting up across the whole run) and first waits until file creation is
# fast (fs_wait, bench/lib.sh); the servers alternate run by run, in an
# order that rotates each round, for PEERS_ROUNDS rounds (default 3, at
# least 3 for a report that compares); each cell reports its median and
# min–max, and a spread over 25 % is flagged. Same load for each:
# `nanomx bench -conns 50 -size 10KB -duration PEERS_DURATION` (default
# 10s), pinned to CPU 1; the servers are pinned to CPU 0 (nanomx and
# go-smtp started with GOMAXPROCS=1, Go's default on one CPU; nanomx
# raises it to 2 itself, server/procs.go). Then a CPU profile of nanomx under the
# plaintext load. About 13 minutes with the defaults.
#
# Needs root (Postfix runs from a private config in a temporary folder),
# the postfix package, taskset, jq, openssl and Go (to build go-smtp; its
# module comes from the Go module proxy or the module cache). Bounded and
# loopback-only; every process it starts is stopped by PID (Postfix by
# `postfix stop` of its own instance).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/nanomx
OUT=${PEERS_OUT:-$ROOT/bench/PEERS.md}
DURATION=${PEERS_DURATION:-10s}
ROUNDS=${PEERS_ROUNDS:-3}
CONNS=${PEERS_CONNS:-50}
log() { echo "peers: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
[ -x "$BIN" ] || die "run make build first"
[ "$(id -u)" -eq 0 ] || die "needs root for Postfix"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (servers and load generator each pinned to one)"
for t in taskset jq openssl go postconf; do command -v $t >/dev/null || die "$t not found"; done
SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
[ "$ROUNDS" -ge 3 ] || log "PEERS_ROUNDS=$ROUNDS: fewer than 3 rounds, the spreads say little"

WORK=$(mktemp -d "$ROOT/bench/.peers.XXXXXX")
chmod 0755 "$WORK" # Postfix daemons run as postfix and must reach their folders
PIDS=()
PF=$WORK/postfix
cleanup() {
	local rc=$?
	[ -f "$PF/etc/main.cf" ] && postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
	stop_pids 10 "${PIDS[@]}"
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

START=$(date -u '+%Y-%m-%d %H:%M UTC')
T0=$(date +%s)
RES=$WORK/results
MAIL=$WORK/mail # every server's Maildirs, on one file system
mkdir -p "$RES" "$MAIL"
PROBE_DIR=$MAIL/.probe
ecdsa_cert "$WORK"
chmod 0644 "$WORK/key.pem" # Postfix's smtpd reads it after dropping root

log "building go-smtp (bench/peers/gosmtp)"
(cd "$ROOT/bench/peers/gosmtp" && go build -trimpath -o "$WORK/gosmtp" .) || die "go-smtp did not build"

# Ports: six servers from 2631 up.
P_NANOMX=$(free_port 2631)
P_NOSYNC=$(free_port $((P_NANOMX + 1)))
P_SINK=$(free_port $((P_NOSYNC + 1)))
P_POSTFIX=$(free_port $((P_SINK + 1)))
P_GOSMTP=$(free_port $((P_POSTFIX + 1)))
P_GONOSYNC=$(free_port $((P_GOSMTP + 1)))
P_PPROF=$(free_port 6071)

# nanomx, twice: fsync on and off; 100 mailboxes, all created at start,
# each used by one run at most.
BOXES=100
nanomx_conf() { # port maildir fsync
	cat >"$WORK/nanomx-$1.toml" <<EOF
hostname = "mx.bench.test"
listen = ["127.0.0.1:$1"]
maildir_root = "$2"
domains = ["bench.test"]
postmaster = "box@bench.test"
# The sender-authentication checks (on with a config file) need DNS;
# these rows measure the receiver itself (bench/auth.sh measures them).
spf = false
dkim = false
dmarc = false
iprev = false
mailboxes = [$(for i in $(seq $BOXES); do printf '"b%d@bench.test", ' "$i"; done)"box@bench.test"]
max_connections = 20000
max_connections_per_ip = 20000
tls_cert = "$WORK/cert.pem"
tls_key = "$WORK/key.pem"
fsync = $3
log_level = "warn"
EOF
}
nanomx_conf "$P_NANOMX" "$MAIL/nanomx" true
nanomx_conf "$P_NOSYNC" "$MAIL/nanomx-nosync" false
taskset -c 0 env GOMAXPROCS=1 GOMEMLIMIT=700MiB "$BIN" serve -config "$WORK/nanomx-$P_NANOMX.toml" -pprof "127.0.0.1:$P_PPROF" >"$WORK/n1.log" 2>&1 &
NANOMX=$!
PIDS+=($NANOMX)
taskset -c 0 env GOMAXPROCS=1 GOMEMLIMIT=700MiB "$BIN" serve -config "$WORK/nanomx-$P_NOSYNC.toml" >"$WORK/n2.log" 2>&1 &
NOSYNC=$!
PIDS+=($NOSYNC)
taskset -c 0 "$SINK" -u nobody "127.0.0.1:$P_SINK" 1000 &
SINKPID=$!
PIDS+=($SINKPID)
mkdir -p "$MAIL/gosmtp" "$MAIL/gosmtp-nosync"
taskset -c 0 env GOMAXPROCS=1 "$WORK/gosmtp" -addr "127.0.0.1:$P_GOSMTP" -root "$MAIL/gosmtp" \
	-cert "$WORK/cert.pem" -key "$WORK/key.pem" >"$WORK/g1.log" 2>&1 &
GOSMTP=$!
PIDS+=($GOSMTP)
taskset -c 0 env GOMAXPROCS=1 "$WORK/gosmtp" -addr "127.0.0.1:$P_GONOSYNC" -root "$MAIL/gosmtp-nosync" -fsync=false \
	>"$WORK/g2.log" 2>&1 &
GONOSYNC=$!
PIDS+=($GONOSYNC)

# Postfix: a private instance delivering bN@bench.test to the Maildir bN
# through the virtual agent, with STARTTLS offered.
mkdir -p "$PF/etc" "$PF/spool" "$PF/data" "$MAIL/postfix"
cp /etc/postfix/master.cf /etc/postfix/dynamicmaps.cf "$PF/etc/"
[ -d /etc/postfix/dynamicmaps.cf.d ] && cp -r /etc/postfix/dynamicmaps.cf.d "$PF/etc/"
sed -i "s/^smtp \{6\}inet .*smtpd\$/127.0.0.1:$P_POSTFIX inet n - n - - smtpd/" "$PF/etc/master.cf"
chown postfix "$PF/data"
chown 65534:65534 "$MAIL/postfix"
echo '/^(b[0-9]+|box)@bench\.test$/ $1/' >"$PF/etc/vmailbox"
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/spool
data_directory = $PF/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file_prefixes = /var, $PF
maillog_file = $PF/maillog
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $MAIL/postfix
virtual_mailbox_maps = regexp:$PF/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_tls_security_level = may
smtpd_tls_cert_file = $WORK/cert.pem
smtpd_tls_key_file = $WORK/key.pem
smtpd_tls_session_cache_timeout = 3600s
EOF
# postfix -c refuses a directory the default main.cf does not list (when
# there is one; as root without one it takes any).
if [ -f /etc/postfix/main.cf ]; then
	grep -q "^alternate_config_directories.*$PF/etc" /etc/postfix/main.cf ||
		postconf -e "alternate_config_directories = $PF/etc"
fi
postfix -c "$PF/etc" set-permissions >/dev/null 2>&1 || true
taskset -c 0 postfix -c "$PF/etc" start || { cat "$PF/maillog" 2>/dev/null; die "postfix did not start"; }
for p in $P_NANOMX $P_NOSYNC $P_SINK $P_POSTFIX $P_GOSMTP $P_GONOSYNC; do wait_port "$p" || die "a server did not start"; done

# Servers: label, port, pid to measure (none for Postfix: many processes).
declare -A PORT=([nanomx]=$P_NANOMX [nanomx-nosync]=$P_NOSYNC [smtp-sink]=$P_SINK [postfix]=$P_POSTFIX
	[go-smtp]=$P_GOSMTP [go-smtp-nosync]=$P_GONOSYNC)
declare -A SPID=([nanomx]=$NANOMX [nanomx-nosync]=$NOSYNC [smtp-sink]=$SINKPID [postfix]= [go-smtp]=$GOSMTP
	[go-smtp-nosync]=$GONOSYNC)
# Cells: name | nanomx bench flags | servers.
CELLS=(
	"plaintext, sessions reused||nanomx nanomx-nosync smtp-sink postfix go-smtp go-smtp-nosync"
	"plaintext, a connection per message|-per-conn 1|nanomx smtp-sink postfix go-smtp"
	"STARTTLS, sessions reused|-tls|nanomx postfix go-smtp"
	"STARTTLS, a connection and full handshake per message|-tls -per-conn 1|nanomx postfix go-smtp"
	"STARTTLS, a connection per message, resumption offered|-tls -per-conn 1 -tls-resume|nanomx postfix go-smtp"
)

# A short warm-up of every server, not reported.
for s in nanomx nanomx-nosync smtp-sink postfix go-smtp go-smtp-nosync; do
	taskset -c 1 "$BIN" bench -seed 1 -target "127.0.0.1:${PORT[$s]}" -conns 10 -count 500 -size 10KB \
		-to box@bench.test -from s@example.net -json >/dev/null 2>&1 || log "warm-up of $s failed"
done

BOX=0
RUN=0
FS_SLOW=()
# run CELL SERVER FLAGS...: one measured run into a fresh mailbox.
run() {
	local cell=$1 server=$2 rc=0
	shift 2
	BOX=$((BOX + 1))
	RUN=$((RUN + 1))
	[ $BOX -le $BOXES ] || die "out of mailboxes"
	sync
	fs_wait "$PROBE_DIR"
	[ "$FS_US" -le "$FS_LIMIT_US" ] || FS_SLOW+=("$cell · $server ($FS_US µs)")
	local pid=${SPID[$server]}
	# shellcheck disable=SC2068
	taskset -c 1 "$BIN" bench -label "$cell · $server" -seed 1 -target "127.0.0.1:${PORT[$server]}" \
		-conns "$CONNS" -size 10KB -duration "$DURATION" -to "b$BOX@bench.test" -from s@example.net \
		${pid:+-pid $pid} "$@" -json >"$RES/$(printf %03d $RUN).json" || rc=$?
	[ -s "$RES/$(printf %03d $RUN).json" ] || die "$cell · $server: no result (exit $rc)"
	log "round $r, $cell · $server: $(jq -c '{msgs_per_s: (.msgs_per_s | floor), failed, resumed: .tls_resumed}' "$RES/$(printf %03d $RUN).json")"
}
for r in $(seq "$ROUNDS"); do
	for c in "${CELLS[@]}"; do
		IFS='|' read -r cell flags servers <<<"$c"
		read -ra list <<<"$servers"
		# Rotate the order each round, so no server always runs first.
		n=${#list[@]}
		for i in $(seq 0 $((n - 1))); do
			s=${list[$(((i + r - 1) % n))]}
			# shellcheck disable=SC2086
			run "$cell" "$s" $flags
		done
	done
done
mapfile -t JSONS < <(ls "$RES"/*.json | sort)

# A profile of nanomx (fsync on) under the plaintext load, fresh mailbox.
BOX=$((BOX + 1))
sync
fs_wait "$PROBE_DIR"
curl -s -o "$WORK/cpu.pprof" "http://127.0.0.1:$P_PPROF/debug/pprof/profile?seconds=8" &
CURL=$!
taskset -c 1 "$BIN" bench -seed 1 -target "127.0.0.1:$P_NANOMX" -conns "$CONNS" -size 10KB -duration "$DURATION" \
	-to "b$BOX@bench.test" -from s@example.net -json >/dev/null
wait $CURL
PROFILE=$(go tool pprof -top -nodecount=25 "$BIN" "$WORK/cpu.pprof" 2>/dev/null | sed -n '1,35p')
USER_SYS=$(awk '{printf "%.2f s user, %.2f s system", $14/100, $15/100}' "/proc/$NANOMX/stat")

MATRIX=$("$BIN" bench -matrix -ratios "nanomx/go-smtp,nanomx/smtp-sink,nanomx/postfix,nanomx-nosync/go-smtp-nosync" "${JSONS[@]}")
CELLTABLE=$("$BIN" bench -cells "${JSONS[@]}")
# cellmed LABEL FIELD: the median of FIELD (jq) over LABEL's rounds.
cellmed() {
	jq -r --arg l "$1" "select(.config.label == \$l) | $2" "${JSONS[@]}" | sort -g |
		awk '{a[NR] = $1} END {if (NR == 0) print 0; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
PLAIN=$(cellmed "plaintext, sessions reused · nanomx" .msgs_per_s)
TLSR=$(cellmed "STARTTLS, sessions reused · nanomx" .msgs_per_s)
FULL=$(cellmed "STARTTLS, a connection and full handshake per message · nanomx" .msgs_per_s)
RESUMED=$(cellmed "STARTTLS, a connection per message, resumption offered · nanomx" .msgs_per_s)
FULL_CPU=$(cellmed "STARTTLS, a connection and full handshake per message · nanomx" '.server.cpu_ms_per_msg // 0')
RES_CPU=$(cellmed "STARTTLS, a connection per message, resumption offered · nanomx" '.server.cpu_ms_per_msg // 0')
FULL_HS=$(cellmed "STARTTLS, a connection and full handshake per message · nanomx" .latency_ms.tls_handshake.p50)
RES_HS=$(cellmed "STARTTLS, a connection per message, resumption offered · nanomx" .latency_ms.tls_handshake.p50)
T1=$(date +%s)
FS_NOTE="Every run waited until creating a file beside the mailboxes took at most $FS_LIMIT_US µs."
[ ${#FS_SLOW[@]} -eq 0 ] || FS_NOTE="**File creation stayed slow (> $FS_LIMIT_US µs) before: ${FS_SLOW[*]}**; those runs are skewed low."

{
	echo "# nanomx and its peers, side by side"
	echo
	echo "Generated by \`bash bench/peers.sh\` on $START in $((T1 - T0)) s; do not edit by hand."
	echo "Machine: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), Linux $(uname -r), $(go version | cut -d' ' -f3)."
	echo "Each server pinned to CPU 0 and started with GOMAXPROCS=1, what Go picks on one CPU (nanomx raises it to 2 Ps on that CPU itself, server/procs.go; go-smtp keeps 1; nanomx with GOMEMLIMIT=700MiB), the load on CPU 1:"
	echo "\`nanomx bench -conns $CONNS -size 10KB -duration $DURATION\` and the cell's flags, $ROUNDS rounds; in each round every"
	echo "cell runs on each of its servers in turn, in an order that rotates from round to round; every run writes into a"
	echo "fresh, never-used mailbox and first waits for file creation to be fast. Other processes were not stopped."
	echo
	echo "## msgs/s by cell and server"
	echo
	spread_note
	echo
	echo "$MATRIX"
	echo
	echo "- nanomx: fsync on, group commit (the default). nanomx-nosync: \`fsync = false\`, a benchmark-only setting."
	echo "- smtp-sink: Postfix's test server, which stores nothing (and offers no STARTTLS)."
	echo "- postfix: Postfix $(postconf -d -h mail_version) from Debian, smtpd → cleanup → queue → virtual(8) into a Maildir per"
	echo "  cell; its rate is what its smtpd accepted (250 after the queue file is fsync'd); its CPU is not measured."
	echo "- go-smtp: emersion/go-smtp v0.25.1 with the Maildir backend of bench/peers/gosmtp (file and new/ fsync'd per"
	echo "  message); go-smtp-nosync: the same without fsync."
	echo "- STARTTLS: a self-signed ECDSA P-256 certificate, not verified by the client; TLS 1.3 unless the server offers less."
	echo "  \"resumption offered\": the client keeps one session cache for the run and presents the server's ticket."
	echo
	echo "nanomx's STARTTLS with sessions reused is $(awk -v a="$TLSR" -v b="$PLAIN" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}') × its"
	echo "plaintext rate (medians). A connection per message with resumption offered gives $(printf %.0f "$RESUMED") msgs/s against"
	echo "$(printf %.0f "$FULL") with a full handshake each, server CPU $(printf %.3f "$RES_CPU") against $(printf %.3f "$FULL_CPU") ms per message,"
	echo "handshake p50 $(printf %.3f "$RES_HS") against $(printf %.3f "$FULL_HS") ms (see the resumed column below: how many connections resumed)."
	echo
	echo "$FS_NOTE"
	echo
	echo "## Every cell"
	echo
	echo "$CELLTABLE"
	echo
	echo "## Where nanomx's time goes (CPU profile, 8 s under the plaintext load, sessions reused)"
	echo
	echo "Whole run of the profiled server: $USER_SYS."
	echo
	echo '```'
	echo "$PROFILE"
	echo '```'
} >"$OUT"
cat "$OUT"
log "wrote ${OUT#"$ROOT"/} in $((T1 - T0)) s"
