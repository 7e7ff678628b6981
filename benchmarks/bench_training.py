"""Training throughput and quality: our loop vs Augmentoolkit's Trainer recipe vs a bare torch loop.

All three fine-tune the bundled MiniLM on the same human-labeled SMS spam examples for the same number of
epochs, then predict 500 other examples and are scored against their gold labels.

  (a) ours   core.model.training.train_classifier with its defaults (length-grouped dynamic padding, max_length 128)
  (b) theirs HF Trainer with defaults, every example padded to 512 tokens, warmup_steps=100, batch 16
             (the recipe in Augmentoolkit's classifier creator)
  (c) bare   a plain forward/backward/AdamW loop over exactly our batches: no scheduler, class weights or
             clipping, so ours/(c) is the overhead of those extras

Timed: tokenizing plus the training loop (model loading and saving excluded) for every variant; (a) and (c)
are repeated and the median kept, (b) runs once because it is slow. Needs the ``bench`` extra (accelerate).

    .venv/bin/python benchmarks/bench_training.py --threads 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402

from core.model.classifier import load_classifier
from core.model.encoding import encode, pad_batch, resolve_base_model
from core.model.metrics import evaluate
from core.model.training import TrainConfig, length_grouped_batches, seed_everything, train_classifier

DATA = Path("/work/shared/data/sms_spam.jsonl")
RESULTS = Path(__file__).with_name("RESULTS.md")
CLASSES = ["ham", "spam"]


def gold_accuracy(model_dir: Path, texts: list[str], gold: list[str]) -> float:
    return evaluate(gold, load_classifier(model_dir).predict(texts), CLASSES).accuracy


def padded_tokens_per_example(texts: list[str], cfg: TrainConfig) -> float:
    """Tokens (padding included) that our batching feeds the model per example, for the first epoch."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(cfg.model_path))
    seqs = encode(tokenizer, texts, cfg.max_length, cfg.truncation_type)
    batches = length_grouped_batches([len(s) for s in seqs], cfg.batch_size, random.Random(cfg.seed))
    return sum(max(len(seqs[i]) for i in b) * len(b) for b in batches) / len(texts)


def run_ours(texts: list[str], labels: list[str], cfg: TrainConfig, out: Path) -> float:
    return train_classifier(texts, labels, cfg, out).examples_per_s


