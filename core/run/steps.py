"""The work of each pipeline step. Called only by ``core.pipeline``, which owns order, state and saving.

Each ``do_<step>(ctx, state)`` reads what earlier steps left in the output location, does its work, writes
its artifacts, and updates counters in ``state``; none of them saves the state or picks the next step.
Every step is safe to run again after a kill: artifacts are recomputed deterministically, and LLM work goes
through the response cache and the label shard logs, so a re-run never pays for a call twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import yaml

from core.config import Settings
from core.errors import NoUsableChunks, TrainingError
from core.ingest import chunking as documents
from core.llm import fanout as workers
from core.llm import labeling, rules
from core.llm.client import Endpoint
from core.run.context import (
    CHUNKS_KEY,
    CLS,
    GOLD_KEY,
    INGEST_REPORT_KEY,
    RULES_KEY,
    SPLITS_KEY,
    TEST_LABELS,
    TRAIN_LABELS,
    RunContext,
    classifier_dir,
    dumps_jsonl,
    load_chunks,
    load_splits,
    read_jsonl,
    train_config,
)
from core.run.picks import selected_ids, selection_key
from core.run.splits import split_ids, test_size_for
from core.run.state import IterationRecord, State
from core.schema import Chunk, Label
from core.storage.backends import Storage, upload_dir
from core.storage.jsonl_log import ShardWriter

log = logging.getLogger("bootstrapper")


def gold_label(chunk: Chunk, classes: list[str]) -> str | None:
    value = chunk.metadata.get(GOLD_KEY)
    return value if isinstance(value, str) and value in classes else None


# ---- steps --------------------------------------------------------------------------------------------


def ingest_inputs(settings: Settings, input: Storage, output: Storage | None) -> documents.IngestResult:
    """Read every input object and chunk it; with ``output``, write chunks.jsonl and ingest_report.json."""

    def files() -> Iterator[tuple[str, bytes]]:
        for key in input.list(""):
            yield key, input.read_bytes(key)

    try:
        result = documents.ingest(files(), chunk_size=settings.system.chunk_size,
                                  truncation_type=settings.training.truncation_type)
    except NoUsableChunks as exc:
        partial = getattr(exc, "result", None)
        if partial is not None and output is not None:
            output.write_text(INGEST_REPORT_KEY, json.dumps(partial.report(), indent=2, ensure_ascii=False))
        raise
    for skipped in result.skipped:
        where = f" line {skipped.line}" if skipped.line else ""
        log.warning("skipped input %s%s: %s", skipped.source, where, skipped.reason)
    if output is not None:
        output.write_text(INGEST_REPORT_KEY, json.dumps(result.report(), indent=2, ensure_ascii=False))
        output.write_text(CHUNKS_KEY, dumps_jsonl([c.to_dict() for c in result.chunks]))
    log.info("ingested %d files into %d chunks (%d inputs skipped, %d duplicate chunks dropped)",
             result.files_read, len(result.chunks), len(result.skipped), result.duplicates_dropped)
    return result


def do_ingest(ctx: RunContext, state: State) -> None:
    result = ingest_inputs(ctx.settings, ctx.input, ctx.output)
    state.counters.update(files_read=result.files_read, chunks=len(result.chunks),
                          inputs_skipped=len(result.skipped), duplicates_dropped=result.duplicates_dropped)


def do_split(ctx: RunContext, state: State) -> None:
    t = ctx.settings.training
    ids = [d["id"] for d in read_jsonl(ctx.output, CHUNKS_KEY)]
    if len(ids) < 2:
        raise NoUsableChunks(f"only {len(ids)} chunk(s): need at least a test and a training chunk")
    test_size = test_size_for(len(ids), t.test_set_size)
    splits = split_ids(ids, test_size, t.train_set_size, ctx.settings.system.seed)
    ctx.output.write_text(SPLITS_KEY, json.dumps(splits))
    state.pool_remaining = len(splits["pool"])
    state.counters.update(test_chunks=len(splits["test"]), initial_train_chunks=len(splits["train"]),
                          pool_chunks=len(splits["pool"]))


def do_rules(ctx: RunContext, state: State) -> None:
    s = ctx.settings
    chunks = load_chunks(ctx)
    splits = load_splits(ctx)
    # Ground the rules on a few training chunks (never test chunks: the test set stays unseen).
    samples = [chunks[i].text for i in splits["train"][:5]]
    result = asyncio.run(rules.create_rules(ctx.gateway, ctx.large, s.classification.classes,
                                            s.classification.desc, samples,
                                            max_tokens=s.api.rules_max_tokens, temperature=s.api.temperature))
    ctx.output.write_text(RULES_KEY, json.dumps({"text": result.text, "messages": result.messages,
                                                 "model": result.reply.model}))
    ctx.output.write_text(CLS + "rules_creation_generation.yaml", rules.rules_generation_yaml(result))


def label_prompt(ctx: RunContext, endpoint: Endpoint) -> labeling.LabelPrompt:
    text = json.loads(ctx.output.read_text(RULES_KEY))["text"]
    mode = ctx.format_modes.get(endpoint.model, "none")
    return labeling.LabelPrompt(ctx.settings.classification.classes, text, mode)


def _label(ctx: RunContext, ids: list[str], prefix: str, endpoint: Endpoint, stage: str) -> dict[str, Label]:
    """Label every id not already done under ``prefix``; returns all labels for ``ids``."""
    chunks = load_chunks(ctx)
    done = labeling.load_labels(ctx.output, prefix)
    todo = [chunks[i] for i in ids if labeling.needs_label(done.get(i))]
    if todo:
        s = ctx.settings
        tick = ctx.progress(f"labeling {stage} ({endpoint.model})", len(todo))
        opts: dict[str, Any] = {"max_tokens": s.api.max_tokens, "temperature": s.api.temperature, "logprobs": True}
        processes = workers.plan_processes(len(todo), s.system.label_processes, s.system.concurrency_limit)
        if processes > 1 and ctx.worker_factory is not None:
            # The parent's buffered ledger lines go out first, so the shards stay in the order calls happened.
            ctx.ledger.flush()
            results = workers.label_in_processes(
                ctx.worker_factory, endpoint, label_prompt(ctx, endpoint), todo, stage=stage, prefix=prefix,
                processes=processes, workers=s.system.concurrency_limit,
                flush_interval_s=s.system.flush_interval_s, on_done=lambda _l: tick(1),
                should_stop=ctx.should_stop, **opts)
        else:
            sink = ShardWriter(ctx.output, prefix, flush_interval_s=s.system.flush_interval_s)
            results = asyncio.run(labeling.label_many(
                ctx.gateway, endpoint, label_prompt(ctx, endpoint), todo, stage=stage, sink=sink,
                workers=s.system.concurrency_limit, on_done=lambda _l: tick(1), should_stop=ctx.should_stop,
                **opts))
        done.update({lab.chunk_id: lab for lab in results})
    return {i: done[i] for i in ids if i in done}


def _failed_summary(labels: dict[str, Label]) -> dict[str, int]:
    failed = [lab for lab in labels.values() if not lab.ok]
    return {"failed": len(failed), "retryable": sum(1 for lab in failed if lab.retryable)}


def do_label_test(ctx: RunContext, state: State) -> None:
    splits = load_splits(ctx)
    labels = _label(ctx, splits["test"], TEST_LABELS, ctx.large, "test_labels")
    chunks = load_chunks(ctx)
    rows = [{"id": i, "text": chunks[i].text, "label": lab.label, "status": lab.status, "reason": lab.reason,
             "model": lab.model, "confidence": lab.confidence,
             **({"raw_reply": lab.raw, "error": lab.error} if not lab.ok else {})}
            for i, lab in labels.items()]
    ctx.output.write_text(CLS + "truth_labels_classification/llm_classifications.yaml",
                          yaml.safe_dump(rows, sort_keys=False, allow_unicode=True, width=100))
    ok = sum(1 for lab in labels.values() if lab.ok)
    state.counters["test_labels_ok"] = ok
    state.counters["test_labels_failed"] = _failed_summary(labels)["failed"]
    if ok == 0:
        raise TrainingError("no test chunk got a usable label from the large model; see llm_calls.jsonl")


def do_label_train(ctx: RunContext, state: State) -> None:
    n = state.iteration
    all_ids: list[str] = []
    for k in range(1, n + 1):
        all_ids += selected_ids(ctx, k)
    new_ids = selected_ids(ctx, n)
    labels = _label(ctx, all_ids, TRAIN_LABELS, ctx.small, "train_labels")
    chunks = load_chunks(ctx)
    rows = [{"id": i, "text": chunks[i].text, "label": lab.label, "reason": lab.reason, "model": lab.model,
             "confidence": lab.confidence} for i, lab in labels.items() if lab.ok]
    ctx.output.write_text(f"{CLS}datasets/dataset_{n}.jsonl", dumps_jsonl(rows))
    splits = load_splits(ctx)
    used_from_pool = len(all_ids) - len(splits["train"])
    state.pool_remaining = max(0, len(splits["pool"]) - used_from_pool)
    it = state.current()
    assert it is not None and it.n == n
    it.train_ids = len(new_ids)
    it.selection = json.loads(ctx.output.read_text(selection_key(n))).get("strategy", "")
    it.train_examples = len(rows)
    it.failed_labels = _failed_summary(labels)["failed"]


def do_train(ctx: RunContext, state: State) -> None:
    from core.model.training import train_classifier

    n = state.iteration
    rows = list(read_jsonl(ctx.output, f"{CLS}datasets/dataset_{n}.jsonl"))
    if not rows:
        raise TrainingError(f"dataset_{n} is empty: every training label failed; see llm_calls.jsonl")
    out = ctx.work_dir / f"classifier_{n}"
    total_steps: list[int] = []
    tick = None

    def progress(done: int, total: int) -> None:
        nonlocal tick
        if tick is None:
            tick = ctx.progress(f"training classifier_{n}", total)
            total_steps.append(0)
        tick(done - total_steps[0])
        total_steps[0] = done

    result = train_classifier([r["text"] for r in rows], [r["label"] for r in rows], train_config(ctx), out,
                              progress=progress)
    upload_dir(ctx.output, out, f"{CLS}classifier_{n}/")
    it = state.current()
    assert it is not None
    it.train_seconds = round(result.seconds, 2)
    it.examples_per_s = round(result.examples_per_s, 1)


def do_evaluate(ctx: RunContext, state: State) -> None:
    from core.model.classifier import load_classifier
    from core.model.metrics import evaluate

    n = state.iteration
    classes = ctx.settings.classification.classes
    chunks = load_chunks(ctx)
    test = {i: lab for i, lab in labeling.load_labels(ctx.output, TEST_LABELS).items() if lab.ok}
    ids = [i for i in load_splits(ctx)["test"] if i in test]
    clf = load_classifier(classifier_dir(ctx, n))
    predicted, _ = clf.predict_proba([chunks[i].text for i in ids], batch_size=ctx.settings.training.predict_batch_size)
    it = state.current()
    assert it is not None
    metrics = evaluate([test[i].label or "" for i in ids], list(predicted), classes)
    it.metrics = metrics.to_dict()
    gold = [(gold_label(chunks[i], classes), p) for i, p in zip(ids, predicted)]
    gold = [(g, p) for g, p in gold if g is not None]
    if gold and len(gold) == len(ids):
        it.gold_metrics = evaluate([g for g, _ in gold], [p for _, p in gold], classes).to_dict()
    from core.run.state import best_iteration

    state.best_iteration = best_iteration(state.iterations)
    log.info("classifier_%d: accuracy %.3f (95%% CI %.3f-%.3f) vs the LLM's test labels, macro-F1 %.3f%s", n,
             metrics.accuracy, *metrics.accuracy_ci95, metrics.macro_f1,
             f", gold accuracy {it.gold_metrics['accuracy']:.3f}" if it.gold_metrics else "")


def remaining_chunks(ctx: RunContext) -> Iterator[Chunk]:
    """Chunks that no set used: not the test set, not any iteration's labeled training chunks."""
    splits = load_splits(ctx)
    used = set(splits["test"])
    for key in ctx.output.list("iterations/"):
        used.update(json.loads(ctx.output.read_text(key))["ids"])
    for d in read_jsonl(ctx.output, CHUNKS_KEY):
        if d["id"] not in used:
            yield Chunk.from_dict(d)


