"""Shared pytest set-up: offline switches for litellm/HF, and the fixture plugins.

Each fixture module in ``tests/fixtures/`` owns one kind of test service or test data:
``s3_server`` (moto's standalone S3 server as a process), ``llm_server`` (the oracle LLM server as a
process), ``models`` (a tiny random-init BERT built on disk).
"""

from __future__ import annotations

import os

# Set before anything imports litellm or transformers, so no test ever reaches the internet.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.fixtures.s3_server",
    "tests.fixtures.llm_server",
    "tests.fixtures.models",
]
