"""Azure OpenAI as the oracle speaks it: ``POST /openai/deployments/{deployment}/chat/completions?api-version=``.

Also the newer version-less ``POST /openai/v1/chat/completions``. The body and reply are OpenAI's (see
``oracle.protocols.openai``) plus Azure's content-filter annotations; what differs is the URL (the
deployment names the model, ``api-version`` is required: without a valid one Azure answers 404 "Resource not
found"), the auth (an ``api-key`` header, or ``Authorization: Bearer`` with an Entra ID token; Azure always
needs one) and the error bodies (``{"error": {"code": "429", "message": ...}}``). litellm reaches it as
``azure/<deployment>`` with ``api_base`` and ``api_version``. A stand-in answering from human labels, not an LLM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from oracle.neutral import ChatRequest, Completion, ErrorKind, Failure
from oracle.protocols.base import ErrorSpec, HttpRequest, Route
from oracle.protocols.openai import OpenAIProtocol, bearer_token

DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$")
V1_PATH = "/openai/v1/chat/completions"
API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
NOT_FILTERED = {
    name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")
}
ERRORS: Mapping[ErrorKind, ErrorSpec] = {
    ErrorKind.BAD_REQUEST: ErrorSpec(400, "invalid_request_error", "Invalid request."),
    ErrorKind.UNAUTHORIZED: ErrorSpec(401, "401", ACCESS_DENIED),
    ErrorKind.FORBIDDEN: ErrorSpec(403, "403", "The principal does not have access to this deployment."),
    ErrorKind.NOT_FOUND: ErrorSpec(404, "404", "Resource not found"),
    ErrorKind.RATE_LIMITED: ErrorSpec(
        429,
        "429",
        "Requests to the ChatCompletions_Create Operation have exceeded call rate limit of your current OpenAI S0 "
        "pricing tier. Please retry after 1 second (injected by the oracle).",
    ),
    ErrorKind.SERVER_ERROR: ErrorSpec(
        500, "InternalServerError", "The server had an error while processing your request (injected by the oracle)."
    ),
    ErrorKind.OVERLOADED: ErrorSpec(
        503,
        "ServiceUnavailable",
        "The service is temporarily unable to process your request. Please try again later (injected by the oracle).",
    ),
}


class AzureProtocol(OpenAIProtocol):
    name = "azure"
    errors: ClassVar[Mapping[ErrorKind, ErrorSpec]] = ERRORS
    key_required = True

    def match(self, http: HttpRequest) -> Route | None:
        found = DEPLOYMENT_PATH.match(http.path)
        version = http.query_value("api-version") or ""
        if found is not None:
            return {"deployment": found.group("deployment"), "api_version": version}
        return {"api_version": version or "v1"} if http.path == V1_PATH else None

    def presented_key(self, http: HttpRequest) -> tuple[str | None, str | None]:
        key = http.header("api-key")
        if key is not None:
            return key.strip(), "api-key"
        token = bearer_token(http.header("authorization"))
        return token, "authorization: Bearer" if token is not None else None

    def missing_key_message(self) -> str:
        return ACCESS_DENIED

    def wrong_key_message(self, key: str) -> str:
        return ACCESS_DENIED

    def identity(self, body: Any, route: Route) -> tuple[str, Any]:
        model, messages = super().identity(body, route)
        return route.get("deployment", model), messages

    def parse(self, body: Any, route: Route) -> ChatRequest | Failure:
        version = route["api_version"]
        if version != "v1" and not API_VERSION.match(version):
            return Failure(ErrorKind.NOT_FOUND)
        return super().parse(body, route)

    def model_name(self, body: Mapping[str, Any], route: Route) -> str:
        return route.get("deployment") or str(body.get("model", ""))

    def render(self, request: ChatRequest, completion: Completion) -> dict[str, Any]:
        payload = super().render(request, completion)
        payload["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": NOT_FILTERED}]
        payload["choices"][0]["content_filter_results"] = NOT_FILTERED
        return payload

    def error_body(self, spec: ErrorSpec, message: str, code: str | None) -> dict[str, Any]:
        if spec.status == 400:
            return super().error_body(spec, message, code)
        # Azure's own front door answers auth, routing, quota and outages with just a code and a message.
        return {"error": {"code": code or spec.name, "message": message}}
