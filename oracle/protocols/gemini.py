"""Gemini ``generateContent`` (Google AI Studio) as the oracle speaks it: ``POST /v1beta/models/{model}:generateContent``.

Auth is an ``x-goog-api-key`` header or a ``key=`` query parameter; with none Google answers 403
PERMISSION_DENIED, with a bad one 400 INVALID_ARGUMENT "API key not valid" (reason ``API_KEY_INVALID``), as
the real API does. The body is ``contents`` of ``parts`` plus ``systemInstruction``/``system_instruction``
and ``generationConfig`` (either spelling: the API's JSON accepts both lowerCamel and snake_case field
names). Structured output is ``responseJsonSchema`` or ``responseSchema`` with ``responseMimeType``
"application/json"; ``responseLogprobs`` (and ``logprobs`` for alternatives) comes back as
``logprobsResult``, unless the server was started with ``--refuse-logprobs``, which answers 400 "Logprobs is
not enabled for models/..." as Gemini 2.5 models do. Usage is ``usageMetadata``, with
``cachedContentTokenCount`` from the simulated implicit cache and ``thoughtsTokenCount`` for the simulated
reasoning; a reply cut off by ``maxOutputTokens`` has ``finishReason: MAX_TOKENS`` and no parts. Errors are
google.rpc statuses: ``{"error": {"code", "message", "status", "details"}}``, 429 RESOURCE_EXHAUSTED, 503
UNAVAILABLE "The model is overloaded". No streaming, explicit ``cachedContents``, tools or safety blocks.
A stand-in answering from human labels, not an LLM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from oracle.neutral import ChatRequest, Completion, ErrorKind, Failure, Structure
from oracle.protocols.base import (
    RETRY_AFTER_S,
    ErrorSpec,
    HttpRequest,
    Reply,
    Route,
    WireProtocol,
    gather_prompt,
    json_reply,
    key_problem,
    new_id,
    positive_int,
    schema_structure,
)

PATH = re.compile(r"^/(?:v1beta|v1)/models/(?P<model>[^/:]+):generateContent$")
FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS"}
UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other "
    "form of API consumer identity to call this API."
)
ERRORS: dict[ErrorKind, ErrorSpec] = {
    ErrorKind.BAD_REQUEST: ErrorSpec(400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    ErrorKind.UNAUTHORIZED: ErrorSpec(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    ErrorKind.FORBIDDEN: ErrorSpec(403, "PERMISSION_DENIED", UNREGISTERED),
    ErrorKind.NOT_FOUND: ErrorSpec(404, "NOT_FOUND", "Requested entity was not found."),
    ErrorKind.RATE_LIMITED: ErrorSpec(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details (injected by the oracle).",
    ),
    ErrorKind.SERVER_ERROR: ErrorSpec(
        500, "INTERNAL", "An internal error has occurred. Please retry or report it (injected by the oracle)."
    ),
    ErrorKind.OVERLOADED: ErrorSpec(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def camel_keys(node: Any) -> dict[str, Any]:
    """One level of keys in lowerCamel spelling; values (schemas among them) are left as sent."""
    return {camel(key): value for key, value in node.items()} if isinstance(node, Mapping) else {}


def structure_of(config: Mapping[str, Any]) -> Structure:
    for name in ("responseJsonSchema", "responseSchema"):
        if isinstance(config.get(name), Mapping):
            return schema_structure(config[name], f"generationConfig.{name}")
    if config.get("responseMimeType") == "application/json":
        return Structure("json", form="generationConfig.responseMimeType")
    return Structure()


def parts_text(content: Any) -> list[str]:
    parts = content.get("parts") if isinstance(content, Mapping) else None
    return [str(part["text"]) for part in parts or [] if isinstance(part, Mapping) and "text" in part]


def logprobs_result(tokens: list[dict[str, Any]], top_k: int) -> dict[str, Any]:
    """OpenAI-shaped logprob entries as Gemini's ``logprobsResult``."""
    chosen = [{"token": entry["token"], "logProbability": entry["logprob"]} for entry in tokens]
    result: dict[str, Any] = {"chosenCandidates": chosen}
    if top_k > 0:
        result["topCandidates"] = [
            {"candidates": [{"token": alt["token"], "logProbability": alt["logprob"]} for alt in entry["top_logprobs"]]}
            for entry in tokens
        ]
    return result


