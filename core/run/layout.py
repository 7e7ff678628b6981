"""The one map of the output location: every key and prefix the job writes, as a constant or a small function.

Every module that reads or writes the output location takes its keys from here, so a newcomer finds in one place
what a run leaves behind and who writes it (ARCHITECTURE.md has the table). Keys are relative posix paths under
``path.output``; a prefix ends in ``/``.

    >>> classifier(3), dataset(3), iteration_choice(3)
    ('classifiers/classifier_3/', 'classifiers/datasets/dataset_3.jsonl', 'iterations/iteration_3.json')
    >>> predictions(0, 1), predictions(2, 4)
    ('classifiers/final_classifier_output/predictions.jsonl', \
'classifiers/final_classifier_output/predictions-part-00002-of-00004.jsonl')

Does not: read or write anything.
"""

from __future__ import annotations

import re

# ---- progress and inputs, as the run proceeds ------------------------------------------------------------
STATE = "state.json"  # core.run.state: the step, iterations, counters; saved after every step
LEASE = "lease.json"  # core.run.lease: one runner per output location
CHUNKS = "chunks.jsonl"  # ingest: one chunk a line, with a stable id
INGEST_REPORT = "ingest_report.json"  # ingest: what was read or skipped, and why
SPLITS = "splits.json"  # split: the test, initial training and pool ids
RULES = "rules.json"  # rules: the large model's rules and the prompt that made them
PROMPT_PADDING = "prompt_padding.json"  # label steps: per model, the padding blocks of the label prompt, decided once
TEST_LABELS = "labels/test/"  # label_test: append-only label logs, one part per writer
TRAIN_LABELS = "labels/train/"  # label_train: likewise, for every iteration's training labels
ITERATIONS = "iterations/"
CACHE = "cache/"  # every LLM reply, content-addressed: kept by --restart, it is paid for
LEDGER = "ledger/"  # the cost ledger's append-only parts
PREDICTING = "predicting/"  # predict: committed parts of a prediction in progress, joined into the final file
CHECKPOINTS = "checkpoints/"  # train: a stopped training's resumable checkpoint, deleted once the classifier is up

# ---- what users read -------------------------------------------------------------------------------------
CLASSIFIERS = "classifiers/"
RULES_YAML = CLASSIFIERS + "rules_creation_generation.yaml"
TEST_LABELS_YAML = CLASSIFIERS + "truth_labels_classification/llm_classifications.yaml"
TEST_LABELS_JSONL = CLASSIFIERS + "test_labels.jsonl"  # report: the YAML's labels as JSONL (core.run.exports)
LABELS_JSONL = CLASSIFIERS + "labels.jsonl"  # report: every usable LLM label, test and training, with provenance
REVIEW_CSV = CLASSIFIERS + "review.csv"  # report: test chunks where the best classifier and the large LLM disagree
FINAL_OUTPUT = CLASSIFIERS + "final_classifier_output/"
LLM_CALLS = "llm_calls.jsonl"  # the ledger's parts folded into one file by the report step
REPORT = "report.md"
REPORT_HTML = "report.html"  # report: report.md's figures, plots and review list as one self-contained page
METRICS = "metrics.json"
LEARNING_CURVE = "plots/learning_curve.png"
CONFUSION = "plots/confusion_matrix.png"
META_DATASET = "meta_datagen/meta_dataset.jsonl"

# ---- AWS Batch: markers that keep a retried job from submitting its follow-up jobs twice -----------------
ARRAY_MARKER = "batch/predict-array.json"
REPORT_MARKER = "batch/report-job.json"

# ``--restart`` forgets everything but these: the cache is paid for, the lease is the restarting run's own.
KEPT_ON_RESTART = (CACHE, LEASE)

PREDICTION_PART = re.compile(r"predictions-part-(\d+)-of-(\d+)\.jsonl$")


def iteration_choice(n: int) -> str:
    """Which chunks iteration ``n`` labels, chosen once and re-read on resume."""
    return f"{ITERATIONS}iteration_{n}.json"


def classifier(n: int) -> str:
    """Classifier ``n``'s folder (safetensors, tokenizer, training metadata)."""
    return f"{CLASSIFIERS}classifier_{n}/"


def checkpoint(n: int) -> str:
    """Where training classifier ``n`` keeps its resumable checkpoint until the classifier is uploaded."""
    return f"{CHECKPOINTS}classifier_{n}/"


def dataset(n: int) -> str:
    """The LLM-labeled examples classifier ``n`` was trained on."""
    return f"{CLASSIFIERS}datasets/dataset_{n}.jsonl"


def predictions(index: int, count: int) -> str:
    """Shard ``index`` of ``count`` of the final prediction; one shard writes ``predictions.jsonl``."""
    name = "predictions.jsonl" if count == 1 else f"predictions-part-{index:05d}-of-{count:05d}.jsonl"
    return FINAL_OUTPUT + name


def prediction_parts(index: int, count: int) -> str:
    """The committed parts of shard ``index`` of ``count`` while it is predicted; removed once it is whole."""
    return f"{PREDICTING}{predictions(index, count).removeprefix(FINAL_OUTPUT).removesuffix('.jsonl')}/"


def prediction_part(index: int, count: int, n: int) -> str:
    """Part ``n`` (from 0) of shard ``index`` of ``count``: the rows of one prediction window, in input order."""
    return f"{prediction_parts(index, count)}part-{n:05d}.jsonl"


def kept_on_restart(key: str) -> bool:
    """True for keys ``--restart`` leaves in place.

    >>> kept_on_restart("cache/ab/abcd.json"), kept_on_restart("lease.json"), kept_on_restart("state.json")
    (True, True, False)
    """
    return any(key == k or (k.endswith("/") and key.startswith(k)) for k in KEPT_ON_RESTART)
