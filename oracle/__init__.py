"""The oracle: local HTTP servers that stand in for real LLMs, one wire protocol per server process.

No real LLM is reachable where this project is built and tested, so tests, benchmarks and the offline demo
talk to these servers instead. They answer labeling requests from human labels (optionally flipped by seeded,
deterministic noise), answer other requests with plain-text classification rules, and can inject faults
(429, 500, overloaded, hangs, malformed and out-of-class replies) at given rates. They do not generate
language, reason, or know anything beyond the labeled JSONL they were started with. Each speaks one
provider's protocol (OpenAI by default; Azure OpenAI, Anthropic Messages, Bedrock Converse, Gemini
generateContent, Ollama chat), so litellm can reach it with that provider's model string and base URL.

Modules: ``data`` (loading and finding texts), ``answers`` (pure reply builders), ``faults`` (fault draws),
``cache`` (the simulated prompt cache), ``neutral`` (the protocol-neutral request and reply), ``engine`` (the
answering logic all protocols share), ``protocols`` (one module per provider API), ``stats`` (request
counters), ``server`` (HTTP, CLI, ``build_server``/``main``), ``process`` (start one as a process). This
package imports none of them here so that ``python -m oracle.server`` starts without a double import.
"""
