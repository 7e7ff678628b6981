"""What every step shares and cannot be handed as data: settings, storages, the LLM gateway, local folders.

The handler builds one ``RunContext`` per run (adapters already made, an ``s3://`` base model already fetched)
and the pipeline passes it to each step beside the step's data (``core.run.data.RunData``).

Does not: run a step (``core.run.steps``), choose chunks (``core.run.picks``), save state (``core.pipeline``), or
read data of the run (``core.run.data`` does).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Settings
from core.llm.client import Endpoint
from core.llm.fanout import WorkerFactory
from core.llm.gateway import LLMGateway
from core.llm.ledger import Ledger
from core.report.render import ReportNotes
from core.run import layout
from core.storage.backends import Storage, download_dir

if TYPE_CHECKING:  # torch loads only for the steps that train or predict
    from core.model.classifier import Classifier
    from core.model.training import TrainConfig

ProgressFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(_stage: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


@dataclass
class RunContext:
    """Everything a step needs that is not the run's data, built by the handler."""

    settings: Settings
    input: Storage
    output: Storage
    gateway: LLMGateway
    ledger: Ledger  # the gateway's ledger: the pipeline flushes it after every step
    large: Endpoint
    small: Endpoint
    format_modes: dict[str, str]  # per model: how the labeling prompt asks for structure (json_schema|json_object|none)
    # The base model as a local folder or a name transformers resolves; the handler fetches an s3:// one first.
    base_model: str = ""
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bootstrapper-")))
    progress: ProgressFactory = _no_progress
    should_stop: Callable[[], bool] = lambda: False
    # Raises LeaseLost if this run may no longer hold its lease; steps call it right before a write a new owner
    # could be clobbered by. A lost lease also raises should_stop, but unlike a SIGTERM's, its work is not ours.
    hold_lease: Callable[[], None] = lambda: None
    shard: tuple[int, int] = (0, 1)
    # Builds a labeling gateway inside a worker process (see core.llm.fanout); None keeps labeling in-process.
    worker_factory: WorkerFactory | None = None
    notes: ReportNotes = field(default_factory=ReportNotes)  # what the handler wants the report to say


def classifier_dir(ctx: RunContext, n: int) -> Path:
    """A local copy of classifier ``n``, downloaded from the output location when this process lacks it."""
    local = ctx.work_dir / f"classifier_{n}"
    if not (local / "config.json").exists():
        download_dir(ctx.output, layout.classifier(n), local)
    return local


def load_run_classifier(ctx: RunContext, n: int) -> Classifier:
    """Classifier ``n`` at float32, scoring with ``system.torch_threads`` threads as every torch step of a run does
    (torch's default is one per core: on a shared or busy machine that runs tiny batches many times slower)."""
    from core.model.classifier import load_classifier

    return load_classifier(classifier_dir(ctx, n), threads=ctx.settings.system.torch_threads)


def train_config(ctx: RunContext) -> TrainConfig:
    """The training recipe of this run, with the base model as a folder or name transformers loads."""
    from core.model.encoding import resolve_base_model
    from core.model.training import TrainConfig

    base = ctx.base_model or ctx.settings.training.model_path
    return TrainConfig.from_settings(ctx.settings, resolve_base_model(base))
