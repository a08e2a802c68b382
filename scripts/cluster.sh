#!/usr/bin/env bash
# Local three-node raftwatch cluster on 127.0.0.1.
#   scripts/cluster.sh up      build bin/raftwatch, start n1..n3, wait for a leader and print it
#   scripts/cluster.sh up --tls  the same with mutual TLS on the client API and raft: a throwaway
#                              CA, node certificates (n1..n3) and client certificates ("root",
#                              "alice", "bob") under .cluster/tls/; the cluster directory
#                              remembers it, for status, env and later ups
#   scripts/cluster.sh up --tls --auth  the same with roles enforced (serve --auth): "root" is the
#                              admin identity; certificates for clients "alice" and "bob" have no
#                              role until root grants one (raftwatch role/user)
#   scripts/cluster.sh down    stop exactly the processes "up" started (by PID)
#   scripts/cluster.sh status  show each node's role and indexes
#   scripts/cluster.sh env     print the RAFTWATCH_* exports the CLI needs (eval "$(scripts/cluster.sh env)")
# Client ports 7101-7103, raft ports 7201-7203, data and logs under .cluster/.
#
# Environment overrides (tests use them to run a cluster beside the dev one):
#   RAFTWATCH_CLUSTER_DIR      data, logs and pid files (default .cluster)
#   RAFTWATCH_CLIENT_PORT_BASE node i listens for clients on base+i (default 7100)
#   RAFTWATCH_RAFT_PORT_BASE   node i listens for raft on base+i (default 7200)
#   RAFTWATCH_BIN              run this binary instead of building bin/raftwatch
#   RAFTWATCH_UP_TIMEOUT       seconds "up" waits for a leader (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${RAFTWATCH_CLUSTER_DIR:-.cluster}
CLIENT_BASE=${RAFTWATCH_CLIENT_PORT_BASE:-7100}
RAFT_BASE=${RAFTWATCH_RAFT_PORT_BASE:-7200}
BIN=${RAFTWATCH_BIN:-bin/raftwatch}
UP_TIMEOUT=${RAFTWATCH_UP_TIMEOUT:-30}
NODES=(1 2 3)

client_addr() { echo "127.0.0.1:$((CLIENT_BASE + $1))"; }
raft_addr() { echo "127.0.0.1:$((RAFT_BASE + $1))"; }
ENDPOINTS=$(client_addr 1),$(client_addr 2),$(client_addr 3)
INITIAL=n1=$(raft_addr 1),n2=$(raft_addr 2),n3=$(raft_addr 3)
TLS_DIR=$DIR/tls
# TLS_MARK records that this cluster directory's nodes run with TLS.
TLS_MARK=$DIR/tls-enabled
# AUTH_MARK records that they enforce roles (serve --auth).
AUTH_MARK=$DIR/auth-enabled

tls_on() { [ -f "$TLS_MARK" ]; }
auth_on() { [ -f "$AUTH_MARK" ]; }

# cli_tls prints the client flags of the cluster's mode (none in plaintext).
cli_tls() {
  if tls_on; then
    echo "--cacert $TLS_DIR/ca.crt --cert $TLS_DIR/root.crt --key $TLS_DIR/root.key"
  fi
}

# serve_tls I prints node I's TLS flags (none in plaintext).
serve_tls() {
  if tls_on; then
    local t=$TLS_DIR
    echo "--cert-file $t/n$1.crt --key-file $t/n$1.key --trusted-ca-file $t/ca.crt --client-cert-auth" \
      "--peer-cert-file $t/n$1.crt --peer-key-file $t/n$1.key --peer-trusted-ca-file $t/ca.crt"
    if auth_on; then echo "--auth"; fi
  fi
}

env_exports() {
  echo "export RAFTWATCH_ENDPOINTS=$ENDPOINTS"
  if tls_on; then
    echo "export RAFTWATCH_CACERT=$TLS_DIR/ca.crt RAFTWATCH_CERT=$TLS_DIR/root.crt RAFTWATCH_KEY=$TLS_DIR/root.key"
  fi
}

# alive PID: the process exists and has not exited. A zombie has exited: it
# counts as gone (an init that does not reap leaves them behind).
alive() {
  local state
  if [ -r "/proc/$1/stat" ]; then
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
  else
    kill -0 "$1" 2>/dev/null
  fi
}

# ours I: node I's pid file names a live "raftwatch serve" on node I's data
# directory (not a process that reused the PID).
ours() {
  local pidf="$DIR/n$1.pid" pid
  [ -f "$pidf" ] || return 1
  pid=$(cat "$pidf")
  alive "$pid" || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "serve --id n$1 --data-dir $DIR/n$1 " || return 1
  fi
}

