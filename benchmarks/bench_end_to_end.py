"""End to end: ``bootstrapper run`` on a real labeled data set, scored against the human (gold) labels.

Runs the CLI as a child process on N chunks of SMS spam or TREC (from ``../shared/data``) with the bundled
MiniLM, both "LLMs" being the local oracle server (a stand-in answering from the human labels, flipped at
``--noise``, with ``--latency-ms`` per call). Reports wall time, the child's peak RSS, LLM calls, the time per
step, and the gold accuracy of the final predictions on every chunk the run never labeled.

Baseline measured in the same run: the same base model trained with the same settings on the same training
chunks, but with their gold labels, scored on the same held-out chunks (what perfect labels would give).

    .venv/bin/python benchmarks/bench_end_to_end.py --dataset sms --n 5000 --latency-ms 200
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
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import yaml  # noqa: E402

from benchmarks.common import REPO, append_result, shared_data  # noqa: E402
from core.model.metrics import evaluate
from oracle.process import start_oracle  # noqa: E402

DATASETS = {
    "sms": ("sms_spam.jsonl", ["ham", "spam"],
            "Classify an SMS message: 'spam' is unsolicited commercial or fraudulent messaging (prizes, offers, "
            "premium numbers, phishing); 'ham' is any genuine personal or service message."),
    "trec": ("trec6.jsonl", ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"],
             "Classify a question by the type of its expected answer: ABBR abbreviation, DESC description or "
             "definition, ENTY entity, HUM human or group, LOC location, NUM number, date or quantity."),
}


def write_job(root: Path, dataset: str, n: int, args: argparse.Namespace) -> Path:
    file, classes, desc = DATASETS[dataset]
    rows = [json.loads(line) for line in (shared_data() / file).open(encoding="utf-8")][:n]
    (root / "input").mkdir(parents=True)
    (root / "input" / file).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = {
        "classification": {"classes": classes, "desc": desc, "predict_on_whole_set_at_the_end": True},
        "system": {"required_accuracy": args.required_accuracy, "seed": 42},
        "training": {"max_iters": args.max_iters, "test_set_size": 200, "train_set_size": 200,
                     "train_set_increment": 200, "selection": args.selection},
        "api": {"large_model": "openai/oracle-large", "small_model": "openai/oracle-small"},
        "path": {"input": "input", "output": "output"},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def gold_of(out: Path) -> dict[str, str]:
    chunks = (json.loads(line) for line in (out / "chunks.jsonl").open(encoding="utf-8"))
    return {c["id"]: c["metadata"]["label"] for c in chunks}


def gold_baseline(out: Path, gold: dict[str, str], classes: list[str], held_out: list[str], n_iter: int) -> float:
    """Same base model and settings, trained on the same chunks with their human labels."""
    from core.model.classifier import load_classifier
    from core.model.encoding import resolve_base_model
    from core.model.training import TrainConfig, train_classifier

    rows = [json.loads(line) for line in (out / f"classifiers/datasets/dataset_{n_iter}.jsonl").open()]
    texts = [r["text"] for r in rows]
    labels = [gold[r["id"]] for r in rows]
    cfg = TrainConfig(model_path=resolve_base_model("bundled:all-MiniLM-L6-v2"), classes=classes)
    model_dir = Path(tempfile.mkdtemp()) / "gold"
    train_classifier(texts, labels, cfg, model_dir)
    chunks = {json.loads(line)["id"]: json.loads(line)["text"] for line in (out / "chunks.jsonl").open()}
    predicted = load_classifier(model_dir).predict([chunks[i] for i in held_out])
    return evaluate([gold[i] for i in held_out], predicted, classes).accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="sms")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--latency-ms", type=int, default=200)
    p.add_argument("--max-iters", type=int, default=4)
    p.add_argument("--required-accuracy", type=float, default=0.95)
    p.add_argument("--selection", default="uncertainty")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    file, classes, _ = DATASETS[args.dataset]
    root = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    config = write_job(root, args.dataset, args.n, args)
    oracle = start_oracle(shared_data() / file, root / "oracle", noise=args.noise, latency_ms=args.latency_ms)
    env = dict(os.environ, BOOTSTRAPPER_API__LARGE_BASE_URL=oracle.base_url,
               BOOTSTRAPPER_API__SMALL_BASE_URL=oracle.base_url)
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "handlers.cli", "--json-logs", "run", str(config)], cwd=REPO,
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        requests = oracle.stats(prompts=False)["total_requests"]
    finally:
        oracle.stop()
    if proc.returncode != 0:
        sys.exit(f"run failed:\n{proc.stderr[-4000:]}")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = root / "output"
    state = json.loads((out / "state.json").read_text())
    gold = gold_of(out)
    preds = [json.loads(line) for line in (out / "classifiers/final_classifier_output/predictions.jsonl").open()]
    held_out = [r["id"] for r in preds]
    ours = evaluate([gold[i] for i in held_out], [r["label"] for r in preds], classes)
    best = state["best_iteration"]
    labels_used = sum(it["train_ids"] for it in state["iterations"]) + state["counters"].get("test_labels_ok", 0)
    baseline = None if args.no_baseline else gold_baseline(out, gold, classes, held_out, best)
    steps = ", ".join(f"{k} {v:.0f}s" for k, v in state["step_seconds"].items())
    lines = [
        f"{args.dataset}: {args.n} chunks, oracle noise {args.noise:.0%}, latency {args.latency_ms} ms, "
        f"selection {args.selection}, best classifier_{best} of {len(state['iterations'])} "
        f"({state['stop_reason']}).", "",
        "| measure | value |", "|---|---|",
        f"| wall time | {wall:.0f} s |",
        f"| peak RSS (the run's process) | {peak_rss_mb:.0f} MB |",
        f"| LLM requests (oracle) / labels used (train + test) | {requests} / {labels_used} |",
        f"| time per step | {steps} |",
        f"| gold accuracy of the predictions, n={ours.n} never-labeled chunks | {ours.accuracy:.4f} "
        f"({ours.accuracy_ci95[0]:.4f}–{ours.accuracy_ci95[1]:.4f}), macro-F1 {ours.macro_f1:.3f} |",
    ]
    if baseline is not None:
        lines.append(f"| baseline: same model on the same chunks with gold labels | {baseline:.4f} "
                     f"(ours − baseline = {100 * (ours.accuracy - baseline):+.1f} points) |")
    lines.append(f"| labeler's own gold accuracy (1 − noise) | {1 - args.noise:.4f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        append_result(f"bench_end_to_end ({args.dataset})", table)


if __name__ == "__main__":
    main()
