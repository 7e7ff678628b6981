"""Label efficiency: gold accuracy of the classifier vs the number of LLM labels, per selection strategy.

Replays the bootstrapping loop with the product's own pieces (``core.model.selection`` picks: for
``uncertainty`` and ``balanced`` the first set is ``representatives`` of base-model embeddings, as in the product;
``core.model.training`` trains from the base model on the cumulative labels each iteration with the default ``training.*`` settings,
as the pipeline does) on SMS spam and TREC from ``../shared/data``. The "LLM" is the oracle's labeling rule
(``oracle.answers.noisy_label``: the human label, flipped to another class for a deterministic ``--noise``
share of texts), called in-process to keep the run short. Every classifier is scored against the gold labels of
a held-out set that is never labeled (the same set for every seed).

Each curve is run once per seed; a seed sets the pool order (so which texts ``random`` takes), the oracle's
flip pattern and the training seed. Tables show the mean over seeds and the spread (min..max).

Baseline measured in the same run: ``random`` at 0% noise, i.e. the same base model trained on the same
number of gold labels.

    .venv/bin/python benchmarks/bench_label_efficiency.py --datasets sms trec --seeds 1 2 --jobs 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from benchmarks.common import RESULTS, append_result, shared_data  # noqa: E402

DATASETS = {"sms": ("sms_spam.jsonl", ["ham", "spam"]),
            "trec": ("trec6.jsonl", ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"])}
EVAL_SIZE = 1000
CANDIDATES = 4000  # as core.run.steps.SELECTION_CANDIDATES: chunks scored per iteration
REACH_DEFINITION = (
    "'labels to reach' = the smallest number of labels at which the strategy's mean curve (over seeds) first "
    "reaches random's mean final gold accuracy at the same noise, interpolating linearly between measured "
    "points; 'saving' = 1 - that number / random's final number of labels. '—' = never reached.")

Curve = list[dict]


def load(dataset: str, seed: int) -> tuple[list[dict], list[dict], list[str]]:
    """Held-out gold set (fixed for every seed) and the unlabeled pool in the seed's order."""
    file, classes = DATASETS[dataset]
    rows = [json.loads(line) for line in (shared_data() / file).open(encoding="utf-8")]
    random.Random(7).shuffle(rows)
    pool = rows[EVAL_SIZE:]
    random.Random(seed).shuffle(pool)
    return rows[:EVAL_SIZE], pool, classes


def default_train_config(classes: list[str], seed: int, threads: int | None, overrides: dict) -> object:
    """The product's training recipe: ``training.*`` defaults from ``core.config``, as ``core.run.steps`` builds it."""
    from core.model.encoding import BUNDLED_MODEL, resolve_base_model
    from core.model.training import TrainConfig

    cfg = TrainConfig(model_path=resolve_base_model(BUNDLED_MODEL), classes=classes, seed=seed, torch_threads=threads)
    return replace(cfg, **overrides)


def pick(strategy: str, remaining: list[dict], labeled: list[dict], k: int, model_dir: Path | None,
         classes: list[str], threads: int | None, seed: int) -> tuple[list[dict], list[dict]]:
    """The next ``k`` texts to label and what remains, as ``core.run.steps`` chooses them."""
    from core.model import selection
    from core.model.classifier import load_classifier

    if strategy == "random" or len(remaining) <= k:
        return remaining[:k], remaining[k:]
    cands = remaining[:CANDIDATES]
    texts = [r["text"] for r in cands]
    ids = [str(i) for i in range(len(cands))]
    if model_dir is None:  # no classifier yet: representatives of the base model's embeddings, as core.run.steps
        from core.config import TrainingSettings
        from core.model.embeddings import embed_texts
        from core.model.encoding import resolve_base_model

        t = TrainingSettings()
        vectors = embed_texts(resolve_base_model(t.model_path), texts, max_length=t.max_length,
                              truncation_type=t.truncation_type, threads=threads)
        chosen = selection.representatives(ids, texts, vectors, k, seed=seed)
        chosen_set = {int(i) for i in chosen}
        return ([cands[i] for i in sorted(chosen_set)],
                [r for i, r in enumerate(cands) if i not in chosen_set] + remaining[CANDIDATES:])
    _, probs = load_classifier(model_dir, threads=threads).predict_proba(texts)
    counts: dict[str, int] = {}
    for r in labeled:
        counts[r["llm"]] = counts.get(r["llm"], 0) + 1
    if strategy == "uncertainty":
        chosen = selection.select_uncertain(ids, texts, probs, k, classes, counts)
    else:
        chosen = selection.select_balanced(ids, texts, probs, k, classes, counts)
    chosen_set = {int(i) for i in chosen}
    picked = [cands[i] for i in sorted(chosen_set)]
    return picked, [r for i, r in enumerate(cands) if i not in chosen_set] + remaining[CANDIDATES:]


