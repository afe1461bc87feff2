#!/usr/bin/env bash
# Installs what the tests need (a .venv with every plugin's dependencies, the local
# brokers) and runs the whole test suite against the real brokers.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all,test,lint]'
bash scripts/brokers.sh
exec .venv/bin/python -m pytest "$@"
