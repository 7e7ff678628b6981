"""``bootstrapper demo``: the bundled SMS-spam example, end to end, with no real LLM.

Starts the local oracle LLM server (a stand-in that answers from the example's human labels, flipped at
10% noise) as a process, points both models of ``examples/config.yaml`` at it through ``BOOTSTRAPPER_*``
overrides in the environment it hands the run (the process's own environment is left alone), and runs the job
through the ``run`` command the CLI passes in. The same config runs against a real provider by dropping those overrides
and setting, e.g., ``api.large_model: openai/gpt-4o`` with ``OPENAI_API_KEY`` in the environment.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from oracle.process import start_oracle

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "config.yaml"
DATA = REPO / "examples" / "sms" / "sms_spam.jsonl"
NOISE = 0.10


def _earlier_run_is_stale(environ: Mapping[str, str]) -> bool:
    """True when the demo's output folder holds a run whose config fingerprint no longer matches.

    A real job refuses such a resume (it would mix work done under different settings); the demo has nothing
    to protect, so it starts over instead of failing for someone who re-runs it after an update.
    """
    from core.config import config_fingerprint
    from core.run.state import load_state
    from core.storage.backends import open_storage
    from handlers.wiring import load_config

    try:
        settings, _, output = load_config(str(CONFIG), environ, None)
        state = load_state(open_storage(output))
    except Exception:  # noqa: BLE001 - anything unreadable is the real run's to report
        return False
    return state is not None and state.config_fingerprint != config_fingerprint(settings)


RunConfig = Callable[[str, Mapping[str, str], bool], int]  # (config path, environment, restart) -> exit code


def run_demo(environ: Mapping[str, str], run_config: RunConfig, restart: bool = False) -> int:
    print(
        "DEMO: no real LLM is reachable here. Both 'LLMs' are a local stand-in server that answers from the\n"
        f"example's human labels ({DATA.relative_to(REPO)}), wrong on purpose {NOISE:.0%} of the time. Accuracy\n"
        "figures below say how well the classifier learns from noisy labels, not how good any LLM is.\n",
        flush=True,
    )
    oracle = start_oracle(DATA, Path(tempfile.mkdtemp(prefix="oracle-")), noise=NOISE, latency_ms=100)
    environ = {**environ, "BOOTSTRAPPER_API__LARGE_BASE_URL": oracle.base_url,
               "BOOTSTRAPPER_API__SMALL_BASE_URL": oracle.base_url}
    if not restart and _earlier_run_is_stale(environ):
        print("An earlier demo run in the output folder was made with other settings (an older version of the\n"
              "example or the tool): starting the demo over.\n", flush=True)
        restart = True
    try:
        code = run_config(str(CONFIG), environ, restart)
    finally:
        oracle.stop()
    if code == 0:
        print(
            "\nTo use a real provider: copy examples/config.yaml, set api.large_model / api.small_model to litellm\n"
            "model strings (e.g. openai/gpt-4o and openai/gpt-4o-mini), drop the base URLs, export the provider's\n"
            "key (OPENAI_API_KEY, or BOOTSTRAPPER_API__LARGE_API_KEY / _SMALL_API_KEY), run `bootstrapper plan\n"
            "CONFIG` to see the cost, then `bootstrapper run CONFIG`."
        )
    return code