def run_curve(task: tuple[str, str, float, int, list[int], int | None, dict]) -> tuple[tuple, Curve]:
    """One strategy's curve for one seed: label, train from the base model, score on gold, repeat."""
    dataset, strategy, noise, seed, schedule, threads, overrides = task
    from core.model.classifier import load_classifier
    from core.model.metrics import evaluate
    from core.model.training import train_classifier
    from oracle.answers import noisy_label

    held_out, remaining, classes = load(dataset, seed)
    cfg = default_train_config(classes, seed, threads, overrides)
    labeled: list[dict] = []
    curve: Curve = []
    model_dir: Path | None = None
    for target in schedule:
        picked, remaining = pick(strategy, remaining, labeled, target - len(labeled), model_dir, classes, threads,
                                 seed)
        for r in picked:
            labeled.append({**r, "llm": noisy_label(r["label"], classes, noise, seed, "openai/oracle-small",
                                                    r["text"])[0]})
        model_dir = Path(tempfile.mkdtemp(prefix="labeff-")) / "m"
        started = time.perf_counter()
        result = train_classifier([r["text"] for r in labeled], [r["llm"] for r in labeled], cfg, model_dir)
        seconds = time.perf_counter() - started
        predicted = load_classifier(model_dir, threads=threads).predict([r["text"] for r in held_out])
        m = evaluate([r["label"] for r in held_out], predicted, classes)
        label_acc = sum(r["llm"] == r["label"] for r in labeled) / len(labeled)
        curve.append({"labels": len(labeled), "gold_accuracy": round(m.accuracy, 4), "macro_f1": round(m.macro_f1, 4),
                      "label_accuracy": round(label_acc, 4), "epochs": result.epochs, "train_s": round(seconds, 1)})
        print(f"{dataset} {strategy} noise={noise:.0%} seed={seed} labels={len(labeled)} gold_acc={m.accuracy:.4f} "
              f"macro_f1={m.macro_f1:.3f} (labels right {label_acc:.1%}, {result.epochs} epochs, {seconds:.0f}s)",
              flush=True)
    return (dataset, strategy, noise, seed), curve


# --- summarising ---------------------------------------------------------------------------------------------


def mean_curve(curves: list[Curve]) -> list[tuple[int, float, float, float]]:
    """(labels, mean, min, max) of gold accuracy per schedule point, over seeds.

    >>> mean_curve([[{"labels": 200, "gold_accuracy": 0.8}], [{"labels": 200, "gold_accuracy": 0.9}]])
    [(200, 0.85, 0.8, 0.9)]
    """
    out = []
    for points in zip(*curves):
        accs = [p["gold_accuracy"] for p in points]
        out.append((points[0]["labels"], round(sum(accs) / len(accs), 6), min(accs), max(accs)))
    return out


def labels_to_reach(curve: list[tuple[int, float, float, float]], accuracy: float) -> float | None:
    """Labels at which a mean curve first reaches ``accuracy``, linearly interpolated; None if it never does.

    >>> labels_to_reach([(200, 0.80, 0, 0), (400, 0.90, 0, 0), (600, 0.88, 0, 0)], 0.85)
    300.0
    >>> labels_to_reach([(200, 0.9, 0, 0)], 0.8), labels_to_reach([(200, 0.7, 0, 0)], 0.8)
    (200.0, None)
    """
    prev: tuple[int, float] | None = None
    for labels, acc, *_ in curve:
        if acc >= accuracy:
            if prev is None:
                return float(labels)
            x0, y0 = prev
            return round(x0 + (labels - x0) * (accuracy - y0) / (acc - y0), 1)
        prev = (labels, acc)
    return None


