#!/usr/bin/env bash
# bench/proxy.sh: side-by-side HTTP benchmark of one proxy hop, in one run:
# direct (client -> backend), mesh-proxy, nginx and haproxy, each under
# HTTP/1.1 keep-alive load (wrk) and HTTP/2 h2c prior-knowledge load (h2load).
# It prints a markdown table with req/s, p50/p99 latency, errors, the hop's
# peak RSS and CPU, and each row's req/s as ratios to the nginx hop and to
# direct. With the mesh hop, it then runs bench/policy.sh: the CPU a request
# costs through the proxy's inbound side under a policy of 100 Servers x 100
# authorizations against no policy (a Go benchmark, printed as a ratio).
#
# Then it measures the full mesh path (bench/meshpath, a Go program):
# client -> outbound mesh-proxy -> mesh TLS -> inbound mesh-proxy ->
# server, two real proxies in two network-namespace pods with their
# certificates from a test CA, against an nginx pair doing the same job over
# TLS 1.3 with client certificates, and against direct: the most req/s
# (wrk), and latency at fixed rates (1,000 and 5,000 RPS by default) with
# coordinated omission corrected. See `go run ./bench/meshpath --help`.
#
# Usage (root: it makes network namespaces and nat rules inside them):
#   sudo make bench-proxy                    # build, then print the tables
#   sudo BENCH_WRITE=1 make bench-proxy      # ... and write docs/benchmarks.md
#   sudo bash bench/proxy.sh [--write] [--part hop|meshpath|all]
#                            [--hops "direct mesh nginx haproxy"]
#                            [--duration SECONDS]
# Environment: BENCH_WRITE=1 is --write, BENCH_PART is --part (all),
# BENCH_HOPS is --hops, BENCH_DURATION is --duration (10), BENCH_WARMUP the
# warm-up seconds (2), BENCH_PROXY another mesh-proxy binary to measure
# (default bin/mesh-proxy; handy to compare two builds in turn),
# BENCH_POLICY=0 skips bench/policy.sh (whose own knobs are
# BENCH_POLICY_ROUNDS and BENCH_POLICY_BENCHTIME). For the mesh path,
# BENCH_RATES is the fixed rates (1000,5000) and BENCH_RATE_DURATION the
# seconds of each fixed-rate row (20); --duration and the warm-up apply to
# it too. --write replaces only the part of docs/benchmarks.md between the
# "BEGIN bench-proxy" and "END bench-proxy" markers, bench/policy.sh its
# "bench-policy" block and bench/meshpath its "bench-meshpath" block.
#
# Topology of the hop rows, all inside one private network namespace
# mesh-bench-<pid> on its loopback interface (nothing leaves it; the root
# namespace's iptables is never touched; every process, rule and the
# namespace are removed on exit, Ctrl-C included):
#
#   backend nginx   127.0.0.2 and 127.0.0.3, :8080 HTTP/1.1, :8082 h2c
#   direct          client -> 127.0.0.3            (no nat rule for .3)
#   mesh-proxy      client -> 127.0.0.2 --REDIRECT--> 127.0.0.1:4140 (outbound
#                   listener) -> SO_ORIGINAL_DST 127.0.0.2 -> backend; the
#                   proxy runs as UID 2102, which the nat rules skip
#   nginx hop       client -> 127.0.0.4 -> 127.0.0.3 (HTTP/1.1 keep-alive pool,
#                   also for h2c: nginx proxies only HTTP/1.x upstream)
#   haproxy hop     client -> 127.0.0.5 -> 127.0.0.3 (h1 -> h1, h2c -> h2c)
#
# mesh-proxy has no static target: it forwards to each connection's original
# destination, so only a nat REDIRECT can bring it traffic.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NS="mesh-bench-$$"
NS_PATH="/var/run/netns/$NS"
PROXY_UID=2102
WRITE=${BENCH_WRITE:-0}
HOPS=${BENCH_HOPS:-direct mesh nginx haproxy}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
WRK_CONNS=32
H2_CONNS=16
H2_STREAMS=10
DOC="$ROOT/docs/benchmarks.md"
PROXY_BIN=${BENCH_PROXY:-$ROOT/bin/mesh-proxy}
POLICY=${BENCH_POLICY:-1}
PART=${BENCH_PART:-all}
RATES=${BENCH_RATES:-1000,5000}
RATE_DURATION=${BENCH_RATE_DURATION:-20}