def prediction_key(index: int, count: int) -> str:
    name = "predictions.jsonl" if count == 1 else f"predictions-part-{index:05d}-of-{count:05d}.jsonl"
    return f"{CLS}final_classifier_output/{name}"


def _checked_precision(ctx: RunContext, clf: Any, evaluated: IterationRecord) -> tuple[Any, dict[str, Any]]:
    """``clf`` at ``training.predict_precision`` if that costs at most 0.5 points on the LLM-labeled test set."""
    from core.model.predict import choose_precision

    test = {i: lab.label or "" for i, lab in labeling.load_labels(ctx.output, TEST_LABELS).items() if lab.ok}
    texts = {d["id"]: d["text"] for d in read_jsonl(ctx.output, CHUNKS_KEY) if d["id"] in test}  # only test chunks
    ids = [i for i in load_splits(ctx)["test"] if i in test and i in texts]
    # do_evaluate scored float32 on these same texts; its figure spares a second pass when the count agrees
    known = (evaluated.metrics or {}).get("accuracy") if (evaluated.metrics or {}).get("n") == len(ids) else None
    chosen, check = choose_precision(clf, ctx.settings.training.predict_precision, [texts[i] for i in ids],
                                     [test[i] for i in ids], batch_size=ctx.settings.training.predict_batch_size,
                                     fp32_accuracy=known)
    log.info("predicting at %s (requested %s): %s", check.used, check.requested, check.reason)
    return chosen, check.to_dict()


