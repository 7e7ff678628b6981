"""Labeling: one LLM call per chunk under the written rules, parsed into a class or a recorded failure.

Pure prompt building and reply parsing come first; then ``label_chunk`` (one chunk, one retry for an
unusable reply) and ``label_many`` (a bounded-concurrency fan-out that appends every finished label to a
label log as it completes, so a kill loses at most the calls in flight and the last flush interval).
A reply that names no class is never guessed: after one fresh retry it is recorded as failed with the raw
reply. Which model labels which set is the pipeline's decision, not this module's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from core.errors import LLMAuthError, PermanentError, RetryableError
from core.llm.capabilities import larger_budget
from core.llm.client import label_schema
from core.llm.ledger import rates
from core.llm.prompt_cache import cache_rule, padding_pays
from core.llm.rules import Chat
from core.schema import Chunk, Label, LLMReply
from core.storage.jsonl_log import LogWriter, read_log

FORMAT_MODES = ("json_schema", "json_object", "none")
# After a stop request, how long calls in flight may still finish before they are cancelled: AWS Batch allows
# 30 s from SIGTERM to SIGKILL, and the state still has to be saved after this.
STOP_GRACE_S = 15.0
log = logging.getLogger("bootstrapper")


@dataclass(frozen=True)
class LabelPrompt:
    """Everything that is the same for every chunk of a run: a stable prompt prefix for provider caching."""

    classes: list[str]
    rules: str
    format_mode: str  # one of FORMAT_MODES
    # The provider caches only prefixes marked with cache_control (Anthropic; litellm makes it a Bedrock
    # cachePoint): the system message, the same for every chunk, is marked.
    mark_cache: bool = False
    # Copies of ``padding_block`` appended to the system message so that it reaches the provider's minimum
    # cacheable length, where ``core.llm.prompt_cache.padding_pays`` says that is cheaper (``pad_for_caching``).
    pad_blocks: int = 0

    def _answer(self) -> str:
        if self.format_mode == "none":
            return ("Answer in exactly two lines:\nReason: <at most 15 words>\n"
                    "Final label: <one class name, exactly as written>")
        return ('Answer with a JSON object {"reason": "<at most 15 words>", '
                '"label": "<one class name, exactly as written>"} and nothing else.')

    def system_message(self) -> str:
        listed = "\n".join(f"- {c}" for c in self.classes)
        message = (
            "You label texts for a text classifier. Follow these rules:\n\n"
            f"{self.rules.strip()}\n\n"
            f"The classes are:\n{listed}\n\n"
            "The user sends one text between <text> and </text>. Pick exactly one class for it. "
            f"{self._answer()}"
        )
        if self.pad_blocks <= 0:
            return message
        # The padding only restates what the message already says (the class list and the answer format),
        # numbered and fenced off as a reminder that adds no rule: the rules, which carry the meaning, are
        # not repeated (repeating them would weigh some over others), and nothing varies between calls, so
        # the prefix stays byte-identical and cacheable. It comes last, after the instructions it repeats.
        reminders = "".join(f"{i}. {self.padding_block()}\n" for i in range(1, self.pad_blocks + 1))
        return (f"{message}\n\n<reminders>\nThe same instructions once more, restated only; they add nothing "
                f"to the rules above.\n{reminders}</reminders>")

    def padding_block(self) -> str:
        return (f"The classes are exactly: {', '.join(self.classes)}. Pick exactly one class for the text "
                f"between <text> and </text>. {self._answer()}".replace("\n", " "))

    def messages(self, text: str) -> list[dict[str, Any]]:
        system: Any = self.system_message()
        if self.mark_cache:
            system = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": f"<text>\n{text}\n</text>"},
        ]

    def response_format(self) -> dict[str, Any] | None:
        if self.format_mode == "json_schema":
            return label_schema(self.classes)
        if self.format_mode == "json_object":
            return {"type": "json_object"}
        return None


def prompt_tokens(model: str, text: str) -> int:
    """Tokens of a system message ``text`` as litellm counts them for ``model`` (characters / 4 without a
    tokenizer)."""
    from core.llm.litellm_edge import litellm_module

    try:
        return int(litellm_module().token_counter(model=model, messages=[{"role": "system", "content": text}]))
    except Exception:  # noqa: BLE001 - tokenizers that need a download fail offline, variously
        return math.ceil(len(text) / 4)


def pad_for_caching(prompt: LabelPrompt, model: str, calls: int,
                    count: Callable[[str, str], int] = prompt_tokens) -> LabelPrompt:
    """``prompt`` padded past ``model``'s minimum cacheable prefix when ``prompt_cache.padding_pays`` says
    that is cheaper over ``calls`` calls; otherwise ``prompt`` itself.

    The padding is part of the messages, so a padded prompt has its own response-cache keys; the decision
    depends only on the model, the prompt and ``calls``, so the same run rebuilds the same prompt.
    """
    if cache_rule(model) is None or rates(model) is None:
        return prompt  # no caching or no price known: nothing to weigh, and no tokenizer run
    target = padding_pays(model, count(model, prompt.system_message()), calls)
    return prompt if target is None else pad_to_tokens(prompt, model, target, count)


def pad_to_tokens(prompt: LabelPrompt, model: str, target: int,
                  count: Callable[[str, str], int] = prompt_tokens) -> LabelPrompt:
    """``prompt`` with the fewest padding blocks that bring its system message to ``target`` tokens."""
    if count(model, prompt.system_message()) >= target:
        return prompt
    base = count(model, dataclasses.replace(prompt, pad_blocks=1).system_message())
    per_block = max(1, count(model, f"10. {prompt.padding_block()}\n") - 1)
    blocks = max(1, 1 + math.ceil((target - base) / per_block))
    while blocks > 1 and count(model, dataclasses.replace(prompt, pad_blocks=blocks - 1).system_message()) >= target:
        blocks -= 1
    while count(model, dataclasses.replace(prompt, pad_blocks=blocks).system_message()) < target and blocks < 1000:
        blocks += 1
    return dataclasses.replace(prompt, pad_blocks=blocks)


def match_class(value: Any, classes: list[str]) -> str | None:
    """Exact name, then case/quote/punctuation-insensitive name, then a 0-based class index."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return classes[value] if 0 <= value < len(classes) else None
    text = str(value).strip()
    if text in classes:
        return text
    norm = re.sub(r"^[\s\"'`*\[(<]+|[\s\"'`*.!,;:\])>]+$", "", text).casefold()
    for c in classes:
        if c.casefold() == norm:
            return c
    if norm.isdigit():
        return match_class(int(norm), classes)
    return None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_FINAL = re.compile(r"final\s+label\s*[:=]\s*(.+)", re.I)
