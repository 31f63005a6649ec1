#!/usr/bin/env bash
# peers.sh: nanomx side by side with its peers on this machine, in one run:
# nanomx with fsync (group commit), nanomx with fsync off (benchmark-only
# setting), Postfix's smtp-sink (stores nothing) and a real Postfix
# delivering to Maildir. Same load for each: `nanomx bench`, 50 sessions
# reused, 10 KB, pinned to CPU 1; servers pinned to CPU 0. The targets run
# in alternation, ROUNDS times, and medians are reported; then a CPU
# profile of nanomx under the same load. Writes bench/PEERS.md.
#
# Needs root (Postfix runs from a private config in a temporary folder),
# the postfix package, taskset. Bounded and loopback-only; every process it
# starts is stopped by PID (Postfix by `postfix stop` of its own instance).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/nanomx
OUT=$ROOT/bench/PEERS.md
DURATION=${PEERS_DURATION:-10s}
ROUNDS=${PEERS_ROUNDS:-3}
[ -x "$BIN" ] || { echo "peers: run make build first" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "peers: needs root for Postfix" >&2; exit 1; }
SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)

WORK=$(mktemp -d "$ROOT/bench/.peers.XXXXXX")
chmod 0755 "$WORK" # Postfix daemons run as postfix and must reach their folders
PIDS=()
PF=$WORK/postfix
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	[ -f "$PF/etc/main.cf" ] && postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
	sleep 1
	rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
	for _ in $(seq 100); do
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "peers: nothing listens on $1" >&2
	exit 1
}

# nanomx, twice: fsync on and off.
nanomx_conf() { # port maildir fsync
	cat >"$WORK/nanomx-$1.toml" <<EOF
hostname = "mx.bench.test"
listen = ["127.0.0.1:$1"]
maildir_root = "$2"
domains = ["bench.test"]
postmaster = "box@bench.test"
mailboxes = ["box@bench.test"]
catch_all = { "bench.test" = "box@bench.test" }
max_connections_per_ip = 1000
fsync = $3
log_level = "warn"
EOF
}
mkdir -p "$WORK/m1" "$WORK/m2"
nanomx_conf 2631 "$WORK/m1" true
nanomx_conf 2632 "$WORK/m2" false
taskset -c 0 env GOMAXPROCS=1 GOMEMLIMIT=700MiB "$BIN" serve -config "$WORK/nanomx-2631.toml" -pprof 127.0.0.1:6071 >"$WORK/n1.log" 2>&1 &
NANOMX=$!
PIDS+=($NANOMX)
taskset -c 0 env GOMAXPROCS=1 GOMEMLIMIT=700MiB "$BIN" serve -config "$WORK/nanomx-2632.toml" >"$WORK/n2.log" 2>&1 &
NOSYNC=$!
PIDS+=($NOSYNC)
taskset -c 0 "$SINK" -u nobody 127.0.0.1:2633 1000 &
SINKPID=$!
PIDS+=($SINKPID)

# Postfix: a private instance on 127.0.0.1:2634 delivering every
# @bench.test address to one Maildir through the virtual agent.
mkdir -p "$PF/etc" "$PF/spool" "$PF/data" "$PF/mail"
cp /etc/postfix/master.cf /etc/postfix/dynamicmaps.cf "$PF/etc/"
[ -d /etc/postfix/dynamicmaps.cf.d ] && cp -r /etc/postfix/dynamicmaps.cf.d "$PF/etc/"
sed -i 's/^smtp \{6\}inet .*smtpd$/127.0.0.1:2634 inet n - n - - smtpd/' "$PF/etc/master.cf"
chown postfix "$PF/data"
chown 65534:65534 "$PF/mail"
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
virtual_mailbox_base = $PF/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
default_process_limit = 200
smtpd_client_connection_count_limit = 0
EOF
# postfix -c refuses a directory the default main.cf does not list.
grep -q "^alternate_config_directories.*$PF/etc" /etc/postfix/main.cf ||
	postconf -e "alternate_config_directories = $PF/etc"
