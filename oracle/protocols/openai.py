"""OpenAI Chat Completions as the oracle speaks it: ``POST /v1/chat/completions`` (also ``/chat/completions``).

The default protocol, and the one every existing test, benchmark and demo talks to. Auth is
``Authorization: Bearer``: with no ``--api-key`` any key but ``sk-bad`` passes and so does none (litellm's
``openai/`` with a base URL sends a placeholder). Structured output is ``response_format`` (``json_schema``
or ``json_object``); ``logprobs``/``top_logprobs`` are answered with a label token whose probability is the
oracle's confidence. Usage carries ``prompt_tokens_details.cached_tokens``, simulating OpenAI's automatic
prefix cache (prompts of 1,024 tokens or more, hits in steps of 128), and
``completion_tokens_details.reasoning_tokens``. Errors are OpenAI's ``{"error": {message, type, param,
code}}``. No streaming, tools, or n > 1. A stand-in answering from human labels, not an LLM.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from oracle.neutral import ChatRequest, Completion, ErrorKind, Failure, Structure
from oracle.protocols.base import (
    RETRY_AFTER_S,
    ErrorSpec,
    HttpRequest,
    Reply,
    Route,
    WireProtocol,
    chat_turns,
    gather_prompt,
    json_reply,
    key_problem,
    masked,
    new_id,
    positive_int,
    schema_structure,
)

ADVERTISED_MODELS = ("oracle-small", "oracle-large")
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS = frozenset({"/v1/models", "/models"})
MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY)."
)
ERRORS: Mapping[ErrorKind, ErrorSpec] = {
    ErrorKind.BAD_REQUEST: ErrorSpec(400, "invalid_request_error", "Invalid request."),
    ErrorKind.UNAUTHORIZED: ErrorSpec(401, "invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
    ErrorKind.FORBIDDEN: ErrorSpec(403, "invalid_request_error", "You are not allowed to use this model."),
    ErrorKind.NOT_FOUND: ErrorSpec(404, "invalid_request_error", "Not found.", "not_found"),
    ErrorKind.RATE_LIMITED: ErrorSpec(
        429, "rate_limit_error", "Rate limit reached (injected by the oracle).", "rate_limit_exceeded"
    ),
    ErrorKind.SERVER_ERROR: ErrorSpec(500, "server_error", "The server had an error (injected by the oracle)."),
    ErrorKind.OVERLOADED: ErrorSpec(
        503, "server_error", "The engine is currently overloaded, please try again later (injected by the oracle)."
    ),
}


def validation_error(body: Any) -> str | None:
    if not isinstance(body, Mapping):
        return "request body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    if body.get("stream"):
        return "stream=true is not supported by the oracle server"
    return None


def bearer_token(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def response_format_structure(response_format: Any) -> Structure:
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        return schema_structure(spec.get("schema") if isinstance(spec, Mapping) else None, "response_format.json_schema")
    if kind == "json_object":
        return Structure("json", form="response_format.json_object")
    return Structure()


def openai_usage(completion: Completion) -> dict[str, Any]:
    usage = completion.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def models_payload() -> dict[str, Any]:
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "oracle"} for name in ADVERTISED_MODELS]
    return {"object": "list", "data": data}


class OpenAIProtocol(WireProtocol):
    name = "openai"
    cache_granule = 128
    errors: ClassVar[Mapping[ErrorKind, ErrorSpec]] = ERRORS
    key_required: ClassVar[bool] = False

    def match(self, http: HttpRequest) -> Route | None:
        return {} if http.path in CHAT_PATHS else None

    def presented_key(self, http: HttpRequest) -> tuple[str | None, str | None]:
        """(the key, how it came: header name and scheme)."""
        token = bearer_token(http.header("authorization"))
        return token, "authorization: Bearer" if token is not None else None

    def authenticate(self, http: HttpRequest, route: Route) -> tuple[str | None, Failure | None]:
        key, seen = self.presented_key(http)
        problem = key_problem(key, self.config.api_key, self.key_required)
        if problem == "missing":
            return seen, Failure(ErrorKind.UNAUTHORIZED, self.missing_key_message())
        if problem == "wrong":
            return seen, Failure(ErrorKind.UNAUTHORIZED, self.wrong_key_message(key or ""))
        return seen, None

    def missing_key_message(self) -> str:
        return MISSING_KEY

    def wrong_key_message(self, key: str) -> str:
        return f"Incorrect API key provided: {masked(key)}."

    def parse(self, body: Any, route: Route) -> ChatRequest | Failure:
        problem = validation_error(body)
        if problem is not None:
            return Failure(ErrorKind.BAD_REQUEST, problem)
        prompt = gather_prompt((), chat_turns(body["messages"]))
        return ChatRequest(
            model=self.model_name(body, route),
            prompt=prompt.last_user,
            segments=prompt.segments,
            structure=response_format_structure(body.get("response_format")),
            max_tokens=positive_int(body.get("max_completion_tokens")) or positive_int(body.get("max_tokens")),
            logprobs=body.get("logprobs") is True,
            top_logprobs=int(body.get("top_logprobs") or 0),
        )

    def model_name(self, body: Mapping[str, Any], route: Route) -> str:
        return str(body.get("model", ""))

    def render(self, request: ChatRequest, completion: Completion) -> dict[str, Any]:
        logprobs = None
        if request.logprobs:
            logprobs = {"content": completion.logprob_tokens(request.top_logprobs), "refusal": None}
        return {
            "id": new_id("chatcmpl-oracle-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "system_fingerprint": "oracle-stand-in",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.content, "refusal": None},
                    "logprobs": logprobs,
                    "finish_reason": completion.finish,
                }
            ],
            "usage": openai_usage(completion),
        }

    def error_body(self, spec: ErrorSpec, message: str, code: str | None) -> dict[str, Any]:
        return {"error": {"message": message, "type": spec.name, "param": None, "code": code}}

    def error(self, failure: Failure, model: str) -> Reply:
        spec = self.errors[failure.kind]
        headers: tuple[tuple[str, str], ...] = ()
        if failure.kind is ErrorKind.RATE_LIMITED:
            headers = (("Retry-After", RETRY_AFTER_S), ("retry-after-ms", str(int(float(RETRY_AFTER_S) * 1000))))
        body = self.error_body(spec, failure.message or spec.message, failure.code or spec.code)
        return json_reply(body, spec.status, headers)

    def logprobs_refusal(self, model: str) -> Failure:
        # What OpenAI's reasoning models answer when asked for logprobs.
        return Failure(ErrorKind.BAD_REQUEST, "Unsupported parameter: 'logprobs' is not supported with this model.")

    def get(self, path: str) -> Reply | None:
        return json_reply(models_payload()) if path in MODELS_PATHS else None
