#!/usr/bin/env bash
# bench/policy.sh: what the inbound authorization policy costs a request.
# It runs the Go benchmark BenchmarkInboundPolicy (proxy/policy_test.go): an
# HTTP request on a kept-alive connection through mesh-proxy's inbound side
# to an application, all in one process, with no policy and under a policy
# of 100 Servers x 100 authorizations (the client's the last), over HTTP/1.1
# and h2c. The four cases run in alternation, round after round, so that
# the machine's noise falls on all of them alike; the ratio of CPU per
# request with and without the policy is the median of the rounds' ratios.
# It also runs the policy's own micro-benchmarks (proxy/policy,
# proxy/authz): a request on a decided connection, and a connection's
# decision. It prints a markdown section.
#
# make bench-proxy runs it after the proxy hops (bench/proxy.sh); it needs
# no root and no network namespace of its own:
#   bash bench/policy.sh [--write] [--rounds N] [--benchtime 1s]
# Environment: BENCH_WRITE=1 is --write, BENCH_POLICY_ROUNDS is --rounds
# (8), BENCH_POLICY_BENCHTIME is --benchtime (1s), GO the go command (go).
# --write replaces only the part of docs/benchmarks.md between the
# "BEGIN bench-policy" and "END bench-policy" markers.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WRITE=${BENCH_WRITE:-0}
ROUNDS=${BENCH_POLICY_ROUNDS:-8}
BENCHTIME=${BENCH_POLICY_BENCHTIME:-1s}
GO=${GO:-go}
DOC="$ROOT/docs/benchmarks.md"
GOAL=1.02 # under 2 % more CPU per request

while [ $# -gt 0 ]; do
	case $1 in
	--write) WRITE=1 ;;
	--rounds) ROUNDS=$2; shift ;;
	--benchtime) BENCHTIME=$2; shift ;;
	-h | --help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench/policy.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

log() { echo "bench-policy: $*" >&2; }
die() { echo "bench-policy: error: $*" >&2; exit 1; }

command -v "$GO" >/dev/null || die "$GO not found (set GO=/path/to/go; under sudo, PATH may have lost it)"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive number, got $ROUNDS"

RUN=$(mktemp -d /tmp/mesh-bench-policy.XXXXXX)
trap 'rm -rf "$RUN"' EXIT

# The test binaries are built once, so every round measures the same code.
log "building the test binaries"
(cd "$ROOT" && "$GO" test -c -o "$RUN/proxy.test" ./proxy/ && "$GO" test -c -o "$RUN/policy.test" ./proxy/policy/ &&
	"$GO" test -c -o "$RUN/authz.test" ./proxy/authz/) || die "go test -c failed"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
CASES="http1/none http1/100x100 h2c/none h2c/100x100"
for round in $(seq "$ROUNDS"); do
	log "round $round of $ROUNDS"
	for c in $CASES; do
		# One case per run: each starts from a fresh process and heap.
		(cd "$ROOT/proxy" && "$RUN/proxy.test" -test.run '^$' -test.bench "^BenchmarkInboundPolicy\$/^${c%/*}\$/^${c#*/}\$" \
			-test.benchtime "$BENCHTIME" -test.benchmem -test.cpu 1) |
			awk -v r="$round" '/^BenchmarkInboundPolicy\// { print r, $0 }' >>"$RUN/rounds.txt"
	done
done
(cd "$ROOT/proxy/policy" && "$RUN/policy.test" -test.run '^$' -test.bench '^BenchmarkAuthorizeRequest$' -test.benchmem -test.count 3) >"$RUN/micro.txt"
(cd "$ROOT/proxy/authz" && "$RUN/authz.test" -test.run '^$' -test.bench '^BenchmarkAuthorize$/servers=100' -test.benchmem -test.count 3) >>"$RUN/micro.txt"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
[ "$(wc -l <"$RUN/rounds.txt")" -eq $((ROUNDS * 4)) ] || { cat "$RUN/rounds.txt" >&2; die "some benchmark runs printed no result"; }