while [ $# -gt 0 ]; do
	case $1 in
	--write) WRITE=1 ;;
	--part) PART=$2; shift ;;
	--hops) HOPS=$2; shift ;;
	--duration) DURATION=$2; shift ;;
	-h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) echo "bench/proxy.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

declare -A ADDR=([direct]=127.0.0.3 [mesh]=127.0.0.2 [nginx]=127.0.0.4 [haproxy]=127.0.0.5)
declare -A PID=()  # name -> pid of the processes this script started
STARTED=()         # the same pids, in start order, for cleanup
COMMANDS=()        # the exact commands, for the doc
RUN=""             # the run's temporary directory
MESHPATH_DIR=""    # where bench/meshpath is built
DOC_TMP=""         # docs/benchmarks.md being written
ROWS=()            # finished table rows, "|"-separated
CHECKS=()          # metrics cross-checks of the mesh rows
CHECK_FAILED=0     # 1 when a cross-check shows the mesh rows bypassed the proxy
WORKERS=()         # what each server runs with, for the doc
HZ=$(getconf CLK_TCK)

log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }
nsx() { nsenter --net="$NS_PATH" "$@"; }

cleanup() {
	local rc=$?
	trap - EXIT HUP INT TERM
	set +e
	teardown
	[ -n "$MESHPATH_DIR" ] && rm -rf "$MESHPATH_DIR"
	[ -n "$DOC_TMP" ] && rm -f "$DOC_TMP"
	exit $rc
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# teardown stops the hop rows' servers and removes their namespace (its nat
# rules go with it) and temporary directory: at the end, and before the
# mesh path, which then has the machine to itself.
teardown() {
	# Best effort: what is already gone must not stop the rest.
	local - pid
	set +e
	for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for _ in $(seq 30); do
		local alive=0
		for pid in "${STARTED[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	if [ -e "$NS_PATH" ]; then
		# Anything still in our namespace is ours (a client cut off by Ctrl-C,
		# an nginx worker whose master was killed).
		for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
		nsx iptables -w -t nat -F OUTPUT 2>/dev/null
		ip netns del "$NS"
	fi
	[ -n "$RUN" ] && rm -rf "$RUN"
	STARTED=()
	RUN=""
}

has_hop() { [[ " $HOPS " == *" $1 "* ]]; }
has_part() { [ "$PART" = all ] || [ "$PART" = "$1" ]; }

preflight() {
	[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, nat rules): sudo make bench-proxy"
	case $PART in
	all | hop | meshpath) ;;
	*) die "unknown --part $PART (hop, meshpath or all)" ;;
	esac
	local t missing=()
	for t in ip iptables nsenter setsid setpriv curl nginx haproxy wrk h2load; do
		command -v "$t" >/dev/null || missing+=("$t")
	done
	[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: sudo make deps"
	if has_part meshpath; then
		command -v "${GO:-go}" >/dev/null || die "the mesh path is a Go program: put Go on the PATH, or set GO"
		[ -x "$PROXY_BIN" ] || die "$PROXY_BIN is missing: make build"
	fi
	has_part hop || return 0
	local h
	for h in $HOPS; do [ -n "${ADDR[$h]:-}" ] || die "unknown hop $h (direct mesh nginx haproxy)"; done
	has_hop nginx || die "the nginx hop is the reference for the ratios; keep it in --hops"
	if has_hop mesh && [ ! -x "$PROXY_BIN" ]; then
		die "$PROXY_BIN is missing: make build (or leave mesh out of --hops)"
	fi
}

# cpu_busy samples /proc/stat for one second and prints the machine's busy
# percentage: what others use before we start (we have nothing running yet).
cpu_busy() {
	local a b
	read -r -a a < <(head -1 /proc/stat)
	sleep 1
	read -r -a b < <(head -1 /proc/stat)
	awk -v u1="${a[1]}" -v n1="${a[2]}" -v s1="${a[3]}" -v i1="${a[4]}" -v w1="${a[5]}" \
		-v q1="${a[6]}" -v sq1="${a[7]}" -v st1="${a[8]}" \
		-v u2="${b[1]}" -v n2="${b[2]}" -v s2="${b[3]}" -v i2="${b[4]}" -v w2="${b[5]}" \
		-v q2="${b[6]}" -v sq2="${b[7]}" -v st2="${b[8]}" 'BEGIN {
		busy = (u2-u1) + (n2-n1) + (s2-s1) + (q2-q1) + (sq2-sq1) + (st2-st1)
		idle = (i2-i1) + (w2-w1)
		printf "%.0f", (busy + idle) ? 100 * busy / (busy + idle) : 0 }'
}

