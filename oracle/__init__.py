"""The oracle: a local, OpenAI-compatible HTTP server that stands in for a real LLM.

No real LLM is reachable where this project is built and tested, so tests, benchmarks and the offline demo
talk to this server instead. It answers labeling requests from human labels (optionally flipped by seeded,
deterministic noise), answers other requests with plain-text classification rules, and can inject faults
(429, 500, hangs, malformed and out-of-class replies) at given rates. It does not generate language, reason,
or know anything beyond the labeled JSONL it was started with.

Modules: ``data`` (loading and finding texts), ``answers`` (pure reply builders), ``faults`` (fault draws),
``stats`` (request counters), ``server`` (HTTP, CLI, ``build_server``/``main``). This package imports none of
them here so that ``python -m oracle.server`` starts without a double import.
"""
