"""What every wire protocol of the oracle shares: the HTTP values, the protocol interface, the one request flow.

A protocol (one module each: ``openai``, ``azure``, ``anthropic``, ``bedrock``, ``gemini``, ``ollama``) says
which path is its chat endpoint, checks auth its provider's way, parses its provider's request JSON into the
engine's neutral ``ChatRequest``, and renders the engine's ``Completion`` or ``Failure`` in its provider's
shape. ``handle`` runs the same steps for all of them, in the order the OpenAI server always did: route, JSON,
auth, validation, then the engine; and it records every request in /stats. Small helpers used by several
protocols (content-block text, schema structures, key checks) live here too.

No sockets here: ``oracle.server`` turns bytes into an ``HttpRequest`` and writes the ``Reply``. The servers
are stand-ins answering from human labels, not LLMs, whatever protocol they speak.
"""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from oracle import answers
from oracle.cache import CachePolicy
from oracle.config import OracleConfig
from oracle.engine import Oracle
from oracle.neutral import ChatRequest, Completion, ErrorKind, Failure, Structure
from oracle.stats import RequestFacts

BAD_KEY = "sk-bad"  # rejected by every protocol, so a test can provoke a 401 without configuring a key
# Shorter than any provider's real pause, so tests and benchmarks that inject 429s do not sit waiting.
RETRY_AFTER_S = "0.1"
Route = dict[str, str]


@dataclass(frozen=True)
class ErrorSpec:
    """One row of a protocol's error table: status, the provider's name for the error (OpenAI ``type``,
    Anthropic ``error.type``, Bedrock exception, Gemini ``status``), its default wording, an extra code."""

    status: int
    name: str
    message: str
    code: str | None = None


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


@dataclass(frozen=True)
class HttpRequest:
    """One request as read off the socket; ``headers`` keys are lower case, ``query`` keeps repeats."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    raw_path: str = ""  # the path exactly as sent, percent-escapes and all (SigV4 signs it so)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


def json_reply(payload: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), headers)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def text_of(content: Any) -> str:
    """Text of a message's content: a string, or a list of blocks or parts carrying ``text`` (every provider)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def block_texts(content: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """(text, block) for each text-carrying block of a content list; a plain string is one block."""
    if isinstance(content, str):
        return [(content, {})]
    if not isinstance(content, list):
        return []
    return [(str(block["text"]), block) for block in content if isinstance(block, Mapping) and "text" in block]


def last_user(turns: Sequence[tuple[str, str]]) -> str:
    """The last user turn's text, else the last turn's: the prompt the data lookup reads."""
    for role, text in reversed(turns):
        if role == "user":
            return text
    return turns[-1][1] if turns else ""


@dataclass(frozen=True)
class Prompt:
    """A request's prompt in the engine's terms: texts in cache order, cache breakpoints, (role, text) turns."""

    segments: tuple[str, ...]
    marks: tuple[int, ...]
    turns: tuple[tuple[str, str], ...]

    @property
    def last_user(self) -> str:
        return last_user(self.turns)


Pieces = Iterable[str | None]  # a content's text blocks in order, None where a cache breakpoint falls


def gather_prompt(system: Pieces, messages: Iterable[tuple[str, Pieces]]) -> Prompt:
    """The ``Prompt`` of a system part and (role, pieces) messages, however the protocol spells its blocks."""
    segments: list[str] = []
    marks: list[int] = []
    turns: list[tuple[str, str]] = []

    def add(pieces: Pieces) -> str:
        texts = []
        for piece in pieces:
            if piece is None:
                marks.append(len(segments))
            else:
                segments.append(piece)
                texts.append(piece)
        return "".join(texts)

    add(system)
    turns.extend((role, add(pieces)) for role, pieces in messages)
    return Prompt(tuple(segments), tuple(marks), tuple(turns))


def system_and_messages(body: Mapping[str, Any], pieces: Callable[[Any], Pieces]) -> Prompt:
    """The prompt of a top-level ``system`` and ``messages`` of ``{"role", "content"}`` (Anthropic, Bedrock),
    ``pieces`` splitting each content the protocol's way."""
    messages = (m for m in body["messages"] if isinstance(m, Mapping))
    return gather_prompt(pieces(body.get("system")), ((str(m.get("role", "")), pieces(m.get("content"))) for m in messages))


def chat_turns(messages: Iterable[Any]) -> Iterator[tuple[str, Pieces]]:
    """OpenAI-style ``{"role", "content"}`` messages as one piece each (OpenAI, Azure, Ollama)."""
    for message in messages:
        if isinstance(message, Mapping):
            yield str(message.get("role", "")), [text_of(message.get("content"))]
        else:
            yield "", [""]


def schema_structure(schema: Any, form: str, tool: str | None = None) -> Structure:
    return Structure("schema", answers.classes_from_schema(schema), form, tool)


def tool_input(request: ChatRequest, completion: Completion) -> dict[str, Any] | None:
    """The label object to return through the forced tool; None when the answer goes back as text: no tool was
    forced, or the answer is malformed or truncated, which a model sends as text even when a tool was forced."""
    return completion.json_object() if request.structure.tool else None


