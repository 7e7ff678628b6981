"""Prediction throughput: our streaming batch predictor vs ``transformers.pipeline(batch_size=32)``.

Both classify the same ~5,000 SMS texts with the same classifier (the bundled MiniLM fine-tuned here on 200
gold-labeled examples, 2 epochs). Each variant runs in its own child process so its peak RSS is its own.

    (a) ours      core.predict.predict_stream: windows of 2,048 chunks sorted by length, batches of 64,
                  dynamic padding, torch.inference_mode
    (b) baseline  transformers.pipeline("text-classification", batch_size=32, top_k=None, truncation=True)

    .venv/bin/python benchmarks/bench_predict.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def rows() -> list[dict]:
    return [json.loads(line) for line in (shared_data() / "sms_spam.jsonl").open(encoding="utf-8")]


def train(model_dir: Path) -> None:
    from core.training import TrainConfig, resolve_base_model, train_classifier

    data = rows()[:200]
    cfg = TrainConfig(model_path=resolve_base_model(""), classes=CLASSES, epochs=2)
    train_classifier([r["text"] for r in data], [r["label"] for r in data], cfg, model_dir)


def variant(name: str, model_dir: Path, n: int) -> dict:
    data = rows()[200:200 + n]
    texts = [r["text"] for r in data]
    started = time.perf_counter()
    if name in ("ours", "ours-int8"):
        from core.predict import predict_stream
        from core.schema import Chunk
        from core.training import load_classifier

        clf = load_classifier(model_dir)
        if name == "ours-int8":  # an experiment, not yet a product option: int8 dynamic quantization of Linear layers
            import torch

            clf._model = torch.ao.quantization.quantize_dynamic(clf._model, {torch.nn.Linear}, dtype=torch.qint8)
        chunks = (Chunk(id=str(i), text=t, source="sms", position=i) for i, t in enumerate(texts))
        labels = [row["label"] for row in predict_stream(clf, chunks, batch_size=64)]
    else:
        from transformers import pipeline

        pipe = pipeline("text-classification", model=str(model_dir), batch_size=32, top_k=None, truncation=True)
        labels = [max(scores, key=lambda s: s["score"])["label"] for scores in pipe(texts)]
    seconds = time.perf_counter() - started
    accuracy = sum(p == r["label"] for p, r in zip(labels, data)) / len(data)
    return {"n": len(texts), "seconds": seconds, "chunks_per_s": len(texts) / seconds, "gold_accuracy": accuracy,
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's own high-water mark. (getrusage's ru_maxrss survives exec on Linux, so a child started
    by a big parent would report the parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4960)
    p.add_argument("--variant", choices=["ours", "ours-int8", "pipeline"])
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.variant:  # child mode
        print(json.dumps(variant(args.variant, args.model_dir, args.n)))
        return
    model_dir = Path(tempfile.mkdtemp(prefix="bench-predict-")) / "clf"
    train(model_dir)
    results = {}
    for name in ("pipeline", "ours", "ours-int8"):
        out = subprocess.run([sys.executable, __file__, "--variant", name, "--model-dir", str(model_dir),
                              "--n", str(args.n)], capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, base, int8 = results["ours"], results["pipeline"], results["ours-int8"]
    lines = [f"{ours['n']} SMS texts, the bundled MiniLM fine-tuned on 200 examples; one run each in its own process.",
             "", "| variant | chunks/s | seconds | peak RSS MB | gold accuracy |", "|---|---|---|---|---|"]
    for name, r in (("(b) transformers.pipeline, batch_size=32 (baseline)", base),
                    ("(a) ours: length-sorted windows, batch 64, inference_mode", ours),
                    ("(c) ours + int8 dynamic quantization (experiment, not a product option yet)", int8)):
        lines.append(f"| {name} | {r['chunks_per_s']:.0f} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['gold_accuracy']:.4f} |")
    lines.append(f"\nours / pipeline = **{ours['chunks_per_s'] / base['chunks_per_s']:.2f}x** (target >= 3x); "
                 f"peak RSS ratio {ours['peak_rss_mb'] / base['peak_rss_mb']:.2f}; with int8 "
                 f"{int8['chunks_per_s'] / base['chunks_per_s']:.2f}x at a gold-accuracy change of "
                 f"{100 * (int8['gold_accuracy'] - ours['gold_accuracy']):+.2f} points.")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        append_result("bench_predict", table)


if __name__ == "__main__":
    main()
