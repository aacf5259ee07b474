#!/usr/bin/env bash
# Headless Chromium for the browser test: installs Debian's `chromium` when it is missing (as root,
# as scripts/rabbitmq.sh installs rabbitmq-server) and prints the path of the executable.
set -euo pipefail

BIN="${MESH_CHROMIUM:-/usr/bin/chromium}"
log() { echo "chromium.sh: $*" >&2; }

if [[ ! -x "$BIN" ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    log "chromium is not installed and this is not root: apt-get install chromium"
    exit 1
  fi
  log "installing chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends chromium >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends chromium >&2
  fi
fi
echo "$BIN"
