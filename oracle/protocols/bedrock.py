"""Amazon Bedrock Converse as the oracle speaks it: ``POST /model/{modelId}/converse``.

Auth is AWS Signature Version 4 (``oracle.protocols.sigv4``): the ``Authorization: AWS4-HMAC-SHA256
Credential=...`` header must be present, well formed, scoped to the ``bedrock`` service, signed over ``host``
and ``x-amz-date`` within five minutes of the server's clock; with ``--api-key`` the credential's access key
id must be that one, and with ``--aws-secret-access-key`` the signature itself is recomputed and checked. A
Bearer token (Bedrock API keys) is refused: this stand-in speaks SigV4 only, so a client that lost its
signing shows up as an auth error. Structured output arrives as litellm sends it: a forced tool
(``toolConfig.toolChoice.tool``, answered with a ``toolUse`` block) or, for models litellm knows support it,
``outputConfig.textFormat`` with a JSON schema (answered with JSON text). ``cachePoint`` blocks are cache
breakpoints, reported as ``usage.cacheReadInputTokens``/``cacheWriteInputTokens`` with ``inputTokens``
counting only the rest. Errors are ``{"message"}`` with the exception's name in ``x-amzn-ErrorType``
(``ThrottlingException`` 429, ``ServiceUnavailableException`` 503, ...). No streaming, invoke API,
guardrails or images. A stand-in answering from human labels, not an LLM.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from oracle.neutral import ChatRequest, Completion, ErrorKind, Failure, Structure
from oracle.protocols import sigv4
from oracle.protocols.base import (
    ErrorSpec,
    HttpRequest,
    Reply,
    Route,
    WireProtocol,
    json_reply,
    key_problem,
    new_id,
    positive_int,
    schema_structure,
    system_and_messages,
    tool_input,
)

MAX_SKEW_S = 300.0
ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
INVALID_TOKEN = "The security token included in the request is invalid."
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access "
    "Key and signing method. Consult the service documentation for details."
)
ERRORS: Mapping[ErrorKind, ErrorSpec] = {
    ErrorKind.BAD_REQUEST: ErrorSpec(400, "ValidationException", "Input validation failed."),
    ErrorKind.UNAUTHORIZED: ErrorSpec(403, "UnrecognizedClientException", INVALID_TOKEN),
    ErrorKind.FORBIDDEN: ErrorSpec(403, "AccessDeniedException", "You don't have access to the model."),
    ErrorKind.NOT_FOUND: ErrorSpec(404, "ResourceNotFoundException", "The requested resource was not found."),
    ErrorKind.RATE_LIMITED: ErrorSpec(
        429, "ThrottlingException", "Too many requests, please wait before trying again. (injected by the oracle)"
    ),
    ErrorKind.SERVER_ERROR: ErrorSpec(
        500, "InternalServerException", "The server encountered an internal error (injected by the oracle)."
    ),
    ErrorKind.OVERLOADED: ErrorSpec(
        503, "ServiceUnavailableException", "Bedrock is unable to process your request. (injected by the oracle)"
    ),
}


def amz_time(value: str | None) -> float | None:
    try:
        return datetime.strptime(value or "", "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def forced_tool(tool_config: Any) -> tuple[str, Any] | None:
    """(name, JSON schema) of the tool ``toolChoice`` forces: ``{"tool": {name}}``, or ``{"any": {}}`` over one tool."""
    if not isinstance(tool_config, Mapping):
        return None
    specs = [
        tool["toolSpec"] for tool in tool_config.get("tools") or [] if isinstance(tool, Mapping) and "toolSpec" in tool
    ]
    choice = tool_config.get("toolChoice") or {}
    wanted = choice.get("tool", {}).get("name") if isinstance(choice, Mapping) else None
    if wanted is None and isinstance(choice, Mapping) and "any" in choice and len(specs) == 1:
        wanted = specs[0].get("name")
    for spec in specs:
        if spec.get("name") == wanted:
            schema = spec.get("inputSchema")
            return str(wanted), schema.get("json") if isinstance(schema, Mapping) else None
    return None


def structure_of(body: Mapping[str, Any]) -> Structure:
    text_format = (body.get("outputConfig") or {}).get("textFormat")
    if isinstance(text_format, Mapping) and text_format.get("type") == "json_schema":
        schema = ((text_format.get("structure") or {}).get("jsonSchema") or {}).get("schema")
        try:
            # Converse carries the schema as a JSON string, not an object.
            schema = json.loads(schema) if isinstance(schema, str) else schema
        except json.JSONDecodeError:
            schema = None
        return schema_structure(schema, "outputConfig.textFormat")
    tool = forced_tool(body.get("toolConfig"))
    if tool is not None:
        return schema_structure(tool[1], "toolConfig.toolChoice", tool=tool[0])
    return Structure()


def pieces(blocks: Any) -> Iterator[str | None]:
    """Text blocks in order, None for each ``cachePoint`` block."""
    for block in blocks if isinstance(blocks, list) else []:
        if isinstance(block, Mapping) and "text" in block:
            yield str(block["text"])
        elif isinstance(block, Mapping) and "cachePoint" in block:
            yield None


class BedrockProtocol(WireProtocol):
    name = "bedrock"
    cache_mode = "explicit"

    def match(self, http: HttpRequest) -> Route | None:
        parts = http.path.split("/")
        if len(parts) == 4 and parts[0] == "" and parts[1] == "model" and parts[3] == "converse" and parts[2]:
            return {"model": unquote(parts[2])}
        return None

    def authenticate(self, http: HttpRequest, route: Route) -> tuple[str | None, Failure | None]:
        header = http.header("authorization")
        if header is not None and header.lower().startswith("bearer "):
            return "authorization: Bearer", Failure(ErrorKind.UNAUTHORIZED)
        parsed = sigv4.parse_authorization(header)
        if isinstance(parsed, str):
            if header is None:
                return None, Failure(ErrorKind.FORBIDDEN, parsed, "MissingAuthenticationTokenException")
            return "authorization", Failure(ErrorKind.BAD_REQUEST, parsed, "IncompleteSignatureException")
        seen = "authorization: " + sigv4.ALGORITHM
        return seen, self._signature_problem(http, parsed)

    def _signature_problem(self, http: HttpRequest, auth: sigv4.SigV4Header) -> Failure | None:
        def invalid(message: str) -> Failure:
            return Failure(ErrorKind.UNAUTHORIZED, message, "InvalidSignatureException")

        if auth.service != "bedrock":
            return invalid("Credential should be scoped to correct service: 'bedrock'.")
        if not {"host", "x-amz-date"} <= set(auth.signed_headers):
            return Failure(
                ErrorKind.BAD_REQUEST, "'Host' and 'X-Amz-Date' must be SignedHeaders.", "IncompleteSignatureException"
            )
        signed_at = amz_time(http.header("x-amz-date"))
        if signed_at is None or not (http.header("x-amz-date") or "").startswith(auth.date):
            return invalid("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.")
        if abs(time.time() - signed_at) > MAX_SKEW_S:
            return invalid(f"Signature expired: {http.header('x-amz-date')} is more than 5 minutes from now.")
        if key_problem(auth.access_key, self.config.api_key, required=True) is not None:
            return Failure(ErrorKind.UNAUTHORIZED)
        secret = self.config.aws_secret_access_key
        if secret is not None:
            expected = sigv4.signature(
                auth, secret, http.method, http.raw_path or http.path, http.query, http.headers, http.body
            )
            if expected != auth.signature:
                return invalid(BAD_SIGNATURE)
        return None

    def identity(self, body: Any, route: Route) -> tuple[str, Any]:
        if not isinstance(body, Mapping):
            return route.get("model", ""), None
        return route.get("model", ""), [body.get("system"), body.get("messages")]

    def parse(self, body: Any, route: Route) -> ChatRequest | Failure:
        if not isinstance(body, Mapping):
            return Failure(ErrorKind.BAD_REQUEST, "The request body must be a JSON object.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return Failure(
                ErrorKind.BAD_REQUEST,
                "1 validation error detected: Value at 'messages' failed to satisfy constraint: "
                "Member must have length greater than or equal to 1",
            )
        if not isinstance(messages[0], Mapping) or messages[0].get("role") != "user":
            return Failure(
                ErrorKind.BAD_REQUEST,
                "A conversation must start with a user message. Try again with a conversation that starts with a "
                "user message.",
            )
        prompt = system_and_messages(body, pieces)
        inference = body.get("inferenceConfig") or {}
        return ChatRequest(
            model=route["model"],
            prompt=prompt.last_user,
            segments=prompt.segments,
            structure=structure_of(body),
            max_tokens=positive_int(inference.get("maxTokens")) if isinstance(inference, Mapping) else None,
            cache_marks=prompt.marks,
        )

    def render(self, request: ChatRequest, completion: Completion) -> dict[str, Any]:
        usage = completion.usage
        label_object = tool_input(request, completion)
        if label_object is not None:
            tool_use = {"toolUseId": new_id("tooluse_"), "name": request.structure.tool, "input": label_object}
            content: list[dict[str, Any]] = [{"toolUse": tool_use}]
            stop_reason = "tool_use"
        else:
            content = [{"text": completion.content}] if completion.content else []
            stop_reason = STOP_REASONS[completion.finish]
        counts: dict[str, int] = {
            "inputTokens": usage.uncached_prompt_tokens,
            "outputTokens": usage.completion_tokens,
            "totalTokens": usage.total_tokens,
        }
        if request.cache_marks:
            counts |= {"cacheReadInputTokens": usage.cache_read, "cacheWriteInputTokens": usage.cache_write}
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason,
            "usage": counts,
            "metrics": {"latencyMs": int(self.config.latency_ms)},
        }

    def success_headers(self) -> tuple[tuple[str, str], ...]:
        return (("x-amzn-RequestId", new_id("")),)

    def error(self, failure: Failure, model: str) -> Reply:
        spec = ERRORS[failure.kind]
        headers = (("x-amzn-RequestId", new_id("")), ("x-amzn-ErrorType", (failure.code or spec.name) + ERROR_TYPE_SUFFIX))
        return json_reply({"message": failure.message or spec.message}, spec.status, headers)