up() {
  local want_tls= want_auth= arg
  for arg in "$@"; do
    case "$arg" in
      --tls) want_tls=1 ;;
      --auth) want_auth=1 ;;
      *) echo "usage: $0 up [--tls [--auth]]" >&2; exit 2 ;;
    esac
  done
  if [ -n "$want_auth" ] && [ -z "$want_tls" ] && ! tls_on; then
    echo "--auth needs --tls: roles are bound to client certificates" >&2
    exit 2
  fi
  mkdir -p "$DIR"
  if [ -z "${RAFTWATCH_BIN:-}" ]; then
    mkdir -p bin
    go build -buildvcs=auto -o "$BIN" ./cmd/raftwatch # stamps the commit for "raftwatch version"
  fi
  if [ -n "$want_tls" ] && ! tls_on; then
    for i in "${NODES[@]}"; do
      if ours "$i"; then
        echo "n$i is running without TLS; run: $0 down, then $0 up --tls" >&2
        exit 1
      fi
    done
    if [ ! -f "$TLS_DIR/ca.key" ]; then
      "$BIN" certs create --dir "$TLS_DIR" --nodes n1,n2,n3 --clients root,alice,bob --hosts 127.0.0.1,localhost >/dev/null
    fi
    touch "$TLS_MARK"
  fi
  if [ -n "$want_auth" ] && ! auth_on; then
    for i in "${NODES[@]}"; do
      if ours "$i"; then
        echo "n$i is running without --auth; run: $0 down, then $0 up --tls --auth" >&2
        exit 1
      fi
    done
    touch "$AUTH_MARK"
  fi
  for i in "${NODES[@]}"; do
    if ours "$i"; then
      echo "n$i already running (pid $(cat "$DIR/n$i.pid"))"
      continue
    fi
    # shellcheck disable=SC2046 # serve_tls's flags are words; paths have no spaces
    "$BIN" serve --id "n$i" --data-dir "$DIR/n$i" \
      --raft-addr "$(raft_addr "$i")" --client-addr "$(client_addr "$i")" \
      --initial-cluster "$INITIAL" $(serve_tls "$i") </dev/null >>"$DIR/n$i.log" 2>&1 &
    echo $! >"$DIR/n$i.pid"
  done
  # Wait (bounded) until a node reports itself leader with its address known
  # and every node reports itself ready.
  # The status output is captured whole before it is searched: piping it into
  # "grep -q" under pipefail killed status with SIGPIPE once grep had its match.
  local deadline=$((SECONDS + UP_TIMEOUT)) out leader
  while [ "$SECONDS" -lt "$deadline" ]; do
    # shellcheck disable=SC2046
    out=$("$BIN" status --endpoints "$ENDPOINTS" --timeout 1s $(cli_tls) 2>/dev/null) || true
    leader=$(awk '/ role=leader / { for (i = 1; i <= NF; i++) if ($i ~ /^id=/) { sub(/^id=/, "", $i); print $i " (" $1 ")"; exit } }' <<<"$out")
    # ...and every node ready (knows the leader, has applied what it heard
    # committed), so the status printed below is the settled one.
    if [ -n "$leader" ] && [ "$(grep -c ' ready=true ' <<<"$out")" -eq "${#NODES[@]}" ]; then
      echo "$out"
      echo
      echo "cluster up; leader: $leader; endpoints: $ENDPOINTS"
      if tls_on; then
        echo "TLS on: clients need a certificate from $TLS_DIR/ca.crt; for the CLI:"
        env_exports | sed 's/^/  /'
        echo "  (or: eval \"\$($0 env)\"; or give $(cli_tls))"
      fi
      if auth_on; then
        echo "roles enforced: root (above) is admin; alice and bob have no role until granted, e.g. after the eval:"
        echo "  $BIN role add app && $BIN role grant app /app/ readwrite && $BIN user grant alice app"
        echo "  RAFTWATCH_CERT=$TLS_DIR/alice.crt RAFTWATCH_KEY=$TLS_DIR/alice.key $BIN put /app/x 1"
      fi
      echo "try: $BIN put /config/db/host a $(cli_tls)  (any endpoint; followers redirect to the leader)"
      return 0
    fi
    for i in "${NODES[@]}"; do
      ours "$i" || { echo "n$i exited; see $DIR/n$i.log:" >&2; tail -5 "$DIR/n$i.log" >&2; down; exit 1; }
    done
    sleep 0.2
  done
  echo "no leader after $UP_TIMEOUT s; logs are in $DIR/" >&2
  exit 1
}

down() {
  local i pid
  for i in "${NODES[@]}"; do
    [ -f "$DIR/n$i.pid" ] || continue
    pid=$(cat "$DIR/n$i.pid")
    if ours "$i"; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
      if alive "$pid"; then
        echo "n$i did not stop in 10 s; killing"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      echo "stopped n$i (pid $pid)"
    fi
    rm -f "$DIR/n$i.pid"
  done
}

status() {
  [ -x "$BIN" ] || { echo "not built; run: $0 up" >&2; exit 1; }
  # shellcheck disable=SC2046
  "$BIN" status --endpoints "$ENDPOINTS" --timeout 2s $(cli_tls)
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  env) env_exports ;;
  *) echo "usage: $0 up [--tls [--auth]]|down|status|env" >&2; exit 2 ;;
esac