class GeminiProtocol(WireProtocol):
    name = "gemini"

    def match(self, http: HttpRequest) -> Route | None:
        found = PATH.match(http.path)
        return {"model": found.group("model")} if found else None

    def authenticate(self, http: HttpRequest, route: Route) -> tuple[str | None, Failure | None]:
        key, seen = http.header("x-goog-api-key"), "x-goog-api-key"
        if key is None:
            key, seen = http.query_value("key"), "key (query)"
        problem = key_problem(key, self.config.api_key, required=True)
        if problem == "missing":
            return None, Failure(ErrorKind.FORBIDDEN)
        return seen, Failure(ErrorKind.UNAUTHORIZED) if problem == "wrong" else None

    def identity(self, body: Any, route: Route) -> tuple[str, Any]:
        body = camel_keys(body)
        return route.get("model", ""), [body.get("systemInstruction"), body.get("contents")]

    def parse(self, body: Any, route: Route) -> ChatRequest | Failure:
        if not isinstance(body, Mapping):
            return Failure(ErrorKind.BAD_REQUEST, "Invalid JSON payload received. Expected an object.")
        body = camel_keys(body)
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return Failure(ErrorKind.BAD_REQUEST, "* GenerateContentRequest.contents: contents is not specified")
        config = camel_keys(body.get("generationConfig"))
        turns = ((str(c.get("role", "user")) if isinstance(c, Mapping) else "", parts_text(c)) for c in contents)
        prompt = gather_prompt(parts_text(body.get("systemInstruction")), turns)
        return ChatRequest(
            model=route["model"],
            prompt=prompt.last_user,
            segments=prompt.segments,
            structure=structure_of(config),
            max_tokens=positive_int(config.get("maxOutputTokens")),
            logprobs=config.get("responseLogprobs") is True,
            top_logprobs=positive_int(config.get("logprobs")) or 0,
        )

    def render(self, request: ChatRequest, completion: Completion) -> dict[str, Any]:
        usage = completion.usage
        content: dict[str, Any] = {"role": "model"}
        if completion.content:
            # A reply whose budget went to thinking has no parts at all, which is what Gemini 2.5 sends.
            content["parts"] = [{"text": completion.content}]
        candidate: dict[str, Any] = {"content": content, "finishReason": FINISH_REASONS[completion.finish], "index": 0}
        if request.logprobs:
            tokens = completion.logprob_tokens(request.top_logprobs)
            candidate["logprobsResult"] = logprobs_result(tokens, request.top_logprobs)
            candidate["avgLogprobs"] = sum(entry["logprob"] for entry in tokens) / len(tokens) if tokens else 0.0
        metadata: dict[str, Any] = {
            "promptTokenCount": usage.prompt_tokens,
            "totalTokenCount": usage.total_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt_tokens}],
        }
        if usage.visible_completion_tokens:
            metadata["candidatesTokenCount"] = usage.visible_completion_tokens
        if usage.reasoning_tokens:
            metadata["thoughtsTokenCount"] = usage.reasoning_tokens
        if usage.cache_read:
            metadata["cachedContentTokenCount"] = usage.cache_read
            metadata["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage.cache_read}]
        return {
            "candidates": [candidate],
            "usageMetadata": metadata,
            "modelVersion": request.model,
            "responseId": new_id(""),
        }

    def error(self, failure: Failure, model: str) -> Reply:
        spec = ERRORS[failure.kind]
        details: list[dict[str, Any]] = []
        if failure.kind is ErrorKind.UNAUTHORIZED:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            )
        if failure.kind is ErrorKind.RATE_LIMITED:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{RETRY_AFTER_S}s"})
        error: dict[str, Any] = {"code": spec.status, "message": failure.message or spec.message, "status": spec.name}
        if details:
            error["details"] = details
        return json_reply({"error": error}, spec.status)

    def logprobs_refusal(self, model: str) -> Failure:
        return Failure(ErrorKind.BAD_REQUEST, f"Logprobs is not enabled for models/{model}")
