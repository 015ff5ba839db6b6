#!/usr/bin/env bash
# bench/proxy.sh: side-by-side HTTP benchmark of one proxy hop, in one run:
# direct (client -> backend), mesh-proxy, nginx and haproxy, each under
# HTTP/1.1 keep-alive load (wrk) and HTTP/2 h2c prior-knowledge load (h2load).
# It prints a markdown table with req/s, p50/p99 latency, errors, the hop's
# peak RSS and CPU, and each row's req/s as a ratio to the nginx hop.
#
# Usage (root: it makes a network namespace and nat rules inside it):
#   sudo make bench-proxy                    # build, then print the table
#   sudo BENCH_WRITE=1 make bench-proxy      # ... and write docs/benchmarks.md
#   sudo bash bench/proxy.sh [--write] [--hops "direct mesh nginx haproxy"]
#                            [--duration SECONDS]
# Environment: BENCH_WRITE=1 is --write, BENCH_HOPS is --hops,
# BENCH_DURATION is --duration (10), BENCH_WARMUP the warm-up seconds (2),
# BENCH_PROXY another mesh-proxy binary to measure (default bin/mesh-proxy;
# handy to compare two builds in turn).
# --write replaces only the part of docs/benchmarks.md between the
# "BEGIN bench-proxy" and "END bench-proxy" markers.
#
# Topology, all inside one private network namespace mesh-bench-<pid> on its
# loopback interface (nothing leaves it; the root namespace's iptables is never
# touched; every process, rule and the namespace are removed on exit, Ctrl-C
# included):
#
#   backend nginx   127.0.0.2 and 127.0.0.3, :8080 HTTP/1.1, :8082 h2c
#   direct          client -> 127.0.0.3            (no nat rule for .3)
#   mesh-proxy      client -> 127.0.0.2 --REDIRECT--> 127.0.0.1:4140 (outbound
#                   listener) -> SO_ORIGINAL_DST 127.0.0.2 -> backend; the
#                   proxy runs as UID 2102, which the nat rules skip
#   nginx hop       client -> 127.0.0.4 -> 127.0.0.3 (HTTP/1.1 keep-alive pool)
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

while [ $# -gt 0 ]; do
	case $1 in
	--write) WRITE=1 ;;
	--hops) HOPS=$2; shift ;;
	--duration) DURATION=$2; shift ;;
	-h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench/proxy.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

declare -A ADDR=([direct]=127.0.0.3 [mesh]=127.0.0.2 [nginx]=127.0.0.4 [haproxy]=127.0.0.5)
declare -A PID=()  # name -> pid of the processes this script started
STARTED=()         # the same pids, in start order, for cleanup
COMMANDS=()        # the exact commands, for the doc
RUN=""
ROWS=()            # finished table rows, "|"-separated
CHECKS=()          # metrics cross-checks of the mesh rows

log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }
nsx() { nsenter --net="$NS_PATH" "$@"; }

cleanup() {
	local rc=$? pid i
	trap - EXIT INT TERM
	set +e
	for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for i in $(seq 30); do
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
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

has_hop() { [[ " $HOPS " == *" $1 "* ]]; }

preflight() {
	[ "$(id -u)" -eq 0 ] || die "needs root (network namespace, nat rules): sudo make bench-proxy"
	local t missing=()
	for t in ip iptables nsenter setpriv curl nginx haproxy wrk h2load; do
		command -v "$t" >/dev/null || missing+=("$t")
	done
	[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: sudo make deps"
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
	local a out=()
	for a in "$@"; do
		if [[ "$a" =~ [^A-Za-z0-9_./:=@%+,-] ]]; then out+=("'$a'"); else out+=("$a"); fi
	done
	echo "${out[*]}"
}

# start NAME CMD... runs CMD in the namespace in the background, logging to
# $RUN/NAME.log. nsenter and setpriv exec, so $! is the server's own pid.
start() {
	local name=$1
	shift
	COMMANDS+=("$(quote "$@")")
	# Not through nsx: a function run with & leaves a subshell between $!
	# and the server.
	nsenter --net="$NS_PATH" "$@" >"$RUN/$name.log" 2>&1 &
	PID[$name]=$!
	STARTED+=($!)
}

# wait_ok NAME URL [CURL-ARGS...] waits until URL answers 200 with body "ok"
# (or any 200 when the body is not ours, as for /ready).
wait_ok() {
	local name=$1 url=$2 i body
	shift 2
	for i in $(seq 100); do
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
# the proxy. The direct row has no hop.
hop_pids() {
	case $1 in
	direct) ;;
	nginx) ps -o pid= --ppid "${PID[nginx]}" ;;
	*) echo "${PID[$1]}" ;;
	esac
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

# measure LOAD HOP runs a warm-up, then the measured load, and appends a row.
measure() {
	local load=$1 hop=$2 out="$RUN/$1-$2.out" h2log="$RUN/$1-$2.h2log"
	local pids cmd before after t0 t1 rss=0 hopcpu=- m0 m1 bt0 bt1 result
	pids=$(hop_pids "$hop")
	log "$load via $hop: warm-up ${WARMUP}s, then ${DURATION}s"
	# shellcheck disable=SC2046 # word splitting of the commands is intended
	nsx $(client_cmd "$load" "$hop" "$WARMUP") >/dev/null 2>&1 || die "$load via $hop: warm-up load failed"

	# 5 resets VmHWM to the current RSS: the peak is this load's alone.
	for p in $pids; do echo 5 >"/proc/$p/clear_refs"; done
	[ "$hop" = mesh ] && m0=$(requests_total)
	# shellcheck disable=SC2086
	t0=$(cpu_ticks $pids) bt0=$(cpu_ticks $(ps -o pid= --ppid "${PID[backend]}"))
	cmd=$(client_cmd "$load" "$hop" "$DURATION" "$h2log")
	COMMANDS+=("$cmd")
	local TIMEFORMAT='%U %S'
	# shellcheck disable=SC2086
	{ time nsx $cmd >"$out" 2>&1; } 2>"$out.time" || { cat "$out" >&2; die "$load via $hop: $cmd failed"; }
	for p in $pids; do
		[ -e "/proc/$p" ] || { tail -5 "$RUN/$hop.log" >&2; die "$load via $hop: hop process $p is gone"; }
	done
	# shellcheck disable=SC2086
	t1=$(cpu_ticks $pids) bt1=$(cpu_ticks $(ps -o pid= --ppid "${PID[backend]}"))
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		rss=$(peak_rss_kb $pids)
		hopcpu=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v d="$DURATION" 'BEGIN{printf "%.2f", t / hz / d}')
	fi
	local bcpu ccpu
	bcpu=$(awk -v t=$((bt1 - bt0)) -v hz="$(getconf CLK_TCK)" -v d="$DURATION" 'BEGIN{printf "%.2f", t / hz / d}')
	ccpu=$(awk -v d="$DURATION" '{printf "%.2f", ($1 + $2) / d}' "$out.time")
	case $load in
	http1) result=$(parse_wrk "$out") ;;
	h2c) result=$(parse_h2load "$out" "$h2log"); rm -f "$h2log" ;;
	esac
	read -r rps total p50 p99 errs <<<"$result"
	[ "$rps" -gt 0 ] || { cat "$out" >&2; die "$load via $hop: no requests/s in the client's output"; }
	if [ "$hop" = mesh ]; then
		m1=$(requests_total)
		CHECKS+=("$(metrics_check "$load" "$total" $((m1 - m0)))")
	fi
	ROWS+=("$load|$hop|$rps|$p50|$p99|$errs|$rss|$hopcpu|$ccpu|$bcpu")
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

