#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the bundled SMS-spam example, with local folder storage, the
# bundled base model and the local oracle LLM server (a stand-in for a real LLM: see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/bootstrapper demo "$@"
