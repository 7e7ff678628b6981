"""A finished run's output location, written by hand, for the tests of counting a sharded final prediction.

What ``refresh_report`` reads is all here: ``state.json`` (done, a best classifier, the config's fingerprint),
``chunks.jsonl``, ``splits.json``, one iteration's training ids, ``ingest_report.json`` and the prediction part
files, each holding exactly the chunks its shard has (the split ``bootstrapper predict --shard I/N`` makes).
No model is trained and no LLM is called, so a test takes well under a second of its own work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import config_fingerprint
from core.model.predict import shard_of
from core.run.state import IterationRecord, State, Step, save_state
from core.run import layout
from handlers import wiring

CLASSES = ["ham", "spam"]


@dataclass(frozen=True)
class FinishedRun:
    config: Path
    output: Any  # Storage
    remaining: list[str]  # chunk ids the final prediction covers
    labels: dict[str, str]  # chunk id -> the label its prediction row says

    def shard_rows(self, index: int, shards: int) -> list[dict[str, Any]]:
        return [{"id": i, "source": "sms.jsonl", "label": self.labels[i], "probs": {c: 0.5 for c in CLASSES},
                 "classifier": "classifier_1"} for i in self.remaining if shard_of(i, shards) == index]

    def write_shard(self, index: int, shards: int) -> int:
        rows = self.shard_rows(index, shards)
        self.output.write_text(layout.predictions(index, shards), "".join(json.dumps(r) + "\n" for r in rows))
        return len(rows)

    def expected_by_label(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.remaining:
            out[self.labels[i]] = out.get(self.labels[i], 0) + 1
        return out


def finished_run(folder: Path, env: Mapping[str, str], *, n_chunks: int = 40, n_test: int = 6,
                 n_trained: int = 4) -> FinishedRun:
    """``folder/config.yaml`` and ``folder/out``: a run that finished without predicting (as ``run`` does in Batch)."""
    from core.storage.backends import LocalStorage

    cfg = {"classification": {"classes": CLASSES, "desc": "Spam or not.", "predict_on_whole_set_at_the_end": True},
           "training": {"predict_shards": 3},
           "api": {"large_model": "openai/oracle-large", "small_model": "openai/oracle-small"},
           "path": {"input": "in", "output": "out"}}
    config = folder / "config.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in").mkdir(exist_ok=True)
    config.write_text(json.dumps(cfg), encoding="utf-8")  # JSON is YAML
    settings, _inp, out = wiring.load_config(str(config), env)
    output = LocalStorage(Path(out))
    ids = [f"c{n:03d}" for n in range(n_chunks)]
    output.write_text("chunks.jsonl", "".join(json.dumps({"id": i, "text": f"text {i}", "source": "sms.jsonl",
                                                          "position": n}) + "\n" for n, i in enumerate(ids)))
    output.write_text("splits.json", json.dumps({"test": ids[:n_test], "train": [], "pool": ids[n_test:]}))
    output.write_text("iterations/iteration_1.json", json.dumps({"ids": ids[n_test:n_test + n_trained]}))
    output.write_text("ingest_report.json", json.dumps({"files": 1, "chunks": n_chunks, "skipped": []}))
    state = State(config_fingerprint=config_fingerprint(settings), step=Step.DONE, status="done", iteration=1,
                  iterations=[IterationRecord(n=1, train_ids=n_trained, train_examples=n_trained)],
                  best_iteration=1, stop_reason="stopped at max_iters=1 below required_accuracy")
    save_state(output, state)
    remaining = ids[n_test + n_trained:]
    labels = {i: "spam" if n % 4 == 0 else "ham" for n, i in enumerate(remaining)}
    return FinishedRun(config=config, output=output, remaining=remaining, labels=labels)