# render TEMPLATE DIR writes TEMPLATE with @DIR@ replaced into DIR.
render() {
	mkdir -p "$2"
	sed "s|@DIR@|$2|g" "$ROOT/bench/$1" >"$2/$(basename "$1")"
}

# quote ARGS... prints ARGS as one shell-readable line.
quote() {
	local a words=()
	for a in "$@"; do
		if [[ "$a" =~ [^A-Za-z0-9_./:=@%+,-] ]]; then words+=("'$a'"); else words+=("$a"); fi
	done
	echo "${words[*]}"
}

# start NAME CMD... runs CMD in the namespace in the background, logging to
# $RUN/NAME.log. nsenter, setsid and setpriv exec, so $! is the server's own
# pid. setsid gives the server a session of its own: the terminal's Ctrl-C
# then reaches only this script and the client, and cleanup stops the
# servers, instead of them quitting under a row that is still being read.
start() {
	local name=$1
	shift
	COMMANDS+=("$(quote "$@")")
	# Not through nsx: a function run with & leaves a subshell between $!
	# and the server.
	nsenter --net="$NS_PATH" setsid "$@" >"$RUN/$name.log" 2>&1 &
	PID[$name]=$!
	STARTED+=($!)
}

# wait_ok NAME URL [CURL-ARGS...] waits until URL answers 200 with body "ok"
# (or any 200 when the body is not ours, as for /ready).
wait_ok() {
	local name=$1 url=$2 body
	shift 2
	for _ in $(seq 100); do
		kill -0 "${PID[$name]}" 2>/dev/null || { cat "$RUN/$name.log" >&2; die "$name exited"; }
		if body=$(nsx curl -fsS --max-time 1 "$@" "$url" 2>/dev/null); then
			[ "$body" = ok ] || [[ "$url" == */ready ]] || die "$name: $url answered '$body', want 'ok'"
			return 0
		fi
		sleep 0.1
	done
	cat "$RUN/$name.log" >&2
	die "$name: $url did not answer within 10 s"
}

setup() {
	RUN=$(mktemp -d /tmp/mesh-bench.XXXXXX)
	chmod 755 "$RUN" # nginx workers run as nobody, the proxy as UID 2102
	ip netns add "$NS"
	nsx ip link set lo up
	# Connections to the virtual address 127.0.0.2 from anyone but the proxy
	# go to the proxy's outbound listener (as "mesh-proxy init" would set up
	# in a pod); 127.0.0.3 is the same backend, never redirected.
	local port
	for port in 8080 8082; do
		COMMANDS+=("iptables -t nat -A OUTPUT -p tcp -d 127.0.0.2 --dport $port -m owner ! --uid-owner $PROXY_UID -j REDIRECT --to-ports 4140")
		nsx iptables -w -t nat -A OUTPUT -p tcp -d 127.0.0.2 --dport "$port" \
			-m owner ! --uid-owner "$PROXY_UID" -j REDIRECT --to-ports 4140
	done

	render nginx-backend.conf "$RUN/backend"
	nsx nginx -t -q -p "$RUN/backend/" -c "$RUN/backend/nginx-backend.conf" -e "$RUN/backend/error.log"
	start backend nginx -p "$RUN/backend/" -c "$RUN/backend/nginx-backend.conf" -e "$RUN/backend/error.log" -g "daemon off;"
	wait_ok backend http://127.0.0.3:8080/
	wait_ok backend http://127.0.0.3:8082/ --http2-prior-knowledge

	if has_hop mesh; then
		# A copy UID 2102 can surely read and run, wherever the tree lives.
		cp "$PROXY_BIN" "$RUN/mesh-proxy"
		chmod 755 "$RUN/mesh-proxy"
		start mesh setpriv --reuid=$PROXY_UID --regid=$PROXY_UID --clear-groups "$RUN/mesh-proxy" --log-level=warn
		wait_ok mesh http://127.0.0.1:4191/ready
		wait_ok mesh http://127.0.0.2:8080/
		wait_ok mesh http://127.0.0.2:8082/ --http2-prior-knowledge
		# Those two requests must have crossed the proxy, or the nat rules
		# do not bring it traffic and the mesh rows would measure direct.
		[ "$(requests_total)" -ge 2 ] || die "mesh-proxy did not see the requests to 127.0.0.2: is the nat REDIRECT working?"
	fi
	if has_hop nginx; then
		render nginx-hop.conf "$RUN/nginx"
		nsx nginx -t -q -p "$RUN/nginx/" -c "$RUN/nginx/nginx-hop.conf" -e "$RUN/nginx/error.log"
		start nginx nginx -p "$RUN/nginx/" -c "$RUN/nginx/nginx-hop.conf" -e "$RUN/nginx/error.log" -g "daemon off;"
		wait_ok nginx http://127.0.0.4:8080/
		wait_ok nginx http://127.0.0.4:8082/ --http2-prior-knowledge
	fi
	if has_hop haproxy; then
		render haproxy-hop.cfg "$RUN/haproxy"
		nsx haproxy -c -q -f "$RUN/haproxy/haproxy-hop.cfg"
		start haproxy haproxy -db -f "$RUN/haproxy/haproxy-hop.cfg"
		wait_ok haproxy http://127.0.0.5:8080/
		wait_ok haproxy http://127.0.0.5:8082/ --http2-prior-knowledge
	fi
}

