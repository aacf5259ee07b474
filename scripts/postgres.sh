#!/usr/bin/env bash
# A private PostgreSQL for the SQL tests and examples/sql, without Docker.
#
#   scripts/postgres.sh start|stop|status|url|port|release
#
# `start` installs Debian's `postgresql` when missing (as root, waiting for apt's lock like
# scripts/rabbitmq.sh, without letting the package's own cluster run), then starts a server of our
# own: its own port, data folder, log and pid file, all under the project's ignored `.postgres/<port>/`.
# It is idempotent (a lock serialises parallel starts and stops) and prints the connection URL on
# stdout when the server answers. `stop` stops only that server.
#
# `release` is the SQL tests' (test/fixtures/postgres.ts): each test file holds a lease file in
# `.postgres/<port>/leases/` (named `<pid>-<name>`) while it runs; `release` stops the server when no
# live lease is left and a test booted it (`started-by-tests`), under the same lock as `start`, so a
# test file starting meanwhile never finds it stopped under it.
#
# The server listens on 127.0.0.1 only, with no Unix socket, and trusts every local connection as the
# superuser `postgres`: it is a throwaway server for development and tests, never one to deploy. It
# runs with fsync off (a crash of the machine may lose it; a crash of a client never does).
# PostgreSQL refuses to run as root: under root it runs as the `postgres` account the package creates.
#
# Each checkout has a port of its own (`port` prints it): 15400 + 10 * (a hash of the checkout's path
# modulo 40), so between 15400 and 15790, clear of the RabbitMQ ports of scripts/rabbitmq.sh (5600-5999
# and their distribution ports 25600-25999). A port held by anything else is refused with a clear
# message.
#
# Environment:
#   MESH_POSTGRES_PORT      the port (default: the checkout's port above)
#   MESH_POSTGRES_DIR       base folder (default <project>/.postgres)
#   MESH_POSTGRES_TIMEOUT   seconds to wait for the server to start (default 60)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
CHECKOUT_ID="$(printf '%s' "$ROOT" | md5sum | cut -c1-6)"
BASE_PORT=$((15400 + (16#$CHECKOUT_ID % 40) * 10))
PORT="${MESH_POSTGRES_PORT:-$BASE_PORT}"
BASE="${MESH_POSTGRES_DIR:-$ROOT/.postgres}/$PORT"
DATA="$BASE/data"
LOG="$BASE/postgres.log"
TIMEOUT="${MESH_POSTGRES_TIMEOUT:-60}"
URL="postgres://postgres@127.0.0.1:$PORT/postgres"

log() { echo "postgres.sh: $*" >&2; }
# shellcheck source=scripts/apt.sh
source "$ROOT/scripts/apt.sh"

# the newest installed server's programs (initdb, pg_ctl), or nothing
bindir() {
  local dir found=""
  for dir in /usr/lib/postgresql/*/bin; do
    if [[ -x "$dir/pg_ctl" && -x "$dir/initdb" ]]; then
      found="$(printf '%s\n%s\n' "$found" "$dir" | sort -V | tail -n 1)"
    fi
  done
  echo "$found"
}

install_server() {
  [[ -n "$(bindir)" ]] && return 0
  if [[ "$(id -u)" != 0 ]]; then
    log "PostgreSQL is not installed and this is not root: apt-get install postgresql"
    exit 1
  fi
  log "installing postgresql with apt-get"
  # the package's own cluster (on the default port) neither starts now nor at boot
  if ! apt_install_service postgresql || [[ -z "$(bindir)" ]]; then
    log "could not install postgresql (the reason is above); set DATABASE_URL to test against a PostgreSQL of your own"
    exit 1
  fi
}

# runs a server program as the account that owns the data (PostgreSQL refuses root)
as_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

prepare() {
  mkdir -p "$BASE"
  if [[ "$(id -u)" == 0 ]]; then
    chown postgres:postgres "$BASE"
    # the account must reach the folder: every parent must be searchable by others
    local dir="$BASE"
    while [[ "$dir" != / ]]; do
      dir="$(dirname "$dir")"
      if [[ ! -x "$dir" ]] || ! runuser -u postgres -- test -x "$dir"; then
        log "the postgres account cannot enter $dir; set MESH_POSTGRES_DIR to a folder it can reach"
        exit 1
      fi
    done
  fi
  if [[ ! -f "$DATA/PG_VERSION" ]]; then
    log "initialising $DATA"
    rm -rf "$DATA"
    as_owner "$(bindir)/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$BASE/initdb.log" 2>&1 || {
      log "initdb failed; last lines of $BASE/initdb.log:"
      tail -n 20 "$BASE/initdb.log" >&2
      exit 1
    }
  fi
}

# the lock's descriptor is closed for it: a server that inherited it would hold the lock forever
pg_ctl() { as_owner "$(bindir)/pg_ctl" -D "$DATA" "$@" 9>&-; }

running() {
  [[ -n "$(bindir)" && -f "$DATA/PG_VERSION" ]] || return 1
  pg_ctl status >/dev/null 2>&1
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

do_start() {
  install_server
  prepare
  if running; then
    log "server on 127.0.0.1:$PORT already running"
    echo "$URL"
    return 0
  fi
  if port_taken; then
    log "port $PORT is taken by something that is not this checkout's server: set MESH_POSTGRES_PORT to a free port"
    exit 1
  fi
  log "starting PostgreSQL on 127.0.0.1:$PORT (data $DATA)"
  local started
  started=$(date +%s)
  if ! pg_ctl start -w -t "$TIMEOUT" -l "$LOG" -o \
    "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories='' -c fsync=off -c full_page_writes=off -c shared_buffers=32MB -c max_connections=100" \
    >/dev/null; then
    log "the server did not start; last lines of $LOG:"
    tail -n 20 "$LOG" >&2 || true
    exit 1
  fi
  log "up in $(($(date +%s) - started))s"
  echo "$URL"
}

do_stop() {
  if ! running; then
    log "server on 127.0.0.1:$PORT not running"
    return 0
  fi
  log "stopping the server on 127.0.0.1:$PORT"
  pg_ctl stop -m fast -w >/dev/null
  log "stopped"
}

do_status() {
  if running; then
    echo "running $URL"
  else
    echo "stopped 127.0.0.1:$PORT"
    return 3
  fi
}

do_release() {
  local entry pid
  for entry in "$BASE/leases"/*; do
    [[ -e "$entry" ]] || continue
    pid="$(basename "$entry")"
    pid="${pid%%-*}"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
      return 0
    fi
    rm -f "$entry"
  done
  [[ -f "$BASE/started-by-tests" ]] || return 0
  rm -f "$BASE/started-by-tests"
  do_stop
}

# one start or stop at a time per server (parallel test files start it together)
locked() {
  mkdir -p "$BASE"
  exec 9>"$BASE/.lock"
  flock 9
  "$@"
}

case "${1:-}" in
  start) locked do_start ;;
  stop) locked do_stop ;;
  release) locked do_release ;;
  status) do_status ;;
  url) echo "$URL" ;;
  port) echo "$PORT" ;;
  *)
    echo "usage: $0 start|stop|status|url|port|release" >&2
    exit 2
    ;;
esac
