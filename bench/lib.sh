# bench/lib.sh: shell functions shared by the bench scripts (nanode.sh,
# peers.sh, hardening.sh), which source it after defining log().
#
# File creation on ext4 without a journal stays slow for 5-10 minutes after
# many files were deleted nearby (the inode allocator skips, one by one,
# inodes freed recently: recently_deleted() in fs/ext4/ialloc.c): a
# server's delivery then costs several times its usual CPU, and a bench
# cell measures the file system's recent past instead of the server. So
# every measured run first probes file creation where the server will
# create its files and waits, up to FS_WAIT seconds (default 720), for it
# to be fast. The probe's files stay until the end: deleting them would
# cause what it guards against.

FS_WAIT=${BENCH_FS_WAIT:-${HARDENING_FS_WAIT:-720}}
FS_LIMIT_US=${BENCH_FS_LIMIT_US:-120}
PROBE=0

# create_us DIR: microseconds per empty file created in DIR (2000 files).
create_us() {
	mkdir -p "$1"
	local t0 t1 i
	t0=$(date +%s%N)
	for i in $(seq 2000); do : >"$1/f$i"; done
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000 / 2000))
}

# fs_wait BASE: probes file creation in a new folder BASE<n> (put it beside
# the mailboxes: ext4 places a new folder near its parent's) and waits
# while it is slow; sets FS_US (the last probe) and FS_WAITED (seconds).
fs_wait() {
	PROBE=$((PROBE + 1))
	FS_US=$(create_us "$1$PROBE")
	FS_WAITED=0
	while [ "$FS_US" -gt "$FS_LIMIT_US" ] && [ "$FS_WAITED" -lt "$FS_WAIT" ]; do
		log "creating a file takes $FS_US µs here (recently deleted files nearby?): waiting"
		sleep 30
		FS_WAITED=$((FS_WAITED + 30))
		PROBE=$((PROBE + 1))
		FS_US=$(create_us "$1$PROBE")
	done
	[ "$FS_US" -le "$FS_LIMIT_US" ] || log "file creation still slow ($FS_US µs) after $FS_WAITED s: measuring anyway"
}

# free_port P: the first TCP port from P up with no socket at all (a
# server cannot listen on a port that still has connections in TIME_WAIT).
free_port() {
	local p=$1
	while [ -n "$(ss -Htan "sport = :$p" 2>/dev/null)" ]; do p=$((p + 1)); done
	echo "$p"
}

# stop_pids SECS PID...: SIGTERM to each PID, up to SECS seconds for each
# to drain and exit, then SIGKILL.
stop_pids() {
	local secs=$1 pid
	shift
	for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
	for pid in "$@"; do
		for _ in $(seq $((secs * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	done
}

# wait_port P: waits up to 10 s for a listener on port P.
wait_port() {
	for _ in $(seq 100); do
		[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ] && return 0
		sleep 0.1
	done
	log "nothing listens on port $1"
	return 1
}

# ecdsa_cert DIR: a self-signed ECDSA P-256 certificate for mx.bench.test,
# DIR/cert.pem and DIR/key.pem, as in the README's STARTTLS section.
ecdsa_cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=mx.bench.test -addext subjectAltName=DNS:mx.bench.test \
		-keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
}

# spread_note: a sentence on how to read the spreads, for the reports.
spread_note() {
	echo "Each cell gives the median of its rounds and, in brackets, the slowest and fastest round;"
	echo "⚠ marks a cell whose spread, (max − min) ÷ median, is over 25 %: its rounds disagree"
	echo "too much for its median to be compared with another's (the machine was busier in some"
	echo "rounds than in others); a ratio with such a cell is marked \"?\"."
}

# checks_config FILE PORT DIR FSYNC CHECKS DNS MAILBOX... [-- LINE...]:
# writes a bench server's config for 127.0.0.1:PORT into FILE: Maildir
# root DIR, domain bench.test, the MAILBOXes (the first is the
# postmaster), fsync FSYNC, the four sender checks CHECKS (true or false)
# against the DNS server at DNS; each LINE after -- is one more line.
checks_config() {
	local file=$1 port=$2 dir=$3 fsync=$4 checks=$5 dns=$6 boxes="" m=""
	shift 6
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		boxes+="${boxes:+, }\"$1\""
		m=${m:-$1}
		shift
	done
	[ $# -gt 0 ] && shift
	{
		cat <<EOF
hostname = "mx.bench.test"
listen = ["127.0.0.1:$port"]
maildir_root = "$dir"
domains = ["bench.test"]
postmaster = "$m"
mailboxes = [$boxes]
max_connections = 20000
max_connections_per_ip = 20000
fsync = $fsync
log_level = "warn"
dns_servers = ["$dns"]
dns_timeout = "2s"
spf = $checks
dkim = $checks
dmarc = $checks
iprev = $checks
EOF
		[ $# -eq 0 ] || printf '%s\n' "$@"
	} >"$file"
}