# hop_pids HOP prints the pids whose memory and CPU are the hop's: nginx's
# workers (not the master, which only supervises), haproxy's one process,
# the proxy. The direct row has no hop. "backend" gives the backend's worker.
hop_pids() {
	case $1 in
	direct) ;;
	nginx | backend) ps -o pid= --ppid "${PID[$1]}" ;;
	*) echo "${PID[$1]}" ;;
	esac
}

# check_workers makes sure the reference hops run with the 2 workers or
# threads the comparison is about, and records what each server runs with.
check_workers() {
	local n
	n=$(hop_pids backend | wc -l)
	WORKERS+=("backend nginx: $n worker process")
	if has_hop nginx; then
		n=$(hop_pids nginx | wc -l)
		[ "$n" -eq 2 ] || die "the nginx hop runs $n worker processes, want 2"
		WORKERS+=("nginx hop: $n worker processes")
	fi
	if has_hop haproxy; then
		n=$(awk '/^Threads:/ { print $2 }' "/proc/${PID[haproxy]}/status")
		[ "$n" -eq 2 ] || die "the haproxy hop runs $n threads, want 2"
		WORKERS+=("haproxy hop: 1 process, $n threads")
	fi
	if has_hop mesh; then
		WORKERS+=("mesh-proxy: 1 process, GOMAXPROCS unset (Go's default, $(nproc) CPUs here)")
	fi
}

# cpu_ticks PIDS... prints their summed utime+stime in clock ticks.
cpu_ticks() {
	local pid sum=0 f
	for pid in "$@"; do
		# Fields after the "(comm)" part: utime and stime are fields 14, 15.
		f=$(sed 's/^.*) //' "/proc/$pid/stat")
		sum=$((sum + $(echo "$f" | awk '{print $12 + $13}')))
	done
	echo $sum
}

# peak_rss_kb PIDS... prints their summed VmHWM.
peak_rss_kb() {
	local pid sum=0
	for pid in "$@"; do
		sum=$((sum + $(awk '/^VmHWM:/{print $2}' "/proc/$pid/status")))
	done
	echo $sum
}

# requests_total prints the sum of mesh_proxy_http_requests_total over all
# its series, from the proxy's admin port.
requests_total() {
	nsx curl -fsS --max-time 2 http://127.0.0.1:4191/metrics |
		awk '/^mesh_proxy_http_requests_total[{ ]/{s += $NF} END {printf "%d", s}'
}

# client_cmd LOAD HOP SECONDS [LOGFILE] prints the load command for one row.
client_cmd() {
	local url="http://${ADDR[$2]}"
	case $1 in
	http1) echo "wrk -t1 -c$WRK_CONNS -d${3}s --latency $url:8080/" ;;
	h2c) echo "h2load -c$H2_CONNS -m$H2_STREAMS -D$3${4:+ --log-file=$4} $url:8082/" ;;
	esac
}

