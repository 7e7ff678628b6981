"""Ollama's chat API as the oracle speaks it: ``POST /api/chat`` (what litellm's ``ollama_chat/`` calls).

A local Ollama needs no auth; with ``--api-key`` the server wants ``Authorization: Bearer`` as ollama.com's
hosted API does, and answers 401 ``{"error": "unauthorized"}`` without it. Structured output is ``format``:
a JSON schema object (structured outputs) or the string "json"; the completion budget is
``options.num_predict``. The reply has ``message``, ``done``, ``done_reason`` ("stop", or "length" when cut
off) and Ollama's counters (``prompt_eval_count``, ``eval_count``, durations in nanoseconds). Ollama reports
no cached tokens, so nothing is cached here. Errors are ``{"error": "..."}``; 503 "server busy" when
overloaded. Only ``stream: false`` is answered (Ollama streams by default; litellm turns it off). No
``/api/generate``, tools, images or thinking output. A stand-in answering from human labels, not an LLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from oracle.neutral import ChatRequest, Completion, ErrorKind, Failure, Structure
from oracle.protocols.base import (
    ErrorSpec,
    HttpRequest,
    Reply,
    Route,
    WireProtocol,
    chat_turns,
    gather_prompt,
    json_reply,
    key_problem,
    positive_int,
    schema_structure,
)
from oracle.protocols.openai import bearer_token

NS_PER_TOKEN = 10_000_000  # a made-up 100 tokens/s, so the duration counters are plausible, not measured
ERRORS: Mapping[ErrorKind, ErrorSpec] = {
    ErrorKind.BAD_REQUEST: ErrorSpec(400, "", "invalid request"),
    ErrorKind.UNAUTHORIZED: ErrorSpec(401, "", "unauthorized"),
    ErrorKind.FORBIDDEN: ErrorSpec(403, "", "forbidden"),
    ErrorKind.NOT_FOUND: ErrorSpec(404, "", "404 page not found"),
    ErrorKind.RATE_LIMITED: ErrorSpec(429, "", "too many requests (injected by the oracle)"),
    ErrorKind.SERVER_ERROR: ErrorSpec(500, "", "an internal error occurred (injected by the oracle)"),
    ErrorKind.OVERLOADED: ErrorSpec(503, "", "server busy, please try again.  maximum pending requests exceeded"),
}


def structure_of(format_: Any) -> Structure:
    if isinstance(format_, Mapping):
        return schema_structure(format_, "format.schema")
    if format_ == "json":
        return Structure("json", form="format.json")
    return Structure()


class OllamaProtocol(WireProtocol):
    name = "ollama"
    cache_mode = "none"

    def match(self, http: HttpRequest) -> Route | None:
        return {} if http.path == "/api/chat" else None

    def authenticate(self, http: HttpRequest, route: Route) -> tuple[str | None, Failure | None]:
        token = bearer_token(http.header("authorization"))
        seen = "authorization: Bearer" if token is not None else None
        # A local Ollama checks nothing, not even sk-bad; only a server told to want a key refuses.
        if self.config.api_key is None or key_problem(token, self.config.api_key, required=True) is None:
            return seen, None
        return seen, Failure(ErrorKind.UNAUTHORIZED)

    def parse(self, body: Any, route: Route) -> ChatRequest | Failure:
        if not isinstance(body, Mapping):
            return Failure(ErrorKind.BAD_REQUEST, "invalid request body")
        if not body.get("model"):
            return Failure(ErrorKind.BAD_REQUEST, "model is required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return Failure(ErrorKind.BAD_REQUEST, "messages are required")
        if body.get("stream", True) is not False:
            return Failure(ErrorKind.BAD_REQUEST, "the oracle stand-in does not stream: send \"stream\": false")
        prompt = gather_prompt((), chat_turns(messages))
        options = body.get("options") if isinstance(body.get("options"), Mapping) else {}
        return ChatRequest(
            model=str(body["model"]),
            prompt=prompt.last_user,
            segments=prompt.segments,
            structure=structure_of(body.get("format")),
            max_tokens=positive_int(options.get("num_predict")),
        )

    def render(self, request: ChatRequest, completion: Completion) -> dict[str, Any]:
        usage = completion.usage
        prompt_ns, eval_ns = usage.prompt_tokens * NS_PER_TOKEN // 10, usage.completion_tokens * NS_PER_TOKEN
        return {
            "model": request.model,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "message": {"role": "assistant", "content": completion.content},
            "done": True,
            "done_reason": completion.finish,
            "total_duration": prompt_ns + eval_ns,
            "load_duration": 0,
            "prompt_eval_count": usage.prompt_tokens,
            "prompt_eval_duration": prompt_ns,
            "eval_count": usage.completion_tokens,
            "eval_duration": eval_ns,
        }

    def error(self, failure: Failure, model: str) -> Reply:
        spec = ERRORS[failure.kind]
        return json_reply({"error": failure.message or spec.message}, spec.status)
