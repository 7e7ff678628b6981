"""Prediction throughput: our streaming batch predictor vs ``transformers.pipeline(batch_size=32)``.

All variants classify the same 5,000 SMS texts with the same classifier: the bundled MiniLM trained here the
way the product trains it (``TrainConfig`` defaults) on the first 800 gold-labeled texts, as after the
loop's fourth iteration. Gold accuracy is measured on the 4,360 predicted texts the classifier never saw.
Each variant runs in its own child process so its peak RSS is its own; rounds are interleaved and the table
shows medians, because the machine is shared and its load changes from minute to minute.

    (b) baseline  transformers.pipeline("text-classification", batch_size=32, top_k=None, truncation=True)
    (a) ours      what the predict step does: load the float32 classifier, ``choose_precision`` (convert it to
                  ``training.predict_precision``, score it on 200 labeled texts, keep it only if it loses
                  <= 0.5 accuracy points against float32), then ``predict_stream`` (windows of 2,048 chunks
                  sorted by length, batches of 64, dynamic padding, inference_mode). Run at fp32, bf16 and
                  auto (the default: int8 here). The timed work includes imports, loading and the check; the
                  float32 accuracy on the 200 texts is measured beforehand, as the evaluate step does.

    .venv/bin/python benchmarks/bench_predict.py [--rounds 3] [--threads N] [--classifier DIR]

``--threads N`` sets torch's intra-op threads in every variant alike (default: torch's own choice, one per
core). On a machine shared with other jobs, 2 threads on 2 busy cores made every variant 2-5x slower than 1
thread, by an amount that changes with the neighbours' load, so ``--threads 1`` gives steadier ratios there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from benchmarks.common import append_result, shared_data  # noqa: E402

CLASSES = ["ham", "spam"]
TRAIN_N = 800  # training examples: rows[:800]
CHECK = slice(TRAIN_N, TRAIN_N + 200)  # the stand-in for the LLM-labeled test set the precision check uses
VARIANTS = {  # name -> training.predict_precision (None: the pipeline baseline)
    "pipeline": None,
    "ours-fp32": "fp32",
    "ours-bf16": "bf16",
    "ours-auto": "auto",
}


def rows() -> list[dict]:
    return [json.loads(line) for line in (shared_data() / "sms_spam.jsonl").open(encoding="utf-8")]


def train(model_dir: Path) -> None:
    from core.model.encoding import resolve_base_model
    from core.model.training import TrainConfig, train_classifier

    data = rows()[:TRAIN_N]
    cfg = TrainConfig(model_path=resolve_base_model(""), classes=CLASSES)
    train_classifier([r["text"] for r in data], [r["label"] for r in data], cfg, model_dir)


def predict_set(all_rows: list[dict], n: int) -> list[dict]:
    """The last ``n`` rows: every row from TRAIN_N on, topped up with training rows when n asks for more."""
    return all_rows[-n:]


def check_accuracy(model_dir: Path) -> float:
    """Float32 accuracy on the check texts: what the evaluate step has already measured before prediction."""
    from core.model.classifier import load_classifier
    from core.model.predict import evaluate_classifier

    check_rows = rows()[CHECK]
    return evaluate_classifier(load_classifier(model_dir), [r["text"] for r in check_rows],
                               [r["label"] for r in check_rows]).accuracy


def variant(name: str, model_dir: Path, n: int, fp32_check: float) -> dict:
    all_rows = rows()
    data = predict_set(all_rows, n)
    texts = [r["text"] for r in data]
    check: dict = {}
    started = time.perf_counter()
    precision = VARIANTS[name]
    if precision is not None:
        from core.model.classifier import load_classifier
        from core.model.predict import choose_precision, predict_stream
        from core.schema import Chunk

        check_rows = all_rows[CHECK]
        clf, decision = choose_precision(load_classifier(model_dir), precision, [r["text"] for r in check_rows],
                                         [r["label"] for r in check_rows], fp32_accuracy=fp32_check)
        check = decision.to_dict()
        chunks = (Chunk(id=str(i), text=t, source="sms", position=i) for i, t in enumerate(texts))
        labels = [row["label"] for row in predict_stream(clf, chunks, batch_size=64)]
    else:
        from transformers import pipeline

        pipe = pipeline("text-classification", model=str(model_dir), batch_size=32, top_k=None, truncation=True)
        labels = [max(scores, key=lambda s: s["score"])["label"] for scores in pipe(texts)]
    seconds = time.perf_counter() - started
    unseen = len(all_rows) - TRAIN_N  # gold accuracy only on texts the classifier was not trained on
    pairs = list(zip(labels, data))[-unseen:]
    return {"n": len(texts), "seconds": seconds, "chunks_per_s": len(texts) / seconds,
            "gold_accuracy": sum(p == r["label"] for p, r in pairs) / len(pairs), "gold_n": len(pairs),
            "peak_rss_mb": peak_rss_mb(), "check": check, "labels": labels}


def peak_rss_mb() -> float:
    """This process's own high-water mark. (getrusage's ru_maxrss survives exec on Linux, so a child started
    by a big parent would report the parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(name: str, model_dir: Path, n: int, fp32_check: float, threads: int | None) -> dict:
    extra = ["--threads", str(threads)] if threads else []
    out = subprocess.run([sys.executable, __file__, "--variant", name, "--model-dir", str(model_dir), "--n", str(n),
                          "--fp32-check", repr(fp32_check), *extra], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table(runs: dict[str, list[dict]], trained: str) -> str:
    base = runs["pipeline"]
    base_cps, base_rss = median_of(base, "chunks_per_s"), median_of(base, "peak_rss_mb")
    fp32_labels = runs["ours-fp32"][0]["labels"]
    first = base[0]
    import torch

    lines = [f"{first['n']} SMS texts; classifier: {trained}. Gold accuracy on the {first['gold_n']} of them it "
             f"was not trained on. Median of {len(base)} interleaved rounds, each variant in its own process, all "
             f"at {torch.get_num_threads()} torch intra-op threads.",
             "", "| variant | precision used | chunks/s | x pipeline | seconds | peak RSS MB | RSS x pipeline | "
             "gold accuracy | vs fp32 (points) | predictions changed vs fp32 | check on 200: fp32 / reduced |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = {"pipeline": "(b) transformers.pipeline, batch_size=32 (baseline)",
             "ours-fp32": "(a) ours, predict_precision=fp32",
             "ours-bf16": "(a) ours, predict_precision=bf16",
             "ours-auto": "(a) ours, predict_precision=auto (the default)"}
    fp32_acc = runs["ours-fp32"][0]["gold_accuracy"]
    for name, rs in runs.items():
        r, c = rs[0], rs[0]["check"]
        cps, rss = median_of(rs, "chunks_per_s"), median_of(rs, "peak_rss_mb")
        checked = (f"{c['fp32_accuracy']:.3f} / {c['reduced_accuracy']:.3f}"
                   if c.get("reduced_accuracy") is not None else "-")
        changed = sum(a != b for a, b in zip(r["labels"], fp32_labels))
        lines.append(f"| {names[name]} | {c.get('used', 'fp32')} | {cps:.0f} | {cps / base_cps:.2f} | "
                     f"{median_of(rs, 'seconds'):.1f} | {rss:.0f} | {rss / base_rss:.2f} | {r['gold_accuracy']:.4f} | "
                     f"{100 * (r['gold_accuracy'] - fp32_acc):+.2f} | {changed} | {checked} |")
    auto = runs["ours-auto"]
    ratio = median_of(auto, "chunks_per_s") / base_cps
    per_round = [a["chunks_per_s"] / b["chunks_per_s"] for a, b in zip(auto, base)]
    lines.append(f"\nours (default settings) / pipeline = **{ratio:.2f}x** chunks/s (target >= 3x; per round: "
                 f"{', '.join(f'{x:.2f}x' for x in per_round)}); peak RSS ratio "
                 f"{median_of(auto, 'peak_rss_mb') / base_rss:.2f}; at fp32 "
                 f"{median_of(runs['ours-fp32'], 'chunks_per_s') / base_cps:.2f}x.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--classifier", type=Path, help="use this trained classifier folder instead of training one")
    p.add_argument("--variant", choices=list(VARIANTS))
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--fp32-check", type=float)
    p.add_argument("--threads", type=int, help="torch intra-op threads in every variant (default: torch's)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.threads:  # before any model work, in the parent (training, the check) and in every child alike
        import torch

        torch.set_num_threads(args.threads)
    if args.variant:  # child mode
        print(json.dumps(variant(args.variant, args.model_dir, args.n, args.fp32_check)))
        return
    if args.classifier:
        model_dir, trained = args.classifier, f"the folder {args.classifier}"
    else:
        model_dir = Path(tempfile.mkdtemp(prefix="bench-predict-")) / "clf"
        started = time.perf_counter()
        train(model_dir)
        trained = (f"the bundled MiniLM trained with TrainConfig defaults on {TRAIN_N} gold-labeled texts "
                   f"({time.perf_counter() - started:.0f} s)")
    fp32_check = check_accuracy(model_dir)
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for i in range(args.rounds):
        # rotate the order so that no variant always runs first (or last) in a round
        order = list(VARIANTS)[i % len(VARIANTS):] + list(VARIANTS)[: i % len(VARIANTS)]
        for name in order:
            runs[name].append(run_child(name, model_dir, args.n, fp32_check, args.threads))
            print(f"round {i + 1} {name}: {runs[name][-1]['chunks_per_s']:.0f} chunks/s", file=sys.stderr)
    body = table(runs, trained)
    print(body)
    if not args.no_write:
        append_result("bench_predict", body)


if __name__ == "__main__":
    main()