# parse_wrk FILE prints "rps total p50ms p99ms errors".
parse_wrk() {
	awk 'function ms(v) {
			if (v ~ /us$/) return v / 1000
			if (v ~ /ms$/) return v + 0
			if (v ~ /s$/) return v * 1000
			return -1
		}
		/requests in/ { total = $1 }
		/^Requests\/sec:/ { rps = $2 }
		$1 == "50%" { p50 = ms($2) }
		$1 == "99%" { p99 = ms($2) }
		/^ *Non-2xx or 3xx responses:/ { err += $NF }
		/^ *Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
		END { printf "%.0f %d %.3f %.3f %d\n", rps, total, p50, p99, err }' "$1"
}

# parse_h2load FILE LOGFILE prints "rps total p50ms p99ms errors"; h2load
# prints no percentiles, so they come from its per-request log.
parse_h2load() {
	local pct
	pct=$(awk -F'\t' '{print $3}' "$2" | sort -n |
		awk '{ v[NR] = $1 } END {
			if (NR == 0) { print "-1 -1"; exit }
			i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
			i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
			printf "%.3f %.3f", v[i50] / 1000, v[i99] / 1000 }')
	awk -v pct="$pct" '
		/^finished in/ { rps = $4 }
		/^requests:/ { total = $8; err += $10 + $12 + $14 }
		/^status codes:/ { err += $5 + $7 + $9 }
		END { split(pct, p, " "); printf "%.0f %d %s %s %d\n", rps, total, p[1], p[2], err }' "$1"
}

# machine_busy_ticks prints the whole machine's busy time from /proc/stat
# (user nice system irq softirq steal), in clock ticks summed over CPUs.
machine_busy_ticks() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# cores TICKS SECONDS prints TICKS of CPU time over SECONDS of wall time in
# cores (1.00 = one core busy the whole time).
cores() {
	awk -v t="$1" -v hz="$HZ" -v d="$2" 'BEGIN { printf "%.2f", t / hz / d }'
}

# run_client OUT TIMES CMD... runs the load generator CMD in the namespace,
# its output to OUT and "wall user system" seconds to TIMES. It runs in the
# background and we wait for it: wrk catches Ctrl-C and exits 0, and bash
# runs no INT trap after a foreground command that exited normally, so a
# foreground client would let Ctrl-C go on to the next row. wait returns at
# once on a trapped signal.
run_client() {
	local out=$1 times=$2 TIMEFORMAT='%R %U %S'
	shift 2
	{ time nsx "$@" >"$out" 2>&1; } 2>"$times" &
	wait $!
}

