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
# Two workloads of issue 8 run against raftwatch only, each on a fresh
# cluster at the end of a round: slow-watchers (watchers that never read on
# one node: its RSS each second, the catching-up count, and whether the
# watchers there that do read are unaffected) and watch-resume (kill -9 of
# the follower Go-client watches are on: time until each delivers a put
# written after the kill, with no gap or duplicate across the move).
#
# etcd is by default the release bench/etcd pins (3.7.3, the newest when
# pinned): a module of its own, etcd's server at the version its go.mod
# requires, built into bin/etcd at the start of every run (Go's build cache
# makes that a second or two after the first build, which downloads and
# compiles etcd in about a minute). --etcd-bin PATH runs any other etcd build instead, e.g.
# Debian's etcd-server (/usr/bin/etcd, 3.4.23). The report states the
# version that ran, from `etcd --version`.
#
# Every round starts its clusters fresh (new data directories), and the
# memory measurements get their own fresh clusters, so rounds are independent
# and the min-max spread is a spread of like runs.
#
# Coordination (issue 9): two more side-by-side workloads on the round's
# shared clusters, after the watch workloads: txn (transactions of 2
# mod-revision compares + 2 puts over 10,000 account keys, at 64/16 and
# 256/64 clients/connections; a failed compare counts as a completed
# transaction and the report gives the share that held) and keepalive
# (10,000 leases granted first, then every client renews them round robin
# on its own keepalive stream; revoked at the end, untimed). raftwatch gets
# its Txn and Lease calls via the generated gRPC stubs, sent to the leader.
#
# History cost (issue 8): the put workloads also run against a third cluster,
# raftwatch built from --baseline REV (default 240ef18, the commit before the
# event history), interleaved in the same rounds (raftwatch, baseline, etcd),
# and the report compares raftwatch with it. The baseline is built from
# `git archive REV` in a temporary directory that is removed on exit.
#
# Scaling (issue 11), each on clusters of its own, fresh per round (with
# --quick on the round's shared cluster, to stay under 3 minutes):
# curves (put throughput and p99 vs 1 to 1024 clients; watch delivery p99
# vs 1k to 100k watchers spread over the nodes; node RSS vs 10k to 1M
# watchers held on one node), printed as tables and plotted into
# curve-*.png; and watchers-1m (1,000,000 watchers on one node over 100
# streams, on one key and on as many distinct keys: the node's RSS, how
# fast they open, and a put load on other keys before and while they are
# held). A target that does not survive a watcher count (opening overruns
# its timeout, or the node dies) is reported as such and not run at larger
# counts of that shape in later points and rounds. The raftwatch clusters of
# the curves and of watchers-1m get the watcher caps those
# counts need (RW_WATCH_CAPS) plus RAFTWATCH_MASS_SERVE_FLAGS from the
# environment (e.g. "--memory-limit 0"), nothing else.
#
#   scripts/bench.sh            full run (3 rounds, ~50 minutes)
#   scripts/bench.sh --quick    small version of everything, under 3 minutes
#   options: --rounds N, --only raftwatch|etcd, --out DIR, --pprof,
#            --baseline REV, --no-baseline, --etcd-bin PATH,
#            --workloads LIST   only these, comma-separated, from: memory, put,
#                               get, watch, txn, keepalive, slow-watchers,
#                               watch-resume, curves, watchers-1m, gobench
#                               (default: all of them)
#            --log-store KIND   serve --log-store KIND (wal or boltdb) for the
#                               raftwatch clusters, not the baseline's: with
#                               --baseline HEAD --log-store wal the put table
#                               compares the two log stores of one build (the
#                               default is boltdb) side by side
#
# It stops exactly the processes it started, on exit and on INT/TERM.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
ROUNDS=3
ONLY=""
OUT=""
PPROF=0
# BASELINE_REV is the raftwatch commit the history cost is measured against:
# the last one before the event history. Empty: no baseline.
BASELINE_REV=240ef18
BASELINE_ASKED=0 # --baseline given: a missing commit is an error, not a skip
WORKLOADS=""     # --workloads: empty = every workload
ETCD_BIN=""      # --etcd-bin: empty = build bench/etcd
LOG_STORE=""     # --log-store: serve --log-store of the raftwatch clusters (not the baseline's); empty = serve's default
ALL_WORKLOADS=(memory put get watch txn keepalive slow-watchers watch-resume curves watchers-1m gobench)

while [[ $# -gt 0 ]]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--rounds) ROUNDS=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--target) ONLY=${2%-only}; shift ;; # --target etcd-only
	--out) OUT=$2; shift ;;
	--pprof) PPROF=1 ;;
	--baseline) BASELINE_REV=$2; BASELINE_ASKED=1; shift ;;
	--no-baseline) BASELINE_REV="" ;;
	--workloads) WORKLOADS=$2; shift ;;
	--etcd-bin) ETCD_BIN=$2; shift ;;
	--log-store) LOG_STORE=$2; shift ;;
	-h | --help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
	*) echo "bench.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

