"""The oracle's protocol servers (stand-ins answering from human labels) on the wire, without litellm.

Raw HTTP requests check what litellm never sends but a provider would refuse (a missing version header, no
key, no ``api-version``, an unsigned or stale Bedrock request) and that the refusal has the provider's own
status and body. The SigV4 checker is compared with botocore's signer, an independent implementation, and the
simulated prompt cache is tested directly.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from oracle.cache import CachePolicy, CacheUse, PrefixCache
from oracle.process import OracleHandle
from oracle.protocols import sigv4
from tests.fixtures.llm_server import shared_data_dir

StartOracle = Callable[..., OracleHandle]
ACCESS_KEY, SECRET = "AKIDWIRETEST", "wire-test-secret"
TEXT = json.loads((shared_data_dir() / "sms_spam.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("oracle-wire") / "sms20.jsonl"
    lines = (shared_data_dir() / "sms_spam.jsonl").read_text(encoding="utf-8").splitlines()[:20]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """(status, lower-cased headers, JSON body) of a POST, error statuses included."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=raw, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


def signed_headers(url: str, body: bytes, secret: str = SECRET, service: str = "bedrock") -> dict[str, str]:
    """Headers botocore's own SigV4 signer puts on a request: an independent client for the Bedrock server."""
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY, secret), service, "us-east-1").add_auth(request)
    return dict(request.headers.items())


CONVERSE = {"messages": [{"role": "user", "content": [{"text": f"<text>\n{TEXT}\n</text>"}]}]}


def test_sigv4_signature_matches_botocores() -> None:
    url = "http://127.0.0.1:8080/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse?b=2&a=x%20y"
    body = json.dumps(CONVERSE).encode()
    headers = {name.lower(): value for name, value in signed_headers(url, body).items()} | {"host": "127.0.0.1:8080"}
    parsed = sigv4.parse_authorization(headers["authorization"])
    assert isinstance(parsed, sigv4.SigV4Header)
    assert (parsed.access_key, parsed.region, parsed.service) == (ACCESS_KEY, "us-east-1", "bedrock")
    path, query = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse", {"b": ["2"], "a": ["x y"]}
    assert sigv4.signature(parsed, SECRET, "POST", path, query, headers, body) == parsed.signature
    assert sigv4.signature(parsed, "other", "POST", path, query, headers, body) != parsed.signature
    assert sigv4.signature(parsed, SECRET, "POST", path, query, headers, body + b" ") != parsed.signature


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        pytest.param(None, "Missing Authentication Token", id="missing"),
        pytest.param("Bearer abc", "requires the AWS4-HMAC-SHA256 scheme", id="bearer"),
        pytest.param("AWS4-HMAC-SHA256 Credential=A/20260101/r/s/aws4_request", "'SignedHeaders'", id="partial"),
        pytest.param(
            "AWS4-HMAC-SHA256 Credential=A/2026/r/aws4_request, SignedHeaders=host, Signature=" + "0" * 64,
            "Credential should be of the form",
            id="bad-credential",
        ),
    ],
)
def test_sigv4_header_problems(header: str | None, problem: str) -> None:
    parsed = sigv4.parse_authorization(header)
    assert isinstance(parsed, str) and problem in parsed


def test_prefix_cache_explicit_and_automatic() -> None:
    system, other = "s" * 4400, "o" * 4400  # 1,100 tokens each
    explicit = CachePolicy("explicit", min_tokens=1024)
    cache = PrefixCache()
    assert cache.use("m", (system, "q1"), (1,), explicit) == CacheUse(write=1100)
    assert cache.use("m", (system, "q2"), (1,), explicit) == CacheUse(read=1100)
    assert cache.use("other-model", (system, "q2"), (1,), explicit) == CacheUse(write=1100)
    assert cache.use("m", (system, "q3"), (), explicit) == CacheUse(), "no breakpoint, no caching"
    assert cache.use("m", (system, other, "q"), (1, 2), explicit) == CacheUse(read=1100, write=1100)
    assert cache.use("m", ("s" * 400, "q"), (1,), explicit) == CacheUse(), "below the minimum"
    automatic = CachePolicy("auto", min_tokens=1024, granule=128)
    assert cache.use("m", (other + "x" * 1000, "q1"), (), automatic) == CacheUse()
    assert cache.use("m", (other + "x" * 1000, "q2"), (), automatic) == CacheUse(read=1024 + 2 * 128)  # of 1,350
    assert cache.use("m", ("x", "y"), (), CachePolicy("none", 0)) == CacheUse()