# measure LOAD HOP runs a warm-up, then the measured load, and appends a row.
measure() {
	local load=$1 hop=$2 out="$RUN/$1-$2.out" h2log="$RUN/$1-$2.h2log"
	local pids bpids cmd p t0 t1 bt0 bt1 mt0 mt1 m0 m1 result
	local rss=0 hopcpu=- bcpu ccpu others wall
	pids=$(hop_pids "$hop")
	bpids=$(hop_pids backend)
	log "$load via $hop: warm-up ${WARMUP}s, then ${DURATION}s"
	# shellcheck disable=SC2046 # word splitting of the commands is intended
	run_client /dev/null /dev/null $(client_cmd "$load" "$hop" "$WARMUP") || die "$load via $hop: warm-up load failed"

	# 5 resets VmHWM to the current RSS: the peak is this load's alone.
	for p in $pids; do echo 5 >"/proc/$p/clear_refs"; done
	if [ "$hop" = mesh ]; then m0=$(requests_total); fi
	# shellcheck disable=SC2086
	t0=$(cpu_ticks $pids) bt0=$(cpu_ticks $bpids) mt0=$(machine_busy_ticks)
	cmd=$(client_cmd "$load" "$hop" "$DURATION" "$h2log")
	COMMANDS+=("$cmd")
	# shellcheck disable=SC2086
	run_client "$out" "$out.time" $cmd || { cat "$out" >&2; die "$load via $hop: $cmd failed"; }
	# shellcheck disable=SC2086
	t1=$(cpu_ticks $pids) bt1=$(cpu_ticks $bpids) mt1=$(machine_busy_ticks)
	for p in $pids $bpids; do
		[ -e "/proc/$p" ] || { tail -5 "$RUN/$hop.log" >&2; die "$load via $hop: process $p is gone"; }
	done
	# CPU in cores over the client's own wall time (a little over DURATION).
	wall=$(awk '{ print $1 }' "$out.time")
	ccpu=$(awk '{ printf "%.2f", ($2 + $3) / $1 }' "$out.time")
	bcpu=$(cores $((bt1 - bt0)) "$wall")
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		rss=$(peak_rss_kb $pids)
		hopcpu=$(cores $((t1 - t0)) "$wall")
	fi
	# Everything else the machine did meanwhile: other tenants' work, and
	# kernel time (loopback softirqs) not charged to our processes.
	others=$(awk -v m="$(cores $((mt1 - mt0)) "$wall")" -v h="$hopcpu" -v c="$ccpu" -v b="$bcpu" \
		'BEGIN { o = m - h - c - b; printf "%.2f", o < 0 ? 0 : o }')
	case $load in
	http1) result=$(parse_wrk "$out") ;;
	h2c) result=$(parse_h2load "$out" "$h2log"); rm -f "$h2log" ;;
	esac
	local rps total p50 p99 errs
	read -r rps total p50 p99 errs <<<"$result"
	[ "$rps" -gt 0 ] || { cat "$out" >&2; die "$load via $hop: no requests/s in the client's output"; }
	[ "$errs" -eq 0 ] || log "warning: $load via $hop: $errs errors (see the errors column)"
	if [ "$hop" = mesh ]; then
		m1=$(requests_total)
		CHECKS+=("$(metrics_check "$load" "$total" $((m1 - m0)))")
		if [[ "${CHECKS[-1]}" == *MISMATCH* ]]; then
			CHECK_FAILED=1
			log "error: ${CHECKS[-1]}"
		fi
	fi
	ROWS+=("$load|$hop|$rps|$p50|$p99|$errs|$rss|$hopcpu|$ccpu|$bcpu|$others")
}

# metrics_check LOAD CLIENT-COUNT DELTA says whether the proxy counted the
# requests the client reported: it may count up to the client's in-flight
# requests more (started, not finished when the client stopped).
metrics_check() {
	local load=$1 n=$2 d=$3 inflight verdict client=wrk
	inflight=$WRK_CONNS
	if [ "$load" = h2c ]; then inflight=$((H2_CONNS * H2_STREAMS)) client=h2load; fi
	if [ "$d" -ge "$n" ] && [ "$d" -le $((n + inflight)) ]; then
		verdict="ok"
	else
		verdict="MISMATCH (expected between $n and $((n + inflight)))"
	fi
	echo "$load: $client completed $n requests via 127.0.0.2; mesh_proxy_http_requests_total rose by $d: $verdict"
}

# table prints the markdown table of ROWS, req/s as ratios to the nginx and
# the direct row of the same load.
table() {
	echo "| load | hop | req/s | vs nginx | vs direct | p50 ms | p99 ms | errors | hop peak RSS MB | hop CPU | hop CPU µs/req | client CPU | backend CPU | others' CPU |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	printf '%s\n' "${ROWS[@]}" | awk -F'|' '
		function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
		{ row[NR] = $0; rps[$1 "|" $2] = $3 }
		END {
			for (i = 1; i <= NR; i++) {
				# load hop rps p50 p99 errors rss-kB hop-cpu client-cpu backend-cpu others-cpu
				split(row[i], f, "|")
				mb = f[7] > 0 ? sprintf("%.1f", f[7] / 1024) : "-"
				us = f[8] != "-" ? sprintf("%.0f", f[8] * 1e6 / f[3]) : "-"
				printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", \
					f[1], f[2], f[3], ratio(f[3], rps[f[1] "|nginx"]), ratio(f[3], rps[f[1] "|direct"]), \
					f[4], f[5], f[6], mb, f[8], us, f[9], f[10], f[11]
			}
		}'
}

# noisy_rows names the rows during which the machine did much other work
# (others' CPU over a quarter core): their req/s, and ratios against them,
# say more about the neighbours than about the hop.
noisy_rows() {
	local noisy
	noisy=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$11 > 0.25 { printf "%s%s %s (%.2f)", sep, $1, $2, $11; sep = ", " }')
	[ -z "$noisy" ] && return 0
	echo "Rows disturbed by other work on the machine (others' CPU > 0.25 cores): $noisy."
	echo "Their req/s and the ratios against them are unreliable; hop CPU µs/req holds up better. Run again to compare."
	echo
}

