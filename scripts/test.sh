#!/usr/bin/env bash
# Runs every test: formatting, vet, unit and three-process tests under the
# race detector, then (as root) a short Jepsen-style fault test of a real
# three-node cluster in network namespaces.
#   scripts/test.sh            everything
#   scripts/test.sh --unit     skip the fault test
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change:"; echo "$bad"; exit 1; fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

if [ "${1:-}" = "--unit" ]; then exit 0; fi

echo "== cluster-test (Jepsen-style, all faults, 75 s)"
if [ "$(id -u)" != 0 ]; then
  echo "cluster-test needs root (network namespaces, nftables); run as root or pass --unit" >&2
  exit 1
fi
out=${CLUSTER_TEST_OUT:-$(mktemp -d /tmp/raftwatch-cluster-test.XXXXXX)}
go run ./cluster-test --time-limit 75s --nemesis all --seed "${CLUSTER_TEST_SEED:-$RANDOM}" --out "$out"
