#!/usr/bin/env bash
# Local three-node raftwatch cluster on 127.0.0.1.
#   scripts/cluster.sh up      build bin/raftwatch, start n1..n3, wait for a leader
#   scripts/cluster.sh down    stop exactly the processes "up" started (by PID)
#   scripts/cluster.sh status  show each node's role and indexes
# Client ports 7101-7103, raft ports 7201-7203, data and logs under .cluster/.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.cluster
BIN=bin/raftwatch
ENDPOINTS=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
INITIAL=n1=127.0.0.1:7201,n2=127.0.0.1:7202,n3=127.0.0.1:7203

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
  mkdir -p bin "$DIR"
  go build -o "$BIN" ./cmd/raftwatch
  for i in 1 2 3; do
    if running "$DIR/n$i.pid"; then
      echo "n$i already running (pid $(cat "$DIR/n$i.pid"))"
      continue
    fi
    "$BIN" serve --id "n$i" --data-dir "$DIR/n$i" \
      --raft-addr "127.0.0.1:720$i" --client-addr "127.0.0.1:710$i" \
      --initial-cluster "$INITIAL" >>"$DIR/n$i.log" 2>&1 &
    echo $! >"$DIR/n$i.pid"
  done
  # Wait (bounded) until a node reports a leader whose address is known.
  for _ in $(seq 1 100); do
    if "$BIN" status --endpoints "$ENDPOINTS" --timeout 1s 2>/dev/null | grep -q "role=leader"; then
      "$BIN" status --endpoints "$ENDPOINTS" --timeout 1s
      echo
      echo "cluster up; endpoints: $ENDPOINTS"
      echo "try: $BIN put /config/db/host a   (any endpoint; followers redirect to the leader)"
      return 0
    fi
    for i in 1 2 3; do
      running "$DIR/n$i.pid" || { echo "n$i exited; see $DIR/n$i.log:" >&2; tail -5 "$DIR/n$i.log" >&2; down; exit 1; }
    done
    sleep 0.1
  done
  echo "no leader after 10 s; logs are in $DIR/" >&2
  exit 1
}

down() {
  for i in 1 2 3; do
    pidf="$DIR/n$i.pid"
    [ -f "$pidf" ] || continue
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && { echo "n$i did not stop in 10 s; killing"; kill -KILL "$pid"; }
      echo "stopped n$i (pid $pid)"
    fi
    rm -f "$pidf"
  done
}

status() {
  [ -x "$BIN" ] || { echo "not built; run: $0 up" >&2; exit 1; }
  "$BIN" status --endpoints "$ENDPOINTS" --timeout 2s
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
