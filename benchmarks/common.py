"""What every benchmark shares: where the data is, machine facts, and appending a dated block to RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")


def shared_data() -> Path:
    """``../shared/data`` beside the repo (as on the developers' machines and CI), or $BOOTSTRAPPER_SHARED_DATA."""
    env = os.environ.get("BOOTSTRAPPER_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def machine_line() -> str:
    load = os.getloadavg()
    return (f"{platform.system()} {platform.machine()}, nproc {os.cpu_count()}, python {platform.python_version()}, "
            f"load average at start {load[0]:.2f} (a shared machine: absolute figures are noisy, ratios less so)")


def append_result(name: str, body: str, *, load_line: str | None = None) -> None:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    block = (f"\n## {name} — {stamp}\n\n- machine: {load_line or machine_line()}\n- command: `{command}`\n\n"
             f"{body.strip()}\n")
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(block)
