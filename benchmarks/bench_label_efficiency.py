"""Label efficiency: gold accuracy of the classifier vs the number of LLM labels, per selection strategy.

Replays the bootstrapping loop with the product's own pieces (``core.selection`` picks, ``core.training``
trains from the base model on the cumulative labels each iteration, as the pipeline does) on SMS spam and
TREC from ``../shared/data``. The "LLM" is the oracle's labeling rule (``oracle.answers.noisy_label``: the human
label, flipped to another class for a deterministic ``--noise`` share of texts), called in-process to keep
the run short. Every classifier is scored against the gold labels of a held-out set that is never labeled.

Baseline measured in the same run: ``random`` at 0% noise, i.e. the same base model trained on the same
number of gold labels.

    .venv/bin/python benchmarks/bench_label_efficiency.py --datasets sms trec --schedule 200 300 400 500 600 800
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from benchmarks.common import RESULTS, append_result, shared_data  # noqa: E402
from core import selection  # noqa: E402
from core.metrics import evaluate  # noqa: E402
from core.training import TrainConfig, load_classifier, resolve_base_model, train_classifier  # noqa: E402
from oracle.answers import noisy_label  # noqa: E402

DATASETS = {"sms": ("sms_spam.jsonl", ["ham", "spam"]),
            "trec": ("trec6.jsonl", ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"])}
EVAL_SIZE = 1000
CANDIDATES = 4000


def load(dataset: str) -> tuple[list[dict], list[dict], list[str]]:
    file, classes = DATASETS[dataset]
    rows = [json.loads(line) for line in (shared_data() / file).open(encoding="utf-8")]
    random.Random(7).shuffle(rows)
    return rows[:EVAL_SIZE], rows[EVAL_SIZE:], classes


def run_curve(dataset: str, strategy: str, noise: float, schedule: list[int], epochs: int,
              threads: int | None = None) -> list[dict]:
    held_out, pool, classes = load(dataset)
    labeled: list[dict] = []
    remaining = list(pool)
    curve = []
    model_dir: Path | None = None
    for target in schedule:
        k = target - len(labeled)
        if strategy == "random" or model_dir is None:
            picked, remaining = remaining[:k], remaining[k:]
        else:
            cands = remaining[:CANDIDATES]
            texts = [r["text"] for r in cands]
            _, probs = load_classifier(model_dir, threads=threads).predict_proba(texts)
            ids = [str(i) for i in range(len(cands))]
            if strategy == "uncertainty":
                chosen = selection.select_uncertain(ids, texts, probs, k)
            else:
                counts: dict[str, int] = {}
                for r in labeled:
                    counts[r["llm"]] = counts.get(r["llm"], 0) + 1
                chosen = selection.select_balanced(ids, texts, probs, classes, counts, k)
            chosen_set = set(int(i) for i in chosen)
            picked = [cands[i] for i in sorted(chosen_set)]
            remaining = [r for i, r in enumerate(cands) if i not in chosen_set] + remaining[CANDIDATES:]
        for r in picked:
            r = dict(r)
            r["llm"] = noisy_label(r["label"], classes, noise, 0, "openai/oracle-small", r["text"])[0]
            labeled.append(r)
        cfg = TrainConfig(model_path=resolve_base_model(""), classes=classes, epochs=epochs, max_length=64, seed=42,
                          torch_threads=threads)
        model_dir = Path(tempfile.mkdtemp(prefix="labeff-")) / "m"
        started = time.perf_counter()
        train_classifier([r["text"] for r in labeled], [r["llm"] for r in labeled], cfg, model_dir)
        seconds = time.perf_counter() - started
        predicted = load_classifier(model_dir, threads=threads).predict([r["text"] for r in held_out])
        m = evaluate([r["label"] for r in held_out], predicted, classes)
        label_acc = sum(r["llm"] == r["label"] for r in labeled) / len(labeled)
        curve.append({"labels": len(labeled), "gold_accuracy": round(m.accuracy, 4), "macro_f1": round(m.macro_f1, 4),
                      "label_accuracy": round(label_acc, 4), "train_s": round(seconds, 1)})
        print(f"{dataset} {strategy} noise={noise:.0%} labels={len(labeled)} gold_acc={m.accuracy:.4f} "
              f"macro_f1={m.macro_f1:.3f} (labels right {label_acc:.1%}, {seconds:.0f}s)", flush=True)
    return curve


def labels_to_reach(curve: list[dict], accuracy: float) -> int | None:
    for point in curve:
        if point["gold_accuracy"] >= accuracy:
            return point["labels"]
    return None


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({k[0] for k in results})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for (d, strategy, noise), curve in sorted(results.items()):
            if d != ds:
                continue
            style = "--" if noise == 0 else "-"
            ax.plot([p["labels"] for p in curve], [p["gold_accuracy"] for p in curve], style, marker="o",
                    label=f"{strategy}, {noise:.0%} noise")
        ax.set_title(f"{ds}: gold accuracy vs LLM labels")
        ax.set_xlabel("training labels")
        ax.set_ylabel("gold accuracy (held-out, n=1000)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["sms", "trec"])
    p.add_argument("--strategies", nargs="+", default=["random", "uncertainty", "balanced"])
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--schedule", type=int, nargs="+", default=[200, 300, 400, 500, 600, 800])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 lets two runs share 2 cores)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    args.strategies = ["random"] + [s for s in args.strategies if s != "random"]  # random is the reference
    results: dict[tuple[str, str, float], list[dict]] = {}
    for ds in args.datasets:
        results[(ds, "random", 0.0)] = run_curve(ds, "random", 0.0, args.schedule, args.epochs, args.threads)
        for strategy in args.strategies:
            results[(ds, strategy, args.noise)] = run_curve(ds, strategy, args.noise, args.schedule, args.epochs, args.threads)
    lines = [f"Held-out gold set n={EVAL_SIZE} per dataset; bundled MiniLM, {args.epochs} epochs, max_length 64; "
             f"LLM = oracle labeling rule at {args.noise:.0%} noise; schedule {args.schedule}.", "",
             "| dataset | strategy | noise | " + " | ".join(f"{n} labels" for n in args.schedule) + " |",
             "|---|---|---|" + "---|" * len(args.schedule)]
    for (ds, strategy, noise), curve in sorted(results.items()):
        lines.append(f"| {ds} | {strategy} | {noise:.0%} | " + " | ".join(f"{pt['gold_accuracy']:.4f}" for pt in curve)
                     + " |")
    lines += ["", "| dataset | strategy | labels to reach random's final gold accuracy | saving vs random | "
              "final vs gold-label baseline (points) | final vs the labeler's own accuracy |", "|---|---|---|---|---|---|"]
    for ds in args.datasets:
        final_random = results[(ds, "random", args.noise)][-1]["gold_accuracy"]
        baseline_final = results[(ds, "random", 0.0)][-1]["gold_accuracy"]
        for strategy in args.strategies:
            curve = results[(ds, strategy, args.noise)]
            need = labels_to_reach(curve, final_random)
            saving = f"{1 - need / args.schedule[-1]:.0%}" if need else "not reached"
            final = curve[-1]["gold_accuracy"]
            lines.append(f"| {ds} | {strategy} | {need or '—'} | {saving} | {100 * (final - baseline_final):+.1f} | "
                         f"{100 * (final - (1 - args.noise)):+.1f} |")
    png = RESULTS.with_name(f"label_efficiency_{'_'.join(args.datasets)}.png")
    plot(results, png)
    lines += ["", f"Plot: `benchmarks/{png.name}`"]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        append_result("bench_label_efficiency", table)
        (RESULTS.with_name(f"label_efficiency_{'_'.join(args.datasets)}.json")).write_text(
            json.dumps({f"{k[0]}|{k[1]}|{k[2]}": v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
