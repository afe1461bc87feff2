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
# uv (from PyPI) resolves the extras in well under a minute where pip takes minutes;
# pip does it alone if uv cannot be had
if .venv/bin/python -m pip install -q --disable-pip-version-check uv \
  && .venv/bin/python -m uv pip install -q --python .venv/bin/python -e '.[all,test,lint,docs]'; then
  :
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all,test,lint,docs]'
fi
bash scripts/brokers.sh
exec .venv/bin/python -m pytest "$@"
