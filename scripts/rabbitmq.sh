#!/usr/bin/env bash
# A private RabbitMQ node for tests and local runs, without Docker.
#
#   scripts/rabbitmq.sh start|stop|restart|status|url|port [offset]|ctl <rabbitmqctl arguments>
#
# `start` installs Debian's rabbitmq-server when missing (as root, without letting the package's own
# service run), then starts a node of our own: its own name, AMQP port, Erlang distribution port,
# cookie, data, logs, config and plugins, all under the project's `.rabbitmq/<port>/`. It is
# idempotent and prints the AMQP URL on stdout when the node answers. `restart` keeps the data.
#
# Two checkouts on one machine never touch each other's nodes: the node's name and cookie carry an id
# of the checkout (a hash of its path), so a node another checkout started is never taken for ours (a
# port it holds is refused with a clear message), and each checkout has ports of its own by default:
# `port <offset>` prints the checkout's base port plus the offset (0: the tests' node, 1: the
# benchmark's, 2-5: the fault tests' nodes). `ctl` runs rabbitmqctl against the node (users and
# permissions for the security tests: `ctl add_user name password`, `ctl set_permissions ...`).
#
# Environment:
#   MESH_RABBITMQ_PORT      AMQP port (default: the checkout's base port, between 5600 and 5990); the
#                           distribution port is this + 20000
#   MESH_RABBITMQ_DIR       base folder (default <project>/.rabbitmq)
#   MESH_RABBITMQ_TIMEOUT   seconds to wait for the node to start (default 120)
#   MESH_RABBITMQ_FRESH     1: a `start` that boots the node wipes its data first (a node already
#                           running is left as it is); the test setup and the benchmark set it, so
#                           queues left by earlier runs never pile up
#   RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS  Erlang flags of the node (default: schedulers that sleep
#                           rather than spin when idle, as RabbitMQ advises where CPUs are shared)
#   MESH_RABBITMQ_TLS_PORT  also listen for AMQP over TLS (amqps) on this port; needs the three below
#   MESH_RABBITMQ_TLS_CA    the CA certificate (PEM) client certificates are checked against
#   MESH_RABBITMQ_TLS_CERT  the node's certificate (PEM)
#   MESH_RABBITMQ_TLS_KEY   the node's private key (PEM, not encrypted)
#   MESH_RABBITMQ_TLS_VERIFY  1: clients must present a certificate the CA signed (mutual TLS);
#                           default: a client certificate is not asked for
# A `start` that finds the node running with other settings than these ask for (another TLS
# listener, other certificates) restarts it.
#
# A private three-node cluster, for what happens past one node (test/cluster*.test.ts, the scaling
# benchmark):
#
#   scripts/rabbitmq.sh cluster start|stop|status|urls|ports|kill <n>|restart <n>|start <n>|ctl <n> ...
#
# `cluster start` starts the nodes that are not running, joins them into one cluster and prints the
# three AMQP URLs, comma-separated (what AMQP_URL takes); idempotent like `start`. `kill <n>` ends
# node n (1..3) with SIGKILL, as a crash would; `restart <n>` stops it cleanly (when it runs) and
# starts it again with its data, back in the cluster; `start <n>` starts one node that is down.
# Ports: a range of the checkout's own, apart from the single nodes' (the checkout's base port plus
# 0..9, bases 10 apart in 5600..5990): node n listens on base + 1000 + n - 1, in 6600..6992, and its
# distribution port is that + 20000 (26600..26992, apart from the single nodes' 25600..25990).
# `MESH_RABBITMQ_CLUSTER_PORT` moves the first node's port (the others follow). Names
# `mesh-<checkout id>-c<n>@localhost`, one cookie for the three (`effect-mesh-<checkout id>-cluster`),
# data under `.rabbitmq/cluster-<first port>/<n>/`. MESH_RABBITMQ_FRESH=1 wipes the data of a
# `cluster start` that finds no node running.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
CHECKOUT_ID="$(printf '%s' "$ROOT" | md5sum | cut -c1-6)"
BASE_PORT=$((5600 + (16#$CHECKOUT_ID % 40) * 10))
PORT="${MESH_RABBITMQ_PORT:-$BASE_PORT}"
BASE="${MESH_RABBITMQ_DIR:-$ROOT/.rabbitmq}/$PORT"
TIMEOUT="${MESH_RABBITMQ_TIMEOUT:-120}"
NODE="mesh-$CHECKOUT_ID-$PORT@localhost"
DIST_PORT=$((PORT + 20000))
URL="amqp://guest:guest@127.0.0.1:$PORT"
COOKIE="effect-mesh-$CHECKOUT_ID-$PORT"
SBIN=/usr/lib/rabbitmq/bin
CLUSTER_PORT="${MESH_RABBITMQ_CLUSTER_PORT:-$((BASE_PORT + 1000))}"
CLUSTER_SIZE=3

log() { echo "rabbitmq.sh: $*" >&2; }
# shellcheck source=scripts/apt.sh
source "$ROOT/scripts/apt.sh"

# Everything the node and the CLI tools read. The CLI tools find the node by name and authenticate
# with the cookie in $HOME, so they must run with the same environment as the node.
setup_env() {
  mkdir -p "$BASE/home" "$BASE/mnesia" "$BASE/log"
  # A cookie of this checkout and port (of its cluster, for a cluster's node): the CLI tools of
  # another checkout cannot talk to this node, nor ours to theirs.
  local cookie="$BASE/home/.erlang.cookie"
  if [[ ! -f "$cookie" || "$(cat "$cookie")" != "$COOKIE" ]]; then
    rm -f "$cookie"
    printf '%s' "$COOKIE" >"$cookie"
  fi
  chmod 400 "$cookie"
  cat >"$BASE/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$PORT
loopback_users.guest = true
log.console = false
log.file.level = info
disk_free_limit.absolute = 50MB
# no message larger than 16 MiB (RabbitMQ 4's default; 3.x allows 128 MB): a service refuses a request
# over its own maxMessageSize (1 MiB by default) before decoding it, and this bounds what reaches it
max_message_size = 16777216
EOF
  if [[ -n "${MESH_RABBITMQ_TLS_PORT:-}" ]]; then
    local name file
    for name in CA CERT KEY; do
      file="MESH_RABBITMQ_TLS_$name"
      if [[ -z "${!file:-}" || ! -r "${!file}" ]]; then
        log "MESH_RABBITMQ_TLS_PORT is set but $file is not a readable file: '${!file:-}'"
        exit 2
      fi
    done
    local verify=verify_none fail_if_no_peer_cert=false
    if [[ "${MESH_RABBITMQ_TLS_VERIFY:-}" == 1 ]]; then
      verify=verify_peer
      fail_if_no_peer_cert=true
    fi
    cat >>"$BASE/rabbitmq.conf" <<EOF
listeners.ssl.1 = 127.0.0.1:$MESH_RABBITMQ_TLS_PORT
ssl_options.cacertfile = $MESH_RABBITMQ_TLS_CA
ssl_options.certfile = $MESH_RABBITMQ_TLS_CERT
ssl_options.keyfile = $MESH_RABBITMQ_TLS_KEY
ssl_options.verify = $verify
ssl_options.fail_if_no_peer_cert = $fail_if_no_peer_cert
EOF
  fi
  echo '[].' >"$BASE/enabled_plugins"
  : >"$BASE/rabbitmq-env.conf"

  export HOME="$BASE/home"
  export RABBITMQ_NODENAME="$NODE"
  export RABBITMQ_USE_LONGNAME=false
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$PORT"
  export RABBITMQ_DIST_PORT="$DIST_PORT"
  export RABBITMQ_MNESIA_BASE="$BASE/mnesia"
  export RABBITMQ_LOG_BASE="$BASE/log"
  export ERL_CRASH_DUMP="$BASE/log/erl_crash.dump"
  export RABBITMQ_CONFIG_FILE="$BASE/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$BASE/advanced.config"
  export RABBITMQ_CONF_ENV_FILE="$BASE/rabbitmq-env.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/enabled_plugins"
  export RABBITMQ_PID_FILE="$BASE/rabbitmq.pid"
  # Erlang's schedulers spin for a while before they sleep: on a small shared machine that spinning
  # takes the cores the node's own clients need (on 2 cores it halved what a benchmark measured).
  # RabbitMQ's guidance for shared CPUs: no busy waiting.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-+sbwt none +sbwtdcpu none +sbwtdio none}"
  unset RABBITMQ_ALLOW_INPUT || true
  unset RABBITMQ_ERLANG_COOKIE RABBITMQ_SERVER_START_ARGS || true
}

install_server() {
  if [[ -x "$SBIN/rabbitmq-server" ]]; then
    return 0
  fi
  if [[ "$(id -u)" != 0 ]]; then
    log "rabbitmq-server is not installed and this is not root: apt-get install rabbitmq-server"
    exit 1
  fi
  log "installing rabbitmq-server with apt-get"
  # the package's own node (on the default port) neither starts now nor at boot
  if ! apt_install_service rabbitmq-server; then
    log "could not install rabbitmq-server (the reason is above); set AMQP_URL to test against a RabbitMQ of your own"
    exit 1
  fi
}

ctl() { "$SBIN/rabbitmqctl" -q -n "$NODE" "$@"; }

running() {
  [[ -x "$SBIN/rabbitmqctl" ]] || return 1
  ctl status >/dev/null 2>&1 || return 1
}

server_pid() {
  if [[ -f "$RABBITMQ_PID_FILE" ]]; then
    local pid
    pid="$(cat "$RABBITMQ_PID_FILE" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      echo "$pid"
    fi
  fi
}

do_start() {
  install_server
  setup_env
  if running; then
    # it booted with other settings (another TLS listener, other certificates) than asked for now
    if [[ -f "$BASE/rabbitmq.conf.booted" ]] && ! cmp -s "$BASE/rabbitmq.conf" "$BASE/rabbitmq.conf.booted"; then
      log "node $NODE runs with other settings than asked for: restarting it"
      do_stop
      setup_env
    else
      log "node $NODE already running"
      echo "$URL"
      return 0
    fi
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    log "port $PORT is taken by something that is not $NODE (another checkout's node, or another program): this checkout never touches it; set MESH_RABBITMQ_PORT to a free port"
    exit 1
  fi
  if [[ "${MESH_RABBITMQ_FRESH:-}" == 1 && -d "$BASE/mnesia" ]]; then
    log "wiping the data of earlier runs ($BASE/mnesia)"
    rm -rf "$BASE/mnesia"
  fi
  log "starting $NODE on 127.0.0.1:$PORT${MESH_RABBITMQ_TLS_PORT:+, TLS on $MESH_RABBITMQ_TLS_PORT} (dist $DIST_PORT, data $BASE)"
  cp "$BASE/rabbitmq.conf" "$BASE/rabbitmq.conf.booted"
  local started
  started=$(date +%s)
  setsid "$SBIN/rabbitmq-server" </dev/null >"$BASE/log/console.log" 2>&1 &
  local launcher=$!
  # The AMQP listener opens at the end of the boot: poll it (cheap), then let the CLI confirm.
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    if ! kill -0 "$launcher" 2>/dev/null; then
      log "rabbitmq-server exited; last lines of $BASE/log/console.log:"
      tail -n 30 "$BASE/log/console.log" >&2 || true
      exit 1
    fi
    if (($(date +%s) - started > TIMEOUT)); then
      log "node did not open port $PORT within ${TIMEOUT}s; see $BASE/log"
      tail -n 30 "$BASE/log/console.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  if ! ctl await_startup --timeout "$TIMEOUT" >/dev/null; then
    log "node opened port $PORT but did not finish booting; see $BASE/log"
    exit 1
  fi
  log "node $NODE up in $(($(date +%s) - started))s"
  echo "$URL"
}

do_stop() {
  setup_env
  if ! running; then
    local pid
    pid="$(server_pid)"
    if [[ -n "$pid" ]]; then
      log "node does not answer; killing pid $pid"
      kill "$pid" 2>/dev/null || true
    fi
    log "node $NODE not running"
    return 0
  fi
  log "stopping $NODE"
  # With the pid file, `stop` waits until the Erlang VM has exited, so the port is free afterwards.
  if [[ -n "$(server_pid)" ]]; then
    ctl stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true
  else
    ctl stop >/dev/null 2>&1 || true
  fi
  local i
  for i in $(seq 1 100); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  log "stopped"
}

do_status() {
  setup_env
  if running; then
    echo "running $NODE $URL"
  else
    echo "stopped $NODE"
    return 3
  fi
}

# ---- the cluster ----

# makes node n of the cluster the one the functions above work on
cluster_node() {
  local n="$1"
  if [[ ! "$n" =~ ^[1-9][0-9]*$ ]] || ((n > CLUSTER_SIZE)); then
    log "no cluster node '$n': nodes are 1..$CLUSTER_SIZE"
    exit 2
  fi
  PORT=$((CLUSTER_PORT + n - 1))
  DIST_PORT=$((PORT + 20000))
  BASE="${MESH_RABBITMQ_DIR:-$ROOT/.rabbitmq}/cluster-$CLUSTER_PORT/$n"
  NODE="mesh-$CHECKOUT_ID-c$n@localhost"
  URL="amqp://guest:guest@127.0.0.1:$PORT"
  COOKIE="effect-mesh-$CHECKOUT_ID-cluster"
  unset MESH_RABBITMQ_TLS_PORT || true
}

cluster_urls() {
  local n urls=()
  for n in $(seq 1 "$CLUSTER_SIZE"); do
    urls+=("amqp://guest:guest@127.0.0.1:$((CLUSTER_PORT + n - 1))")
  done
  (IFS=,; echo "${urls[*]}")
}

# the nodes node n sees running in its cluster, one a line
cluster_running_nodes() {
  (cluster_node "$1"; setup_env; ctl eval 'rabbit_nodes:all_running().' 2>/dev/null | tr -d '[]\n ' | tr ',' '\n' | sed "s/'//g")
}

cluster_start_node() {
  (cluster_node "$1"; MESH_RABBITMQ_FRESH=0 do_start >/dev/null)
}

# joins node n to the cluster of the first running node it is not clustered with
cluster_join() {
  local n="$1" seed
  for seed in $(seq 1 "$CLUSTER_SIZE"); do
    [[ "$seed" == "$n" ]] && continue
    (cluster_node "$seed"; setup_env; running) || continue
    local seed_node="mesh-$CHECKOUT_ID-c$seed@localhost"
    if cluster_running_nodes "$n" | grep -qx "$seed_node"; then
      return 0
    fi
    log "joining mesh-$CHECKOUT_ID-c$n@localhost to $seed_node"
    (
      cluster_node "$n"
      setup_env
      # the CLI's own chatter (feature flags, tracking tables of a node that is joining) to the log
      {
        ctl stop_app && ctl reset && ctl join_cluster "$seed_node" && ctl start_app &&
          ctl await_startup --timeout "$TIMEOUT"
      } >>"$BASE/log/join.log" 2>&1 || {
        log "node $NODE could not join $seed_node; see $BASE/log/join.log"
        exit 1
      }
    )
    return 0
  done
}

cluster_start() {
  install_server
  local n any=0
  for n in $(seq 1 "$CLUSTER_SIZE"); do
    if (cluster_node "$n"; setup_env; running); then any=1; fi
  done
  if [[ "$any" == 0 && "${MESH_RABBITMQ_FRESH:-}" == 1 ]]; then
    log "wiping the data of earlier cluster runs"
    rm -rf "${MESH_RABBITMQ_DIR:-$ROOT/.rabbitmq}/cluster-$CLUSTER_PORT"
  fi
  # one at a time: a node that boots with others of its cluster down waits for them (mnesia), and
  # the first to boot must be one that stopped last; starting all three in the background lets
  # each find the others
  local pids=()
  for n in $(seq 1 "$CLUSTER_SIZE"); do
    cluster_start_node "$n" &
    pids+=($!)
  done
  local failed=0 pid
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if [[ "$failed" == 1 ]]; then
    log "a cluster node did not start (see above)"
    exit 1
  fi
  for n in $(seq 2 "$CLUSTER_SIZE"); do cluster_join "$n"; done
  local expected
  expected=$(seq 1 "$CLUSTER_SIZE" | sed "s/^/mesh-$CHECKOUT_ID-c/; s/\$/@localhost/" | sort)
  if [[ "$(cluster_running_nodes 1 | sort)" != "$expected" ]]; then
    log "the nodes did not form one cluster: node 1 sees $(cluster_running_nodes 1 | tr '\n' ' ')"
    exit 1
  fi
  log "cluster of $CLUSTER_SIZE nodes up"
  cluster_urls
}

cluster_stop() {
  local n
  for n in $(seq "$CLUSTER_SIZE" -1 1); do
    (cluster_node "$n"; do_stop)
  done
}

cluster_status() {
  local n down=0
  for n in $(seq 1 "$CLUSTER_SIZE"); do
    if (cluster_node "$n"; setup_env; running); then
      echo "node $n running mesh-$CHECKOUT_ID-c$n@localhost amqp://guest:guest@127.0.0.1:$((CLUSTER_PORT + n - 1)) cluster: $(cluster_running_nodes "$n" | tr '\n' ' ')"
    else
      echo "node $n stopped mesh-$CHECKOUT_ID-c$n@localhost"
      down=1
    fi
  done
  [[ "$down" == 0 ]] || return 3
}

cluster_kill() {
  (
    cluster_node "$1"
    setup_env
    local pid
    pid="$(server_pid)"
    if [[ -z "$pid" ]]; then
      log "node $NODE is not running"
      exit 0
    fi
    log "SIGKILL to $NODE (pid $pid)"
    kill -KILL "$pid"
    local i
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  )
}

cluster_restart() {
  (cluster_node "$1"; do_stop)
  cluster_start_node "$1"
  cluster_join "$1"
  log "node $1 back"
}

cluster() {
  local what="${1:-}"
  shift || true
  case "$what" in
    start)
      if [[ -n "${1:-}" ]]; then
        cluster_node "$1"
        cluster_start_node "$1"
        cluster_join "$1"
      else
        cluster_start
      fi
      ;;
    stop) cluster_stop ;;
    status) cluster_status ;;
    urls) cluster_urls ;;
    ports) seq "$CLUSTER_PORT" $((CLUSTER_PORT + CLUSTER_SIZE - 1)) ;;
    kill) cluster_kill "${1:-}" ;;
    restart) cluster_restart "${1:-}" ;;
    ctl)
      cluster_node "${1:-}"
      shift
      setup_env
      ctl "$@"
      ;;
    *)
      echo "usage: $0 cluster start [n]|stop|status|urls|ports|kill <n>|restart <n>|ctl <n> <rabbitmqctl arguments>" >&2
      exit 2
      ;;
  esac
}

case "${1:-}" in
  cluster)
    shift
    cluster "$@"
    ;;
  start) do_start ;;
  stop) do_stop ;;
  restart)
    do_stop
    do_start
    ;;
  status) do_status ;;
  url) echo "$URL" ;;
  port) echo $((BASE_PORT + ${2:-0})) ;;
  ctl)
    shift
    setup_env
    ctl "$@"
    ;;
  *)
    echo "usage: $0 start|stop|restart|status|url|port [offset]|ctl <rabbitmqctl arguments>|cluster ..." >&2
    exit 2
    ;;
esac
