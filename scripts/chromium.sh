#!/usr/bin/env bash
# Headless Chromium for the browser test: installs Debian's `chromium` when it is missing (as root,
# as scripts/rabbitmq.sh installs rabbitmq-server) and prints the path of the executable.
set -euo pipefail

BIN="${MESH_CHROMIUM:-/usr/bin/chromium}"
log() { echo "chromium.sh: $*" >&2; }
# shellcheck source=scripts/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

if [[ ! -x "$BIN" ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    log "chromium is not installed and this is not root: apt-get install chromium"
    exit 1
  fi
  log "test/browser.test.ts needs a headless Chromium: installing Debian's chromium with apt-get," \
    "about 400 MB of disk, once (MESH_CHROMIUM=/path/to/chromium uses one you have)"
  if ! apt_install chromium; then
    log "could not install chromium (the reason is above)"
    exit 1
  fi
fi
echo "$BIN"