def test_anthropic_wants_its_headers(oracle_server: StartOracle, data: Path) -> None:
    handle = oracle_server(data, protocol="anthropic", latency_ms=0)
    url = handle.base_url + "/v1/messages"
    body = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": TEXT}]}
    status, headers, reply = post(url, body)
    assert (status, reply["type"], reply["error"]["type"]) == (401, "error", "authentication_error")
    assert reply["request_id"] == headers["request-id"]
    status, _, reply = post(url, body, {"x-api-key": "sk-ant-anything"})
    assert (status, reply["error"]["message"]) == (400, "anthropic-version: header is required")
    status, _, reply = post(url, {**body, "max_tokens": None}, {"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert (status, reply["error"]["type"]) == (400, "invalid_request_error")
    status, _, reply = post(url, body, {"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert status == 200 and reply["type"] == "message" and reply["content"][0]["type"] == "text"


def test_azure_needs_an_api_version_and_a_key(oracle_server: StartOracle, data: Path) -> None:
    handle = oracle_server(data, protocol="azure", latency_ms=0)
    url = handle.base_url + "/openai/deployments/labeler/chat/completions"
    body = {"messages": [{"role": "user", "content": TEXT}]}
    assert post(url, body, {"api-key": "k"})[::2] == (404, {"error": {"code": "404", "message": "Resource not found"}})
    status, _, reply = post(url + "?api-version=2024-10-21", body)
    assert status == 401 and reply["error"]["code"] == "401" and "Access denied" in reply["error"]["message"]
    status, _, reply = post(url + "?api-version=2024-10-21", body, {"api-key": "k"})
    assert status == 200 and reply["model"] == "labeler" and "prompt_filter_results" in reply


def test_gemini_key_in_query_is_accepted_and_never_logged(oracle_server: StartOracle, data: Path) -> None:
    handle = oracle_server(data, protocol="gemini", latency_ms=0, verbose=True)
    url = handle.base_url + "/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": TEXT}]}]}
    status, _, reply = post(url, body)
    assert (status, reply["error"]["status"]) == (403, "PERMISSION_DENIED")
    status, _, reply = post(url + "?key=AIzaSECRETKEY", body)
    assert status == 200 and reply["candidates"][0]["finishReason"] == "STOP"
    assert reply["usageMetadata"]["promptTokenCount"] > 0
    assert handle.stats(prompts=False)["by_auth"] == {"none": 1, "key (query)": 1}
    log = handle.log()
    assert "generateContent?key=***" in log and "AIzaSECRETKEY" not in log


def test_bedrock_wants_a_fresh_signature(oracle_server: StartOracle, data: Path) -> None:
    handle = oracle_server(data, protocol="bedrock", latency_ms=0, api_key=ACCESS_KEY, aws_secret_access_key=SECRET)
    url = handle.base_url + "/model/amazon.nova-lite-v1%3A0/converse"
    body = json.dumps(CONVERSE).encode()
    status, headers, reply = post(url, body)
    assert status == 403 and headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException:")
    status, headers, reply = post(url, body, signed_headers(url, body))
    assert status == 200 and reply["stopReason"] == "end_turn" and reply["output"]["message"]["content"][0]["text"]
    status, headers, _ = post(url, body, signed_headers(url, body, service="s3"))
    assert status == 403 and headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
    stale = signed_headers(url, body)
    stale["X-Amz-Date"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 600))
    status, _, reply = post(url, body, stale)
    assert status == 403 and reply["message"].startswith("Signature expired")
    status, headers, reply = post(url, body, {"Authorization": "AWS4-HMAC-SHA256 Credential=x"})
    assert status == 400 and headers["x-amzn-errortype"].startswith("IncompleteSignatureException:")
    assert set(reply) == {"message"}


def test_ollama_refuses_a_stream_it_cannot_send(oracle_server: StartOracle, data: Path) -> None:
    handle = oracle_server(data, protocol="ollama", latency_ms=0)
    url = handle.base_url + "/api/chat"
    body = {"model": "llama3", "messages": [{"role": "user", "content": TEXT}]}
    status, _, reply = post(url, body)  # Ollama streams unless told not to
    assert status == 400 and isinstance(reply["error"], str)
    status, _, reply = post(url, {**body, "stream": False, "format": "json"})
    assert status == 200 and reply["done"] is True and json.loads(reply["message"]["content"])["label"] == "ham"
    assert reply["prompt_eval_count"] > 0 and reply["eval_count"] > 0
    with urllib.request.urlopen(handle.root_url + "/health", timeout=5) as response:
        assert json.loads(response.read())["protocol"] == "ollama"