case "$ONLY" in
"") TARGETS=(raftwatch etcd) ;;
raftwatch | etcd) TARGETS=("$ONLY") ;;
*) echo "bench.sh: --only wants raftwatch or etcd, got '$ONLY'" >&2; exit 2 ;;
esac
# want NAME: the workload NAME was asked for (--workloads; all by default).
want() { [[ -z $WORKLOADS || ",$WORKLOADS," == *",$1,"* ]]; }
for w in ${WORKLOADS//,/ }; do
	[[ " ${ALL_WORKLOADS[*]} " == *" $w "* ]] || {
		echo "bench.sh: unknown workload '$w' in --workloads (known: ${ALL_WORKLOADS[*]})" >&2
		exit 2
	}
done
# --etcd-bin: a path (from where bench.sh was started) or a command name,
# made absolute here because the script changes directory later.
if [[ -n $ETCD_BIN ]]; then
	bin=$ETCD_BIN
	[[ $bin == */* ]] || bin=$(type -P -- "$bin") || true
	if [[ -z $bin || ! -f $bin || ! -x $bin ]]; then
		echo "bench.sh: --etcd-bin: $ETCD_BIN is not an executable file (Debian's etcd: apt-get install etcd-server, then --etcd-bin /usr/bin/etcd)" >&2
		exit 2
	fi
	ETCD_BIN=$(realpath -- "$bin")
fi
# The baseline is a raftwatch build: it runs only when raftwatch does, and
# only the put workloads use it.
[[ " ${TARGETS[*]} " == *" raftwatch "* ]] || BASELINE_REV=""
want put || BASELINE_REV=""

# Workload sizes. The quick version keeps the client/connection counts and
# shrinks time and watcher counts.
if [[ $QUICK == 1 ]]; then
	[[ $ROUNDS == 3 ]] && ROUNDS=1
	DUR=2s WARMUP=500ms
	WATCHERS=200 WATCH_DUR=3s DRAIN=5s
	MEM_WATCHERS=2000 SETTLE=2s
	SLOW_WATCHERS=200 SLOW_DUR=5s
	RESUME_WATCHERS=10 RESUME_BEFORE=1s RESUME_AFTER=3s
	COORD_SHAPES=("64 16") LEASES=1000
	GOBENCH_TIME=200ms GOBENCH_TIMEOUT=90s
	CURVE_CLIENTS=(4 64) CURVE_DUR=1s CURVE_WARMUP=200ms
	CURVE_WATCHERS=(100 1000) CURVE_WATCH_DUR=1s
	CURVE_RSS_WATCHERS=(2000 20000)
	MASS_WATCHERS=20000 MASS_PUT_DUR=500ms MASS_PUT_WARMUP=200ms MASS_OPEN_TIMEOUT=60s MASS_TIMEOUT=3m MASS_SETTLE=500ms
	# The scaling workloads share the round's cluster instead of fresh ones:
	# stopping an etcd cluster takes about 7 s, which --quick cannot afford
	# four times over. Their numbers are noise anyway.
	SCALE_FRESH=0
else
	DUR=10s WARMUP=1s
	WATCHERS=1000 WATCH_DUR=10s DRAIN=15s
	MEM_WATCHERS=10000 SETTLE=4s
	SLOW_WATCHERS=10000 SLOW_DUR=60s
	RESUME_WATCHERS=100 RESUME_BEFORE=3s RESUME_AFTER=10s
	COORD_SHAPES=("64 16" "256 64") LEASES=10000
	GOBENCH_TIME=1s GOBENCH_TIMEOUT=10m
	CURVE_CLIENTS=(1 4 16 64 256 1024) CURVE_DUR=5s CURVE_WARMUP=2s
	CURVE_WATCHERS=(1000 10000 100000) CURVE_WATCH_DUR=5s
	CURVE_RSS_WATCHERS=(10000 100000 1000000)
	MASS_WATCHERS=1000000 MASS_PUT_DUR=$DUR MASS_PUT_WARMUP=$WARMUP MASS_OPEN_TIMEOUT=10m MASS_TIMEOUT=20m MASS_SETTLE=$SETTLE
	SCALE_FRESH=1 # curves and watchers-1m on clusters of their own
fi
PUT_SHAPES=("1 1" "64 16" "256 64") # clients conns
GET_CLIENTS=64 GET_CONNS=16
WL_RATE=20
WT_PUT_CLIENTS=16 WT_PUT_CONNS=4
SLOW_CONNS=10 SLOW_LIVE=10 SLOW_RATE=1000 # slow watchers: connections, live watchers, puts/s
RESUME_RATE=200                           # watch resume: puts/s through the leader
TXN_ACCOUNTS=10000                        # txn: account keys ("/t" + 6 digits), written before the clock starts
LEASE_TTL=600                             # keepalive: seconds; no lease expires during a run
RUN_TIMEOUT=5m                            # hard limit of one raftwatch-bench invocation
CURVE_WATCH_CONNS=100                     # watch curve: client objects, spread over the nodes like watch-latency's
MASS_CONNS=100                            # watchers-1m and the node RSS curve: client objects (one stream each), all on node 0
MASS_OPEN_PARALLEL=1000                   # watches being opened at once (each waits for its creation ack)
MASS_PUT_CLIENTS=64 MASS_PUT_CONNS=16     # watchers-1m: the put load before and while the watchers are held
# RW_WATCH_CAPS are the serve flags a raftwatch node needs to hold the
# watch curves' and watchers-1m's counts: serve's defaults refuse more than
# 100,000 watchers per node and 10,000 per client, and every connection of
# the load generator comes from 127.0.0.1, so it is one client to the node.
RW_WATCH_CAPS=(--max-watchers 2000000 --max-watchers-per-client 0)
# RAFTWATCH_MASS_SERVE_FLAGS (environment): more serve flags for those same
# clusters, e.g. "--memory-limit 0"; none by default, so the runs measure
# serve's defaults otherwise.
read -r -a RW_MASS_EXTRA_FLAGS <<<"${RAFTWATCH_MASS_SERVE_FLAGS:-}"
RW_SERVE_FLAGS=() # serve flags of the raftwatch clusters started next (not the baseline's)

# Addresses: raftwatch's bench cluster is not the dev cluster (7101-7103);
# etcd's members avoid 2379/2380 in case a packaged etcd service runs there.
RW_CLIENT=(127.0.0.1:7301 127.0.0.1:7302 127.0.0.1:7303)
RW_RAFT=(127.0.0.1:7401 127.0.0.1:7402 127.0.0.1:7403)
BL_CLIENT=(127.0.0.1:7311 127.0.0.1:7312 127.0.0.1:7313) # the baseline build's cluster
BL_RAFT=(127.0.0.1:7411 127.0.0.1:7412 127.0.0.1:7413)
ETCD_CLIENT=(127.0.0.1:12379 127.0.0.1:22379 127.0.0.1:32379)
ETCD_PEER=(127.0.0.1:12380 127.0.0.1:22380 127.0.0.1:32380)
join() { local IFS=,; echo "$*"; }
EP_raftwatch=$(join "${RW_CLIENT[@]}")
EP_baseline=$(join "${BL_CLIENT[@]}")
EP_etcd=$(join "${ETCD_CLIENT[@]}")

RESULTS=${OUT:-$ROOT/bench/results-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS/logs"
JSONL=$RESULTS/results.jsonl
: >"$JSONL"
WORK=$(mktemp -d /tmp/raftwatch-bench.XXXXXX)
BENCH=$ROOT/bin/raftwatch-bench
RAFTWATCH=$ROOT/bin/raftwatch
BASELINE=$WORK/bin/raftwatch     # the baseline build (BASELINE_REV); removed with WORK
ETCD=${ETCD_BIN:-$ROOT/bin/etcd} # the etcd server binary: --etcd-bin, or bench/etcd's build

# ---------------------------------------------------------------- processes

STARTED=() # every PID this script started and has not yet reaped
PIDS_raftwatch=()
PIDS_baseline=()
PIDS_etcd=()
CLUSTERS=(raftwatch baseline etcd) # every kind of cluster this script may run

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

# start_rw NAME BINARY PPROF_BASE ROUND: a three-node cluster of a raftwatch
# binary, addresses from NAME's arrays, PIDs into PIDS_<NAME>. Only flags that
# the baseline's serve also accepts (it has no --history-*), serve defaults
# otherwise.
start_rw() {
	local name=$1 bin=$2 pprof_base=$3 i cluster="" dir=$WORK/$1-$4
	local -n clients=$5 rafts=$6 pids=PIDS_$1
	for i in 0 1 2; do cluster+="${cluster:+,}n$((i + 1))=${rafts[$i]}"; done
	pids=()
	for i in 0 1 2; do
		mkdir -p "$dir/n$((i + 1))"
		local extra=()
		[[ $PPROF == 1 ]] && extra+=(--pprof "127.0.0.1:$((pprof_base + i))")
		[[ $name == raftwatch && -n $LOG_STORE ]] && extra+=(--log-store "$LOG_STORE")
		[[ $name == raftwatch ]] && extra+=("${RW_SERVE_FLAGS[@]}")
		"$bin" serve --id "n$((i + 1))" --data-dir "$dir/n$((i + 1))" \
			--raft-addr "${rafts[$i]}" --client-addr "${clients[$i]}" \
			--initial-cluster "$cluster" --log-level warn "${extra[@]}" \
			2>>"$RESULTS/logs/$name-n$((i + 1)).log" &
		pids+=($!)
		STARTED+=($!)
	done
}
start_raftwatch() { start_rw raftwatch "$RAFTWATCH" 7501 "$1" RW_CLIENT RW_RAFT; }
start_baseline() { start_rw baseline "$BASELINE" 7511 "$1" BL_CLIENT BL_RAFT; }

start_etcd() { # round
	local i cluster="" dir=$WORK/etcd-$1 token="bench-$1-$$-$RANDOM"
	for i in 0 1 2; do cluster+="${cluster:+,}e$((i + 1))=http://${ETCD_PEER[$i]}"; done
	PIDS_etcd=()
	for i in 0 1 2; do
		# Defaults otherwise: WAL fsync on, --quota-backend-bytes default,
		# --snapshot-count default.
		"$ETCD" --name "e$((i + 1))" --data-dir "$dir/e$((i + 1))" \
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

# driver_of TARGET: the raftwatch-bench --target that talks to it.
driver_of() { [[ $1 == baseline ]] && echo raftwatch || echo "$1"; }

# stop_cluster NAME: stop one cluster of this script (if it runs).
stop_cluster() {
	local pids="PIDS_$1[@]"
	stop_pids "${!pids}"
	eval "PIDS_$1=()"
}

# fresh_clusters TAG TARGET...: stop every cluster of this script, wipe
# their data, start new ones of the TARGETs and wait until each answers a
# put through every node.
fresh_clusters() {
	local tag=$1 t
	shift
	for t in "${CLUSTERS[@]}"; do stop_cluster "$t"; done
	rm -rf "${WORK:?}"/raftwatch-* "${WORK:?}"/baseline-* "${WORK:?}"/etcd-*
	for t in "$@"; do
		"start_$t" "$tag"
	done
	for t in "$@"; do
		local ep="EP_$t"
		if ! "$BENCH" ready --target "$(driver_of "$t")" --endpoints "${!ep}" --timeout 60s; then
			echo "bench.sh: $t cluster did not become ready; see $RESULTS/logs/" >&2
			exit 1
		fi
	done
}

# bench_on "TARGET..." SUB ARGS...: one raftwatch-bench run per target, in
# that order. BENCH_FAILED is 1 after it when a run failed.
BENCH_FAILED=0
bench_on() {
	local targets=$1 sub=$2 t
	shift 2
	BENCH_FAILED=0
	for t in $targets; do
		local ep="EP_$t" pids="PIDS_$t[@]" args=("$@")
		# Every workload measures (server CPU, RSS) or kills the nodes of
		# the target under test.
		args+=(--pids "$(join "${!pids}")")
		printf '  %-16s %-9s %s\n' "$sub" "$t" "${args[*]}" >&2
		if ! "$BENCH" "$sub" --target "$(driver_of "$t")" --label "$t" --endpoints "${!ep}" --round "$ROUND" \
			--timeout "$RUN_TIMEOUT" --out "$JSONL" "${args[@]}" \
			>/dev/null 2>>"$RESULTS/logs/bench.log"; then
			echo "bench.sh: $sub against $t failed (round $ROUND): $(tail -n 1 "$RESULTS/logs/bench.log")" >&2
			BENCH_FAILED=1
		fi
		if [[ $sub == watch-resume ]]; then
			echo "  (watch-resume killed a follower of $t with SIGKILL on purpose; bash may report it as Killed)" >&2
		fi
	done
}

# bench ARGS...: bench_on every target of the run (raftwatch and etcd).
bench() { bench_on "${TARGETS[*]}" "$@"; }

# curve_conns CLIENTS: the connections of a put curve point: a quarter of
# the clients, at least 1 and at most 64 (so 1024 clients share 64).
curve_conns() {
	local c=$(($1 / 4))
	((c < 1)) && c=1
	((c > 64)) && c=64
	echo "$c"
}

# FAILED_AT["TARGET KEYS"] is the smallest watcher count (on one node, one
# key or distinct keys) TARGET did not survive in this run.
declare -A FAILED_AT=()

# mass_run TAG N KEYS ARGS...: watch-mass with N watchers on KEYS held on
# node 0, against every target that has not failed at N or fewer of KEYS,
# on clusters fresh for it; a failure is recorded in FAILED_AT.
mass_run() {
	local tag=$1 n=$2 keys=$3 t f alive=()
	shift 3
	for t in "${TARGETS[@]}"; do
		f=${FAILED_AT["$t $keys"]:-}
		if [[ -n $f && $f -le $n ]]; then
			echo "  (not running $t at $n watchers on $keys key(s): it did not survive $f)" >&2
			continue
		fi
		alive+=("$t")
	done
	[[ ${#alive[@]} -eq 0 ]] && return 0
	[[ $SCALE_FRESH == 1 ]] && fresh_clusters "$tag" "${alive[@]}"
	for t in "${alive[@]}"; do
		bench_on "$t" watch-mass --watchers "$n" --keys "$keys" --conns "$MASS_CONNS" --node 0 \
			--open-parallel "$MASS_OPEN_PARALLEL" --open-timeout "$MASS_OPEN_TIMEOUT" --settle "$MASS_SETTLE" \
			--timeout "$MASS_TIMEOUT" "$@"
		if [[ $BENCH_FAILED == 1 ]]; then
			f=${FAILED_AT["$t $keys"]:-}
			[[ -z $f || $n -lt $f ]] && FAILED_AT["$t $keys"]=$n
		fi
	done
}

# ---------------------------------------------------------------- setup

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

# etcd: bench/etcd's build unless --etcd-bin names another. Either way the
# binary must say which etcd it is: the report states that version, so a
# run never compares against an etcd it cannot name.
ETCD_DESC="not run (--only $ONLY)"
if [[ " ${TARGETS[*]} " == *" etcd "* ]]; then
	if [[ -n $ETCD_BIN ]]; then
		etcd_from="--etcd-bin $ETCD"
	else
		pinned=$(awk '{ sub(/^require[ \t]+/, "") } $1 == "go.etcd.io/etcd/server/v3" { print $2 }' bench/etcd/go.mod)
		echo "bench.sh: building etcd ${pinned:-?} (bench/etcd) into $ETCD; the first build downloads and compiles etcd, about a minute" >&2
		if ! (cd bench/etcd && go build -o "$ETCD" .) >"$RESULTS/logs/etcd-build.log" 2>&1; then
			echo "bench.sh: building etcd failed, see $RESULTS/logs/etcd-build.log;" \
				"--etcd-bin PATH runs another etcd build instead (e.g. Debian's etcd-server: --etcd-bin /usr/bin/etcd)" >&2
			exit 1
		fi
		etcd_from="built from bench/etcd, go.etcd.io/etcd/server/v3 $pinned"
	fi
	etcd_version=$("$ETCD" --version 2>/dev/null | awk '/^etcd Version:/ { print $3 }') || true
	if [[ -z $etcd_version ]]; then
		echo "bench.sh: $ETCD printed no version (etcd --version); is it an etcd server binary?" >&2
		exit 2
	fi
	ETCD_DESC="$etcd_version ($etcd_from)"
	echo "bench.sh: etcd $ETCD_DESC" >&2
fi

# The baseline: raftwatch at BASELINE_REV, built from `git archive` in WORK
# (no second worktree to clean up). A default baseline that is missing (a
# shallow clone) or does not build is skipped with a note; one asked for
# with --baseline is required.
BASELINE_NOTE="not run (--no-baseline, or raftwatch not benchmarked)"
if [[ -n $BASELINE_REV ]]; then
	why=""
	if ! commit=$(git -C "$ROOT" rev-parse --verify --quiet "$BASELINE_REV^{commit}"); then
		why="$BASELINE_REV is not a commit of this clone"
	else
		echo "bench.sh: building the baseline $BASELINE_REV into $BASELINE" >&2
		mkdir -p "$WORK/src-baseline" "$(dirname "$BASELINE")"
		if ! { git -C "$ROOT" archive "$commit" | tar -x -C "$WORK/src-baseline" &&
			(cd "$WORK/src-baseline" && go build -o "$BASELINE" ./cmd/raftwatch); } >"$RESULTS/logs/baseline-build.log" 2>&1; then
			why="$BASELINE_REV did not build (logs/baseline-build.log)"
		fi
		rm -rf "$WORK/src-baseline"
	fi
	if [[ -n $why ]]; then
		[[ $BASELINE_ASKED == 1 ]] && { echo "bench.sh: --baseline: $why" >&2; exit 2; }
		echo "bench.sh: no history-cost rows: $why" >&2
		BASELINE_NOTE="not run: $why"
		BASELINE_REV=""
	else
		BASELINE_NOTE="raftwatch at ${commit:0:12} (--baseline $BASELINE_REV), built from git archive; 3 nodes ${EP_baseline}, the same serve flags; runs the put workloads only, between raftwatch and etcd, on a cluster as fresh as theirs"
	fi
fi

# Targets of the put workloads, in run order: the baseline right after
# raftwatch, so the two see the machine in the same state.
PUT_TARGETS=()
for t in "${TARGETS[@]}"; do
	PUT_TARGETS+=("$t")
	[[ $t == raftwatch && -n $BASELINE_REV ]] && PUT_TARGETS+=(baseline)
done

# scale_where WHAT: where the scaling workloads run: WHAT, or with --quick
# the round's shared cluster.
scale_where() { if [[ $SCALE_FRESH == 1 ]]; then echo "$1"; else echo "the round's shared cluster (--quick)"; fi; }

{
	echo "## Settings"
	echo
	echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); clients and every cluster share it, one cluster busy at a time"
	echo "- rounds: $ROUNDS, order per workload: ${PUT_TARGETS[*]} for put, ${TARGETS[*]} otherwise (A B A B ...); every cluster fresh per round and for each memory measurement"
	echo "- raftwatch $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '(uncommitted tree)'): 3 nodes ${EP_raftwatch}; durability: raft log fsync on every append (${LOG_STORE:-boltdb} log store$([[ -n $LOG_STORE ]] && echo ", --log-store $LOG_STORE"); raft-boltdb with NoSync=false: two fsyncs per append; raft-wal: one), a write is acknowledged after a majority has it fsynced and the leader applied it; state machine (bbolt) commits without fsync and is rebuilt from snapshot + log after a machine crash; serve defaults (GC target paced by allocation rate, 50-400 %; 2 ms commit timeout)"
	echo "- baseline (history cost): $BASELINE_NOTE"
	echo "- etcd $ETCD_DESC: 3 members ${EP_etcd}; durability: WAL fsync before a proposal is acknowledged (default; --unsafe-no-fsync off), --quota-backend-bytes and --snapshot-count default"
	echo "- keys: 8 B, sequential over 100,000; values: 256 B; N clients over M connections = M client objects, each shared by N/M goroutines (same for both)"
	echo "- slow watchers (raftwatch only): ${SLOW_WATCHERS} watchers that never read on one follower, over ${SLOW_CONNS} connections (one stream each, 64 KiB gRPC windows), plus ${SLOW_LIVE} live watchers there that read everything; all on the prefix of the writer's ${SLOW_RATE} puts/s (256 B values, each its own key) for ${SLOW_DUR}; RSS of every node each second; serve defaults (--watch-buffer 8192 events, --watch-stream-bytes 4 MiB)"
	echo "- watch resume (raftwatch only): ${RESUME_WATCHERS} Go-client watchers (10 per client) on one follower, endpoints follower first; ${RESUME_RATE} puts/s through the leader for ${RESUME_BEFORE}, kill -9 of the follower, ${RESUME_AFTER} more; every delivered sequence checked against the acknowledged puts"
	echo "- txn: ${DUR} measured after ${WARMUP} warmup at $(printf '%s, ' "${COORD_SHAPES[@]/ //}" | sed 's/, $//') clients/conns; each transaction compares the mod revisions of two of ${TXN_ACCOUNTS} accounts (written first, untimed) with those last seen (a cache shared by the run's clients, fed by every answer), then puts 256 B to both, else reads both; concurrent transactions touch distinct keys; a failed compare is a completed transaction (in throughput and latency, and in 'compares held'); etcd: clientv3 Txn, raftwatch: KV.Txn stub on the leader"
	echo "- keepalive: ${LEASES} leases of ${LEASE_TTL} s granted first (untimed), then ${DUR} after ${WARMUP} warmup at the same shapes; each client holds its own keepalive stream (etcd: the LeaseKeepAlive stream clientv3 uses, on any member, which forwards to the leader; raftwatch: Lease.KeepAlive stub on the leader) and renews one lease at a time, round robin over all; leases revoked at the end (untimed). etcd renews in the leader's memory; raftwatch commits every renewal through the log (so it survives a leader change)"
	echo "- server CPU: user+system time of the three node processes (utime+stime in /proc/PID/stat; 10 ms ticks, per node and reading) over the measured window, summed: put, get, txn and keepalive from the end of the warmup to the last op's completion, per completed op; watch from the first put to the end of the drain, per delivered event; in µs"
	echo "- curves: put throughput and p99 at $(printf '%s, ' "${CURVE_CLIENTS[@]}" | sed 's/, $//') clients, connections = clients/4 (at least 1, at most 64), ${CURVE_DUR} measured after ${CURVE_WARMUP} warmup each; then, on the same cluster (one fresh cluster per system per round for both curves), watch delivery p99 at $(printf '%s, ' "${CURVE_WATCHERS[@]}" | sed 's/, $//') watchers on one key over ${CURVE_WATCH_CONNS} client objects spread over the nodes, puts at ${WL_RATE}/s for ${CURVE_WATCH_DUR}; node RSS (VmRSS, median of 5 readings ${MASS_SETTLE} after opening) at $(printf '%s, ' "${CURVE_RSS_WATCHERS[@]}" | sed 's/, $//') watchers on one key held on one node over ${MASS_CONNS} client objects, $(scale_where "fresh clusters per point")$(want watchers-1m && echo " (the ${MASS_WATCHERS} point is watchers-1m's one-key run)")"
	echo "- watchers-1m: ${MASS_WATCHERS} watchers held on one node over ${MASS_CONNS} client objects (one connection and one watch stream each), opened ${MASS_OPEN_PARALLEL} at a time (each waits for its creation ack), all on one key, then on ${MASS_WATCHERS} distinct keys (/w/0000000 ..., one exact-key watch each), each case on $(scale_where "fresh clusters"); the node's VmRSS and RssAnon (median of 5 readings) before and ${MASS_SETTLE} after opening; a put load (${MASS_PUT_CLIENTS} clients over ${MASS_PUT_CONNS} connections, ${MASS_PUT_DUR} after ${MASS_PUT_WARMUP} warmup, keys no watcher watches) on the same cluster before opening and while held. Opening must finish within ${MASS_OPEN_TIMEOUT}, else the target did not survive that count"
	[[ $SCALE_FRESH == 0 ]] && echo "- --quick: curves and watchers-1m run on the round's shared cluster after the other workloads, not on fresh ones (raftwatch's started with the flags below)"
	echo "- raftwatch serve flags of the curves' and watchers-1m's clusters: ${RW_WATCH_CAPS[*]}${RAFTWATCH_MASS_SERVE_FLAGS:+ ${RAFTWATCH_MASS_SERVE_FLAGS}} (serve's defaults cap watchers at 100,000 per node and 10,000 per client, and the load generator is one client, 127.0.0.1)"
	echo "- put/get: ${DUR} measured after ${WARMUP} warmup; watch: ${WATCHERS} watchers on one key over all nodes (one connection per node), latency puts at ${WL_RATE}/s for ${WATCH_DUR}, throughput ${WT_PUT_CLIENTS} writers over ${WT_PUT_CONNS} connections for ${WATCH_DUR}; memory: ${MEM_WATCHERS} watchers, RSS from /proc/PID/status ${SETTLE} after opening, median of 5 readings"
	echo
} >"$RESULTS/settings.md"
cat "$RESULTS/settings.md"

# ---------------------------------------------------------------- rounds

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
	echo "== round $ROUND of $ROUNDS" >&2
	if want memory; then
		fresh_clusters "r$ROUND-mem-spread" "${TARGETS[@]}"
		bench watch-hold --watchers "$MEM_WATCHERS" --settle "$SETTLE"
		fresh_clusters "r$ROUND-mem-one" "${TARGETS[@]}"
		bench watch-hold --watchers "$MEM_WATCHERS" --settle "$SETTLE" --node 0
	fi
	scale_shared=0 # the scaling workloads run on this round's cluster (--quick)
	if [[ $SCALE_FRESH == 0 ]] && { want curves || want watchers-1m; }; then
		scale_shared=1
		RW_SERVE_FLAGS=("${RW_WATCH_CAPS[@]}" "${RW_MASS_EXTRA_FLAGS[@]}")
	fi
	if want put || want get || want watch || want txn || want keepalive || [[ $scale_shared == 1 ]]; then
		fresh_clusters "r$ROUND" "${PUT_TARGETS[@]}"
	fi
	RW_SERVE_FLAGS=()
	# The baseline runs every put shape, not only the 64 and 256 clients of
	# the goal, so that its cluster has seen the same writes as raftwatch's
	# when those start.
	if want put; then
		for shape in "${PUT_SHAPES[@]}"; do
			read -r clients conns <<<"$shape"
			bench_on "${PUT_TARGETS[*]}" put --clients "$clients" --conns "$conns" --duration "$DUR" --warmup "$WARMUP"
		done
	fi
	stop_cluster baseline # idle from here on; not left running beside the others
	if want get; then
		for mode in linearizable serializable; do
			bench get --consistency "$mode" --clients "$GET_CLIENTS" --conns "$GET_CONNS" --duration "$DUR" --warmup "$WARMUP"
		done
	fi
	if want watch; then
		bench watch-latency --watchers "$WATCHERS" --rate "$WL_RATE" --duration "$WATCH_DUR" --drain "$DRAIN"
		bench watch-throughput --watchers "$WATCHERS" --put-clients "$WT_PUT_CLIENTS" --put-conns "$WT_PUT_CONNS" \
			--duration "$WATCH_DUR" --drain "$DRAIN"
	fi
	# Coordination (issue 9). keepalive last: its leases are revoked at its
	# end, but nothing else should share the cluster with them.
	if want txn; then
		for shape in "${COORD_SHAPES[@]}"; do
			read -r clients conns <<<"$shape"
			bench txn --clients "$clients" --conns "$conns" --accounts "$TXN_ACCOUNTS" --duration "$DUR" --warmup "$WARMUP"
		done
	fi
	if want keepalive; then
		for shape in "${COORD_SHAPES[@]}"; do
			read -r clients conns <<<"$shape"
			bench keepalive --clients "$clients" --conns "$conns" --leases "$LEASES" --ttl "$LEASE_TTL" \
				--duration "$DUR" --warmup "$WARMUP"
		done
	fi
	# Scaling (issue 11), each on clusters of its own (but for --quick).
	if want curves; then
		# The put and watch curves share a cluster per system: raftwatch's
		# with the watcher caps, which do not touch puts.
		RW_SERVE_FLAGS=("${RW_WATCH_CAPS[@]}" "${RW_MASS_EXTRA_FLAGS[@]}")
		[[ $SCALE_FRESH == 1 ]] && fresh_clusters "r$ROUND-curve" "${TARGETS[@]}"
		for clients in "${CURVE_CLIENTS[@]}"; do
			bench put --clients "$clients" --conns "$(curve_conns "$clients")" \
				--duration "$CURVE_DUR" --warmup "$CURVE_WARMUP" --curve put-clients
		done
		for n in "${CURVE_WATCHERS[@]}"; do
			bench watch-latency --watchers "$n" --conns "$CURVE_WATCH_CONNS" --rate "$WL_RATE" \
				--duration "$CURVE_WATCH_DUR" --drain "$DRAIN" --curve watch-watchers
		done
		for n in "${CURVE_RSS_WATCHERS[@]}"; do
			# watchers-1m's one-key run is this curve's point at its count.
			want watchers-1m && [[ $n == "$MASS_WATCHERS" ]] && continue
			mass_run "r$ROUND-curve-rss-$n" "$n" one --curve node-rss
		done
		RW_SERVE_FLAGS=()
	fi
	if want watchers-1m; then
		RW_SERVE_FLAGS=("${RW_WATCH_CAPS[@]}" "${RW_MASS_EXTRA_FLAGS[@]}")
		mass=(--put-clients "$MASS_PUT_CLIENTS" --put-conns "$MASS_PUT_CONNS" --put-duration "$MASS_PUT_DUR" --put-warmup "$MASS_PUT_WARMUP")
		curve=()
		want curves && curve=(--curve node-rss)
		mass_run "r$ROUND-mass-one" "$MASS_WATCHERS" one "${mass[@]}" "${curve[@]}"
		mass_run "r$ROUND-mass-distinct" "$MASS_WATCHERS" distinct "${mass[@]}"
		RW_SERVE_FLAGS=()
	fi
	# raftwatch only, each on a fresh cluster with nothing else running:
	# etcd's slow watchers grow without bound (not run), and the resume is
	# the raftwatch Go client's. watch-resume kills a follower with SIGKILL;
	# the next fresh_clusters (or the end) stops the rest of that cluster.
	if [[ " ${TARGETS[*]} " == *" raftwatch "* ]]; then
		if want slow-watchers; then
			# Its 10,000 slow and 10 live watchers all come from
			# 127.0.0.1: one client to the node, over its default quota
			# of 10,000 watchers (its byte budgets stay the defaults).
			RW_SERVE_FLAGS=(--max-watchers-per-client 0)
			fresh_clusters "r$ROUND-slow" raftwatch
			RW_SERVE_FLAGS=()
			bench_on raftwatch slow-watchers --watchers "$SLOW_WATCHERS" --conns "$SLOW_CONNS" --live "$SLOW_LIVE" \
				--rate "$SLOW_RATE" --duration "$SLOW_DUR" --drain "$DRAIN"
		fi
		if want watch-resume; then
			fresh_clusters "r$ROUND-resume" raftwatch
			bench_on raftwatch watch-resume --watchers "$RESUME_WATCHERS" --rate "$RESUME_RATE" \
				--before "$RESUME_BEFORE" --after "$RESUME_AFTER" --drain "$DRAIN"
		fi
	fi
done
for t in "${CLUSTERS[@]}"; do stop_cluster "$t"; done

# ---------------------------------------------------------------- watch/ Go benchmarks

GOBENCH=$RESULTS/watch-bench.txt
if ! want gobench; then
	echo "not run (--workloads $WORKLOADS)" >"$GOBENCH"
elif compgen -G "$ROOT/watch/*_test.go" >/dev/null && grep -q '^func Benchmark' "$ROOT"/watch/*_test.go; then
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
