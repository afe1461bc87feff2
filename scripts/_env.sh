# Sourced by scripts/test.sh and scripts/quickstart.sh: installs into .venv exactly what
# uv.lock says. `locked_install EXTRA...` (none: loafer-core and its own dependencies).
#
# uv, pinned below, comes from PyPI into .tools/uv (outside .venv, which uv keeps exactly
# as the lock says); then `uv sync --frozen` installs the locked versions and nothing else.
# When uv cannot be had, pip installs the same versions from requirements/constraints.txt
# (exported from the lock; tests/test_quality.py checks that the two agree).
#
# Updating the lock on purpose: docs/dependencies.md (`uv lock --upgrade`, then the suite).

UV_VERSION=0.13.9
PYTHON=${PYTHON:-python3}
export UV_PYTHON_DOWNLOADS=never  # the machine's Python, never a downloaded one

_uv() {
  if [ ! -x .tools/uv/bin/uv ] || [ "$(.tools/uv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    rm -rf .tools/uv
    "$PYTHON" -m pip install -q --disable-pip-version-check --target .tools/uv "uv==$UV_VERSION" \
      >/dev/null 2>&1 || return 1
  fi
  [ -x .tools/uv/bin/uv ]
}

# sync: exact (.venv holds the lock's packages and no other); --inexact: keeps what else
# is there (the quickstart, run in a developer's test environment, removes nothing)
locked_install() {
  local mode=$1
  shift
  local args=() extras=""
  for extra in "$@"; do
    args+=(--extra "$extra")
    extras="${extras:+$extras,}$extra"
  done
  if _uv; then
    local flags=(--frozen --python "$PYTHON")
    [ "$mode" = inexact ] && flags+=(--inexact)
    if .tools/uv/bin/uv sync -q "${flags[@]}" "${args[@]}"; then
      return 0
    fi
    echo "scripts: uv sync failed; installing the same versions with pip" >&2
  else
    echo "scripts: uv could not be installed; installing the locked versions with pip" >&2
  fi
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check \
    -c requirements/constraints.txt -e ".${extras:+[$extras]}"
}