# report prints the section: per case the medians, per load the median
# ratio of the rounds and the goal's verdict, then the micro-benchmarks.
report() {
	local commit
	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	[ -n "$(git -C "$ROOT" status --porcelain -- proxy 2>/dev/null)" ] && commit="$commit + uncommitted changes in proxy/"
	echo "### Inbound policy: run of $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "- Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo); load average before: $LOAD_BEFORE, after: $LOAD_AFTER."
	echo "- Commit $commit, $("$GO" version | awk '{print $3}'); $ROUNDS rounds of the four cases in turn, $BENCHTIME each, \`-cpu 1\`."
	echo "- cpu-ns/op is the CPU time of the whole benchmark process (client, proxy, application) per request."
	echo
	echo "| load | policy | cpu-ns/op (median) | ns/op (median) | B/op | allocs/op |"
	echo "|---|---|---:|---:|---:|---:|"
	# Fields: round name N ns "ns/op" cpu "cpu-ns/op" B "B/op" allocs "allocs/op"
	awk '
		function median(list,   a, n, i, j, t) {
			n = split(list, a, " ")
			for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		{
			split($2, p, "/"); sub(/-[0-9]+$/, "", p[3]); k = p[2] "|" p[3]
			if (!(k in seen)) { seen[k] = 1; order[++n] = k }
			for (i = 4; i < NF; i++) v[$(i + 1)] = $i
			ns[k] = ns[k] " " v["ns/op"]; cpu[k] = cpu[k] " " v["cpu-ns/op"]; b[k] = v["B/op"]; al[k] = v["allocs/op"]
			bycase[$1 "|" k] = v["cpu-ns/op"]
		}
		END {
			for (i = 1; i <= n; i++) {
				k = order[i]; split(k, p, "|")
				printf "| %s | %s | %.0f | %.0f | %s | %s |\n", p[1], p[2], median(cpu[k]), median(ns[k]), b[k], al[k]
			}
		}' "$RUN/rounds.txt"
	echo
	awk -v goal="$GOAL" '
		function median(list,   a, n, i, j, t) {
			n = split(list, a, " ")
			for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		{
			split($2, p, "/"); sub(/-[0-9]+$/, "", p[3])
			for (i = 4; i < NF; i++) if ($(i + 1) == "cpu-ns/op") c = $i
			cpu[$1 "|" p[2] "|" p[3]] = c; rounds[$1] = 1; loads[p[2]] = 1
		}
		END {
			for (l in loads) {
				list = ""; lo = 1e9; hi = 0
				for (r in rounds) {
					x = cpu[r "|" l "|100x100"] / cpu[r "|" l "|none"]
					list = list " " x; if (x < lo) lo = x; if (x > hi) hi = x
				}
				m = median(list)
				printf "- %s: CPU per request under the 100x100 policy / with none: **%.3f** (median of the rounds'"'"' ratios; they ranged %.2f-%.2f). Goal < %s: %s.\n", \
					l, m, lo, hi, goal, (m < goal ? "met" : "not met")
			}
		}' "$RUN/rounds.txt" | sort
	awk '
		/^BenchmarkAuthorizeRequest/ { for (i = 3; i < NF; i++) if ($(i + 1) == "ns/op") r = r " " $i; for (i = 3; i < NF; i++) if ($(i + 1) == "allocs/op") ra = $i }
		/^BenchmarkAuthorize\// { for (i = 3; i < NF; i++) if ($(i + 1) == "ns/op") c = c " " $i; for (i = 3; i < NF; i++) if ($(i + 1) == "allocs/op") ca = $i }
		END {
			printf "- The policy alone: a request on a connection already decided costs%s ns (BenchmarkAuthorizeRequest, 3 runs, 2 goroutines on one counter), %s allocs;\n", r, ra
			printf "  deciding a connection under 100 Servers x 100 authorizations, the client'"'"'s the last, costs%s ns (BenchmarkAuthorize), %s allocs, once per connection and policy.\n", c, ca
		}' "$RUN/micro.txt"
	echo
	echo "Commands (DIR is the run's temporary directory; the test binaries come from \`go test -c\` of ./proxy/, ./proxy/policy/, ./proxy/authz/):"
	echo
	echo '```'
	echo "DIR/proxy.test -test.run '^\$' -test.bench '^BenchmarkInboundPolicy\$/^LOAD\$/^POLICY\$' -test.benchtime $BENCHTIME -test.benchmem -test.cpu 1   # per case, per round"
	echo "DIR/policy.test -test.run '^\$' -test.bench '^BenchmarkAuthorizeRequest\$' -test.benchmem -test.count 3"
	echo "DIR/authz.test -test.run '^\$' -test.bench '^BenchmarkAuthorize\$/servers=100' -test.benchmem -test.count 3"
	echo '```'
}

write_doc() {
	local body=$1 tmp
	grep -q '<!-- BEGIN bench-policy' "$DOC" || die "$DOC has no bench-policy markers; add them where the section belongs"
	tmp=$(mktemp "$DOC.XXXXXX")
	BODY=$body awk '
		/<!-- BEGIN bench-policy/ { print; print ""; print ENVIRON["BODY"]; print ""; skip = 1; next }
		/<!-- END bench-policy/ { skip = 0 }
		!skip' "$DOC" >"$tmp"
	chmod 644 "$tmp"
	mv "$tmp" "$DOC"
	log "wrote $DOC"
}

out=$(report)
echo "$out"
if [ "$WRITE" = 1 ]; then write_doc "$out"; fi
