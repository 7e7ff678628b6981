"""The oracle LLM server (a stand-in for a real LLM), exercised through litellm as the pipeline will use it.

Each test starts the server as a process (``oracle_server`` fixture) and talks to it over HTTP: labeling
replies (JSON schema and plain text), deterministic noise, every fault mode, auth, rules replies, /stats,
and throughput at 200 ms latency. A few pure helpers are tested directly where HTTP would add nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import litellm
import pytest

from oracle.answers import classes_from_response_format, noisy_label
from oracle.faults import Fault, FaultRates, pick_fault
from oracle.rules import class_names_from_prompt
from tests.fixtures.llm_server import OracleHandle, shared_data_dir

# litellm lazily imports a module whose TypedDict makes pydantic warn at import time; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning")

StartOracle = Callable[..., OracleHandle]
SMS_CLASSES = ["ham", "spam"]
TREC_CLASSES = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


def read_jsonl(name: str, limit: int | None = None) -> list[dict[str, str]]:
    lines = (shared_data_dir() / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:limit]]


def labeling_prompt(text: str) -> str:
    return f"Classify the text below.\n\n<text>\n{text}\n</text>\n\nAnswer with a reason and a final label."


def schema_format(classes: list[str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"reason": {"type": "string"}, "label": {"type": "string", "enum": classes}},
        "required": ["reason", "label"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "label", "schema": schema, "strict": True}}


async def acall(handle: OracleHandle, prompt: str, model: str = "oracle-small", **kwargs: Any) -> Any:
    kwargs.setdefault("api_key", "sk-test")
    return await litellm.acompletion(
        model=f"openai/{model}",
        api_base=handle.base_url,
        messages=[{"role": "user", "content": prompt}],
        max_retries=0,
        **kwargs,
    )


def call(handle: OracleHandle, prompt: str, **kwargs: Any) -> Any:
    return asyncio.run(acall(handle, prompt, **kwargs))


def call_many(handle: OracleHandle, prompts: list[str], concurrency: int = 20, **kwargs: Any) -> list[Any]:
    async def run() -> list[Any]:
        gate = asyncio.Semaphore(concurrency)

        async def one(prompt: str) -> Any:
            async with gate:
                return await acall(handle, prompt, **kwargs)

        return await asyncio.gather(*(one(prompt) for prompt in prompts))

    return asyncio.run(run())


def content_of(response: Any) -> str:
    return response.choices[0].message.content


def json_label(response: Any) -> str:
    return json.loads(content_of(response))["label"]


@pytest.fixture(scope="module")
def small_sms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 SMS rows: enough for every test that does not need the full file, and a fast server start."""
    path = tmp_path_factory.mktemp("oracle-data") / "sms80.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in read_jsonl("sms_spam.jsonl", 80)), encoding="utf-8")
    return path


def test_startup_line_says_it_is_a_stand_in(sms_oracle: OracleHandle) -> None:
    assert "a stand-in for a real LLM" in sms_oracle.log()
    assert sms_oracle.base_url.endswith("/v1") and str(sms_oracle.base_url.split(":")[-1].split("/")[0]).isdigit()


def test_json_schema_reply_gives_the_human_label(sms_oracle: OracleHandle) -> None:
    rows = read_jsonl("sms_spam.jsonl", 40)
    responses = call_many(
        sms_oracle, [labeling_prompt(row["text"]) for row in rows], response_format=schema_format(SMS_CLASSES)
    )
    for row, response in zip(rows, responses, strict=True):
        reply = json.loads(content_of(response))
        assert reply["label"] == row["label"]
        assert reply["reason"]
        assert response.choices[0].finish_reason == "stop"
        assert response.model.endswith("oracle-small")
        assert response.id
    prompt_chars = len(labeling_prompt(rows[0]["text"]))
    assert responses[0].usage.prompt_tokens == pytest.approx(prompt_chars / 4, abs=1)
    assert responses[0].usage.completion_tokens == pytest.approx(len(content_of(responses[0])) / 4, abs=1)


def test_schema_enum_spelling_is_used(sms_oracle: OracleHandle) -> None:
    row = next(row for row in read_jsonl("sms_spam.jsonl", 50) if row["label"] == "spam")
    response = call(sms_oracle, labeling_prompt(row["text"]), response_format=schema_format(["HAM", "SPAM"]))
    assert json_label(response) == "SPAM"


def test_plain_text_reply(sms_oracle: OracleHandle) -> None:
    rows = read_jsonl("sms_spam.jsonl", 10)
    for row, response in zip(rows, call_many(sms_oracle, [labeling_prompt(row["text"]) for row in rows]), strict=True):
        match = re.fullmatch(r"Reason: .+\nFinal label: (\w+)", content_of(response), flags=re.DOTALL)
        assert match is not None, content_of(response)
        assert match.group(1) == row["label"]


