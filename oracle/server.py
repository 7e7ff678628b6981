"""The oracle LLM server: a local HTTP server that stands in for a real LLM, speaking one provider's protocol.

No real LLM is reachable where this project is built and tested. This server answers chat requests from
human labels in a JSONL file (``{"text", "label"}``), flipped by seeded, deterministic noise, writes template
classification rules for prompts about no known text, and injects faults (429, 500, overloaded, hangs,
malformed and out-of-class replies) at given rates. It is not a language model and must never be mistaken
for one.

``--protocol`` picks the wire protocol (``oracle.protocols``): ``openai`` (the default, ``POST
/v1/chat/completions``), ``azure``, ``anthropic``, ``bedrock``, ``gemini`` or ``ollama``, each with its
provider's paths, auth, structured-output form, usage fields and error bodies, so litellm can be pointed at
it through that provider's normal base-URL setting. Every protocol also serves ``GET /health``, ``GET
/stats`` (``?prompts=0`` leaves out the per-prompt list) and ``POST /stats/reset``.

It is a stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive: one thread per connection, which
sustains 50 concurrent clients at 200 ms latency near the ideal wall time (see tests/test_oracle_server.py).

    python -m oracle.server --data /work/shared/data/sms_spam.jsonl --port 0 --port-file /tmp/port
    python -m oracle.server --data sms.jsonl --protocol anthropic --api-key sk-ant-test --latency-ms 0
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from oracle.config import MALFORMED_MODES, PROTOCOLS, UNKNOWN_TEXT_MODES, OracleConfig
from oracle.data import LabeledData
from oracle.engine import Oracle
from oracle.faults import FaultRates
from oracle.neutral import ErrorKind, Failure
from oracle.protocols import HttpRequest, Reply, WireProtocol, handle, json_reply, protocol_for

BANNER = (
    "oracle LLM server (a stand-in for a real LLM, answers from human labels) speaking {protocol} on {url}"
)
# Gemini takes its key as ?key=..., and a request line is what the access log prints.
_QUERY_KEY = re.compile(r"([?&]key=)[^&\s]+")


class OracleRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections instead of reconnecting per call
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed ACK
    # (~40 ms a request), which cost a quarter of the throughput at 200 ms latency.
    disable_nagle_algorithm = True
    server: OracleHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.oracle.config.verbose:
            line = _QUERY_KEY.sub(r"\1***", format % args)
            sys.stderr.write(f"{self.address_string()} - - [{self.log_date_time_string()}] {line}\n")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, reply: Reply) -> None:
        if reply.delay_s > 0:
            time.sleep(reply.delay_s)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a hang longer than its timeout); nothing left to tell it.
            self.close_connection = True

    def _not_found(self, path: str) -> Reply:
        return self.server.protocol.error(Failure(ErrorKind.NOT_FOUND, f"no route {self.command} {path}"), "")

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        oracle = self.server.oracle
        if parts.path == "/health":
            payload = {"status": "ok", "protocol": oracle.config.protocol, "texts": len(oracle.data)}
            self._send(json_reply(payload | {"labels": list(oracle.data.labels)}))
        elif parts.path == "/stats":
            wanted = parse_qs(parts.query).get("prompts", ["1"])[-1].lower()
            self._send(json_reply(oracle.stats.snapshot(include_prompts=wanted not in ("0", "false", "no"))))
        else:
            self._send(self.server.protocol.get(parts.path) or self._not_found(parts.path))

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        body = self._read_body()
        if parts.path == "/stats/reset":
            self.server.oracle.stats.reset()
            self._send(json_reply({"status": "reset"}))
            return
        request = HttpRequest(
            method="POST",
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            raw_path=parts.path,
        )
        self._send(handle(self.server.protocol, self.server.oracle, request))


class OracleHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # hung requests must not keep the process alive at shutdown
    request_queue_size = 256  # 50+ clients connecting at once must not overflow the listen backlog

    def __init__(self, oracle: Oracle, protocol: WireProtocol) -> None:
        self.oracle = oracle
        self.protocol = protocol
        super().__init__((oracle.config.host, oracle.config.port), OracleRequestHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.oracle.config.host}:{self.port}"


def build_server(config: OracleConfig) -> OracleHTTPServer:
    """Load the data and bind the socket; call ``serve_forever()`` (e.g. in a thread) and later ``shutdown()``."""
    protocol = protocol_for(config)
    return OracleHTTPServer(Oracle(config, LabeledData.load(config.data), protocol.cache_policy()), protocol)


def parse_args(argv: Sequence[str] | None) -> tuple[OracleConfig, Path | None]:
    """The server's config and the --port-file path (a launch detail, not a server setting)."""
    parser = argparse.ArgumentParser(prog="oracle-llm-server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="labeled JSONL, one {text, label} a line")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the chosen port here once listening")
    parser.add_argument("--noise", type=float, default=0.1, help="share of texts whose label is flipped")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="extra latency, uniform in [0, jitter]")
    parser.add_argument("--seed", type=int, default=0)
    for name in ("429", "500", "hang", "malformed", "badlabel", "overloaded"):
        parser.add_argument(f"--rate-{name}", type=float, default=0.0)
    parser.add_argument("--hang-s", type=float, default=30.0)
    parser.add_argument("--malformed-mode", choices=MALFORMED_MODES, default="content")
    parser.add_argument("--unknown-text", choices=UNKNOWN_TEXT_MODES, default="guess")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="openai", help="the provider API to speak")
    parser.add_argument("--api-key", help="the only key accepted (Bedrock: the SigV4 access key id)")
    parser.add_argument("--aws-secret-access-key", help="Bedrock: verify SigV4 signatures with this secret")
    parser.add_argument("--reasoning-tokens", type=int, default=0, help="hidden thinking before each answer")
    parser.add_argument("--refuse-logprobs", action="store_true", help="answer logprobs requests with a 400")
    parser.add_argument("--cache-min-tokens", type=int, help="shortest cached prefix (default: the protocol's)")
    args = parser.parse_args(argv)
    try:
        rates = FaultRates(
            args.rate_429, args.rate_500, args.rate_hang, args.rate_malformed, args.rate_badlabel, args.rate_overloaded
        )
        config = OracleConfig(
            data=args.data, host=args.host, port=args.port, noise=args.noise, latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms, seed=args.seed, faults=rates, hang_s=args.hang_s,
            malformed_mode=args.malformed_mode, unknown_text=args.unknown_text, verbose=args.verbose,
            protocol=args.protocol, api_key=args.api_key, aws_secret_access_key=args.aws_secret_access_key,
            reasoning_tokens=args.reasoning_tokens, refuse_logprobs=args.refuse_logprobs,
            cache_min_tokens=args.cache_min_tokens,
        )  # fmt: skip
    except ValueError as exc:
        parser.error(str(exc))
    if not config.data.is_file():
        parser.error(f"--data {config.data}: no such file")
    return config, args.port_file


def write_port_file(path: Path, port: int) -> None:
    # Write then rename, so a poller never reads a half-written file.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(str(port), encoding="utf-8")
    os.replace(temporary, path)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    config, port_file = parse_args(argv)
    server = build_server(config)
    signal.signal(signal.SIGTERM, _stop)
    if port_file is not None:
        write_port_file(port_file, server.port)
    print(BANNER.format(protocol=config.protocol, url=server.url), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
