#!/usr/bin/env bash
# bench.sh: raftwatch and etcd side by side on this machine (issue 4).
#
# Starts a 3-node raftwatch cluster and a 3-member etcd cluster on 127.0.0.1,
# runs every workload of cmd/raftwatch-bench against both, alternating
# raftwatch, etcd, raftwatch, etcd ... for --rounds rounds, measures memory per
# watcher, runs the watch package's Go benchmarks, and prints one markdown
# table per workload. Results go to bench/results-<timestamp>/ (results.jsonl,
# results.csv, ratios.png, summary.md, logs/).
#
# Every round starts both clusters fresh (new data directories), and the
# memory measurements get their own fresh clusters, so rounds are independent
# and the min-max spread is a spread of like runs.
#
#   scripts/bench.sh            full run (3 rounds, ~15-20 minutes)
#   scripts/bench.sh --quick    small version of everything, under 3 minutes
#   options: --rounds N, --only raftwatch|etcd, --out DIR, --pprof
#
# It stops exactly the processes it started, on exit and on INT/TERM.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
ROUNDS=3
ONLY=""
OUT=""
PPROF=0

while [[ $# -gt 0 ]]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--rounds) ROUNDS=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--target) ONLY=${2%-only}; shift ;; # --target etcd-only
	--out) OUT=$2; shift ;;
	--pprof) PPROF=1 ;;
	-h | --help) sed -n '2,20p' "$0"; exit 0 ;;
	*) echo "bench.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

case "$ONLY" in
"") TARGETS=(raftwatch etcd) ;;
raftwatch | etcd) TARGETS=("$ONLY") ;;
*) echo "bench.sh: --only wants raftwatch or etcd, got '$ONLY'" >&2; exit 2 ;;
esac

# Workload sizes. The quick version keeps the client/connection counts and
# shrinks time and watcher counts.
if [[ $QUICK == 1 ]]; then
	[[ $ROUNDS == 3 ]] && ROUNDS=1
	DUR=2s WARMUP=500ms
	WATCHERS=200 WATCH_DUR=3s DRAIN=5s
	MEM_WATCHERS=2000 SETTLE=2s
	GOBENCH_TIME=200ms GOBENCH_TIMEOUT=90s
else
	DUR=10s WARMUP=1s
	WATCHERS=1000 WATCH_DUR=10s DRAIN=15s
	MEM_WATCHERS=10000 SETTLE=4s
	GOBENCH_TIME=1s GOBENCH_TIMEOUT=10m
fi
PUT_SHAPES=("1 1" "64 16" "256 64") # clients conns
GET_CLIENTS=64 GET_CONNS=16
WL_RATE=20
WT_PUT_CLIENTS=16 WT_PUT_CONNS=4
RUN_TIMEOUT=5m # hard limit of one raftwatch-bench invocation

# Addresses: raftwatch's bench cluster is not the dev cluster (7101-7103);
# etcd's members avoid 2379/2380 in case a packaged etcd service runs there.
RW_CLIENT=(127.0.0.1:7301 127.0.0.1:7302 127.0.0.1:7303)
RW_RAFT=(127.0.0.1:7401 127.0.0.1:7402 127.0.0.1:7403)
ETCD_CLIENT=(127.0.0.1:12379 127.0.0.1:22379 127.0.0.1:32379)
ETCD_PEER=(127.0.0.1:12380 127.0.0.1:22380 127.0.0.1:32380)
join() { local IFS=,; echo "$*"; }
EP_raftwatch=$(join "${RW_CLIENT[@]}")
EP_etcd=$(join "${ETCD_CLIENT[@]}")

