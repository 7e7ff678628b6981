#!/usr/bin/env bash
# Idempotent set-up: creates .venv/ in the repo root and installs the project with its test extras.
# torch is pinned to 2.13.0 (a CPU wheel pip finds on local disk here); pip, not uv/poetry, sees it.
# Re-installs only when pyproject.toml changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if [ ! -f "$stamp" ]; then
  echo "setting up .venv (first time: about 1-2 minutes)..." >&2
  log=$(mktemp)
  if ! .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]' >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup failed: pip install did not succeed (log above)" >&2
    exit 1
  fi
  rm -f "$log" .venv/.installed-*
  touch "$stamp"
fi
