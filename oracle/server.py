"""The oracle LLM server: a local, OpenAI-compatible HTTP server that stands in for a real LLM.

No real LLM is reachable where this project is built and tested. This server answers chat completions from
human labels in a JSONL file (``{"text", "label"}``), flipped by seeded, deterministic noise, writes template
classification rules for prompts about no known text, and injects faults (429, 500, hangs, malformed and
out-of-class replies) at given rates. It is not a language model and must never be mistaken for one.

Endpoints: ``POST /v1/chat/completions`` (also ``/chat/completions``), ``GET /v1/models``, ``GET /health``,
``GET /stats`` (``?prompts=0`` leaves out the per-prompt list), ``POST /stats/reset``.

It is a stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive: one thread per connection, which
sustains 50 concurrent clients at 200 ms latency near the ideal wall time (see tests/test_oracle_server.py).

    python -m oracle.server --data /work/shared/data/sms_spam.jsonl --port 0 --port-file /tmp/port
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from oracle.config import MALFORMED_MODES, UNKNOWN_TEXT_MODES, OracleConfig
from oracle.data import LabeledData
from oracle.engine import Oracle, Reply, error_reply
from oracle.faults import FaultRates

BANNER = "oracle LLM server (a stand-in for a real LLM, answers from human labels) listening on {url}"
ADVERTISED_MODELS = ("oracle-small", "oracle-large")
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS = frozenset({"/v1/models", "/models"})


def json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(payload).encode("utf-8"))


def models_payload() -> dict[str, Any]:
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "oracle"} for name in ADVERTISED_MODELS]
    return {"object": "list", "data": data}


class OracleRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections instead of reconnecting per call
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed ACK
    # (~40 ms a request), which cost a quarter of the throughput at 200 ms latency.
    disable_nagle_algorithm = True
    server: OracleHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.oracle.config.verbose:
            super().log_message(format, *args)

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        return json.loads(raw) if raw else None

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

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        oracle = self.server.oracle
        if parts.path == "/health":
            self._send(json_reply({"status": "ok", "texts": len(oracle.data), "labels": list(oracle.data.labels)}))
        elif parts.path in MODELS_PATHS:
            self._send(json_reply(models_payload()))
        elif parts.path == "/stats":
            wanted = parse_qs(parts.query).get("prompts", ["1"])[-1].lower()
            self._send(json_reply(oracle.stats.snapshot(include_prompts=wanted not in ("0", "false", "no"))))
        else:
            self._send(error_reply(404, f"no route GET {parts.path}", "invalid_request_error", "not_found"))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            body = self._read_json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            self._send(error_reply(400, "request body is not valid JSON", "invalid_request_error"))
            return
        if path in CHAT_PATHS:
            self._send(self.server.oracle.chat(body, self.headers.get("Authorization")))
        elif path == "/stats/reset":
            self.server.oracle.stats.reset()
            self._send(json_reply({"status": "reset"}))
        else:
            self._send(error_reply(404, f"no route POST {path}", "invalid_request_error", "not_found"))


class OracleHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # hung requests must not keep the process alive at shutdown
    request_queue_size = 256  # 50+ clients connecting at once must not overflow the listen backlog

    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle
        super().__init__((oracle.config.host, oracle.config.port), OracleRequestHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.oracle.config.host}:{self.port}"


def build_server(config: OracleConfig) -> OracleHTTPServer:
    """Load the data and bind the socket; call ``serve_forever()`` (e.g. in a thread) and later ``shutdown()``."""
    return OracleHTTPServer(Oracle(config, LabeledData.load(config.data)))


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
    for name in ("429", "500", "hang", "malformed", "badlabel"):
        parser.add_argument(f"--rate-{name}", type=float, default=0.0)
    parser.add_argument("--hang-s", type=float, default=30.0)
    parser.add_argument("--malformed-mode", choices=MALFORMED_MODES, default="content")
    parser.add_argument("--unknown-text", choices=UNKNOWN_TEXT_MODES, default="guess")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    try:
        rates = FaultRates(args.rate_429, args.rate_500, args.rate_hang, args.rate_malformed, args.rate_badlabel)
        config = OracleConfig(
            data=args.data, host=args.host, port=args.port, noise=args.noise, latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms, seed=args.seed, faults=rates, hang_s=args.hang_s,
            malformed_mode=args.malformed_mode, unknown_text=args.unknown_text, verbose=args.verbose,
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
    print(BANNER.format(url=server.url), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
