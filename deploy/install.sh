#!/usr/bin/env bash
# Install facesieve as a systemd service on a Debian server.
#
# Run as root from a checkout:   sudo deploy/install.sh
#
# Needs: root, Debian 12 or newer with systemd and apt, and the Debian packages in
# APT_PACKAGES below (installed with apt when missing): Debian's python3 >= 3.11 with
# python3-venv, and python3-dev, libsystemd-dev, pkg-config and gcc to build
# systemd-python. The venv is always built from /usr/bin/python3, never from whichever
# python3 comes first on root's PATH (a pyenv under /root is unreadable for the service
# user). Python packages are installed at the tested versions in constraints.txt.
#
# Safe to re-run: it upgrades the venv from the checkout, refreshes the unit,
# sysusers and tmpfiles files, and never overwrites an existing config.
set -euo pipefail

VENV=/opt/facesieve/venv
ETC_DIR=/etc/facesieve
CONFIG=$ETC_DIR/default.toml
STATE_DIR=/var/lib/facesieve
MODELS_DIR=$STATE_DIR/models
SRV_DIR=/srv/facesieve
SERVICE_USER=facesieve
PYTHON=/usr/bin/python3
APT_PACKAGES=(python3 python3-venv python3-dev libsystemd-dev pkg-config gcc)

# A hardened root umask (077) would leave the venv unreadable for the service user.
umask 022

log() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY=$SRC/deploy

[[ $EUID -eq 0 ]] || die "run as root (e.g. sudo $0)"
[[ -f $SRC/pyproject.toml && -f $DEPLOY/facesieve@.service ]] \
    || die "$SRC does not look like a facesieve checkout"
[[ -f $SRC/constraints.txt ]] || die "$SRC/constraints.txt (the tested versions) is missing"
command -v apt-get >/dev/null || die "apt-get not found: this installer targets Debian"
command -v systemd-sysusers >/dev/null || die "systemd-sysusers not found: systemd is required"

# --- System packages ---------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
    log "system packages already installed"
fi

NEEDS="apt-get install ${APT_PACKAGES[*]}"
[[ -x $PYTHON ]] || die "$PYTHON not found: $NEEDS"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); facesieve needs >= 3.11 (Debian 12 or newer): $NEEDS"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$PYTHON cannot create a venv: $NEEDS"
log "using $PYTHON ($("$PYTHON" -V 2>&1))"

# --- Virtual environment -----------------------------------------------------
# A venv built from another Python (an older install from a pyenv on PATH) is rebuilt.
if [[ -x $VENV/bin/python && $(readlink -f -- "$VENV/bin/python") != "$(readlink -f -- "$PYTHON")" ]]; then
    log "$VENV was built from $(readlink -f -- "$VENV/bin/python"), not $PYTHON: recreating it"
    rm -rf -- "$VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
    log "creating $VENV"
    mkdir -p -- "$(dirname -- "$VENV")"
    "$PYTHON" -m venv -- "$VENV"
fi
log "installing facesieve[systemd] from $SRC into $VENV (versions from constraints.txt)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# --upgrade reinstalls the checkout itself; the constraints pin every dependency to the
# tested version, so an upgrade moves exactly the packages whose pins changed.
"$VENV/bin/python" -m pip install --upgrade -c "$SRC/constraints.txt" "$SRC[systemd]"
[[ -x $VENV/bin/facesieve ]] || die "$VENV/bin/facesieve was not installed"

# --- systemd files -----------------------------------------------------------
log "installing unit, sysusers and tmpfiles configuration"
install -D -m 0644 -- "$DEPLOY/facesieve@.service" /etc/systemd/system/facesieve@.service
install -D -m 0644 -- "$DEPLOY/sysusers.d/facesieve.conf" /etc/sysusers.d/facesieve.conf
install -D -m 0644 -- "$DEPLOY/tmpfiles.d/facesieve.conf" /etc/tmpfiles.d/facesieve.conf
install -D -m 0644 -- "$DEPLOY/README.md" /usr/share/doc/facesieve/README.md
install -D -m 0644 -- "$SRC/config.example.toml" /usr/share/doc/facesieve/config.example.toml
install -D -m 0644 -- "$DEPLOY/facesieve@.service.d/metrics.conf" /usr/share/doc/facesieve/metrics.conf
install -D -m 0644 -- "$SRC/LICENSE" /usr/share/doc/facesieve/LICENSE
install -D -m 0644 -- "$SRC/THIRD_PARTY_NOTICES.md" /usr/share/doc/facesieve/THIRD_PARTY_NOTICES.md

systemd-sysusers /etc/sysusers.d/facesieve.conf
systemd-tmpfiles --create /etc/tmpfiles.d/facesieve.conf

# The default instance's folders (/srv/facesieve/default/...). Existing ones are
# left alone: an admin may have changed their owner or mode on purpose.
# The inbox is setgid and group-writable so uploaders in group facesieve can drop
# files the daemon can read; the other folders stay private to the daemon.
make_dir() {  # make_dir MODE DIR: create DIR owned by the service user unless it exists
    if [[ ! -d $2 ]]; then
        install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m "$1" -- "$2"
    fi
}
make_dir 0750 "$SRV_DIR/default"
make_dir 2770 "$SRV_DIR/default/inbox"
for name in quarantine review accepted; do
    make_dir 0750 "$SRV_DIR/default/$name"
done

# --- Config ------------------------------------------------------------------
if [[ -e $CONFIG ]]; then
    log "keeping existing $CONFIG"
else
    [[ -f $SRC/deploy/default.toml ]] || die "$SRC/deploy/default.toml is missing"
    log "creating $CONFIG from deploy/default.toml"
    install -m 0640 -o root -g "$SERVICE_USER" -- "$SRC/deploy/default.toml" "$CONFIG"
fi

# --- Models ------------------------------------------------------------------
# Provision before the first start: the sandboxed service has no network, and
# copying weights during start-up would eat into TimeoutStartSec.
run_as_service_user() {
    if command -v sudo >/dev/null; then
        sudo -u "$SERVICE_USER" -- "$@"
    else
        runuser -u "$SERVICE_USER" -- "$@"
    fi
}
log "provisioning model weights into $MODELS_DIR"
(
    cd /
    run_as_service_user env HOME="$STATE_DIR" DEEPFACE_HOME="$MODELS_DIR" TF_CPP_MIN_LOG_LEVEL=3 \
        "$VENV/bin/facesieve" models --provision --config "$CONFIG"
)

# --- systemd -----------------------------------------------------------------
if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
else
    log "systemd is not running (container or chroot?): skipped systemctl daemon-reload"
fi

cat <<EOF

facesieve is installed.

  1. Review $CONFIG (guarded folders, policy).
     Folders outside $SRV_DIR need a drop-in:  systemctl edit facesieve@default
     Metrics ([metrics] address) need the drop-in /usr/share/doc/facesieve/metrics.conf
     in /etc/systemd/system/facesieve@default.service.d/ (see the README there).
  2. Start it now and at every boot:
         systemctl enable --now facesieve@default
  3. Follow it:
         systemctl status facesieve@default
         journalctl -u facesieve@default -f

After an upgrade (re-running this script), restart running instances with:
    systemctl try-restart 'facesieve@*.service'
EOF
