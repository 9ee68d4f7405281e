#!/usr/bin/env bash
# Set up everything vm5k needs on a Debian 12 machine, as root, idempotently:
#   - the Debian packages (QEMU, libvirt, dnsmasq, OpenSSH, image-building tools), installed only if missing;
#   - the Python environment in .venv/ at the repository root (vm5k and its test tools), rebuilt only
#     when pyproject.toml changed.
#   - with --with-execo, a separate .venv-execo/ holding execo (the Grid'5000 toolkit the testbed's contract
#     tests and the planning benchmark compare against; never a dependency of vm5k itself).
#   - with --with-enoslib, a separate .venv-enoslib/ holding EnOSlib ENOSLIB_VERSION (with its Ansible), for
#     the testbed's EnOSlib contract test; never a dependency of vm5k. Built once: a second run checks the
#     installed version and downloads nothing.
# A second run on a set-up machine takes about a second and downloads nothing.
set -euo pipefail

WITH_EXECO=0
WITH_ENOSLIB=0
ENOSLIB_VERSION=10.9.0
for arg in "$@"; do
    case "$arg" in
        --with-execo) WITH_EXECO=1 ;;
        --with-enoslib) WITH_ENOSLIB=1 ;;
        *) echo "setup: error: unknown option $arg (known: --with-execo, --with-enoslib)" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

# Hosts, testbed nodes and guest-image builder all use the machine's own packages.
APT_PACKAGES=(
    python3 python3-venv ca-certificates git
    qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients
    dnsmasq-base openssh-server openssh-client iproute2 iputils-ping netcat-openbsd
    genisoimage debootstrap busybox-static e2fsprogs cpio kmod xz-utils zstd
    procps psmisc util-linux libxml2-utils sudo
    systemd
)

log() { printf 'setup: %s\n' "$*" >&2; }
# pip's notes about optional local package indexes that a machine lacks are noise; its errors are not.
pip_quiet() { "$VENV/bin/pip" "$@" 2>&1 | { grep -v 'is ignored: it is neither' || true; } >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: error: run as root (the testbed needs namespaces, bridges and libvirt)" >&2
    exit 2
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [ "${status:0:2}" = "ii" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "Debian packages already installed"
fi

# Debian's own interpreter, so that the venv behaves the same on every Debian 12 machine.
PYTHON=/usr/bin/python3
stamp="$VENV/.vm5k-setup-stamp"
want=$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing vm5k and its Python dependencies into $VENV"
    pip_quiet install -q --upgrade pip
    pip_quiet install -q -e "$ROOT[test]"
    "$VENV/bin/python" -c 'import vm5k, g5k_testbed' || { log "error: the Python environment is broken"; exit 1; }
    echo "$want" > "$stamp"
else
    log "Python environment up to date"
fi
if [ "$WITH_EXECO" = 1 ] && [ ! -x "$ROOT/.venv-execo/bin/python" ]; then
    log "creating $ROOT/.venv-execo with execo"
    "$PYTHON" -m venv "$ROOT/.venv-execo"
    "$ROOT/.venv-execo/bin/pip" install -q execo requests 2>&1 | { grep -v 'is ignored: it is neither' || true; } >&2
fi
if [ "$WITH_ENOSLIB" = 1 ]; then
    ENOSLIB_VENV="$ROOT/.venv-enoslib"
    have=$("$ENOSLIB_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("enoslib"))' \
           2>/dev/null || true)
    if [ "$have" != "$ENOSLIB_VERSION" ]; then
        log "creating $ENOSLIB_VENV with enoslib $ENOSLIB_VERSION"
        rm -rf "$ENOSLIB_VENV"
        "$PYTHON" -m venv "$ENOSLIB_VENV"
        "$ENOSLIB_VENV/bin/pip" install -q "enoslib==$ENOSLIB_VERSION" 2>&1 \
            | { grep -v 'is ignored: it is neither' || true; } >&2
        "$ENOSLIB_VENV/bin/python" -c 'import enoslib' || { log "error: enoslib did not install"; exit 1; }
    else
        log "enoslib $ENOSLIB_VERSION already in $ENOSLIB_VENV"
    fi
fi
log "ready: $VENV/bin/vm5k"