@pytest.mark.parametrize(
    "make_prompt",
    [
        pytest.param(lambda text: labeling_prompt("  " + text.replace(" ", "   ") + " "), id="whitespace-normalised"),
        pytest.param(lambda text: f"Please classify this message: {text}\nReply briefly.", id="no-markers-contained"),
    ],
)
def test_text_found_without_exact_markers(sms_oracle: OracleHandle, make_prompt: Callable[[str], str]) -> None:
    row = next(row for row in read_jsonl("sms_spam.jsonl", 50) if row["label"] == "spam" and len(row["text"]) > 40)
    assert json_label(call(sms_oracle, make_prompt(row["text"]), response_format={"type": "json_object"})) == "spam"


def test_unknown_marked_text_is_guessed_or_refused(oracle_server: StartOracle, small_sms: Path) -> None:
    prompt = labeling_prompt("This sentence is in no dataset at all, I promise.")
    guessing = oracle_server(small_sms, latency_ms=0)
    assert json_label(call(guessing, prompt, response_format=schema_format(SMS_CLASSES))) in SMS_CLASSES
    assert guessing.stats()["by_outcome"] == {"unknown_text": 1}
    strict = oracle_server(small_sms, latency_ms=0, unknown_text="error")
    with pytest.raises(litellm.BadRequestError):
        call(strict, prompt)


@pytest.mark.slow
def test_noise_rate_is_honoured_and_deterministic(oracle_server: StartOracle) -> None:
    rows = read_jsonl("trec6.jsonl", 300)
    handle = oracle_server(shared_data_dir() / "trec6.jsonl", noise=0.2, latency_ms=0, seed=7)
    prompts = [labeling_prompt(row["text"]) for row in rows]
    options = {"response_format": schema_format(TREC_CLASSES), "logprobs": True, "concurrency": 50}
    small = call_many(handle, prompts, **options)
    small_again = call_many(handle, prompts, **options)
    large = call_many(handle, prompts, model="oracle-large", **options)

    small_labels = [json_label(response) for response in small]
    assert small_labels == [json_label(response) for response in small_again]
    flipped_small = {i for i, row in enumerate(rows) if small_labels[i] != row["label"]}
    flipped_large = {i for i, row in enumerate(rows) if json_label(large[i]) != row["label"]}
    # Binomial(300, 0.2): sd ~ 0.023, so +-0.07 is three sd.
    for flipped in (flipped_small, flipped_large):
        assert 0.13 <= len(flipped) / len(rows) <= 0.27
    assert flipped_small != flipped_large, "two models must err on different texts"
    assert set(small_labels) <= set(TREC_CLASSES)
    # Flips go to any other class, not always to the same one.
    assert len({small_labels[i] for i in flipped_small}) >= 4

    for i, response in enumerate(small):
        label_token = [t for t in response.choices[0].logprobs.content if t.token == small_labels[i]][-1]
        expected = math.log(0.6) if i in flipped_small else math.log(0.9)
        assert label_token.logprob == pytest.approx(expected)

    stats = handle.stats()
    assert stats["total_requests"] == 900
    assert stats["by_model"] == {"oracle-small": 600, "oracle-large": 300}
    assert stats["distinct_prompts"] == 600 and stats["repeated_prompts"] == 300


def _fault_server(oracle_server: StartOracle, data: Path, **options: Any) -> OracleHandle:
    return oracle_server(data, latency_ms=0, noise=0, **options)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"rate_429": 1}, litellm.RateLimitError, id="429"),
        pytest.param({"rate_500": 1}, litellm.InternalServerError, id="500"),
        pytest.param({"rate_hang": 1, "hang_s": 5}, litellm.Timeout, id="hang"),
    ],
)
def test_error_faults_raise_in_litellm(
    oracle_server: StartOracle, small_sms: Path, options: dict[str, Any], expected: type[Exception]
) -> None:
    handle = _fault_server(oracle_server, small_sms, **options)
    row = read_jsonl("sms_spam.jsonl", 1)[0]
    started = time.monotonic()
    with pytest.raises(expected) as caught:
        call(handle, labeling_prompt(row["text"]), timeout=0.5)
    assert time.monotonic() - started < 4
    if expected is litellm.RateLimitError:
        assert caught.value.litellm_response_headers["retry-after"] == "0.1"
    assert handle.stats(prompts=False)["total_requests"] == 1


