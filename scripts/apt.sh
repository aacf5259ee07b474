# apt-get for the scripts that install what they run (sourced, not run): waits while another
# process (apt, unattended-upgrades, a second test run) holds the package manager's lock, instead of
# failing at once with status 100, and says why it failed when it does.
#
# Environment:
#   MESH_APT_LOCK_TIMEOUT   seconds to wait for apt's lock (default 600)

# apt_get ARGS...: apt-get ARGS, retried while the lock is held; its output goes to stderr
apt_get() {
  local deadline=$(($(date +%s) + ${MESH_APT_LOCK_TIMEOUT:-600})) out said=0
  out="$(mktemp)"
  while true; do
    if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=10 "$@" 2>&1 | tee "$out" >&2; then
      rm -f "$out"
      return 0
    fi
    if grep -qE "Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock" "$out" &&
      (($(date +%s) < deadline)); then
      if [[ "$said" == 0 ]]; then
        log "another process holds apt's lock; waiting up to ${MESH_APT_LOCK_TIMEOUT:-600}s (MESH_APT_LOCK_TIMEOUT)"
        said=1
      fi
      sleep 3
      continue
    fi
    log "apt-get $* failed: $(grep -E '^E: ' "$out" | head -n 2 | tr '\n' ' ')"
    rm -f "$out"
    return 1
  done
}

# apt_install PACKAGE: installs it (updating the package lists once if it is not found)
apt_install() {
  apt_get install -y -q --no-install-recommends "$1" || {
    apt_get update -q && apt_get install -y -q --no-install-recommends "$1"
  }
}

# apt_install_service PACKAGE: installs a package whose own service must not run (the project starts
# private instances on ports of its own): the service is kept from starting during the install, then
# disabled now and at boot. Returns 1 when the install failed (the reason is above).
apt_install_service() {
  local package="$1" policy=/usr/sbin/policy-rc.d placed=0 installed=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    placed=1
  fi
  apt_install "$package" && installed=1
  if [[ "$placed" == 1 ]]; then
    rm -f "$policy"
  fi
  [[ "$installed" == 1 ]] || return 1
  # the packaged service may have started if another install removed its own policy-rc.d meanwhile
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl disable --now "$package" >&2 || true
  else
    if [[ -x "/etc/init.d/$package" ]]; then
      "/etc/init.d/$package" stop >&2 || true
    fi
    if command -v update-rc.d >/dev/null; then
      update-rc.d "$package" disable >&2 || true
    fi
  fi
}
