#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, slow tests included. Extra args go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for the fast subset. Soak tests (the 20-moment SIGTERM run) are
# skipped unless BOOTSTRAPPER_SOAK=1: run them before a release with `BOOTSTRAPPER_SOAK=1 bash scripts/test.sh -m soak`.
# The tests start their own services: moto's S3 server and the oracle LLM server, each as a process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_OFFLINE_MODE=true HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