def test_malformed_content_is_not_json(oracle_server: StartOracle, small_sms: Path) -> None:
    handle = _fault_server(oracle_server, small_sms, rate_malformed=1)
    row = read_jsonl("sms_spam.jsonl", 1)[0]
    response = call(handle, labeling_prompt(row["text"]), response_format=schema_format(SMS_CLASSES))
    with pytest.raises(json.JSONDecodeError):
        json.loads(content_of(response))
    plain = content_of(call(handle, labeling_prompt(row["text"])))
    assert "Final label:" not in plain
    assert handle.stats()["by_outcome"] == {"malformed": 2}


def test_malformed_body_breaks_the_client(oracle_server: StartOracle, small_sms: Path) -> None:
    handle = _fault_server(oracle_server, small_sms, rate_malformed=1, malformed_mode="body")
    row = read_jsonl("sms_spam.jsonl", 1)[0]
    # litellm reports an unparsable 200 body as an InternalServerError; the server's stats show it sent a 200.
    with pytest.raises(litellm.InternalServerError):
        call(handle, labeling_prompt(row["text"]))
    assert handle.stats(prompts=False)["by_status"] == {"200": 1}
    request = urllib.request.Request(
        handle.base_url + "/chat/completions",
        data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as raw:
        assert raw.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw.read())


def test_badlabel_is_outside_the_classes(oracle_server: StartOracle, small_sms: Path) -> None:
    handle = _fault_server(oracle_server, small_sms, rate_badlabel=1)
    row = read_jsonl("sms_spam.jsonl", 1)[0]
    label = json_label(call(handle, labeling_prompt(row["text"]), response_format=schema_format(SMS_CLASSES)))
    assert label not in SMS_CLASSES
    assert handle.stats()["by_outcome"] == {"badlabel": 1}


def test_fault_rates_mix_as_configured(oracle_server: StartOracle, small_sms: Path) -> None:
    handle = _fault_server(oracle_server, small_sms, rate_429=0.3, rate_500=0.2, seed=3)
    rows = read_jsonl("sms_spam.jsonl", 80)

    async def run() -> list[Any]:
        calls = [acall(handle, labeling_prompt(row["text"])) for row in rows]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(run())
    limited = sum(isinstance(result, litellm.RateLimitError) for result in results)
    failed = sum(isinstance(result, litellm.InternalServerError) for result in results)
    assert handle.stats()["by_outcome"] == {
        "rate_limited": limited,
        "server_error": failed,
        "label": 80 - limited - failed,
    }
    assert 10 <= limited <= 40 and 4 <= failed <= 30


def test_bad_key_is_rejected_and_others_accepted(sms_oracle: OracleHandle) -> None:
    prompt = labeling_prompt(read_jsonl("sms_spam.jsonl", 1)[0]["text"])
    with pytest.raises(litellm.AuthenticationError):
        call(sms_oracle, prompt, api_key="sk-bad")
    assert content_of(call(sms_oracle, prompt, api_key="sk-anything-else"))
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}]}).encode()
    request = urllib.request.Request(sms_oracle.base_url + "/chat/completions", data=body)  # no key at all
    with urllib.request.urlopen(request, timeout=5) as raw:
        assert raw.status == 200


@pytest.mark.parametrize(
    ("data_file", "prompt", "classes"),
    [
        pytest.param("sms_spam.jsonl", "Write labeling rules.\nClasses: spam, ham\n", SMS_CLASSES, id="sms-inline"),
        pytest.param("sms_spam.jsonl", "Write rules for classifying text messages.", SMS_CLASSES, id="sms-from-data"),
        pytest.param(
            "trec6.jsonl", "Write rules.\nClasses: ABBR, DESC, ENTY, HUM, LOC, NUM\n", TREC_CLASSES, id="trec-inline"
        ),
        pytest.param(
            "trec6.jsonl",
            "Questions by answer type.\nClasses:\n"
            + "".join(f"- {name}: questions whose answer is a {name.lower()}\n" for name in TREC_CLASSES)
            + "\nWrite rules.",
            TREC_CLASSES,
            id="trec-list",
        ),
    ],
)
def test_rules_reply_names_every_class(
    oracle_server: StartOracle, data_file: str, prompt: str, classes: list[str]
) -> None:
    handle = oracle_server(shared_data_dir() / data_file, latency_ms=0)
    rules = content_of(call(handle, prompt))
    for name in classes:
        assert re.search(rf"^\d+\. {re.escape(name)}$", rules, flags=re.MULTILINE), (name, rules)
    default = re.search(r"^Default class: (\w+)", rules, flags=re.MULTILINE)
    assert default is not None and default.group(1) in classes
    assert "Edge cases:" in rules
    assert handle.stats()["by_outcome"] == {"rules": 1}