def do_predict(ctx: RunContext, state: State) -> None:
    from core.model.classifier import load_classifier
    from core.model.predict import predict_stream, select_shard

    if state.best_iteration is None:
        raise TrainingError("no evaluated classifier to predict with")
    index, count = ctx.shard
    clf = load_classifier(classifier_dir(ctx, state.best_iteration), threads=ctx.settings.system.torch_threads)
    best = next(it for it in state.iterations if it.n == state.best_iteration)
    clf, state.counters["predict_precision"] = _checked_precision(ctx, clf, best)
    todo = select_shard(remaining_chunks(ctx), index, count)
    total = sum(1 for _ in select_shard(remaining_chunks(ctx), index, count))
    tick = ctx.progress(f"predicting with classifier_{state.best_iteration}", total)
    written = 0
    with ctx.output.open_write(prediction_key(index, count)) as fh:
        for row in predict_stream(clf, todo, batch_size=ctx.settings.training.predict_batch_size):
            row["classifier"] = f"classifier_{state.best_iteration}"
            fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
            written += 1
            if written % 256 == 0:
                tick(256)
    tick(written % 256)
    state.counters["predicted_chunks"] = written


def new_iteration(state: State) -> IterationRecord:
    record = IterationRecord(n=state.iteration)
    state.iterations.append(record)
    return record
