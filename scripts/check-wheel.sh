#!/usr/bin/env bash
# The wheel check: build the wheel, install it into a fresh virtual environment (dependencies from
# the package index, as a user would) and prove that the installed package works on its own:
# `twistd mediaproxy --help`, then one short echo call through a real proxy process, made with the
# installed mediaproxy-sim, and a clean SIGTERM shutdown. Everything runs from a temporary directory,
# never the checkout, so nothing on the cwd or in the source tree can stand in for what the wheel
# lacks. Called last by ./test.sh; quiet on success, prints the logs on failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# The project's venv (made by scripts/setup-env.sh) builds the wheel and provides the interpreter
# for the fresh venv. Not $PYTHON: setup-env.sh reads that as the base interpreter.
PYTHON=$ROOT/.venv/bin/python
[ -x "$PYTHON" ] || { echo "check-wheel: no $PYTHON; run scripts/setup-env.sh (./test.sh does)" >&2; exit 1; }
PIP=(-m pip --disable-pip-version-check --no-input)

work=$(mktemp -d "${TMPDIR:-/tmp}/mediaproxy-wheel.XXXXXX")
twistd_pid=""
cleanup() {
    if [ -n "$twistd_pid" ] && kill -0 "$twistd_pid" 2>/dev/null; then
        kill -KILL "$twistd_pid" 2>/dev/null || true
        wait "$twistd_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
# Turn signals into an ordinary exit so the EXIT trap cleans up.
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'check-wheel: %s\n' "$*" >&2; }
fail() {
    log "FAIL: $*"
    local f
    for f in "$work"/*.log; do
        [ -s "$f" ] || continue
        printf -- '----- %s\n' "$(basename "$f")" >&2
        cat "$f" >&2
    done
    exit 1
}

# 1. Build from a clean copy of the source (tracked plus new, not ignored, files): building in the
# checkout would reuse its build/ directory, whose stale files could end up in the wheel.
mkdir "$work/src" "$work/dist" "$work/cwd"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
        "$PYTHON" -c 'import os, sys
paths = [p for p in sys.stdin.buffer.read().split(b"\0") if p and os.path.lexists(p)]
sys.stdout.buffer.write(b"".join(p + b"\0" for p in paths))' |
        tar --null -T - -cf - | tar -xf - -C "$work/src"
else
    tar --exclude=./.venv --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ -cf - . |
        tar -xf - -C "$work/src"
fi
"$PYTHON" "${PIP[@]}" wheel -q --no-deps -w "$work/dist" "$work/src" >"$work/build.log" 2>&1 ||
    fail "building the wheel"
wheels=("$work"/dist/mediaproxy-*.whl)
[ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || fail "expected one wheel, got: ${wheels[*]}"
wheel=${wheels[0]}

# 2. Its contents: every module of the source tree (so new subpackages are never left out), the
# twistd plugin, and no twisted/__init__.py or twisted/plugins/__init__.py, which would shadow or
# overwrite Twisted's own on install.
"$PYTHON" - "$wheel" "$work/src" >"$work/contents.log" 2>&1 <<'EOF' || fail "wheel contents"
import pathlib, sys, zipfile
wheel, src = sys.argv[1], pathlib.Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
want = {p.relative_to(src).as_posix() for p in (src / "mediaproxy").rglob("*.py") if "__pycache__" not in p.parts}
want.add("twisted/plugins/mediaproxy_plugin.py")
missing = sorted(want - names)
forbidden = sorted({"twisted/__init__.py", "twisted/plugins/__init__.py"} & names)
for name in missing:
    print("missing from the wheel:", name)
for name in forbidden:
    print("must not be in the wheel:", name)
sys.exit(1 if missing or forbidden else 0)
EOF

# 3. A fresh venv with the wheel and its dependencies from the package index.
"$PYTHON" -m venv "$work/venv" >"$work/venv.log" 2>&1 || fail "creating the venv"
"$work/venv/bin/python" "${PIP[@]}" install -q "$wheel" >"$work/install.log" 2>&1 ||
    fail "installing the wheel"
cd "$work/cwd"
"$work/venv/bin/twistd" mediaproxy --help >"$work/help.log" 2>&1 || fail "twistd mediaproxy --help"
grep -q -- '--config' "$work/help.log" || fail "twistd mediaproxy --help does not show --config"
"$work/venv/bin/mediaproxy-sim" --help >"$work/sim-help.log" 2>&1 || fail "mediaproxy-sim --help"

# 4. One call end to end: the proxy on free loopback ports, Twilio on /twilio, echo backend.
read -r port metrics_port < <("$PYTHON" -c 'import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
[ -n "$port" ] && [ -n "$metrics_port" ] || fail "no free ports"
drain_seconds=3
cat >"$work/proxy.ini" <<EOF
[proxy]
listen = tcp:$port:interface=127.0.0.1
drain_seconds = $drain_seconds

[metrics]
listen = tcp:$metrics_port:interface=127.0.0.1

[platform:twilio]
path = /twilio
backend = echo

[backend:echo]
type = echo
EOF
"$work/venv/bin/twistd" --nodaemon --pidfile= --logfile=- mediaproxy --config "$work/proxy.ini" \
    >"$work/twistd.log" 2>&1 </dev/null &
twistd_pid=$!

# HTTP status of a metrics-port path (000 when nothing answers yet).
http_get() {
    "$PYTHON" - "http://127.0.0.1:$metrics_port$1" "${2:-}" <<'EOF'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, b""
except OSError:
    status, body = 0, b""
if sys.argv[2]:
    with open(sys.argv[2], "wb") as f:
        f.write(body)
print(f"{status:03d}")
EOF
}

# Ready within 20 s, or fail (and fail at once if twistd died).
for _ in $(seq 1 80); do
    kill -0 "$twistd_pid" 2>/dev/null || fail "twistd exited before it was ready"
    [ "$(http_get /ready)" = 200 ] && break
    sleep 0.25
done
[ "$(http_get /ready)" = 200 ] || fail "/ready did not answer 200 within 20 s"

# mediaproxy-sim exits 0 only when the call completed; its caller script talks and pauses so the
# echo (parrot) backend has utterances to play back.
"$work/venv/bin/mediaproxy-sim" twilio "ws://127.0.0.1:$port/twilio" --calls 1 --duration 3 --ramp 0 \
    >"$work/sim.log" 2>&1 </dev/null || fail "mediaproxy-sim call failed"

# The bot audio really came back: the proxy counted frames sent to the caller.
[ "$(http_get /metrics "$work/metrics.txt")" = 200 ] || fail "/metrics did not answer 200"
out_frames=$("$PYTHON" - "$work/metrics.txt" <<'EOF'
import re, sys
total = 0.0
for line in open(sys.argv[1]):
    m = re.match(r'mediaproxy_frames_total\{([^}]*)\} (\S+)$', line.strip())
    if m and 'direction="out"' in m.group(1):
        total += float(m.group(2))
print(int(total))
EOF
)
[ "$out_frames" -gt 0 ] || fail "no frames sent to the caller (mediaproxy_frames_total direction=out is 0)"

# 5. SIGTERM: the proxy drains and exits within its drain time (plus a margin).
kill -TERM "$twistd_pid"
for _ in $(seq 1 $(((drain_seconds + 5) * 4))); do
    kill -0 "$twistd_pid" 2>/dev/null || break
    sleep 0.25
done
! kill -0 "$twistd_pid" 2>/dev/null || fail "twistd still running $((drain_seconds + 5)) s after SIGTERM"
status=0
wait "$twistd_pid" || status=$?
twistd_pid=""
# twistd re-raises the signal after its orderly shutdown, so 143 (128 + SIGTERM) is a clean exit
# too; the log line says the shutdown ran to its end.
[ "$status" -eq 0 ] || [ "$status" -eq 143 ] || fail "twistd exited with status $status after SIGTERM"
grep -q 'Server Shut Down' "$work/twistd.log" || fail "twistd did not shut down in order"
if grep -q -E 'Traceback|Unhandled' "$work/twistd.log"; then fail "errors in the twistd log"; fi

log "ok: $(basename "$wheel") installs into a fresh venv; twistd mediaproxy answered one call" \
    "($out_frames frames back to the caller) and stopped cleanly on SIGTERM"