# verdict prints how the mesh hop compares with the nginx hop, and with the
# goal: req/s at least the nginx hop's, peak RSS under 20 MB.
verdict() {
	has_hop mesh || return 0
	printf '%s\n' "${ROWS[@]}" | awk -F'|' '
		{
			k = $1 "|" $2
			rps[k] = $3; p50[k] = $4; p99[k] = $5; rss[k] = $7; cpu[k] = $8
			if (!($1 in seen)) { seen[$1] = 1; loads[++n] = $1 }
		}
		END {
			peak = 0
			for (i = 1; i <= n; i++) {
				l = loads[i]; m = l "|mesh"; g = l "|nginx"
				r = rps[m] / rps[g]
				printf "- %s: mesh-proxy / nginx hop: req/s %.2f (goal >= 1.0: %s), p50 %.2f, p99 %.2f, peak RSS %.2f, CPU per request %.2f.\n", \
					l, r, (r >= 1.0 ? "met" : "not met"), p50[m] / p50[g], p99[m] / p99[g], \
					rss[m] / rss[g], (cpu[m] / rps[m]) / (cpu[g] / rps[g])
				if (rss[m] > peak) peak = rss[m]
			}
			printf "- mesh-proxy peak RSS %.1f MB (goal < 20 MB: %s).\n", peak / 1024, \
				(peak / 1024 < 20 ? "met" : "not met")
		}'
}

versions() {
	local proxy_version="-" commit
	has_hop mesh && proxy_version=$("$PROXY_BIN" --version 2>&1 | awk '{print $NF}')
	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	[ -n "$(git -C "$ROOT" status --porcelain -- proxy cmd 2>/dev/null)" ] && commit="$commit + uncommitted changes in proxy/ or cmd/"
	echo "- mesh-proxy $proxy_version (commit $commit), $(go version 2>/dev/null | awk '{print $3}')"
	echo "- $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v | head -1 | awk '{print "HAProxy " $3}')"
	echo "- $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}'), $(h2load --version | head -1 | sed 's/^h2load //;s/^/h2load /')"
}

machine() {
	echo "- Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal:/{printf "%.0f GB RAM", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)"
}

# report prints the generated part of docs/benchmarks.md (and of stdout).
report() {
	echo "### Run of $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	machine
	versions
	local servers
	servers=$(IFS=';'; echo "${WORKERS[*]}")
	echo "- Servers: ${servers//;/; }."
	echo "- Load average before the run: $LOAD_BEFORE, after: $LOAD_AFTER; CPU busy with others' work in the second before: ${BUSY_BEFORE}%."
	echo "  The machine is shared: other engineers build and test on it, so numbers move by 10% or more between runs."
	echo "- ${DURATION}s per row after a ${WARMUP}s warm-up. Client, hop and backend share the same $(nproc) CPUs."
	echo "- CPU columns are in cores (1.00 = one core busy the whole row). hop CPU µs/req is the hop's CPU time per request,"
	echo "  which moves less with the machine's noise than req/s. others' CPU is what the machine was busy with besides client,"
	echo "  hop and backend: other tenants' work, and kernel time (loopback softirqs) not charged to our processes."
	echo "- Peak RSS is VmHWM, reset before each row; for nginx the sum over its 2 workers (pages they share are counted twice)."
	echo "- h2c rows: h2 with prior knowledge from the client. mesh-proxy and haproxy speak h2c to the backend; nginx cannot"
	echo "  (its proxy module speaks only HTTP/1.x upstream), so its h2c row is h2 downstream -> HTTP/1.1 keep-alive upstream."
	echo "  h2load prints no percentiles; p50/p99 come from its per-request log."
	echo
	table
	echo
	noisy_rows
	if has_hop mesh; then
		verdict
		echo
		echo "Metrics cross-check (the mesh rows really went through mesh-proxy):"
		echo
		local c
		for c in "${CHECKS[@]}"; do echo "- $c"; done
		echo
	fi
	echo "Commands, in order, each run inside the benchmark namespace with \`nsenter --net=/var/run/netns/mesh-bench-PID\` (DIR is the run's temporary directory, configs from bench/ with @DIR@ filled in; the servers also under \`setsid\`). Each measured client command follows a ${WARMUP}s warm-up with the same command (-d${WARMUP}s / -D${WARMUP}, no --log-file). bin/mesh-proxy comes from \`make build\`."
	echo
	echo '```'
	printf '%s\n' "${COMMANDS[@]}" | sed "s|$RUN|DIR|g"
	echo '```'
}

