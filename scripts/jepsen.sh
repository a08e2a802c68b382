#!/usr/bin/env bash
# Long Jepsen-style run of cluster-test: 10 minutes, every fault, every
# workload (--workload all), as root.
# Extra arguments pass through and override (later flags win), e.g.
#   scripts/jepsen.sh --seed 42 --read-consistency serializable
# The output directory defaults to ./jepsen-out/<timestamp>; pass --out to change it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="jepsen-out/$(date +%Y%m%d-%H%M%S)"
exec go run ./cluster-test --time-limit 10m --nemesis all --workload all --clients both --out "$out" "$@"