def test_stats_count_and_reset(oracle_server: StartOracle, small_sms: Path) -> None:
    handle = oracle_server(small_sms, latency_ms=0, noise=0)
    rows = read_jsonl("sms_spam.jsonl", 2)
    call(handle, labeling_prompt(rows[0]["text"]))
    call(handle, labeling_prompt(rows[0]["text"]), model="oracle-large")
    call(handle, labeling_prompt(rows[1]["text"]))
    call(handle, labeling_prompt(rows[1]["text"]))
    stats = handle.stats()
    assert stats["total_requests"] == 4
    assert stats["by_model"] == {"oracle-small": 3, "oracle-large": 1}
    assert stats["by_outcome"] == {"label": 4}
    assert stats["distinct_prompts"] == 3 and stats["repeated_prompts"] == 1
    repeated = [prompt for prompt in stats["prompts"] if prompt["count"] > 1]
    assert [(p["model"], p["text"], p["ok"]) for p in repeated] == [("oracle-small", rows[1]["text"], 2)]
    handle.reset_stats()
    assert handle.stats()["total_requests"] == 0 and handle.stats()["prompts"] == []


def test_plain_http_endpoints(sms_oracle: OracleHandle) -> None:
    root = sms_oracle.base_url.removesuffix("/v1")
    with urllib.request.urlopen(root + "/health", timeout=5) as response:
        assert json.loads(response.read())["labels"] == SMS_CLASSES
    with urllib.request.urlopen(root + "/v1/models", timeout=5) as response:
        assert {"oracle-small", "oracle-large"} <= {m["id"] for m in json.loads(response.read())["data"]}
    for url, data in ((root + "/nope", None), (root + "/v1/chat/completions", b"{not json")):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5)
        assert caught.value.code in (400, 404)
        assert "error" in json.loads(caught.value.read())


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        pytest.param("Classes: a, b or c.", ["a", "b", "c"], id="inline"),
        pytest.param("classes: ['spam', 'not spam']", ["spam", "not spam"], id="python-list"),
        pytest.param("Labels:\n1. **urgent**: act now\n2. later - can wait\n", ["urgent", "later"], id="numbered"),
        pytest.param("Write some rules please.", [], id="none"),
    ],
)
def test_class_names_from_prompt(prompt: str, expected: list[str]) -> None:
    assert [name for name, _ in class_names_from_prompt(prompt)] == expected


def test_pure_helpers() -> None:
    pydantic_style = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"$defs": {"Label": {"enum": ["a", "b"]}}, "properties": {}}},
    }
    assert classes_from_response_format(pydantic_style) == ("a", "b")
    assert classes_from_response_format({"type": "json_object"}) is None
    assert noisy_label("a", ("a", "b", "c"), 1.0, 0, "m", "t")[0] in ("b", "c")
    assert noisy_label("a", ("a", "b"), 0.5, 0, "m", "t") == noisy_label("a", ("a", "b"), 0.5, 0, "m", "t")
    assert [pick_fault(x, FaultRates(0.1, 0.1, 0.1, 0.1, 0.1)) for x in (0.05, 0.15, 0.25, 0.35, 0.45, 0.55)] == [
        Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.HANG, Fault.MALFORMED, Fault.BAD_LABEL, Fault.NONE,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="more than 1"):
        FaultRates(0.6, 0.6)


@pytest.mark.slow
def test_throughput_50_clients_at_200ms(oracle_server: StartOracle) -> None:
    """1,000 requests, 50 concurrent keep-alive clients, 200 ms latency: ideal wall time is 4 s.

    Measured with aiohttp clients rather than litellm: litellm spends ~5 ms of CPU per call on this machine
    (cost lookup, logging), which would measure the client, not the server.
    """
    handle = oracle_server(shared_data_dir() / "sms_spam.jsonl", latency_ms=200, noise=0.1)
    texts = [row["text"] for row in read_jsonl("sms_spam.jsonl", 1000)]
    url = handle.base_url + "/chat/completions"

    async def client(share: list[str]) -> int:
        ok = 0
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-test"}) as session:
            for text in share:
                body = {"model": "oracle-small", "messages": [{"role": "user", "content": labeling_prompt(text)}]}
                async with session.post(url, json=body) as response:
                    ok += response.status == 200 and bool((await response.json())["choices"])
        return ok

    async def run() -> int:
        return sum(await asyncio.gather(*(client(texts[i::50]) for i in range(50))))

    started = time.perf_counter()
    answered = asyncio.run(run())
    elapsed = time.perf_counter() - started
    print(f"\noracle throughput: 1000 requests in {elapsed:.2f} s, {elapsed / 4.0:.3f}x the 4 s ideal")
    assert answered == 1000
    assert elapsed <= 1.5 * 4.0