_REASON = re.compile(r"reason\s*[:=]\s*(.+)", re.I)


def _json_candidates(text: str) -> list[str]:
    out = [text.strip()]
    out += [m.strip() for m in _FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        out.append(text[start:end + 1])
    return out


def parse_reply(text: str, classes: list[str]) -> tuple[str | None, str]:
    """``(label or None, reason)`` from any of the reply forms models produce.

    >>> parse_reply('{"reason": "prize offer", "label": "spam"}', ["ham", "spam"])
    ('spam', 'prize offer')
    >>> parse_reply("Reason: a friend\\nFinal label: Ham", ["ham", "spam"])
    ('ham', 'a friend')
    """
    for cand in _json_candidates(text):
        try:
            obj = json.loads(cand)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict) and "label" in obj:
            return match_class(obj["label"], classes), str(obj.get("reason", ""))[:500]
    reason_m = _REASON.search(text)
    reason = reason_m.group(1).strip()[:500] if reason_m else ""
    finals = _FINAL.findall(text)
    if finals:
        return match_class(finals[-1], classes), reason
    bare = match_class(text, classes)
    if bare is not None:
        return bare, reason
    # Last resort: exactly one class named as a whole word on the last non-empty line.
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        last = lines[-1]
        hits = [c for c in classes if re.search(rf"(?<!\w){re.escape(c)}(?!\w)", last, re.I)]
        if len(hits) == 1:
            return hits[0], reason
    return None, reason


def label_confidence(reply: LLMReply, label: str) -> float | None:
    """Probability of the label's first token, where the provider returned logprobs.

    Only tokens after the ``label`` key (or ``Final label``) count, so a word of the reason cannot match.
    """
    if not reply.logprobs:
        return None
    tokens = reply.logprobs
    start = 0
    for i, tok in enumerate(tokens):
        if "label" in str(tok.get("token", "")).lower():
            start = i + 1
    for tok in tokens[start:]:
        piece = str(tok.get("token", "")).strip().strip('":').strip()
        if piece and label.startswith(piece) and "logprob" in tok:
            return round(math.exp(float(tok["logprob"])), 6)
    return None


