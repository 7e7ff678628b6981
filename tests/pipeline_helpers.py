"""Helpers for end-to-end tests: write a job (data + config), run the CLI as a process, read outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def sample_rows(data: Path, n: int) -> list[dict[str, Any]]:
    rows = []
    with data.open(encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) >= n:
                break
    return rows


def job_config(*, classes: list[str], input_: str, output: str, model_path: str, **overrides: Any) -> dict:
    """A small, fast job: tiny sets, a few epochs, a required accuracy the loop will not reach."""
    cfg: dict[str, Any] = {
        "classification": {"classes": classes, "desc": "Classify each text into one of the classes.",
                           "predict_on_whole_set_at_the_end": True},
        "system": {"required_accuracy": 0.999, "chunk_size": 2000, "concurrency_limit": 4, "seed": 3,
                   "flush_interval_s": 0.2, "llm_timeout_s": 10, "torch_threads": 1},
        "training": {"max_iters": 3, "model_path": model_path, "test_set_size": 40, "train_set_size": 60,
                     "train_set_increment": 40, "epochs": 3, "learning_rate": 2e-3, "batch_size": 16,
                     "max_length": 48, "min_steps": 0},
        "api": {"large_model": "openai/oracle-large", "small_model": "openai/oracle-small"},
        "path": {"input": input_, "output": output},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        cfg.setdefault(section, {})[key] = value
    return cfg


def write_yaml(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def cli_env(base_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"BOOTSTRAPPER_API__LARGE_BASE_URL": base_url, "BOOTSTRAPPER_API__SMALL_BASE_URL": base_url,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


# Runs a handler's main in a process whose pipeline step ``sys.argv[1]`` raises an exception from outside our
# tree, as a library error no adapter translated would: the one fault no real input here provokes on purpose.
_FAILING_STEP = """
import sys
from core import pipeline
from handlers import {module}

def fail(ctx, data, state):
    raise ValueError("simulated failure outside the exception tree\\nsecond line")

pipeline.STEPS[next(s for s in pipeline.STEPS if s.value == sys.argv[1])] = fail
sys.exit({module}.main(sys.argv[2:]))
"""


def run_with_failing_step(module: str, step: str, args: list[str], env: dict[str, str],
                          timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``handlers.<module>.main(args)`` in a process where the pipeline step named ``step`` raises ValueError."""
    return subprocess.run([sys.executable, "-c", _FAILING_STEP.format(module=module), step, *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "handlers.cli", "--json-logs", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return _start(["handlers.cli", "--json-logs", *args], env, log)


def start_batch_job(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m handlers.batch_job ARGS``, the container's entry point (JSON log lines, exit 3 on a stop)."""
    return _start(["handlers.batch_job", *args], env, log)


def _start(module_args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", *module_args], cwd=REPO, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 300,
             poll: float = 0.02) -> bool:
    """True when ``cond`` held while ``proc`` still ran; False if ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return proc.poll() is None
        except (OSError, ValueError, KeyError):
            pass  # a file mid-write: look again
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError("condition not reached")