write_doc() {
	local body=$1 tmp
	mkdir -p "$(dirname "$DOC")"
	tmp=$(mktemp "$DOC.XXXXXX")
	DOC_TMP=$tmp # removed by cleanup if we do not get to the mv
	if [ -f "$DOC" ] && grep -q '<!-- BEGIN bench-proxy' "$DOC"; then
		BODY=$body awk '
			/<!-- BEGIN bench-proxy/ { print; print ""; print ENVIRON["BODY"]; print ""; skip = 1; next }
			/<!-- END bench-proxy/ { skip = 0 }
			!skip' "$DOC" >"$tmp"
	else
		{
			[ -f "$DOC" ] && cat "$DOC" && echo
			[ -f "$DOC" ] || printf '# Benchmarks\n\n'
			echo "<!-- BEGIN bench-proxy: written by bench/proxy.sh --write; edits in here are overwritten -->"
			echo
			echo "$body"
			echo
			echo "<!-- END bench-proxy -->"
		} >"$tmp"
	fi
	chmod 644 "$tmp"
	mv "$tmp" "$DOC"
	DOC_TMP=""
	log "wrote $DOC"
}

# hop_part measures one hop: the rows above, then bench/policy.sh.
hop_part() {
	LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
	BUSY_BEFORE=$(cpu_busy)
	log "load average $LOAD_BEFORE, CPU busy ${BUSY_BEFORE}% before starting"
	[ "$BUSY_BEFORE" -lt 25 ] || log "warning: the machine is busy; numbers will be noisier than usual"
	setup
	check_workers
	local load hop
	for load in http1 h2c; do
		for hop in direct mesh nginx haproxy; do
			if has_hop "$hop"; then measure "$load" "$hop"; fi
		done
	done
	LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
	if has_hop mesh; then
		grep -iE 'error|panic' "$RUN/mesh.log" | head -5 | sed 's/^/bench: mesh-proxy log: /' >&2 || true
	fi
	local out
	out=$(report)
	echo "$out"
	if [ "$CHECK_FAILED" = 1 ]; then
		die "the metrics cross-check failed: the mesh rows did not (all) go through mesh-proxy; not writing $DOC"
	fi
	if [ "$WRITE" = 1 ]; then write_doc "$out"; fi
	if has_hop mesh && [ "$POLICY" = 1 ]; then
		# In-process, outside the namespace: the servers above sit idle.
		log "the inbound policy's cost per request (bench/policy.sh)"
		local args=()
		if [ "$WRITE" = 1 ]; then args=(--write); fi
		bash "$ROOT/bench/policy.sh" "${args[@]}" || die "bench/policy.sh failed"
	fi
}

# meshpath_part measures the full mesh path with bench/meshpath, which
# builds, measures, reports and cleans up its own lab. It runs in the
# foreground: on Ctrl-C it removes what it made before this script goes on
# to its own cleanup.
meshpath_part() {
	log "the full mesh path against an nginx TLS pair (bench/meshpath)"
	MESHPATH_DIR=$(mktemp -d /tmp/mesh-meshpath-bin.XXXXXX)
	(cd "$ROOT" && "${GO:-go}" build -o "$MESHPATH_DIR/meshpath" ./bench/meshpath) || die "go build ./bench/meshpath failed"
	local args=(--proxy "$PROXY_BIN" --duration "${DURATION}s" --warmup "${WARMUP}s"
		--rate-duration "${RATE_DURATION}s" --rates "$RATES")
	if [ "$WRITE" = 1 ]; then args+=(--write "$DOC"); fi
	"$MESHPATH_DIR/meshpath" "${args[@]}" || die "bench/meshpath failed"
}

main() {
	preflight
	if has_part hop; then
		hop_part
		teardown
	fi
	if has_part meshpath; then meshpath_part; fi
}

main
