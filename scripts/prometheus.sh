#!/usr/bin/env bash
# A private Prometheus for tests and local runs, without Docker.
#
#   scripts/prometheus.sh start|stop|restart|status|url|port
#   scripts/prometheus.sh targets [host:port]...
#
# `start` installs Debian's prometheus when missing (as root, without letting the package's own
# service run: it is kept from starting during the install, then stopped and disabled), then starts a
# Prometheus of our own on the checkout's port, with its config, data, log and pid file under the
# project's `.prometheus/<port>/`. It is idempotent and prints the URL on stdout once `/-/ready`
# answers. `restart` keeps the data.
#
# What it scrapes, every second: the targets in `.prometheus/<port>/targets/*.json` (Prometheus's
# file_sd format: `[{"targets": ["127.0.0.1:8080"], "labels": {...}}]`), re-read as they change.
# `targets host:port...` writes `targets/default.json` (no argument: none); a caller that shares the
# instance with others writes a file of its own there, and removes it when done.
#
# Two checkouts on one machine never touch each other's instances: each checkout has a port of its
# own by default (`scripts/rabbitmq.sh port 9`: the checkout's base port + 9, which no RabbitMQ node
# of any checkout uses), and an instance is ours only when the process of our pid file runs with our
# data folder on its command line. A port held by anything else is refused with a clear message, and
# `stop` kills only our process.
#
# Environment:
#   MESH_PROMETHEUS_PORT      HTTP port (default: the checkout's base port + 9)
#   MESH_PROMETHEUS_DIR       base folder (default <project>/.prometheus)
#   MESH_PROMETHEUS_TIMEOUT   seconds to wait for it to be ready (default 60)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PORT="${MESH_PROMETHEUS_PORT:-}"
if [[ -z "$PORT" ]]; then
  PORT="$(bash "$ROOT/scripts/rabbitmq.sh" port 9)"
fi
BASE="${MESH_PROMETHEUS_DIR:-$ROOT/.prometheus}/$PORT"
TIMEOUT="${MESH_PROMETHEUS_TIMEOUT:-60}"
URL="http://127.0.0.1:$PORT"
BIN=/usr/bin/prometheus
PID_FILE="$BASE/prometheus.pid"
DATA="$BASE/data"

log() { echo "prometheus.sh: $*" >&2; }
# shellcheck source=scripts/apt.sh
source "$ROOT/scripts/apt.sh"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# ready: our Prometheus answers 200 on /-/ready
ready() {
  if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 2 "$URL/-/ready" 2>/dev/null
  else
    local status
    status="$(
      exec 2>/dev/null
      exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
      printf 'GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
      timeout 2 head -n 1 <&3
    )" || return 1
    [[ "$status" == *" 200 "* ]]
  fi
}

# the pid of our Prometheus: the pid file's process, if it runs with our data folder; else nothing
our_pid() {
  [[ -f "$PID_FILE" ]] || return 0
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  if tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "--storage.tsdb.path=$DATA"; then
    echo "$pid"
  fi
}

install_server() {
  if [[ -x "$BIN" ]]; then
    return 0
  fi
  if [[ "$(id -u)" != 0 ]]; then
    log "prometheus is not installed and this is not root: apt-get install prometheus"
    exit 1
  fi
  log "installing prometheus with apt-get"
  local started
  started=$(date +%s)
  # the package's own Prometheus (on the default port) neither starts now nor at boot
  if ! apt_install_service prometheus; then
    log "could not install prometheus (the reason is above)"
    exit 1
  fi
  log "prometheus installed in $(($(date +%s) - started))s"
}

write_config() {
  mkdir -p "$DATA" "$BASE/targets"
  cat >"$BASE/prometheus.yml" <<EOF
# written by scripts/prometheus.sh on each start
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: mesh
    file_sd_configs:
      - files: ["$BASE/targets/*.json"]
        refresh_interval: 1s
EOF
  if [[ ! -f "$BASE/targets/default.json" ]]; then
    echo '[]' >"$BASE/targets/default.json"
  fi
}

# targets host:port...: what default.json lists, written whole (Prometheus never reads half a file)
do_targets() {
  mkdir -p "$BASE/targets"
  local list="" target
  for target in "$@"; do
    if [[ ! "$target" =~ ^[A-Za-z0-9._:-]+:[0-9]+$ && ! "$target" =~ ^\[[0-9A-Fa-f:]+\]:[0-9]+$ ]]; then
      log "not a host:port: $target"
      exit 2
    fi
    list="${list:+$list, }\"$target\""
  done
  local file="$BASE/targets/default.json"
  if [[ -z "$list" ]]; then
    echo '[]' >"$file.tmp"
  else
    printf '[{"targets": [%s]}]\n' "$list" >"$file.tmp"
  fi
  mv -f "$file.tmp" "$file"
}

do_start() {
  mkdir -p "$BASE"
  # one start at a time in this folder (parallel test runs of this checkout); Prometheus itself does not
  # inherit the lock
  if command -v flock >/dev/null; then
    exec 9>"$BASE/lock"
    flock 9
  fi
  install_server
  local pid
  pid="$(our_pid)"
  if [[ -n "$pid" ]]; then
    if ready; then
      log "already running (pid $pid)"
      echo "$URL"
      return 0
    fi
    # ours but not answering: wait below like a fresh start
  else
    if port_open; then
      log "port $PORT is taken by something that is not this checkout's Prometheus (another checkout's, or another program): this checkout never touches it; set MESH_PROMETHEUS_PORT to a free port"
      exit 1
    fi
    rm -f "$PID_FILE"
    write_config
    log "starting Prometheus on 127.0.0.1:$PORT (data $BASE)"
    setsid "$BIN" \
      --config.file="$BASE/prometheus.yml" \
      --storage.tsdb.path="$DATA" \
      --storage.tsdb.retention.time=2d \
      --web.listen-address="127.0.0.1:$PORT" \
      --log.level=info \
      </dev/null >>"$BASE/prometheus.log" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
  fi
  local started
  started=$(date +%s)
  until ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "prometheus exited; last lines of $BASE/prometheus.log:"
      tail -n 20 "$BASE/prometheus.log" >&2 || true
      rm -f "$PID_FILE"
      exit 1
    fi
    if (($(date +%s) - started > TIMEOUT)); then
      log "not ready on port $PORT within ${TIMEOUT}s; see $BASE/prometheus.log"
      tail -n 20 "$BASE/prometheus.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  log "ready in $(($(date +%s) - started))s (pid $pid)"
  echo "$URL"
}

do_stop() {
  local pid
  pid="$(our_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$PID_FILE"
    if port_open; then
      log "not running (port $PORT is held by something else, left alone)"
    else
      log "not running"
    fi
    return 0
  fi
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still running after 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  log "stopped"
}

do_status() {
  local pid
  pid="$(our_pid)"
  if [[ -n "$pid" ]] && ready; then
    echo "running $URL (pid $pid)"
  else
    echo "stopped"
    return 3
  fi
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  restart)
    do_stop
    do_start
    ;;
  status) do_status ;;
  url) echo "$URL" ;;
  port) echo "$PORT" ;;
  targets)
    shift
    do_targets "$@"
    ;;
  *)
    echo "usage: $0 start|stop|restart|status|url|port|targets [host:port]..." >&2
    exit 2
    ;;
esac