def summary_tables(results: dict[tuple, list[Curve]], datasets: list[str], strategies: list[str], noise: float,
                   schedule: list[int]) -> list[str]:
    lines = ["| dataset | strategy | noise | " + " | ".join(f"{n} labels" for n in schedule) + " |",
             "|---|---|---|" + "---|" * len(schedule)]
    for (ds, strategy, nz), curves in sorted(results.items()):
        cells = [f"{m:.4f} ({lo:.3f}–{hi:.3f})" for _, m, lo, hi in mean_curve(curves)]
        lines.append(f"| {ds} | {strategy} | {nz:.0%} | " + " | ".join(cells) + " |")
    lines += ["", REACH_DEFINITION, "",
              "| dataset | strategy | labels to reach random's final | saving vs random | per seed (vs that seed's random) "
              "| final (mean) | final macro-F1 (mean) | vs gold-label baseline at the same labels (points) "
              "| vs the labeler's own accuracy (points) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for ds in datasets:
        random_curve = mean_curve(results[(ds, "random", noise)])
        final_labels, final_random = random_curve[-1][0], random_curve[-1][1]
        baseline_final = mean_curve(results[(ds, "random", 0.0)])[-1][1]
        for strategy in strategies:
            curve = mean_curve(results[(ds, strategy, noise)])
            need = labels_to_reach(curve, final_random)
            saving = f"{1 - need / final_labels:.0%}" if need is not None else "not reached"
            final = curve[-1][1]
            per_seed = []
            for own, rnd in zip(results[(ds, strategy, noise)], results[(ds, "random", noise)], strict=True):
                reach = labels_to_reach(mean_curve([own]), rnd[-1]["gold_accuracy"])
                per_seed.append(f"{reach:.0f}" if reach is not None else "—")
            f1 = sum(c[-1]["macro_f1"] for c in results[(ds, strategy, noise)]) / len(results[(ds, strategy, noise)])
            lines.append(f"| {ds} | {strategy} | {f'{need:.0f}' if need is not None else '—'} | {saving} | "
                         f"{', '.join(per_seed)} | {final:.4f} | {f1:.3f} | {100 * (final - baseline_final):+.1f} | "
                         f"{100 * (final - (1 - noise)):+.1f} |")
    return lines


def plot(results: dict[tuple, list[Curve]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({k[0] for k in results})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for (d, strategy, noise), curves in sorted(results.items()):
            if d != ds:
                continue
            xs, means, lows, highs = zip(*mean_curve(curves))
            line, = ax.plot(xs, means, "--" if noise == 0 else "-", marker="o", label=f"{strategy}, {noise:.0%} noise")
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
        ax.set_title(f"{ds}: gold accuracy vs LLM labels (mean, band = min..max over seeds)", fontsize=9)
        ax.set_xlabel("training labels")
        ax.set_ylabel(f"gold accuracy (held-out, n={EVAL_SIZE})")
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
    p.add_argument("--schedule", type=int, nargs="+", default=[200, 300, 400, 600, 800, 1000])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--jobs", type=int, default=1, help="curves run in parallel, each in its own process")
    p.add_argument("--threads", type=int, default=None, help="torch threads per job (1 lets two jobs share 2 cores)")
    p.add_argument("--override", default="{}", help='JSON of TrainConfig fields to change, e.g. \'{"epochs": 2}\'')
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--from-json", type=Path, help="print the tables of an earlier run's saved curves; run nothing")
    args = p.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        results = {(k.split("|")[0], k.split("|")[1], float(k.split("|")[2])): v for k, v in saved.items()}
        datasets = list(dict.fromkeys(k[0] for k in results))
        strategies = list(dict.fromkeys(k[1] for k in results if k[2] == args.noise))
        schedule = [pt["labels"] for pt in next(iter(results.values()))[0]]
        print("\n".join(summary_tables(results, datasets, strategies, args.noise, schedule)))
        return
    overrides = json.loads(args.override)
    strategies = ["random"] + [s for s in args.strategies if s != "random"]  # random is the reference
    kinds = [(ds, "random", 0.0) for ds in args.datasets]
    kinds += [(ds, s, args.noise) for ds in args.datasets for s in strategies]
    tasks = [(ds, s, nz, seed, args.schedule, args.threads, overrides) for ds, s, nz in kinds for seed in args.seeds]
    tasks.sort(key=lambda t: (t[1] == "random", t[0] != "trec"))  # slowest first: scoring candidates costs time
    started = time.perf_counter()
    results: dict[tuple, list[Curve]] = {k: [] for k in kinds}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for (ds, s, nz, _seed), curve in pool.map(run_curve, tasks):
            results[(ds, s, nz)].append(curve)
    minutes = (time.perf_counter() - started) / 60
    recipe = default_train_config(["a", "b"], 0, args.threads, overrides)
    lines = [f"Held-out gold set n={EVAL_SIZE} per dataset; bundled MiniLM with the default training recipe "
             f"(epochs {recipe.epochs}, min_steps {recipe.min_steps}, learning_rate {recipe.learning_rate:g}, "
             f"head_learning_rate {recipe.head_learning_rate}, class_weight_power {recipe.class_weight_power}, "
             f"label_smoothing {recipe.label_smoothing}, "
             f"max_length {recipe.max_length}); LLM = oracle labeling rule at {args.noise:.0%} noise; "
             f"schedule {args.schedule}; seeds {args.seeds}; {minutes:.0f} min with {args.jobs} job(s).",
             "", "Gold accuracy, mean over seeds (min–max):", ""]
    lines += summary_tables(results, args.datasets, strategies, args.noise, args.schedule)
    name = "_".join(args.datasets)
    png = RESULTS.with_name(f"label_efficiency_{name}.png")
    plot(results, png)
    lines += ["", f"Plot: `benchmarks/{png.name}`"]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        append_result("bench_label_efficiency", table)
        RESULTS.with_name(f"label_efficiency_{name}.json").write_text(
            json.dumps({f"{k[0]}|{k[1]}|{k[2]}": v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