RESULTS=${OUT:-$ROOT/bench/results-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS/logs"
JSONL=$RESULTS/results.jsonl
: >"$JSONL"
WORK=$(mktemp -d /tmp/raftwatch-bench.XXXXXX)
BENCH=$ROOT/bin/raftwatch-bench
RAFTWATCH=$ROOT/bin/raftwatch

# ---------------------------------------------------------------- processes

STARTED=() # every PID this script started and has not yet reaped
PIDS_raftwatch=()
PIDS_etcd=()

# stop_pids PID...: SIGTERM, wait up to 10 s, then SIGKILL; only these PIDs.
stop_pids() {
	local pid left=()
	[[ $# -eq 0 ]] && return 0
	for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
	for _ in $(seq 100); do
		left=()
		for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
		[[ ${#left[@]} -eq 0 ]] && break
		sleep 0.1
	done
	for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
	local keep=() s p
	for s in "${STARTED[@]}"; do
		for p in "$@"; do [[ $s == "$p" ]] && continue 2; done
		keep+=("$s")
	done
	STARTED=("${keep[@]}")
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ ${#STARTED[@]} -gt 0 ]]; then
		echo "bench.sh: stopping ${#STARTED[@]} processes it started: ${STARTED[*]}" >&2
		stop_pids "${STARTED[@]}"
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_raftwatch() { # round
	local i cluster="" dir=$WORK/raftwatch-$1
	for i in 0 1 2; do cluster+="${cluster:+,}n$((i + 1))=${RW_RAFT[$i]}"; done
	PIDS_raftwatch=()
	for i in 0 1 2; do
		mkdir -p "$dir/n$((i + 1))"
		local extra=()
		[[ $PPROF == 1 ]] && extra+=(--pprof "127.0.0.1:$((7501 + i))")
		"$RAFTWATCH" serve --id "n$((i + 1))" --data-dir "$dir/n$((i + 1))" \
			--raft-addr "${RW_RAFT[$i]}" --client-addr "${RW_CLIENT[$i]}" \
			--initial-cluster "$cluster" --log-level warn "${extra[@]}" \
			2>>"$RESULTS/logs/raftwatch-n$((i + 1)).log" &
		PIDS_raftwatch+=($!)
		STARTED+=($!)
	done
}

start_etcd() { # round
	local i cluster="" dir=$WORK/etcd-$1 token="bench-$1-$$-$RANDOM"
	for i in 0 1 2; do cluster+="${cluster:+,}e$((i + 1))=http://${ETCD_PEER[$i]}"; done
	PIDS_etcd=()
	for i in 0 1 2; do
		# Defaults otherwise: WAL fsync on, --quota-backend-bytes default,
		# --snapshot-count default.
		etcd --name "e$((i + 1))" --data-dir "$dir/e$((i + 1))" \
			--listen-client-urls "http://${ETCD_CLIENT[$i]}" \
			--advertise-client-urls "http://${ETCD_CLIENT[$i]}" \
			--listen-peer-urls "http://${ETCD_PEER[$i]}" \
			--initial-advertise-peer-urls "http://${ETCD_PEER[$i]}" \
			--initial-cluster "$cluster" --initial-cluster-state new \
			--initial-cluster-token "$token" \
			--logger zap --log-level warn \
			2>>"$RESULTS/logs/etcd-e$((i + 1)).log" >/dev/null &
		PIDS_etcd+=($!)
		STARTED+=($!)
	done
}

# fresh_clusters TAG: stop the clusters of this script, wipe their data,
# start new ones and wait until each answers a put through every node.
fresh_clusters() {
	local t pids
	for t in "${TARGETS[@]}"; do
		pids="PIDS_$t[@]"
		stop_pids "${!pids}"
	done
	rm -rf "${WORK:?}"/raftwatch-* "${WORK:?}"/etcd-*
	for t in "${TARGETS[@]}"; do
		"start_$t" "$1"
	done
	for t in "${TARGETS[@]}"; do
		local ep="EP_$t"
		if ! "$BENCH" ready --target "$t" --endpoints "${!ep}" --timeout 60s; then
			echo "bench.sh: $t cluster did not become ready; see $RESULTS/logs/" >&2
			exit 1
		fi
	done
}

# bench ARGS...: one raftwatch-bench run per target, in TARGETS order.
bench() {
	local sub=$1 t
	shift
	for t in "${TARGETS[@]}"; do
		local ep="EP_$t" pids="PIDS_$t[@]" args=("$@")
		# watch-hold measures the RSS of the nodes of the target under test.
		[[ $sub == watch-hold ]] && args+=(--pids "$(join "${!pids}")")
		printf '  %-16s %-9s %s\n' "$sub" "$t" "${args[*]}" >&2
		if ! "$BENCH" "$sub" --target "$t" --endpoints "${!ep}" --round "$ROUND" \
			--timeout "$RUN_TIMEOUT" --out "$JSONL" "${args[@]}" \
			>/dev/null 2>>"$RESULTS/logs/bench.log"; then
			echo "bench.sh: $sub against $t failed (round $ROUND): $(tail -n 1 "$RESULTS/logs/bench.log")" >&2
		fi
	done
}

# ---------------------------------------------------------------- setup

if ! command -v etcd >/dev/null; then
	echo "bench.sh: installing etcd-server (Debian package)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null
	# The package may start its own service on 2379/2380; ours use other ports.
fi

echo "bench.sh: building into $ROOT/bin" >&2
cd "$ROOT"
mkdir -p bin
if [[ " ${TARGETS[*]} " == *" raftwatch "* ]]; then
	go build -o "$RAFTWATCH" ./cmd/raftwatch
	go build -o "$BENCH" ./cmd/raftwatch-bench
else
	# etcd only: the tool builds without the raftwatch client.
	go build -tags noraftwatch -o "$BENCH" ./cmd/raftwatch-bench
fi

{
	echo "## Settings"
	echo
	echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); clients and both clusters share it"
	echo "- rounds: $ROUNDS, order per workload: ${TARGETS[*]} (A B A B ...); both clusters fresh per round and for each memory measurement"
	echo "- raftwatch $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '(uncommitted tree)'): 3 nodes ${EP_raftwatch}; durability: raft log fsync on every append (raft-boltdb, NoSync=false), a write is acknowledged after a majority has it fsynced and the leader applied it; state machine (bbolt) commits without fsync and is rebuilt from snapshot + log after a machine crash; serve defaults (GOGC 400, 2 ms commit timeout)"
	echo "- etcd $(etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}'): 3 members ${EP_etcd}; durability: WAL fsync before a proposal is acknowledged (default; --unsafe-no-fsync off), --quota-backend-bytes and --snapshot-count default"
	echo "- keys: 8 B, sequential over 100,000; values: 256 B; N clients over M connections = M client objects, each shared by N/M goroutines (same for both)"
	echo "- put/get: ${DUR} measured after ${WARMUP} warmup; watch: ${WATCHERS} watchers on one key over all nodes (one connection per node), latency puts at ${WL_RATE}/s for ${WATCH_DUR}, throughput ${WT_PUT_CLIENTS} writers over ${WT_PUT_CONNS} connections for ${WATCH_DUR}; memory: ${MEM_WATCHERS} watchers, RSS from /proc/PID/status ${SETTLE} after opening, median of 5 readings"
	echo
} >"$RESULTS/settings.md"
cat "$RESULTS/settings.md"

# ---------------------------------------------------------------- rounds

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
	echo "== round $ROUND of $ROUNDS" >&2
	fresh_clusters "r$ROUND-mem-spread"
	bench watch-hold --watchers "$MEM_WATCHERS" --settle "$SETTLE"
	fresh_clusters "r$ROUND-mem-one"
	bench watch-hold --watchers "$MEM_WATCHERS" --settle "$SETTLE" --node 0
	fresh_clusters "r$ROUND"
	for shape in "${PUT_SHAPES[@]}"; do
		read -r clients conns <<<"$shape"
		bench put --clients "$clients" --conns "$conns" --duration "$DUR" --warmup "$WARMUP"
	done
	for mode in linearizable serializable; do
		bench get --consistency "$mode" --clients "$GET_CLIENTS" --conns "$GET_CONNS" --duration "$DUR" --warmup "$WARMUP"
	done
	bench watch-latency --watchers "$WATCHERS" --rate "$WL_RATE" --duration "$WATCH_DUR" --drain "$DRAIN"
	bench watch-throughput --watchers "$WATCHERS" --put-clients "$WT_PUT_CLIENTS" --put-conns "$WT_PUT_CONNS" \
		--duration "$WATCH_DUR" --drain "$DRAIN"
done
for t in "${TARGETS[@]}"; do
	pids="PIDS_$t[@]"
	stop_pids "${!pids}"
done

# ---------------------------------------------------------------- watch/ Go benchmarks

GOBENCH=$RESULTS/watch-bench.txt
if compgen -G "$ROOT/watch/*_test.go" >/dev/null && grep -q '^func Benchmark' "$ROOT"/watch/*_test.go; then
	echo "== go test -bench ./watch/ (prefix dispatch)" >&2
	if ! go test -run XXX -bench . -benchmem -benchtime "$GOBENCH_TIME" -timeout "$GOBENCH_TIMEOUT" ./watch/ \
		>"$GOBENCH" 2>&1; then
		echo "bench.sh: watch benchmarks failed; see $GOBENCH" >&2
	fi
else
	echo "watch/ has no benchmarks yet" >"$GOBENCH"
fi

# ---------------------------------------------------------------- report

"$BENCH" report --in "$JSONL" --dir "$RESULTS" --settings "$RESULTS/settings.md" --gobench "$GOBENCH"
if grep -q '\*\*no\*\*' "$RESULTS/summary.md" 2>/dev/null; then
	echo
	echo "Missed targets: README.md, section Performance, gives for each the profile-backed reason"
	echo "(what limits it, what was measured, what was already fixed)."
fi
echo >&2
echo "bench.sh: results in $RESULTS" >&2