def positive_int(value: Any) -> int | None:
    """An int > 0, or None; booleans are not numbers here even though Python says they are."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def key_problem(presented: str | None, expected: str | None, required: bool) -> str | None:
    """"missing", "wrong" or None (accepted). With no expected key, any key but ``BAD_KEY`` passes."""
    if not presented:
        return "missing" if required or expected is not None else None
    if presented == BAD_KEY or (expected is not None and presented != expected):
        return "wrong"
    return None


def masked(key: str) -> str:
    """Enough of a key to recognise it in an error message, never the whole secret."""
    return key if key == BAD_KEY else key[:3] + "***"


class WireProtocol(abc.ABC):
    """One provider's HTTP API as the oracle speaks it. Subclasses set the class attributes and the hooks."""

    name: ClassVar[str]
    cache_mode: ClassVar[str] = "auto"  # see oracle.cache
    cache_min_tokens: ClassVar[int] = 1024
    cache_granule: ClassVar[int] = 1

    def __init__(self, config: OracleConfig) -> None:
        self.config = config

    def cache_policy(self) -> CachePolicy:
        minimum = self.config.cache_min_tokens
        return CachePolicy(self.cache_mode, self.cache_min_tokens if minimum is None else minimum, self.cache_granule)

    @abc.abstractmethod
    def match(self, http: HttpRequest) -> Route | None:
        """Path parameters when ``http`` is a POST to this protocol's chat endpoint, else None."""

    @abc.abstractmethod
    def authenticate(self, http: HttpRequest, route: Route) -> tuple[str | None, Failure | None]:
        """(how the caller authenticated, for /stats: a header name and scheme, never a value; the failure)."""

    @abc.abstractmethod
    def parse(self, body: Any, route: Route) -> ChatRequest | Failure:
        """The neutral request, or the provider's 400 for a body it would refuse."""

    @abc.abstractmethod
    def render(self, request: ChatRequest, completion: Completion) -> dict[str, Any]:
        """The provider's success body."""

    @abc.abstractmethod
    def error(self, failure: Failure, model: str) -> Reply:
        """The provider's error status, headers and body for ``failure``."""

    def identity(self, body: Any, route: Route) -> tuple[str, Any]:
        """(model, the prompt's JSON as sent): what /stats keys a request by, even one about to be refused."""
        if not isinstance(body, Mapping):
            return "", None
        return str(body.get("model", "")), body.get("messages")

    def observe(self, http: HttpRequest) -> tuple[str, ...]:
        """Provider-specific facts worth counting in /stats, e.g. a beta header's value."""
        return ()

    def logprobs_refusal(self, model: str) -> Failure:
        return Failure(ErrorKind.BAD_REQUEST, f"logprobs are not supported by {model}")

    def success_headers(self) -> tuple[tuple[str, str], ...]:
        return ()

    def get(self, path: str) -> Reply | None:
        """A GET route of the provider's API (OpenAI's model list), else None."""
        return None


def handle(protocol: WireProtocol, oracle: Oracle, http: HttpRequest) -> Reply:
    """One POST, whatever the protocol: route, JSON, auth, validation, engine, rendering, /stats."""
    route = protocol.match(http)
    if route is None:
        return protocol.error(Failure(ErrorKind.NOT_FOUND, f"no route {http.method} {http.path}"), "")
    try:
        body = json.loads(http.body) if http.body else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return protocol.error(Failure(ErrorKind.BAD_REQUEST, "request body is not valid JSON"), "")
    model, key = protocol.identity(body, route)
    seen, refused = protocol.authenticate(http, route)
    facts = RequestFacts(auth=seen, extras=protocol.observe(http))

    def fail(failure: Failure, outcome: str, summary: str = "", delay_s: float = 0.0) -> Reply:
        reply = replace(protocol.error(failure, model), delay_s=delay_s)
        oracle.stats.record(model, key, summary, outcome, reply.status, facts)
        return reply

    if refused is not None:
        return fail(refused, "unauthorized")
    request = protocol.parse(body, route)
    if isinstance(request, Failure):
        return fail(request, "bad_request")
    facts = replace(facts, structure=request.structure.form, logprobs=request.logprobs)
    if request.logprobs and oracle.config.refuse_logprobs:
        return fail(protocol.logprobs_refusal(request.model), "bad_request", request.prompt[:80])
    outcome = oracle.respond(request)
    if isinstance(outcome.result, Failure):
        return fail(outcome.result, outcome.outcome, outcome.summary, outcome.delay_s)
    completion = outcome.result
    payload = json.dumps(protocol.render(request, completion), ensure_ascii=False).encode("utf-8")
    if outcome.truncate_body:
        payload = payload[: len(payload) // 2]
    usage = completion.usage
    facts = replace(facts, finish=completion.finish, cache_read=usage.cache_read, cache_write=usage.cache_write)
    oracle.stats.record(model, key, outcome.summary, outcome.outcome, 200, facts)
    return Reply(200, payload, protocol.success_headers(), outcome.delay_s)
