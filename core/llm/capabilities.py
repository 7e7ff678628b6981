"""What a model accepts, learned from its own refusals, and how many completion tokens to give it.

Two small concerns that litellm's capability map cannot settle for us, because a deployment name (an Azure
deployment, a vLLM model, a new Gemini release) is often missing from that map or wrong in it:

- ``ParamRefusals``: the optional parameters a model refused with an HTTP 400 ("Logprobs is not enabled for
  models/gemini-2.5-pro", "Unsupported parameter: 'temperature'"). The gateway drops a refused parameter and
  asks once more; the run's state keeps the set so a resumed run never pays for the same refusal again.
  Only parameters the job adds on its own are dropped (``OPTIONAL_PARAMS``); a parameter the user set in
  ``api.*_params`` that the provider refuses stops labeling with the provider's message, since dropping it
  would silently change what was asked for.
- ``completion_budget``: a reasoning model spends its completion budget on hidden thinking first, so the cap
  that suits a plain model (400 tokens for a 15-word reason and a label) can leave nothing for the answer.
  The budget adds room for the thinking; ``larger_budget`` is the one retry a reply cut off by the length
  limit gets.

Nothing here calls a model or reads settings.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

# Parameters the job adds by itself and can do without: logprobs only give the label a confidence, and a
# model that allows only its default temperature (OpenAI's o-series and gpt-5 family) labels fine without 0.
OPTIONAL_PARAMS = ("logprobs", "temperature")
# Thinking tokens allowed on top of the answer's cap, by ``reasoning_effort`` (litellm maps the same effort
# names to Anthropic and Gemini thinking budgets of 1,024 / 2,048 / 4,096 tokens for low / medium / high).
REASONING_ALLOWANCE = {"minimal": 1024, "low": 2048, "medium": 4096, "high": 8192}
DEFAULT_REASONING_ALLOWANCE = 4096  # a reasoning model at its provider's default effort (medium)
MAX_BUDGET = 32768


def refused_param(message: str, sent: Iterable[str]) -> str | None:
    """The optional parameter a provider's 400 message names, among those the request carried.

    >>> refused_param("Logprobs is not enabled for models/gemini-2.5-pro", ["logprobs", "temperature"])
    'logprobs'
    >>> refused_param("Unsupported value: 'temperature' does not support 0 with this model.", ["temperature"])
    'temperature'
    >>> refused_param("max_tokens is too large", ["logprobs"]) is None
    True
    """
    low = message.lower()
    for param in sent:
        if re.search(rf"(?<![a-z_]){re.escape(param.lower())}", low):
            return param
    return None


class ParamRefusals:
    """Per model, the optional parameters it refused. Thread-safe: labeling workers share one instance.

    >>> r = ParamRefusals({"gemini/gemini-2.5-pro": ["logprobs"]})
    >>> r.allows("gemini/gemini-2.5-pro", "logprobs"), r.allows("openai/gpt-4o", "logprobs")
    (False, True)
    """

    def __init__(self, known: Mapping[str, Iterable[str]] | None = None) -> None:
        self._lock = threading.Lock()
        self._refused: dict[str, set[str]] = {m: set(p) for m, p in (known or {}).items()}

    def allows(self, model: str, param: str) -> bool:
        with self._lock:
            return param not in self._refused.get(model, ())

    def learn(self, model: str, param: str) -> bool:
        """Record a refusal; True when it is news (the first worker to meet it logs it)."""
        with self._lock:
            params = self._refused.setdefault(model, set())
            if param in params:
                return False
            params.add(param)
            return True

    def merge(self, other: Mapping[str, Iterable[str]]) -> None:
        for model, params in other.items():
            for param in params:
                self.learn(model, param)

    def to_json(self) -> dict[str, list[str]]:
        with self._lock:
            return {m: sorted(p) for m, p in sorted(self._refused.items()) if p}


def is_reasoning(params: Mapping[str, Any], litellm_says: bool, thinks_unasked: bool = True) -> bool:
    """A model that thinks before it answers: the config asks it to, or litellm's map says it can and its
    provider lets it think unasked (OpenAI's o-series and gpt-5, Gemini 2.5 do; Claude thinks only when given
    ``thinking``).

    >>> is_reasoning({}, True, thinks_unasked=False), is_reasoning({"reasoning_effort": "low"}, False)
    (False, True)
    """
    asked = "reasoning_effort" in params or _thinking_budget(params) is not None
    return asked or (litellm_says and thinks_unasked)


def _thinking_budget(params: Mapping[str, Any]) -> int | None:
    thinking = params.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type", "enabled") == "enabled":
        try:
            return int(thinking.get("budget_tokens"))
        except (TypeError, ValueError):
            return None
    return None


def completion_budget(answer_tokens: int, reasoning: bool, params: Mapping[str, Any]) -> int:
    """The ``max_tokens`` to send: the answer's cap, plus the thinking a reasoning model is allowed.

    >>> completion_budget(400, False, {})
    400
    >>> completion_budget(400, True, {"reasoning_effort": "low"})
    2448
    >>> completion_budget(400, True, {"thinking": {"type": "enabled", "budget_tokens": 1024}})
    1424
    """
    if not reasoning:
        return answer_tokens
    budget = _thinking_budget(params)
    if budget is None:
        budget = REASONING_ALLOWANCE.get(str(params.get("reasoning_effort", "")), DEFAULT_REASONING_ALLOWANCE)
    return min(MAX_BUDGET, answer_tokens + budget)


def larger_budget(max_tokens: int) -> int:
    """The budget of the one retry a reply cut off by the length limit gets: four times, capped.

    >>> larger_budget(400), larger_budget(20000)
    (1600, 32768)
    """
    return min(MAX_BUDGET, max(max_tokens * 4, max_tokens + 1024))
