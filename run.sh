#!/usr/bin/env bash
# Start mediaproxy in the foreground. With no arguments it uses etc/mediaproxy.ini, the embedded
# default (Twilio on /twilio, echo backend, metrics on 127.0.0.1:9090). Any arguments are passed on
# to `twistd mediaproxy`, e.g. ./run.sh --config etc/openai.ini
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup-env.sh
exec .venv/bin/twistd --nodaemon --pidfile= mediaproxy "$@"
