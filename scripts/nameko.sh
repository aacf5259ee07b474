#!/usr/bin/env bash
# A real Nameko 2.14.1 to run next to effect-mesh, for the Nameko tests and examples/nameko.
#
#   scripts/nameko.sh install|path|python
#
# `install` installs Debian's Python packages Nameko needs when they are missing (as root, waiting for
# apt's lock like scripts/rabbitmq.sh), extracts the Nameko source tarball kept beside the project
# (`../shared/peers/nameko/nameko-2.14.1.tar.gz`, or MESH_NAMEKO_TARBALL) into the project's own
# ignored `.nameko/`, and prints the folder to put on PYTHONPATH. It is idempotent. `path` prints that
# folder without installing; `python` prints the interpreter to run it with (Debian's system Python).
#
# Environment:
#   MESH_NAMEKO_TARBALL     the Nameko source tarball
#   MESH_NAMEKO_DIR         where it is extracted (default <project>/.nameko)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TARBALL="${MESH_NAMEKO_TARBALL:-$ROOT/../shared/peers/nameko/nameko-2.14.1.tar.gz}"
DIR="${MESH_NAMEKO_DIR:-$ROOT/.nameko}"
SRC="$DIR/nameko-2.14.1"
PYTHON=/usr/bin/python3
PACKAGES=(python3-eventlet python3-kombu python3-amqp python3-vine python3-werkzeug python3-yaml
  python3-requests python3-wrapt python3-mock python3-path python3-packaging python3-six
  python3-dnspython python3-greenlet python3-websocket python3-setuptools)

log() { echo "nameko.sh: $*" >&2; }
# shellcheck source=scripts/apt.sh
source "$ROOT/scripts/apt.sh"

modules_present() {
  [[ -x "$PYTHON" ]] && "$PYTHON" -c "import eventlet, kombu, amqp, vine, werkzeug, yaml, requests, wrapt, mock, path, packaging, six, dns, greenlet, websocket, setuptools" >/dev/null 2>&1
}

install_packages() {
  modules_present && return 0
  if [[ "$(id -u)" != 0 ]]; then
    log "Nameko's Python packages are missing and this is not root: apt-get install ${PACKAGES[*]}"
    return 1
  fi
  log "installing ${PACKAGES[*]}"
  apt_get install -y -q --no-install-recommends "${PACKAGES[@]}" || {
    apt_get update -q && apt_get install -y -q --no-install-recommends "${PACKAGES[@]}"
  }
  modules_present || { log "the packages are installed but $PYTHON cannot import them"; return 1; }
}

extract() {
  [[ -f "$SRC/nameko.egg-info/PKG-INFO" ]] && return 0
  [[ -f "$TARBALL" ]] || { log "no Nameko tarball at $TARBALL (set MESH_NAMEKO_TARBALL)"; return 1; }
  mkdir -p "$DIR"
  local tmp
  tmp="$(mktemp -d "$DIR/.extract.XXXXXX")"
  tar xzf "$TARBALL" -C "$tmp"
  # the CLI asks pkg_resources for its version: it needs the egg-info
  (cd "$tmp/nameko-2.14.1" && "$PYTHON" setup.py -q egg_info >/dev/null 2>&1)
  rm -rf "$SRC"
  mv "$tmp/nameko-2.14.1" "$SRC"
  rm -rf "$tmp"
}

case "${1:-install}" in
  install)
    install_packages
    extract
    echo "$SRC"
    ;;
  path) echo "$SRC" ;;
  python) echo "$PYTHON" ;;
  *)
    echo "usage: scripts/nameko.sh install|path|python" >&2
    exit 2
    ;;
esac
