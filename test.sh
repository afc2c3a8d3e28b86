#!/usr/bin/env bash
# Run the whole test suite with trial (set-up included). Arguments select tests, e.g.
# ./test.sh tests.test_playout
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup-env.sh
if [ $# -eq 0 ]; then set -- tests; fi
exec .venv/bin/python -m twisted.trial --reporter=text "$@"
