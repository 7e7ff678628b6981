"""The oracle's answering logic, shared by every wire protocol: a neutral ``ChatRequest`` in, an ``Outcome`` out.

It draws the request's fault, finds the known text the prompt is about, and answers with the (noisy) human
label, or with template classification rules when the prompt is about no known text; then it spends the
simulated reasoning budget and asks the prefix cache which prompt tokens count as cached. It is a stand-in
answering from human labels, not a language model. It never parses a provider's JSON, checks auth, sleeps
or touches sockets: the protocol modules (``oracle.protocols``) do the first two, the HTTP layer waits
``delay_s`` and writes.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass

from oracle import answers, rules
from oracle.cache import CachePolicy, PrefixCache
from oracle.config import OracleConfig
from oracle.data import LabeledData, Match, extract_marked
from oracle.faults import Fault, FaultDrawer
from oracle.neutral import ChatRequest, Completion, ErrorKind, Failure, Usage
from oracle.stats import Stats

BAD_LABEL_PROB = 0.5
FAULT_FAILURES = {
    Fault.RATE_LIMIT: ErrorKind.RATE_LIMITED,
    Fault.SERVER_ERROR: ErrorKind.SERVER_ERROR,
    Fault.OVERLOADED: ErrorKind.OVERLOADED,
}
UNKNOWN_TEXT_MESSAGE = "the oracle has no label for the text between <text> markers"


@dataclass(frozen=True)
class Answer:
    """What the model 'says' before faults and the HTTP envelope: content plus the label's place in it."""

    content: str
    outcome: str
    summary: str
    parts: tuple[str, str, str] | None = None
    label_prob: float = answers.LABEL_PROB


@dataclass(frozen=True)
class Outcome:
    """The engine's decision: a completion or a failure, the /stats outcome name and summary, the wait."""

    result: Completion | Failure
    outcome: str
    summary: str
    delay_s: float = 0.0
    truncate_body: bool = False


def tokens(chars: int) -> int:
    """Characters / 4, the usual rule of thumb for English text, and never zero."""
    return max(1, math.ceil(chars / 4))


class Oracle:
    def __init__(self, config: OracleConfig, data: LabeledData, cache_policy: CachePolicy) -> None:
        self.config = config
        self.data = data
        self.stats = Stats()
        self.cache_policy = cache_policy
        self._cache = PrefixCache()
        self._faults = FaultDrawer(config.faults, config.seed)
        self._words = rules.distinctive_words((text, data.label_of(text)) for text in data.texts())
        self._jitter = random.Random(config.seed + 1)
        self._jitter_lock = threading.Lock()

    def _latency_s(self) -> float:
        if self.config.jitter_ms <= 0:
            return self.config.latency_ms / 1000.0
        with self._jitter_lock:
            extra = self._jitter.uniform(0.0, self.config.jitter_ms)
        return (self.config.latency_ms + extra) / 1000.0

    def _classes(self, request: ChatRequest) -> tuple[str, ...]:
        return request.structure.classes or self.data.labels

    def _label_answer(self, request: ChatRequest, match: Match | None, marked_text: str, fault: Fault) -> Answer:
        classes = self._classes(request)
        as_json = request.structure.as_json
        if match is not None:
            label, flipped = answers.noisy_label(
                match.label, classes, self.config.noise, self.config.seed, request.model, match.text
            )
            outcome, text = "label", match.text
        else:
            # The text is unknown: answer as an LLM would (some class), but deterministically and visibly so.
            draw, _ = answers.unit_hashes(self.config.seed, request.model, marked_text, "unknown")
            label, flipped = classes[min(int(draw * len(classes)), len(classes) - 1)], True
            outcome, text = "unknown_text", marked_text
        label_prob = answers.FLIPPED_LABEL_PROB if flipped else answers.LABEL_PROB
        if fault is Fault.BAD_LABEL:
            label, label_prob, outcome = answers.bad_label(classes), BAD_LABEL_PROB, "badlabel"
        reason = answers.reason_for(label, text)
        if fault is Fault.MALFORMED:
            return Answer(answers.malformed_content(label, reason, as_json), "malformed", text[:80])
        parts = answers.label_parts(label, reason, as_json)
        return Answer("".join(parts), outcome, text[:80], parts, label_prob)

    def _rules_answer(self, prompt: str, fault: Fault) -> Answer:
        named = rules.class_names_from_prompt(prompt) or [(label, "") for label in self.data.labels]
        content = rules.rules_text(named, self.data.label_counts, self._words)
        if fault is Fault.MALFORMED:
            return Answer("", "malformed", prompt[:80])
        return Answer(content, "rules", prompt[:80])

    def _spend_budget(self, content: str, max_tokens: int | None) -> tuple[str, str, int, int]:
        """(content, finish, reasoning tokens, completion tokens) once the hidden thinking has had its share.

        Without ``reasoning_tokens`` the budget is ignored, as the server always did: the oracle's replies are
        short, and a cap on rules would cut them mid-line for no test's benefit.
        """
        needed = tokens(len(content))
        thinking = self.config.reasoning_tokens
        if thinking == 0 or max_tokens is None or max_tokens >= thinking + needed:
            return content, "stop", thinking, thinking + needed
        if max_tokens <= thinking:
            return "", "length", max_tokens, max_tokens
        return content[: (max_tokens - thinking) * 4], "length", thinking, max_tokens

    def _complete(self, request: ChatRequest, answer: Answer) -> Completion:
        content, finish, reasoning, completion_tokens = self._spend_budget(answer.content, request.max_tokens)
        cached = self._cache.use(request.model, request.segments, request.cache_marks, self.cache_policy)
        usage = Usage(
            prompt_tokens=tokens(sum(len(segment) for segment in request.segments)),
            completion_tokens=completion_tokens,
            cache_read=cached.read,
            cache_write=cached.write,
            reasoning_tokens=reasoning,
        )
        return Completion(content, finish, usage, answer.parts, answer.label_prob, self._classes(request))

    def respond(self, request: ChatRequest) -> Outcome:
        fault = self._faults.draw()
        prompt = request.prompt
        if fault in FAULT_FAILURES:
            # A 429 comes back at once; a server that failed or is overloaded took its time to say so.
            delay = 0.0 if fault is Fault.RATE_LIMIT else self._latency_s()
            return Outcome(Failure(FAULT_FAILURES[fault]), fault.value, prompt[:80], delay)
        match, marked = self.data.find(prompt)
        if match is None and marked and self.config.unknown_text == "error":
            return Outcome(Failure(ErrorKind.BAD_REQUEST, UNKNOWN_TEXT_MESSAGE), "unknown_text", prompt[:80])
        if match is not None or marked:
            answer = self._label_answer(request, match, extract_marked(prompt) or "", fault)
        else:
            answer = self._rules_answer(prompt, fault)
        return Outcome(
            self._complete(request, answer),
            "hang" if fault is Fault.HANG else answer.outcome,
            answer.summary,
            self.config.hang_s if fault is Fault.HANG else self._latency_s(),
            truncate_body=fault is Fault.MALFORMED and self.config.malformed_mode == "body",
        )
