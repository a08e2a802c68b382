#!/usr/bin/env bash
# Runs every test: formatting, vet, unit and three-process tests under the
# race detector, then (as root) a short Jepsen-style fault test of a real
# three-node cluster in network namespaces and the quick side-by-side bench.
# As root it first installs what those need and is missing (nftables,
# iproute2; Debian packages). The quick bench builds the etcd it compares
# against (bench/etcd, 3.7.3) like any bench run: this keeps the default
# path working, and costs about 40 s on cold Go caches. Not as root, it says
# what it skips and runs the rest.
#   scripts/test.sh            everything
#   scripts/test.sh --unit     gofmt, vet, go test and the short fuzz runs only
set -euo pipefail
cd "$(dirname "$0")/.."

unit=0
case "${1:-}" in
  "") ;;
  --unit) unit=1 ;;
  *) echo "usage: $0 [--unit]" >&2; exit 2 ;;
esac
root=0
[ "$(id -u)" = 0 ] && root=1

if [ "$unit" = 0 ] && [ "$root" = 1 ]; then
  need=()
  command -v nft >/dev/null || need+=(nftables)
  command -v ip >/dev/null || need+=(iproute2)
  if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change:"; echo "$bad"; exit 1; fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

# The seed corpora under */testdata/fuzz run as plain tests above; this
# fuzzes each decoder and request validator briefly (go test -fuzz takes one
# target at a time). Minimizing new inputs is skipped (-fuzzminimizetime 0):
# on a loaded 2-core box it took most of the budget; a crasher is still
# saved, unminimized, under testdata/fuzz. The budget is a count of
# executions, not a duration: Go 1.26's fuzz coordinator can report a
# spurious "context deadline exceeded" failure when a duration -fuzztime
# ends while a worker is mid-call (golang/go#75804, fixed in Go 1.27); a
# count has no deadline. 60,000 executions take ~7 s for the decoders on a
# 2-core box, less for the validators. FUZZ_TIME overrides it (e.g. 30s).
echo "== go test -fuzz (stored-data decoders, request validators)"
for target in "./fsm FuzzDecodeRecord" "./node FuzzDecodeLogEntry" \
  "./keyspace FuzzCheckKey" "./keyspace FuzzCheckPrefix" "./node FuzzCheckList" \
  "./node FuzzCheckPut" "./node FuzzCheckTxn" "./node FuzzCheckMember"; do
  set -- $target
  go test -run '^$' -fuzz "^$2\$" -fuzztime "${FUZZ_TIME:-60000x}" -fuzzminimizetime 0 "$1"
done

if [ "$unit" = 1 ]; then exit 0; fi
if [ "$root" = 0 ]; then
  echo "not root: skipped installing nftables/iproute2, the fault test and the quick bench (they need root)"
  exit 0
fi

echo "== cluster-test (Jepsen-style, all faults, every workload, pinned and failover clients, 75 s)"
out=${CLUSTER_TEST_OUT:-$(mktemp -d /tmp/raftwatch-cluster-test.XXXXXX)}
go run ./cluster-test --time-limit 75s --nemesis all --workload all --clients both --seed "${CLUSTER_TEST_SEED:-$RANDOM}" --out "$out"

echo "== bench --quick (keeps the harness working; no thresholds)"
scripts/bench.sh --quick
