#!/usr/bin/env bash
# Installs what the tests need (.venv with every plugin's dependencies at the versions
# uv.lock pins, the local brokers) and runs the whole test suite against the real brokers.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` (the fast part).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
locked_install exact all test lint docs
bash scripts/brokers.sh
exec .venv/bin/python -m pytest "$@"
