"""Start the oracle LLM server (a stand-in for a real LLM) as a separate process, and talk to its admin API.

Used by the test fixtures, the benchmarks and ``bootstrapper demo``: ``start_oracle(data, workdir, **options)``
starts ``python -m oracle.server`` on a free port (options are its CLI flags in snake case, ``protocol=
"anthropic"`` among them) and waits for ``/health``. Nothing here is imported by the server itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oracle.config import API_BASE_PATHS

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 30.0


def _cli_flags(options: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags += [flag, str(value)]
    return flags


def _http_json(url: str, method: str = "GET", timeout: float = 10.0) -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class OracleHandle:
    """A running oracle server process. ``base_url`` is what litellm's ``api_base`` must be for the server's
    protocol: ``/v1`` appended for OpenAI, ``/v1beta`` for Gemini, the bare root for the others."""

    process: subprocess.Popen[bytes]
    root_url: str
    log_path: Path
    protocol: str = "openai"
    base_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = self.root_url + API_BASE_PATHS.get(self.protocol, "")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self, prompts: bool = True) -> dict[str, Any]:
        snapshot: dict[str, Any] = _http_json(f"{self.root_url}/stats?prompts={int(prompts)}")
        return snapshot

    def reset_stats(self) -> None:
        _http_json(f"{self.root_url}/stats/reset", method="POST")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _wait_until_healthy(process: subprocess.Popen[bytes], port_file: Path, log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"oracle server exited with {process.returncode}:\n{log_path.read_text()}")
        if port_file.exists():
            root_url = f"http://127.0.0.1:{int(port_file.read_text())}"
            try:
                _http_json(root_url + "/health", timeout=2.0)
                return root_url
            except (urllib.error.URLError, ConnectionError):
                pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"oracle server not healthy within {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()}")


def start_oracle(data: Path, workdir: Path, protocol: str = "openai", **options: Any) -> OracleHandle:
    """Start ``python -m oracle.server --protocol <protocol>`` on a free port and wait for ``/health``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = Path(tempfile.mkstemp(prefix="oracle-port-", dir=workdir)[1])
    port_file.unlink()
    log_path = port_file.with_suffix(".log")
    command = [sys.executable, "-m", "oracle.server", "--data", str(data), "--port", "0", "--port-file", str(port_file)]
    command += _cli_flags({"protocol": protocol, **options})
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    return OracleHandle(process, _wait_until_healthy(process, port_file, log_path), log_path, protocol)
