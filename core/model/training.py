"""Fine-tune a BERT-family sequence classifier on (text, label) pairs and save it.

Does: build the training config from the run's settings (``TrainConfig.from_settings``), resolve the base model
(the bundled MiniLM or a local folder / hub id), tokenize with head or head-tail truncation, train with a plain
torch loop on CPU (length-grouped batches with dynamic padding, AdamW, linear warm-up schedule, tempered
class-weighted loss, gradient clipping, a floor on optimizer steps so that small sets are not under-trained),
and save a folder that ``transformers.pipeline`` and ``core.model.classifier`` load. With ``Checkpointing``, check
a stop flag before every optimizer step and save a resumable checkpoint (weights, optimizer, scheduler, every
RNG, the position in the epoch) at a stop and at each epoch end; given that checkpoint, training continues
where it left off and ends with the same weights as an uninterrupted run (bit for bit on CPU: the same
batches in the same order, dropout drawing from the restored generator).

Does not: download anything (an ``s3://`` base model is fetched by the caller), validate settings (``core.config``
does, once, at load; only the base model's own limit on ``max_length`` is checked here, once the model is loaded),
choose which examples to train on, load a saved folder to predict (``core.model.classifier``), evaluate against
reference labels (``core.model.metrics``), stream predictions over a corpus (``core.model.predict``), or decide
when to stop iterating.

Why not ``transformers.Trainer``: for a few hundred short texts its per-step machinery costs more than the
model does, and the recipe this project replaces padded every text to 512 tokens. This loop batches texts of
similar length and pads each batch only to its own longest member (benchmarks/bench_training.py measures it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from core.config import Settings, SystemSettings, TrainingSettings, TruncationType
from core.errors import ConfigError, TrainingError
from core.model.encoding import encode, intra_op_threads, pad_batch, resolve_base_model

log = logging.getLogger("bootstrapper")

META_FILE = "bootstrapper_training.json"  # written next to config.json; read back by load_classifier
CHECKPOINT_FILE = "checkpoint.pt"  # in ``Checkpointing.folder``
# Examples sorted together before being cut into batches: large enough that batches pad little, small
# enough that batch composition still changes from epoch to epoch.
BUCKET_BATCHES = 8


# TrainConfig fields taken from ``system.*``; the rest of the recipe is ``training.*``.
_FROM_SYSTEM = ("seed", "torch_threads")


def _default(section: type[BaseModel], name: str) -> Any:
    return section.model_fields[name].default


@dataclass(frozen=True)
class TrainConfig:
    """What one training run needs: the resolved base model, the classes, and the recipe.

    Every field but ``model_path`` and ``classes`` is the setting of the same name (``training.*``, or
    ``system.seed`` / ``system.torch_threads``), documented in ``core.config``; ``from_settings`` builds it
    without copying them one by one. Defaults are read from the settings schema rather than restated or left
    out: benchmarks and tests build a TrainConfig directly with two or three overrides and must train as a
    default run does, which required fields would make each of them spell out (a copy of the defaults per
    caller). Values are not checked here: ``core.config`` validated them when the settings were loaded.
    """

    model_path: str  # a local folder, a hub id or the bundled model (an s3:// one is downloaded by the caller)
    classes: list[str]
    epochs: int = _default(TrainingSettings, "epochs")
    learning_rate: float = _default(TrainingSettings, "learning_rate")
    batch_size: int = _default(TrainingSettings, "batch_size")
    max_length: int = _default(TrainingSettings, "max_length")
    warmup_ratio: float = _default(TrainingSettings, "warmup_ratio")
    weight_decay: float = _default(TrainingSettings, "weight_decay")
    class_weighted_loss: bool = _default(TrainingSettings, "class_weighted_loss")
    class_weight_power: float = _default(TrainingSettings, "class_weight_power")
    truncation_type: TruncationType = _default(TrainingSettings, "truncation_type")
    seed: int = _default(SystemSettings, "seed")
    torch_threads: int | None = _default(SystemSettings, "torch_threads")
    min_steps: int = _default(TrainingSettings, "min_steps")
    head_learning_rate: float | None = _default(TrainingSettings, "head_learning_rate")
    label_smoothing: float = _default(TrainingSettings, "label_smoothing")

    @classmethod
    def from_settings(cls, settings: Settings, model_path: str) -> TrainConfig:
        """The run's training config, ``model_path`` being ``training.model_path`` made local by the caller.

        >>> from core.config import load_settings
        >>> settings = load_settings("{classification: {classes: [ham, spam], desc: Spam or not},"
        ...                          " training: {epochs: 5}, system: {seed: 7}}")
        >>> cfg = TrainConfig.from_settings(settings, "/models/minilm")
        >>> cfg.classes, cfg.epochs, cfg.seed, cfg.learning_rate == TrainConfig("m", ["a", "b"]).learning_rate
        (['ham', 'spam'], 5, 7, True)
        """
        recipe = {f.name for f in fields(cls)} - {"model_path", "classes", *_FROM_SYSTEM}
        return cls(model_path=model_path, classes=list(settings.classification.classes),
                   **{name: getattr(settings.system, name) for name in _FROM_SYSTEM},
                   **settings.training.model_dump(include=recipe))


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    n_examples: int
    seconds: float  # tokenizing + the training loop; excludes loading and saving the model
    examples_per_s: float  # examples seen (n_examples * epochs) per second of ``seconds``
    steps: int
    epochs: int  # as run: ``cfg.epochs``, or more when ``cfg.min_steps`` asked for them
    final_loss: float  # mean training loss over the last epoch
    stopped: bool = False  # a stop request ended training early: the checkpoint holds it, nothing was saved


@dataclass(frozen=True)
class Checkpointing:
    """Stopping and resuming one training run: where its checkpoint lives locally, when to stop, who keeps it.

    ``should_stop`` is asked before every optimizer step (a step is well under a second here, so a SIGTERM
    is honoured in seconds); ``on_save(folder)`` runs after each checkpoint is written (the train step
    uploads it). A checkpoint found in ``folder`` at the start is resumed if it was made for the same
    examples and config, else ignored.
    """

    folder: Path
    should_stop: Callable[[], bool] = lambda: False
    on_save: Callable[[Path], None] = lambda _folder: None


# --- training pieces ----------------------------------------------------------------------------------------


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Index batches of similar length, in random order.

    Shuffle, sort each bucket of ``BUCKET_BATCHES`` batches by length, cut it into batches, shuffle the
    batches. Short texts then train in short batches instead of being padded to the longest text seen.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    bucket = batch_size * BUCKET_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), bucket):
        group = sorted(order[start : start + bucket], key=lambda i: lengths[i])
        batches.extend(group[j : j + batch_size] for j in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def class_weights(label_ids: Sequence[int], n_classes: int, power: float = 1.0) -> list[float]:
    """Inverse-frequency weights raised to ``power``, scaled so that the average weight per example is 1.

    ``power`` 1 is plain inverse frequency, 0.5 its square root (tempered), 0 no weighting. A class absent
    from the training set gets 1.0; no example carries it, so the value is never used.

    >>> [round(w, 2) for w in class_weights([0, 0, 0, 1], 2)]
    [0.67, 2.0]
    >>> [round(w, 2) for w in class_weights([0, 0, 0, 1], 2, power=0.5)]  # the ratio is now sqrt(3), not 3
    [0.85, 1.46]
    """
    counts = Counter(label_ids)
    raw = {c: (1.0 / k) ** power for c, k in counts.items()}
    scale = len(label_ids) / sum(raw[c] * k for c, k in counts.items())
    return [raw[c] * scale if counts[c] else 1.0 for c in range(n_classes)]


def plan_epochs(n_examples: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """``epochs``, raised just enough that training takes at least ``min_steps`` optimizer steps.

    A few hundred examples at the usual epoch count are a few dozen steps: too few for a freshly
    initialised head and a pretrained encoder to settle. Large sets are left alone, so the floor costs
    time only where it is needed.

    >>> plan_epochs(200, 16, 4, 150), plan_epochs(1000, 16, 4, 150)
    (12, 4)
    """
    per_epoch = math.ceil(n_examples / batch_size)
    return max(epochs, math.ceil(min_steps / per_epoch)) if per_epoch else epochs


def parameter_groups(
    model: torch.nn.Module, weight_decay: float, lr: float, head_lr: float | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: decayed or not, and encoder or head (the layers outside ``model.base_model_prefix``).

    The head starts from random weights while the encoder is pretrained, so it may use a larger rate.
    """
    prefix = getattr(model, "base_model_prefix", "") + "."
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            # Biases and norm scales (1-d tensors) are not decayed, as in the BERT recipe.
            decay = weight_decay if p.ndim >= 2 else 0.0
            rate = head_lr if head_lr is not None and not name.startswith(prefix) else lr
            groups.setdefault((decay, rate), []).append(p)
    return [{"params": ps, "weight_decay": decay, "lr": rate} for (decay, rate), ps in groups.items()]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _load_base(path: str, cfg: TrainConfig) -> tuple[Any, torch.nn.Module]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=cfg.max_length)
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(cfg.classes),
            id2label=dict(enumerate(cfg.classes)),
            label2id={c: i for i, c in enumerate(cfg.classes)},
            # a sentence-transformers checkpoint (or one trained on other classes) gets a fresh head
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise TrainingError(f"cannot load base model {path!r}: {exc}") from exc
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError("training.max_length", f"{cfg.max_length} exceeds the model's limit of {limit}")
    model.config.problem_type = "single_label_classification"
    return tokenizer, model.float()


