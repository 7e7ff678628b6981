"""What every step shares: the run context a handler builds, the output keys, and small storage helpers.

Does not: run a step (``core.run.steps``), choose chunks (``core.run.picks``), or save state (``core.pipeline``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import Settings
from core.llm.client import Endpoint
from core.llm.fanout import WorkerFactory
from core.llm.gateway import LLMGateway
from core.llm.ledger import Ledger
from core.schema import Chunk
from core.storage.backends import Storage, download_dir

CHUNKS_KEY = "chunks.jsonl"
INGEST_REPORT_KEY = "ingest_report.json"
SPLITS_KEY = "splits.json"
RULES_KEY = "rules.json"
TEST_LABELS = "labels/test/"
TRAIN_LABELS = "labels/train/"
CLS = "classifiers/"
GOLD_KEY = "label"  # a .jsonl input record's "label" key, when it holds a class name, is a human label

ProgressFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(_stage: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


@dataclass
class RunContext:
    """Everything a step needs, built by the handler: settings, storages, the LLM gateway, the endpoints."""

    settings: Settings
    input: Storage
    output: Storage
    gateway: LLMGateway
    ledger: Ledger  # the gateway's ledger: the pipeline flushes it after every step
    large: Endpoint
    small: Endpoint
    format_modes: dict[str, str]  # per model: how the labeling prompt asks for structure (json_schema|json_object|none)
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bootstrapper-")))
    progress: ProgressFactory = _no_progress
    should_stop: Callable[[], bool] = lambda: False
    shard: tuple[int, int] = (0, 1)
    s3_client: Any = None  # for an s3:// training.model_path
    # Builds a labeling gateway inside a worker process (see core.llm.fanout); None keeps labeling in-process.
    worker_factory: WorkerFactory | None = None


# ---- small pure helpers -------------------------------------------------------------------------------


def dumps_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def read_jsonl(storage: Storage, key: str) -> Iterator[dict[str, Any]]:
    with storage.open_read(key) as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def load_chunks(ctx: RunContext) -> dict[str, Chunk]:
    return {d["id"]: Chunk.from_dict(d) for d in read_jsonl(ctx.output, CHUNKS_KEY)}


def load_splits(ctx: RunContext) -> dict[str, list[str]]:
    return json.loads(ctx.output.read_text(SPLITS_KEY))


def classifier_dir(ctx: RunContext, n: int) -> Path:
    """A local copy of classifier ``n``, downloaded from the output location when this process lacks it."""
    local = ctx.work_dir / f"classifier_{n}"
    if not (local / "config.json").exists():
        download_dir(ctx.output, f"{CLS}classifier_{n}/", local)
    return local


def train_config(ctx: RunContext) -> Any:
    from core.model.encoding import resolve_base_model
    from core.model.training import TrainConfig

    t, s = ctx.settings.training, ctx.settings
    base = t.model_path
    if base.startswith("s3://"):
        from core.storage.backends import open_storage

        local = ctx.work_dir / "base_model"
        if not (local / "config.json").exists():
            download_dir(open_storage(base, s3_client=ctx.s3_client), "", local)
        base = str(local)
    return TrainConfig(model_path=resolve_base_model(base), classes=s.classification.classes, epochs=t.epochs,
                       learning_rate=t.learning_rate, batch_size=t.batch_size, max_length=t.max_length,
                       warmup_ratio=t.warmup_ratio, weight_decay=t.weight_decay,
                       class_weighted_loss=t.class_weighted_loss, class_weight_power=t.class_weight_power,
                       truncation_type=t.truncation_type, min_steps=t.min_steps,
                       head_learning_rate=t.head_learning_rate, label_smoothing=t.label_smoothing,
                       seed=s.system.seed, torch_threads=s.system.torch_threads)
