#!/usr/bin/env bash
# Installs what the tests need (.venv with every plugin's dependencies at the versions
# uv.lock pins, the local brokers) and runs the whole test suite against the real brokers,
# on LOAFER_TEST_WORKERS pytest-xdist workers (3 by default: the tests mostly wait on
# brokers; tests marked `serial` still run alone, see tests/_serial.py).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` (the fast part)
# or `-n 0` (one process).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
locked_install exact all test lint docs
bash scripts/brokers.sh
exec .venv/bin/python -m pytest -n "${LOAFER_TEST_WORKERS:-3}" --durations=25 "$@"
