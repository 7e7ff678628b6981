"""Anthropic Messages as the oracle speaks it: ``POST /v1/messages``.

Auth is ``x-api-key`` (always required) plus an ``anthropic-version`` header (400 without one). ``system`` is
a string or text blocks, ``max_tokens`` is required, and structured output arrives in either of the two
forms litellm sends: native ``output_format`` (``{"type": "json_schema", "schema"}``, with the
``anthropic-beta: structured-outputs-...`` header; also the GA ``output_config.format``) for models litellm
knows support it, answered with a JSON text block; or a forced tool (``tool_choice: {"type": "tool",
"name": "json_tool_call"}``), answered with a ``tool_use`` block whose ``input`` is the label object. Blocks
marked ``cache_control`` are cache breakpoints: the first request with a marked prefix reports
``cache_creation_input_tokens``, later ones ``cache_read_input_tokens``, and ``input_tokens`` counts only
the rest, as Anthropic bills it. Errors are ``{"type": "error", "error": {"type", "message"}}``, 529
``overloaded_error`` when overloaded. No streaming, thinking blocks, images or real tool use. A stand-in
answering from human labels, not an LLM.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from oracle.neutral import ChatRequest, Completion, ErrorKind, Failure, Structure
from oracle.protocols.base import (
    RETRY_AFTER_S,
    ErrorSpec,
    HttpRequest,
    Reply,
    Route,
    WireProtocol,
    block_texts,
    json_reply,
    key_problem,
    new_id,
    positive_int,
    schema_structure,
    system_and_messages,
    tool_input,
)

VERSIONS = frozenset({"2023-06-01", "2023-01-01"})
STRUCTURED_OUTPUTS_BETA = "structured-outputs-"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
ERRORS: Mapping[ErrorKind, ErrorSpec] = {
    ErrorKind.BAD_REQUEST: ErrorSpec(400, "invalid_request_error", "Invalid request."),
    ErrorKind.UNAUTHORIZED: ErrorSpec(401, "authentication_error", "invalid x-api-key"),
    ErrorKind.FORBIDDEN: ErrorSpec(403, "permission_error", "Your API key does not have permission to use this."),
    ErrorKind.NOT_FOUND: ErrorSpec(404, "not_found_error", "Not found."),
    ErrorKind.RATE_LIMITED: ErrorSpec(
        429, "rate_limit_error", "This request would exceed the rate limit for your organization (injected)."
    ),
    ErrorKind.SERVER_ERROR: ErrorSpec(500, "api_error", "Internal server error (injected by the oracle)."),
    ErrorKind.OVERLOADED: ErrorSpec(529, "overloaded_error", "Overloaded"),
}


def forced_tool(body: Mapping[str, Any]) -> tuple[str, Any] | None:
    """(name, input_schema) of the tool ``tool_choice`` forces, if it forces one that ``tools`` defines."""
    choice = body.get("tool_choice")
    if not isinstance(choice, Mapping) or choice.get("type") != "tool":
        return None
    for tool in body.get("tools") or []:
        if isinstance(tool, Mapping) and tool.get("name") == choice.get("name"):
            return str(tool["name"]), tool.get("input_schema")
    return None


def structure_of(body: Mapping[str, Any]) -> Structure:
    output_format = body.get("output_format")
    config = body.get("output_config")
    if isinstance(config, Mapping) and isinstance(config.get("format"), Mapping):
        output_format, form = config["format"], "output_config.format"
    else:
        form = "output_format"
    if isinstance(output_format, Mapping) and output_format.get("type") == "json_schema":
        return schema_structure(output_format.get("schema"), form)
    tool = forced_tool(body)
    if tool is not None:
        return schema_structure(tool[1], "tool_choice.tool", tool=tool[0])
    return Structure()


def pieces(content: Any) -> Iterator[str | None]:
    """Text blocks in order, with a cache breakpoint after each block marked ``cache_control``."""
    for text, block in block_texts(content):
        yield text
        if block.get("cache_control"):
            yield None


class AnthropicProtocol(WireProtocol):
    name = "anthropic"
    cache_mode = "explicit"

    def match(self, http: HttpRequest) -> Route | None:
        return {} if http.path == "/v1/messages" else None

    def authenticate(self, http: HttpRequest, route: Route) -> tuple[str | None, Failure | None]:
        key = http.header("x-api-key")
        seen = "x-api-key" if key is not None else None
        problem = key_problem(key, self.config.api_key, required=True)
        if problem == "missing":
            return seen, Failure(ErrorKind.UNAUTHORIZED, "x-api-key header is required")
        if problem == "wrong":
            return seen, Failure(ErrorKind.UNAUTHORIZED)
        if http.header("anthropic-version") not in VERSIONS:
            # Anthropic checks the version after the key, and calls a missing one a bad request.
            return seen, Failure(ErrorKind.BAD_REQUEST, "anthropic-version: header is required")
        return seen, None

    def observe(self, http: HttpRequest) -> tuple[str, ...]:
        beta = http.header("anthropic-beta")
        return tuple(f"anthropic-beta: {name.strip()}" for name in beta.split(",")) if beta else ()

    def identity(self, body: Any, route: Route) -> tuple[str, Any]:
        if not isinstance(body, Mapping):
            return "", None
        return str(body.get("model", "")), [body.get("system"), body.get("messages")]

    def parse(self, body: Any, route: Route) -> ChatRequest | Failure:
        if not isinstance(body, Mapping):
            return Failure(ErrorKind.BAD_REQUEST, "request body must be a JSON object")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return Failure(ErrorKind.BAD_REQUEST, f"{name}: Field required")
        if not isinstance(body["messages"], list) or not body["messages"]:
            return Failure(ErrorKind.BAD_REQUEST, "messages: at least one message is required")
        max_tokens = positive_int(body.get("max_tokens"))
        if max_tokens is None:
            return Failure(ErrorKind.BAD_REQUEST, "max_tokens: must be greater than or equal to 1")
        if body.get("stream"):
            return Failure(ErrorKind.BAD_REQUEST, "stream: the oracle stand-in does not stream")
        prompt = system_and_messages(body, pieces)
        return ChatRequest(
            model=str(body["model"]),
            prompt=prompt.last_user,
            segments=prompt.segments,
            structure=structure_of(body),
            max_tokens=max_tokens,
            cache_marks=prompt.marks,
        )

    def render(self, request: ChatRequest, completion: Completion) -> dict[str, Any]:
        usage = completion.usage
        label_object = tool_input(request, completion)
        if label_object is not None:
            content: list[dict[str, Any]] = [
                {"type": "tool_use", "id": new_id("toolu_"), "name": request.structure.tool, "input": label_object}
            ]
            stop_reason = "tool_use"
        else:
            content = [{"type": "text", "text": completion.content}] if completion.content else []
            stop_reason = STOP_REASONS[completion.finish]
        return {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.uncached_prompt_tokens,
                "cache_creation_input_tokens": usage.cache_write,
                "cache_read_input_tokens": usage.cache_read,
                "cache_creation": {"ephemeral_5m_input_tokens": usage.cache_write, "ephemeral_1h_input_tokens": 0},
                "output_tokens": usage.completion_tokens,
                "service_tier": "standard",
            },
        }

    def success_headers(self) -> tuple[tuple[str, str], ...]:
        return (("request-id", new_id("req_")),)

    def error(self, failure: Failure, model: str) -> Reply:
        spec = ERRORS[failure.kind]
        request_id = new_id("req_")
        headers: tuple[tuple[str, str], ...] = (("request-id", request_id),)
        if failure.kind is ErrorKind.RATE_LIMITED:
            headers += (("retry-after", RETRY_AFTER_S),)
        body = {
            "type": "error",
            "error": {"type": failure.code or spec.name, "message": failure.message or spec.message},
            "request_id": request_id,
        }
        return json_reply(body, spec.status, headers)
