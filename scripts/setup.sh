#!/usr/bin/env bash
# Idempotent set-up: creates .venv/ in the repo root and installs the project with its test extras.
# torch is pinned to 2.13.0 (a CPU wheel pip finds on local disk here); pip, not uv/poetry, sees it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install --quiet -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
