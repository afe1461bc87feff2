#!/usr/bin/env bash
# Installs loafer-core (no broker library; the versions uv.lock pins) and runs the
# quickstart on the embedded broker.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
locked_install inexact
exec .venv/bin/python examples/quickstart.py
