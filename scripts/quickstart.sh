#!/usr/bin/env bash
# Installs loafer-core (no broker library) and runs the quickstart on the embedded broker.
# Installs with uv (itself installed from PyPI into the .venv when missing), pip alone if
# uv cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if .venv/bin/python -m pip install -q --disable-pip-version-check uv \
  && .venv/bin/python -m uv pip install -q --python .venv/bin/python -e .; then
  :
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
exec .venv/bin/python examples/quickstart.py