async def label_chunk(chat: Chat, endpoint: Any, prompt: LabelPrompt, chunk: Chunk, *, stage: str,
                      max_tokens: int = 400, temperature: float = 0.0, logprobs: bool = False) -> Label:
    """Label one chunk. Raises only ``LLMAuthError`` (which must stop the run).

    A reply that names no class is asked once more; when it was cut off by the length limit (a reasoning
    model that spent the budget thinking), the second ask gets a larger budget (``larger_budget``).
    """
    messages = prompt.messages(chunk.text)
    raw = ""
    length_retried = False
    for attempt in range(2):
        try:
            reply = await chat.chat(stage=stage, chunk_id=chunk.id, endpoint=endpoint, messages=messages,
                                    response_format=prompt.response_format(), max_tokens=max_tokens,
                                    temperature=temperature, logprobs=logprobs, attempt=attempt)
        except LLMAuthError:
            raise
        except RetryableError as exc:
            return Label(chunk.id, None, "failed", endpoint.model, error=f"provider unavailable: {exc}",
                         retryable=True)
        except PermanentError as exc:
            return Label(chunk.id, None, "failed", endpoint.model, error=f"request rejected: {exc}")
        raw = reply.text
        label, reason = parse_reply(reply.text, prompt.classes)
        if label is not None:
            return Label(chunk.id, label, "ok", endpoint.model, reason=reason,
                         confidence=label_confidence(reply, label), length_retried=length_retried)
        if reply.finish_reason == "length" and attempt == 0:
            log.debug("%s: reply to %s cut off at %d tokens with no label; asking again with %d", endpoint.model,
                     chunk.id, max_tokens, larger_budget(max_tokens))
            max_tokens, length_retried = larger_budget(max_tokens), True
    return Label(chunk.id, None, "failed", endpoint.model, raw=raw[:2000], length_retried=length_retried,
                 error="reply names no class (after one retry)"
                 + (", cut off by the length limit both times" if length_retried else ""))


def load_labels(storage: Any, prefix: str) -> dict[str, Label]:
    """Labels already recorded under ``prefix``; a later record for a chunk wins over an earlier one."""
    return {d["chunk_id"]: Label.from_dict(d) for d in read_log(storage, prefix)}


def needs_label(existing: Label | None) -> bool:
    """A chunk is done unless it has no record or failed only because the provider was unavailable."""
    return existing is None or (not existing.ok and existing.retryable)


async def label_many(chat: Chat, endpoint: Any, prompt: LabelPrompt, chunks: Iterable[Chunk], *,
                     stage: str, sink: LogWriter, workers: int = 50,
                     on_done: Callable[[Label], None] | None = None,
                     should_stop: Callable[[], bool] = lambda: False, grace_s: float = STOP_GRACE_S,
                     **call_opts: Any) -> list[Label]:
    """Label every chunk with at most ``workers`` calls in flight; each result goes to ``sink`` at once.

    Workers pull from a queue rather than one task per chunk, so memory stays flat for large sets.
    An auth error cancels the rest and propagates. ``should_stop`` (a SIGTERM) stops workers taking new chunks;
    calls in flight get ``grace_s`` seconds to finish and be recorded, then are cancelled (unpaid or unrecorded,
    they are made again on resume).
    """
    queue: asyncio.Queue[Chunk] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    results: list[Label] = []

    async def worker() -> None:
        while not should_stop():
            try:
                chunk = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            label = await label_chunk(chat, endpoint, prompt, chunk, stage=stage, **call_opts)
            sink.append(label.to_dict())
            results.append(label)
            if on_done is not None:
                on_done(label)

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(workers, queue.qsize())))]
    expired = asyncio.Event()

    async def cancel_after_grace() -> None:
        while not should_stop():
            await asyncio.sleep(0.1)
        await asyncio.sleep(grace_s)
        expired.set()
        for t in tasks:
            t.cancel()

    watcher = asyncio.create_task(cancel_after_grace())
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        if not expired.is_set():
            raise
        log.warning("stop: the labeling calls still in flight after %.0fs were cancelled", grace_s)
    finally:
        watcher.cancel()
        for t in tasks:
            t.cancel()
        sink.flush()
    return results