# table prints the markdown table of ROWS, ratios against the nginx row of
# the same load.
table() {
	echo "| load | hop | req/s | vs nginx | p50 ms | p99 ms | errors | hop peak RSS MB | hop CPU | client CPU | backend CPU |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	local row load hop rps p50 p99 errs rss hc cc bc ref r
	for row in "${ROWS[@]}"; do
		IFS='|' read -r load hop rps p50 p99 errs rss hc cc bc <<<"$row"
		ref=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' -v l="$load" '$1 == l && $2 == "nginx" {print $3}')
		r=$(awk -v a="$rps" -v b="${ref:-0}" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else printf "-" }')
		local mb=-
		[ "$rss" -gt 0 ] && mb=$(awk -v k="$rss" 'BEGIN{printf "%.1f", k / 1024}')
		[ "$hop" = direct ] && hc=-
		printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
			"$load" "$hop" "$rps" "$r" "$p50" "$p99" "$errs" "$mb" "$hc" "$cc" "$bc"
	done
}

# verdict prints how the mesh hop compares with the goal (req/s ratio >= 1.0
# against nginx, peak RSS < 20 MB).
verdict() {
	has_hop mesh || return 0
	printf '%s\n' "${ROWS[@]}" | awk -F'|' '
		{ rps[$1 "|" $2] = $3; rss[$1 "|" $2] = $7; loads[$1] = 1 }
		END {
			peak = 0
			for (l in loads) {
				r = rps[l "|mesh"] / rps[l "|nginx"]
				printf "- %s: mesh-proxy did %.2fx the nginx hop'"'"'s req/s (goal >= 1.0: %s).\n", \
					l, r, r >= 1.0 ? "met" : "not met"
				if (rss[l "|mesh"] > peak) peak = rss[l "|mesh"]
			}
			printf "- mesh-proxy peak RSS %.1f MB (goal < 20 MB: %s).\n", peak / 1024, \
				peak / 1024 < 20 ? "met" : "not met"
		}' | sort
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
	echo "- $(nproc) CPUs, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
}

# report prints the generated part of docs/benchmarks.md (and of stdout).
report() {
	echo "### Run of $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	machine
	versions
	echo "- Load average before the run: $LOAD_BEFORE, after: $LOAD_AFTER; CPU busy with others' work in the second before: ${BUSY_BEFORE}%."
	echo "  The machine is shared: other engineers build and test on it, so numbers move by 10% or more between runs."
	echo "- ${DURATION}s per row after a ${WARMUP}s warm-up; hop/client/backend CPU in cores (1.00 = one core busy the whole run)."
	echo
	table
	echo
	if has_hop mesh; then
		verdict
		echo
		echo "Metrics cross-check (the mesh rows really went through mesh-proxy):"
		echo
		local c
		for c in "${CHECKS[@]}"; do echo "- $c"; done
		echo
	fi
	echo "Commands, in order, each run inside the benchmark namespace with \`nsenter --net=/var/run/netns/mesh-bench-PID\` (DIR is the run's temporary directory, configs from bench/ with @DIR@ filled in):"
	echo
	echo '```'
	printf '%s\n' "${COMMANDS[@]}" | sed "s|$RUN|DIR|g"
	echo '```'
}

write_doc() {
	local body=$1 tmp
	tmp=$(mktemp "$DOC.XXXXXX")
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
	log "wrote $DOC"
}

main() {
	preflight
	LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
	BUSY_BEFORE=$(cpu_busy)
	log "load average $LOAD_BEFORE, CPU busy ${BUSY_BEFORE}% before starting"
	[ "$BUSY_BEFORE" -lt 25 ] || log "warning: the machine is busy; numbers will be noisier than usual"
	setup
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
	if [ "$WRITE" = 1 ]; then write_doc "$out"; fi
}

main