@dataclass
class _Position:
    """Where the loop is: the next epoch and batch, steps done, this epoch's batches and loss so far."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    batches: list[list[int]] | None = None  # None: the epoch has not drawn its batch order yet
    epoch_loss: float = 0.0


def _rng_states(batch_rng: random.Random) -> dict[str, Any]:
    """Every random state training draws from, as plain values (``torch.load(weights_only=True)`` reads them)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"batch_order": batch_rng.getstate(), "python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(np.asarray(keys)), pos, has_gauss, gauss]}


def _restore_rngs(states: dict[str, Any], batch_rng: random.Random) -> None:
    batch_rng.setstate(_as_tuple(states["batch_order"]))
    random.setstate(_as_tuple(states["python"]))
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _save_checkpoint(ck: Checkpointing, fingerprint: str, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                     batch_rng: random.Random, at: _Position) -> None:
    ck.folder.mkdir(parents=True, exist_ok=True)
    tmp = ck.folder / f".{CHECKPOINT_FILE}.tmp"
    torch.save({"format": 1, "fingerprint": fingerprint, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": _rng_states(batch_rng), "position": asdict(at)}, tmp)
    tmp.replace(ck.folder / CHECKPOINT_FILE)
    ck.on_save(ck.folder)


def _load_checkpoint(ck: Checkpointing, fingerprint: str) -> dict[str, Any] | None:
    path = ck.folder / CHECKPOINT_FILE
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=True)
    if saved.get("fingerprint") != fingerprint:
        log.warning("ignoring the training checkpoint %s: made for other examples or another config", path)
        return None
    return dict(saved)


def training_fingerprint(texts: Sequence[str], labels: Sequence[str], cfg: TrainConfig) -> str:
    """What a checkpoint must have been made for: the same examples, in order, and the same config."""
    digest = hashlib.sha256(json.dumps([list(texts), list(labels), asdict(cfg)], sort_keys=True).encode())
    return digest.hexdigest()


def _fit(
    model: torch.nn.Module,
    tokenizer: Any,
    seqs: list[list[int]],
    y: list[int],
    cfg: TrainConfig,
    progress: Callable[[int, int], None] | None,
    checkpoints: Checkpointing | None = None,
    fingerprint: str = "",
) -> tuple[int, float, int, bool]:
    from transformers import get_linear_schedule_with_warmup

    epochs = plan_epochs(len(seqs), cfg.batch_size, cfg.epochs, cfg.min_steps)
    total = math.ceil(len(seqs) / cfg.batch_size) * epochs
    groups = parameter_groups(model, cfg.weight_decay, cfg.learning_rate, cfg.head_learning_rate)
    # fused: one kernel for all parameters, ~7x faster per step on CPU than the per-tensor loop
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total), total)
    weights = class_weights(y, len(cfg.classes), cfg.class_weight_power) if cfg.class_weighted_loss else None
    weight = torch.tensor(weights) if weights else None
    # label smoothing: with a noisy labeler, stop the model from becoming certain of the wrong labels
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    targets = torch.tensor(y)
    lengths = [len(s) for s in seqs]
    rng = random.Random(cfg.seed)
    at = _Position()
    saved = _load_checkpoint(checkpoints, fingerprint) if checkpoints is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _restore_rngs(saved["rng"], rng)
        at = _Position(**saved["position"])
        log.info("training resumed from its checkpoint at step %d of %d (epoch %d)", at.step, total, at.epoch + 1)
    model.train()
    while at.epoch < epochs:
        if at.batches is None:
            at.batches, at.batch, at.epoch_loss = length_grouped_batches(lengths, cfg.batch_size, rng), 0, 0.0
        while at.batch < len(at.batches):
            if checkpoints is not None and checkpoints.should_stop():
                _save_checkpoint(checkpoints, fingerprint, model, optimizer, scheduler, rng, at)
                model.eval()
                return at.step, at.epoch_loss / len(seqs), epochs, True
            batch = at.batches[at.batch]
            logits = model(**pad_batch(tokenizer, [seqs[i] for i in batch])).logits
            loss = loss_fn(logits, targets[batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            at.step += 1
            at.batch += 1
            at.epoch_loss += loss.item() * len(batch)
            if progress is not None:
                progress(at.step, total)
        epoch_loss = at.epoch_loss
        at = _Position(epoch=at.epoch + 1, step=at.step, epoch_loss=epoch_loss)
        if checkpoints is not None and at.epoch < epochs:
            _save_checkpoint(checkpoints, fingerprint, model, optimizer, scheduler, rng, at)
    model.eval()
    return at.step, at.epoch_loss / len(seqs), epochs, False


def _save(model: torch.nn.Module, tokenizer: Any, cfg: TrainConfig, base: str, out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)  # safetensors is the default format
        # transformers.pipeline(..., truncation=True) cuts at the saved model_max_length, on the right: set both,
        # rather than rely on the loading kwarg surviving, so a "head" classifier sees there what it saw here.
        # A "head-tail" cut has no tokenizer setting (README, "Outputs", says how to reproduce it).
        tokenizer.model_max_length = cfg.max_length
        tokenizer.truncation_side = "right"
        tokenizer.save_pretrained(out_dir)
        meta = {"format": 1, "base_model": base, **asdict(cfg)}
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise TrainingError(f"cannot save the classifier to {out_dir}: {exc}") from exc


def train_classifier(
    texts: list[str],
    labels: list[str],
    cfg: TrainConfig,
    out_dir: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    checkpoints: Checkpointing | None = None,
) -> TrainResult:
    """Fine-tune ``cfg.model_path`` on ``texts``/``labels`` and save it to ``out_dir``.

    Same inputs and config give identical weights, interrupted and resumed through ``checkpoints`` or not.
    ``progress(step, total_steps)`` is called after each step. A stop (``checkpoints.should_stop``) returns a
    result with ``stopped`` set and saves no classifier.
    """
    if len(texts) != len(labels):
        raise TrainingError(f"{len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise TrainingError("no training examples")
    index = {c: i for i, c in enumerate(cfg.classes)}
    unknown = sorted(set(labels) - index.keys())
    if unknown:
        raise TrainingError(f"labels {unknown} are not among the classes {cfg.classes}")
    y = [index[label] for label in labels]
    base = resolve_base_model(cfg.model_path)
    with intra_op_threads(cfg.torch_threads):
        seed_everything(cfg.seed)  # before loading: the fresh head's initial weights come from this seed
        tokenizer, model = _load_base(base, cfg)
        started = time.perf_counter()
        try:
            seqs = encode(tokenizer, texts, cfg.max_length, cfg.truncation_type)
            steps, final_loss, epochs, stopped = _fit(model, tokenizer, seqs, y, cfg, progress, checkpoints,
                                                      training_fingerprint(texts, labels, cfg))
        except (RuntimeError, ValueError) as exc:
            raise TrainingError(f"training failed: {exc}") from exc
        seconds = time.perf_counter() - started
    if stopped:
        return TrainResult(out_dir=out_dir, n_examples=len(texts), seconds=seconds, examples_per_s=0.0, steps=steps,
                           epochs=epochs, final_loss=final_loss, stopped=True)
    if not math.isfinite(final_loss):
        raise TrainingError(f"training diverged (loss {final_loss}); try a lower learning_rate")
    _save(model, tokenizer, cfg, base, out_dir)
    return TrainResult(
        out_dir=out_dir,
        n_examples=len(texts),
        seconds=seconds,
        examples_per_s=len(texts) * epochs / seconds if seconds > 0 else float("inf"),
        steps=steps,
        epochs=epochs,
        final_loss=final_loss,
    )