postfix -c "$PF/etc" set-permissions >/dev/null 2>&1 || true
taskset -c 0 postfix -c "$PF/etc" start || { cat "$PF/maillog" 2>/dev/null; echo "peers: postfix did not start" >&2; exit 1; }
for p in 2631 2632 2633 2634; do wait_port $p; done

run() { # label port pid
	taskset -c 1 "$BIN" bench -label "$1" -seed 1 -target "127.0.0.1:$2" -conns 50 -size 10KB \
		-duration "$DURATION" -to box@bench.test -from s@example.net ${3:+-pid $3} -json
}
declare -A RATE CPU
for r in $(seq "$ROUNDS"); do
	for t in "nanomx:2631:$NANOMX" "nanomx-nosync:2632:$NOSYNC" "smtp-sink:2633:$SINKPID" "postfix:2634:"; do
		IFS=: read -r label port pid <<<"$t"
		j=$(run "$label" "$port" "$pid")
		RATE[$label]+="$(jq -r '.msgs_per_s | floor' <<<"$j") "
		CPU[$label]+="$(jq -r 'if .server.cpu_ms_per_msg then (.server.cpu_ms_per_msg * 1000 | round / 1000) else "-" end' <<<"$j") "
		echo "peers: round $r $label $(jq -c '{msgs_per_s,errors}' <<<"$j")" >&2
	done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

# A profile of nanomx (fsync on) under the same load.
curl -s -o "$WORK/cpu.pprof" "http://127.0.0.1:6071/debug/pprof/profile?seconds=8" &
CURL=$!
run profile 2631 "$NANOMX" >/dev/null
wait $CURL
PROFILE=$(go tool pprof -top -nodecount=25 "$BIN" "$WORK/cpu.pprof" 2>/dev/null | sed -n '1,35p')
USER_SYS=$(awk '{printf "%.2f s user, %.2f s system", $14/100, $15/100}' "/proc/$NANOMX/stat")

{
	echo "# nanomx and its peers, side by side"
	echo
	echo "Generated by \`bash bench/peers.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); do not edit by hand."
	echo "Machine: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), Linux $(uname -r), $(go version | cut -d' ' -f3)."
	echo "Each server pinned to CPU 0 (nanomx with GOMAXPROCS=1, GOMEMLIMIT=700MiB), the load on CPU 1:"
	echo "\`nanomx bench -conns 50 -size 10KB -duration $DURATION\`, sessions reused, $ROUNDS rounds in alternation;"
	echo "the table gives the median and every round. Other processes were not stopped."
	echo
	echo "| server | msgs/s (median) | rounds | server CPU ms/msg (rounds) | × smtp-sink |"
	echo "|---|--:|---|---|--:|"
	sink=$(median <<<"${RATE[smtp-sink]}")
	for label in nanomx nanomx-nosync smtp-sink postfix; do
		m=$(median <<<"${RATE[$label]}")
		printf '| %s | %s | %s | %s | %.2f |\n' "$label" "$m" "${RATE[$label]% }" "${CPU[$label]% }" "$(echo "$m / $sink" | bc -l)"
	done
	echo
	echo "- nanomx: fsync on, group commit (the default). nanomx-nosync: \`fsync = false\`, a benchmark-only"
	echo "  setting. smtp-sink: Postfix's test server, which stores nothing. postfix: Postfix $(postconf -d -h mail_version)"
	echo "  from Debian, smtpd → cleanup → queue → virtual(8) into one Maildir; its rate is what its smtpd accepted"
	echo "  (250 after the queue file is fsync'd), and its CPU is not measured (many processes)."
	echo
	echo "## Where nanomx's time goes (CPU profile, 8 s under the same load)"
	echo
	echo "Whole run of the profiled server: $USER_SYS."
	echo
	echo '```'
	echo "$PROFILE"
	echo '```'
} >"$OUT"
cat "$OUT"
