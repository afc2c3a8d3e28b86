#!/usr/bin/env bash
# Run the checks (set-up included). With no arguments, in order: ruff (lint), mypy (types), the
# whole trial suite, then the wheel check (scripts/check-wheel.sh). Arguments select trial tests
# and run only those, e.g. ./test.sh tests.test_playout
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup-env.sh
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m twisted.trial --reporter=text "$@"
fi

# Every step runs even when an earlier one fails, so one run shows every problem; the exit status
# is non-zero when any step failed.
failed=()
step() {
    local name=$1
    shift
    printf '==> %s\n' "$name"
    if ! "$@"; then
        failed+=("$name")
    fi
}
step "ruff check" .venv/bin/ruff check
step "mypy" .venv/bin/mypy
step "trial tests" .venv/bin/python -m twisted.trial --reporter=text tests
step "wheel check" bash scripts/check-wheel.sh
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED:' >&2
    printf ' [%s]' "${failed[@]}" >&2
    printf '\n' >&2
    exit 1
fi
echo "all checks passed"
