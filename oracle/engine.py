"""The oracle's chat-completion logic: request JSON in, a ``Reply`` (status, headers, body, delay) out.

It checks auth, draws the request's fault, finds the known text the prompt is about, and builds an
OpenAI-style completion: a labeling reply from the (noisy) human label, or classification rules when the
prompt is about no known text. It never sleeps or touches sockets: the HTTP layer waits ``delay_s`` and writes.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oracle import answers, rules
from oracle.config import OracleConfig
from oracle.data import LabeledData, Match, extract_marked
from oracle.faults import Fault, FaultDrawer
from oracle.stats import Stats

BAD_KEY = "sk-bad"
RETRY_AFTER_S = "0.1"
BAD_LABEL_PROB = 0.5


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


def error_reply(status: int, message: str, kind: str, code: str | None = None, **extra: Any) -> Reply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return Reply(status, json.dumps(body).encode("utf-8"), **extra)


def message_text(message: Any) -> str:
    """Text of one chat message; content may be a string or a list of OpenAI content parts."""
    if not isinstance(message, Mapping):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message)
    return message_text(messages[-1])


def bearer_token(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def validation_error(body: Any) -> str | None:
    if not isinstance(body, Mapping):
        return "request body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    if body.get("stream"):
        return "stream=true is not supported by the oracle server"
    return None


@dataclass(frozen=True)
class Answer:
    """What the model 'says' before faults and the HTTP envelope: content plus the label's place in it."""

    content: str
    outcome: str
    summary: str
    parts: tuple[str, str, str] | None = None
    label_prob: float = answers.LABEL_PROB


class Oracle:
    def __init__(self, config: OracleConfig, data: LabeledData) -> None:
        self.config = config
        self.data = data
        self.stats = Stats()
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

    def _label_answer(self, body: Mapping[str, Any], match: Match | None, marked_text: str, fault: Fault) -> Answer:
        classes = answers.classes_from_response_format(body.get("response_format")) or self.data.labels
        as_json = answers.wants_json(body.get("response_format"))
        model = str(body.get("model", ""))
        if match is not None:
            label, flipped = answers.noisy_label(
                match.label, classes, self.config.noise, self.config.seed, model, match.text
            )
            outcome, text = "label", match.text
        else:
            # The text is unknown: answer as an LLM would (some class), but deterministically and visibly so.
            draw, _ = answers.unit_hashes(self.config.seed, model, marked_text, "unknown")
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

    def _completion(self, body: Mapping[str, Any], answer: Answer, prompt_chars: int) -> dict[str, Any]:
        logprobs = None
        if body.get("logprobs") is True:
            top_k = int(body.get("top_logprobs") or 0)
            classes = answers.classes_from_response_format(body.get("response_format")) or self.data.labels
            tokens = (
                answers.logprobs_content(answer.parts, answer.label_prob, classes, top_k)
                if answer.parts is not None
                else answers.filler_logprobs(answer.content, top_k)
            )
            logprobs = {"content": tokens, "refusal": None}
        return {
            "id": "chatcmpl-oracle-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "system_fingerprint": "oracle-stand-in",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.content, "refusal": None},
                    "logprobs": logprobs,
                    "finish_reason": "stop",
                }
            ],
            "usage": answers.usage(prompt_chars, answer.content),
        }

    def chat(self, body: Any, authorization: str | None) -> Reply:
        problem = validation_error(body)
        model = str(body.get("model", "")) if isinstance(body, Mapping) else ""
        messages = body.get("messages") if isinstance(body, Mapping) else None
        if bearer_token(authorization) == BAD_KEY:
            self.stats.record(model, messages, "", "unauthorized", 401)
            return error_reply(401, "Incorrect API key provided: sk-bad.", "invalid_request_error", "invalid_api_key")
        if problem is not None:
            self.stats.record(model, messages, "", "bad_request", 400)
            return error_reply(400, problem, "invalid_request_error")
        assert isinstance(body, Mapping) and isinstance(messages, list)
        fault = self._faults.draw()
        prompt = last_user_text(messages)
        if fault is Fault.RATE_LIMIT:
            self.stats.record(model, messages, prompt[:80], fault.value, 429)
            headers = (("Retry-After", RETRY_AFTER_S), ("retry-after-ms", "100"))
            return error_reply(
                429,
                "Rate limit reached (injected by the oracle).",
                "rate_limit_error",
                "rate_limit_exceeded",
                headers=headers,
            )
        if fault is Fault.SERVER_ERROR:
            self.stats.record(model, messages, prompt[:80], fault.value, 500)
            return error_reply(
                500, "The server had an error (injected by the oracle).", "server_error", delay_s=self._latency_s()
            )
        match, marked = self.data.find(prompt)
        if match is None and marked and self.config.unknown_text == "error":
            self.stats.record(model, messages, prompt[:80], "unknown_text", 400)
            return error_reply(
                400, "the oracle has no label for the text between <text> markers", "invalid_request_error"
            )
        if match is not None or marked:
            answer = self._label_answer(body, match, extract_marked(prompt) or "", fault)
        else:
            answer = self._rules_answer(prompt, fault)
        outcome = "hang" if fault is Fault.HANG else answer.outcome
        self.stats.record(model, messages, answer.summary, outcome, 200)
        completion = self._completion(body, answer, sum(len(message_text(m)) for m in messages))
        payload = json.dumps(completion, ensure_ascii=False).encode("utf-8")
        if fault is Fault.MALFORMED and self.config.malformed_mode == "body":
            payload = payload[: len(payload) // 2]
        delay = self.config.hang_s if fault is Fault.HANG else self._latency_s()
        return Reply(200, payload, delay_s=delay)