def run_bare(texts: list[str], labels: list[str], cfg: TrainConfig, out: Path) -> float:
    """Forward, loss, backward, AdamW step over our batches; nothing else. Saves the model to ``out``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = resolve_base_model(cfg.model_path)
    seed_everything(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)}
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, fused=True)
    targets = torch.tensor([CLASSES.index(label) for label in labels])
    rng = random.Random(cfg.seed)
    model.train()
    started = time.perf_counter()
    seqs = encode(tokenizer, texts, cfg.max_length, cfg.truncation_type)
    for _ in range(cfg.epochs):
        for batch in length_grouped_batches([len(s) for s in seqs], cfg.batch_size, rng):
            logits = model(**pad_batch(tokenizer, [seqs[i] for i in batch])).logits
            torch.nn.functional.cross_entropy(logits, targets[batch]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    rate = len(texts) * cfg.epochs / (time.perf_counter() - started)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return rate


def run_theirs(texts: list[str], labels: list[str], epochs: int, out: Path) -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    base = resolve_base_model("bundled:all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)}
    )
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        warmup_steps=100,
        weight_decay=0.01,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    started = time.perf_counter()
    enc = tokenizer(texts, padding="max_length", max_length=512, truncation=True)
    dataset = [
        {"input_ids": ids, "attention_mask": mask, "labels": CLASSES.index(label)}
        for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
    ]
    Trainer(model=model, args=args, train_dataset=dataset).train()  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return len(texts) * epochs / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats for (a) and (c)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args(argv)

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    train, test = rows[: args.n_train], rows[args.n_train : args.n_train + args.n_test]
    texts, labels = [r["text"] for r in train], [r["label"] for r in train]
    test_texts, gold = [r["text"] for r in test], [r["label"] for r in test]
    cfg = TrainConfig(model_path="bundled:all-MiniLM-L6-v2", classes=CLASSES, epochs=args.epochs)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # (a) and (c) alternate so that a burst of load from other processes hits both alike
        ours_rates, bare_rates = [], []
        for _ in range(args.repeats):
            ours_rates.append(run_ours(texts, labels, cfg, root / "ours"))
            bare_rates.append(run_bare(texts, labels, cfg, root / "bare"))
        ours_rate, bare_rate = statistics.median(ours_rates), statistics.median(bare_rates)
        print(f"runs (ex/s): ours {[round(r, 2) for r in ours_rates]}, bare {[round(r, 2) for r in bare_rates]}")
        ours_acc = gold_accuracy(root / "ours", test_texts, gold)
        print(f"(a) ours   {ours_rate:8.2f} ex/s  gold acc {ours_acc:.4f}", flush=True)
        bare_acc = gold_accuracy(root / "bare", test_texts, gold)
        print(f"(c) bare   {bare_rate:8.2f} ex/s  gold acc {bare_acc:.4f}", flush=True)

        theirs_rate = run_theirs(texts, labels, args.epochs, root / "theirs")
        theirs_acc = gold_accuracy(root / "theirs" / "model", test_texts, gold)
        print(f"(b) theirs {theirs_rate:8.2f} ex/s  gold acc {theirs_acc:.4f}", flush=True)

    tokens = padded_tokens_per_example(texts, cfg)
    baseline = max(gold.count(c) for c in CLASSES) / len(gold)  # what predicting "ham" for everything scores
    ratio_b, ratio_c = ours_rate / theirs_rate, ours_rate / bare_rate
    print(f"ours/(b) = {ratio_b:.1f}x (target >= 10x); ours/(c) = {ratio_c:.2f}x (target >= 0.8x)")

    table = "\n".join(
        [
            f"| variant | examples/s (median) | tokens per example fed to the model | gold accuracy (n={len(gold)}) |",
            "|---|---|---|---|",
            f"| (a) ours: length-grouped dynamic padding, max_length 128 | {ours_rate:.2f} | "
            f"{tokens:.1f} | {ours_acc:.4f} |",
            f"| (b) HF Trainer, padding to 512, warmup_steps=100 | {theirs_rate:.2f} | 512 | {theirs_acc:.4f} |",
            f"| (c) bare loop over our batches | {bare_rate:.2f} | {tokens:.1f} | {bare_acc:.4f} |",
            "",
            f"Majority-class baseline on the same {len(gold)} gold labels: {baseline:.4f}.",
            "",
            f"ours/(b) = **{ratio_b:.1f}x** (target >= 10x); ours/(c) = **{ratio_c:.2f}x** (target >= 0.8x)",
        ]
    )
    if not args.no_write:
        append_result(args, table, load_before)
    return 0


def append_result(args: argparse.Namespace, table: str, load_before: tuple[float, float, float]) -> None:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=False).stdout.strip()
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/bench_training.py", *sys.argv[1:]])
    block = f"""
## bench_training — {dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}

- machine: `{uname}`; nproc {os.cpu_count()}; torch threads {torch.get_num_threads()}; load average at start
  {load_before[0]:.2f} (the machine is shared, so absolute rates are noisy; the ratios are the point)
- versions: python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}
- command: `{command}`
- data: SMS spam, first {args.n_train} examples for training, next {args.n_test} for gold accuracy;
  {args.epochs} epoch(s); median of {args.repeats} runs for (a) and (c), one run for (b)

{table}
"""
    with RESULTS.open("a", encoding="utf-8") as f:
        if f.tell() == 0:
            f.write("# Benchmark results\n\nAppended by the scripts in this folder; newest last.\n")
        f.write(block)


if __name__ == "__main__":
    raise SystemExit(main())
