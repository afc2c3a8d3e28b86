#!/usr/bin/env bash
# Prepare everything mediaproxy needs on a fresh Debian machine with Python 3.11:
# system packages (libopus0 for opuslib, python3-venv; in CI chromium and promtool), the virtual environment in .venv,
# and the project installed in it (editable, with the test extras).
# Sourced by run.sh and test.sh; safe to run again (each step is skipped when already done).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/.venv

log() { printf 'setup: %s\n' "$*" >&2; }

apt_install() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || { log "need root (or sudo) to install: $*"; exit 1; }
        sudo=sudo
    fi
    log "installing system packages: $*"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && \
           "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYTHON=$candidate; break
        fi
    done
fi
[ -n "$PYTHON" ] || { log "Python 3.11 or newer is required"; exit 1; }

missing=()
# opuslib loads libopus.so.0 at run time; ldconfig is in /sbin on Debian.
if ! { /sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null; } | grep -q 'libopus\.so\.0'; then
    missing+=(libopus0)
fi
if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
# The browser test (tests/test_browser.py) drives examples/browser.html in headless Chromium. It
# must run in CI; elsewhere it is skipped while Chromium is missing, so a developer's set-up stays lean.
if [ -n "${CI:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    missing+=(chromium)
fi
# promtool (Debian's prometheus package) checks and unit-tests deploy/prometheus/alerts.yml
# (tests/test_deploy_observability.py). As with Chromium: always in CI, elsewhere on demand.
if [ -n "${CI:-}" ] && ! command -v promtool >/dev/null 2>&1; then
    missing+=(prometheus)
fi
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the packaging metadata (or this script) changed.
stamp=$VENV/.mediaproxy-installed
want=$(cat pyproject.toml scripts/setup-env.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing mediaproxy and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    # A plain editable install is enough for `twistd mediaproxy`: pyproject.toml declares the root
    # as the package directory, so setuptools puts the checkout itself on sys.path, where Twisted's
    # plugin scan finds twisted/plugins/mediaproxy_plugin.py.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
fi
