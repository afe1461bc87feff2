#!/usr/bin/env bash
# Installs loafer-core (no broker library) and runs the quickstart on the embedded broker.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/python examples/quickstart.py
