"""The work of each pipeline step. Called only by ``core.pipeline``, which owns order, state and saving.

Each ``do_<step>(ctx, data, state)`` works on what ``data`` (``core.run.data.RunData``, made fresh for the step)
hands it, writes its artifacts, and updates ``state``; none of them saves the state or picks the next step.
Every step is safe to run again after a kill: artifacts are recomputed deterministically, and LLM work goes
through the response cache and the label logs, so a re-run never pays for a call twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from core.config import Settings
from core.errors import NoUsableChunks, TrainingError
from core.ingest import chunking
from core.llm import fanout, labeling, rules
from core.llm.capabilities import completion_budget
from core.llm.client import Endpoint
from core.run import exports, layout, reporting
from core.run.context import ProgressFactory, RunContext, load_run_classifier, train_config
from core.run.data import RunData, gold_label
from core.run.picks import selected_ids
from core.run.splits import split_ids, test_size_for
from core.run.state import IterationRecord, State, Step
from core.schema import Label
from core.storage.backends import Storage, download_dir, upload_dir
from core.storage.jsonl_log import LogWriter, jsonl_line, read_jsonl, write_jsonl

log = logging.getLogger("bootstrapper")


def ingest_inputs(settings: Settings, input: Storage, output: Storage | None,
                  progress: ProgressFactory | None = None) -> chunking.IngestResult:
    """Read every input object and chunk it; with ``output``, write chunks.jsonl and ingest_report.json.
    ``progress`` counts files read and parsed (slow PDFs over S3 are where a run's first minutes go)."""
    keys = list(input.list(""))
    tick = progress("reading inputs", len(keys)) if progress is not None else (lambda _n: None)

    def files() -> Iterator[tuple[str, bytes]]:
        for key in keys:
            yield key, input.read_bytes(key)
            tick(1)  # resumed when the reader asks for the next file: this one is parsed

    try:
        result = chunking.ingest(files(), chunk_size=settings.system.chunk_size,
                                 truncation_type=settings.training.truncation_type)
    except NoUsableChunks as exc:
        partial = getattr(exc, "result", None)
        if partial is not None and output is not None:
            output.write_text(layout.INGEST_REPORT, json.dumps(partial.report(), indent=2, ensure_ascii=False))
        raise
    for skipped in result.skipped:
        where = f" line {skipped.line}" if skipped.line else ""
        log.warning("skipped input %s%s: %s", skipped.source, where, skipped.reason)
    if output is not None:
        output.write_text(layout.INGEST_REPORT, json.dumps(result.report(), indent=2, ensure_ascii=False))
        write_jsonl(output, layout.CHUNKS, (c.to_dict() for c in result.chunks))
    log.info("ingested %d files into %d chunks (%d inputs skipped, %d duplicate chunks dropped)",
             result.files_read, len(result.chunks), len(result.skipped), result.duplicates_dropped)
    return result


def do_ingest(ctx: RunContext, _data: RunData, state: State) -> None:
    result = ingest_inputs(ctx.settings, ctx.input, ctx.output, ctx.progress)
    c = state.counters
    c.files_read, c.chunks = result.files_read, len(result.chunks)
    c.inputs_skipped, c.duplicates_dropped = len(result.skipped), result.duplicates_dropped


def do_split(ctx: RunContext, data: RunData, state: State) -> None:
    t = ctx.settings.training
    ids = data.chunk_ids()
    if len(ids) < 2:
        raise NoUsableChunks(f"only {len(ids)} chunk(s): need at least a test and a training chunk")
    splits = split_ids(ids, test_size_for(len(ids), t.test_set_size), t.train_set_size, ctx.settings.system.seed)
    ctx.output.write_text(layout.SPLITS, json.dumps(splits))
    state.pool_remaining = len(splits["pool"])
    c = state.counters
    c.test_chunks, c.initial_train_chunks = len(splits["test"]), len(splits["train"])
    c.pool_chunks = len(splits["pool"])


def do_rules(ctx: RunContext, data: RunData, _state: State) -> None:
    s = ctx.settings
    # Ground the rules on a few training chunks (never test chunks: the test set stays unseen).
    samples = data.texts(data.splits["train"][:5])
    result = asyncio.run(rules.create_rules(ctx.gateway, ctx.large, s.classification.classes,
                                            s.classification.desc, samples,
                                            max_tokens=completion_budget(s.api.rules_max_tokens, ctx.large.reasoning,
                                                                         ctx.large.params),
                                            temperature=s.api.temperature))
    ctx.output.write_text(layout.RULES, json.dumps({"text": result.text, "messages": result.messages,
                                                    "model": result.reply.model}))
    ctx.output.write_text(layout.RULES_YAML, rules.rules_generation_yaml(result))


def label_prompt(ctx: RunContext, data: RunData, endpoint: Endpoint) -> labeling.LabelPrompt:
    """The labeling prompt of ``endpoint``'s model, padded for prompt caching as decided the first time.

    The padding is decided once per model, over a test set's worth of calls, and kept in ``prompt_padding.json``:
    the decision reads litellm's cost map and tokenizer, which a resume on a newer image may see differently,
    and a different prompt would change every response-cache key and label later iterations differently.
    """
    mode = ctx.format_modes.get(endpoint.model, "none")
    prompt = labeling.LabelPrompt(ctx.settings.classification.classes, data.rules_text(), mode,
                                  mark_cache=endpoint.mark_cache)
    recorded = json.loads(ctx.output.read_text(layout.PROMPT_PADDING)) if ctx.output.exists(
        layout.PROMPT_PADDING) else {}
    if endpoint.model in recorded:
        return dataclasses.replace(prompt, pad_blocks=int(recorded[endpoint.model]["blocks"]))
    padded = labeling.pad_for_caching(prompt, endpoint.model, calls=len(data.splits["test"]))
    added = (labeling.prompt_tokens(endpoint.model, padded.system_message())
             - labeling.prompt_tokens(endpoint.model, prompt.system_message())) if padded.pad_blocks else 0
    # tokens: what the padding adds to each call, so the report can price it against the cache's saving
    recorded[endpoint.model] = {"blocks": padded.pad_blocks, "tokens": added}
    ctx.output.write_text(layout.PROMPT_PADDING, json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    return padded


def _label(ctx: RunContext, data: RunData, ids: list[str], prefix: str, endpoint: Endpoint,
           stage: str) -> dict[str, Label]:
    """Label every id not already done under ``prefix``; returns all labels for ``ids``."""
    done = labeling.load_labels(ctx.output, prefix)
    todo_ids = [i for i in ids if labeling.needs_label(done.get(i))]
    if todo_ids:
        todo = [data.chunks[i] for i in todo_ids]
        s = ctx.settings
        tick = ctx.progress(f"labeling {stage} ({endpoint.model})", len(todo))
        # logprobs give each label its confidence; a model that refuses them is asked without (the gateway
        # learns that once per run). A reasoning model's budget leaves room for its thinking.
        budget = completion_budget(s.api.max_tokens, endpoint.reasoning, endpoint.params)
        opts: dict[str, Any] = {"max_tokens": budget, "temperature": s.api.temperature, "logprobs": True}
        prompt = label_prompt(ctx, data, endpoint)
        processes = fanout.plan_processes(len(todo), s.system.label_processes, s.system.concurrency_limit)
        if processes > 1 and ctx.worker_factory is not None:
            # The parent's buffered ledger lines go out first, so the shards stay in the order calls happened.
            ctx.ledger.flush()
            results = fanout.label_in_processes(
                ctx.worker_factory, endpoint, prompt, todo, stage=stage, prefix=prefix,
                processes=processes, workers=s.system.concurrency_limit,
                flush_interval_s=s.system.flush_interval_s, on_done=lambda _l: tick(1),
                should_stop=ctx.should_stop, refusals=getattr(ctx.gateway, "refusals", None), **opts)
        else:
            sink = LogWriter(ctx.output, prefix, flush_interval_s=s.system.flush_interval_s)
            results = asyncio.run(labeling.label_many(
                ctx.gateway, endpoint, prompt, todo, stage=stage, sink=sink,
                workers=s.system.concurrency_limit, on_done=lambda _l: tick(1), should_stop=ctx.should_stop,
                **opts))
        done.update({lab.chunk_id: lab for lab in results})
    # The caller writes these labels over test_labels.yaml or dataset_<n>: a run stopped by a lost lease holds only
    # part of them, and the new owner may have written the whole set already.
    ctx.hold_lease()
    return {i: done[i] for i in ids if i in done}


def _failed(labels: dict[str, Label]) -> int:
    return sum(1 for lab in labels.values() if not lab.ok)


def do_label_test(ctx: RunContext, data: RunData, state: State) -> None:
    labels = _label(ctx, data, data.splits["test"], layout.TEST_LABELS, ctx.large, "test_labels")
    rows = [{"id": i, "text": data.chunks[i].text, "label": lab.label, "status": lab.status, "reason": lab.reason,
             "model": lab.model, "confidence": lab.confidence,
             **({"raw_reply": lab.raw, "error": lab.error} if not lab.ok else {})}
            for i, lab in labels.items()]
    ctx.output.write_text(layout.TEST_LABELS_YAML, yaml.safe_dump(rows, sort_keys=False, allow_unicode=True,
                                                                  width=100))
    ok = sum(1 for lab in labels.values() if lab.ok)
    state.counters.test_labels_ok, state.counters.test_labels_failed = ok, _failed(labels)
    if ok == 0:
        raise TrainingError("no test chunk got a usable label from the large model; see llm_calls.jsonl")


def do_label_train(ctx: RunContext, data: RunData, state: State) -> None:
    n = state.iteration
    new_ids = selected_ids(ctx, data, n)
    if new_ids is None:
        return  # stopped while choosing: the pipeline saves the state at this step, and the re-run chooses again
    all_ids = data.picked_until(n)
    labels = _label(ctx, data, all_ids, layout.TRAIN_LABELS, ctx.small, "train_labels")
    rows = [{"id": i, "text": data.chunks[i].text, "label": lab.label, "reason": lab.reason, "model": lab.model,
             "confidence": lab.confidence} for i, lab in labels.items() if lab.ok]
    write_jsonl(ctx.output, layout.dataset(n), rows)
    used_from_pool = len(all_ids) - len(data.splits["train"])
    state.pool_remaining = max(0, len(data.splits["pool"]) - used_from_pool)
    it = state.current()
    assert it is not None and it.n == n
    it.train_ids = len(new_ids)
    it.selection = json.loads(ctx.output.read_text(layout.iteration_choice(n))).get("strategy", "")
    it.train_examples = len(rows)
    it.failed_labels = _failed(labels)


def _training_checkpoints(ctx: RunContext, n: int) -> Any:
    """Checkpointing for classifier ``n``: a checkpoint an earlier attempt left is fetched to resume from."""
    from core.model.training import Checkpointing

    local = ctx.work_dir / f"checkpoint_{n}"
    shutil.rmtree(local, ignore_errors=True)
    if any(True for _ in ctx.output.list(layout.checkpoint(n))):
        download_dir(ctx.output, layout.checkpoint(n), local)

    def keep(folder: Path) -> None:
        ctx.hold_lease()  # LeaseLost: the checkpoint under this key may be the new owner's
        upload_dir(ctx.output, folder, layout.checkpoint(n))

    return Checkpointing(local, should_stop=ctx.should_stop, on_save=keep)


def _write_run_info(ctx: RunContext, folder: Path) -> None:
    """What a classifier's folder must say for new documents to be cut into chunks as this run cut its inputs
    (``bootstrapper classify`` reads it), and who labeled its training data."""
    from core.model.classifier import RUN_FILE

    s = ctx.settings
    info = {"format": 1, "chunk_size": s.system.chunk_size, "classes": list(s.classification.classes),
            "large_model": s.api.large_model, "small_model": s.api.small_model}
    (folder / RUN_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def do_train(ctx: RunContext, _data: RunData, state: State) -> None:
    from core.model.training import train_classifier

    n = state.iteration
    rows = list(read_jsonl(ctx.output, layout.dataset(n)))
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
                              progress=progress, checkpoints=_training_checkpoints(ctx, n))
    if result.stopped:
        log.info("training classifier_%d stopped at step %d: checkpoint saved under %s/%s", n, result.steps,
                 ctx.output.root_uri, layout.checkpoint(n))
        return
    _write_run_info(ctx, out)
    ctx.hold_lease()  # a runner frozen after training must not delete the checkpoint a new owner resumes from
    upload_dir(ctx.output, out, layout.classifier(n))
    for key in list(ctx.output.list(layout.checkpoint(n))):
        ctx.output.delete(key)
    it = state.current()
    assert it is not None
    it.train_seconds = round(result.seconds, 2)
    it.examples_per_s = round(result.examples_per_s, 1)


def _test_labels(ctx: RunContext, data: RunData) -> tuple[list[str], dict[str, str]]:
    """The test ids that got a usable label from the large model, in split order, and those labels."""
    test = {i: lab.label or "" for i, lab in labeling.load_labels(ctx.output, layout.TEST_LABELS).items() if lab.ok}
    return [i for i in data.splits["test"] if i in test], test


def do_evaluate(ctx: RunContext, data: RunData, state: State) -> None:
    from core.model.metrics import evaluate
    from core.run.state import best_iteration

    n = state.iteration
    classes = ctx.settings.classification.classes
    ids, test = _test_labels(ctx, data)
    chunks = data.subset(ids)
    clf = load_run_classifier(ctx, n)
    predicted, _ = clf.predict_proba([chunks[i].text for i in ids],
                                     batch_size=ctx.settings.training.predict_batch_size)
    it = state.current()
    assert it is not None
    metrics = evaluate([test[i] for i in ids], list(predicted), classes)
    it.metrics = metrics.to_dict()
    gold = [(g, p) for g, p in ((gold_label(chunks[i], classes), p) for i, p in zip(ids, predicted)) if g is not None]
    if gold and len(gold) == len(ids):
        it.gold_metrics = evaluate([g for g, _ in gold], [p for _, p in gold], classes).to_dict()
    state.best_iteration = best_iteration(state.iterations)
    _write_model_card(ctx, data, n, metrics, it)
    log.info("classifier_%d: accuracy %.3f (95%% CI %.3f-%.3f) vs the LLM's test labels, macro-F1 %.3f%s", n,
             metrics.accuracy, *metrics.accuracy_ci95, metrics.macro_f1,
             f", gold accuracy {it.gold_metrics['accuracy']:.3f}" if it.gold_metrics else "")


def _write_model_card(ctx: RunContext, data: RunData, n: int, metrics: Any, it: IterationRecord) -> None:
    """classifier_<n>/README.md: where its labels came from, how well it agrees with them, how to load it."""
    from core.config import BUNDLED_MODEL
    from core.model.training import META_FILE
    from core.report.model_card import hub_base_model, model_card
    from core.run.context import classifier_dir
    from core.schema import Metrics

    s = ctx.settings
    recipe = json.loads((classifier_dir(ctx, n) / META_FILE).read_text(encoding="utf-8"))
    card = model_card(name=f"classifier_{n}", metrics=metrics, classes=s.classification.classes,
                      base_model=hub_base_model(s.training.model_path, BUNDLED_MODEL), large_model=s.api.large_model,
                      small_model=s.api.small_model, rules=data.rules_text(), train_examples=it.train_examples,
                      recipe=recipe, stand_in=bool(ctx.notes.stand_in_llm),
                      gold=Metrics.from_dict(it.gold_metrics) if it.gold_metrics else None)
    ctx.output.write_text(layout.classifier(n) + "README.md", card)


def _checked_precision(ctx: RunContext, data: RunData, clf: Any,
                       evaluated: IterationRecord) -> tuple[Any, dict[str, Any]]:
    """``clf`` at ``training.predict_precision`` if that costs at most 0.5 points on the LLM-labeled test set."""
    from core.model.predict import choose_precision

    ids, test = _test_labels(ctx, data)
    texts = {i: c.text for i, c in data.subset(ids).items()}  # only the test chunks are read into memory
    ids = [i for i in ids if i in texts]
    # do_evaluate scored float32 on these same texts; its figure spares a second pass when the count agrees
    known = (evaluated.metrics or {}).get("accuracy") if (evaluated.metrics or {}).get("n") == len(ids) else None
    chosen, check = choose_precision(clf, ctx.settings.training.predict_precision, [texts[i] for i in ids],
                                     [test[i] for i in ids], batch_size=ctx.settings.training.predict_batch_size,
                                     fp32_accuracy=known)
    log.info("predicting at %s (requested %s): %s", check.used, check.requested, check.reason)
    return chosen, check.to_dict()


# Chunks predicted per window (and committed per part), in predict batches: 2048 at the default batch of 64.
PREDICT_WINDOW_BATCHES = 32


def _committed_parts(output: Storage, index: int, count: int) -> tuple[list[str], int]:
    """The parts of this shard's prediction an earlier attempt committed, and how many rows they hold."""
    parts = sorted(output.list(layout.prediction_parts(index, count)))
    return parts, sum(1 for part in parts for _row in read_jsonl(output, part))


def do_predict(ctx: RunContext, data: RunData, state: State) -> None:
    """Predict every remaining chunk of this shard, committing one part per window.

    A stop (SIGTERM) ends the stream after the last whole window; the re-run skips the rows already
    committed (the stream's order is fixed) and joins the parts into the final file once all are there.
    """
    from itertools import islice

    from core.model.predict import predict_stream, select_shard, shard_of

    if state.best_iteration is None:
        raise TrainingError("no evaluated classifier to predict with")
    index, count = ctx.shard
    clf = load_run_classifier(ctx, state.best_iteration)
    best = next(it for it in state.iterations if it.n == state.best_iteration)
    clf, state.counters.predict_precision = _checked_precision(ctx, data, clf, best)
    from core.model.classifier import PRECISION_FILE

    # The checked precision travels with the classifier: `bootstrapper classify` uses it on new documents.
    ctx.output.write_text(layout.classifier(state.best_iteration) + PRECISION_FILE,
                          json.dumps(state.counters.predict_precision, indent=2) + "\n")
    used = data.used_ids()
    total = sum(1 for i in data.remaining_ids() if count == 1 or shard_of(i, count) == index)
    parts, committed = _committed_parts(ctx.output, index, count)
    if committed:
        log.info("prediction resumes after %d rows committed in %d parts", committed, len(parts))
    tick = ctx.progress(f"predicting with classifier_{state.best_iteration}", total)
    tick(committed)
    batch_size = ctx.settings.training.predict_batch_size
    window = PREDICT_WINDOW_BATCHES * batch_size
    todo = islice(select_shard(data.stream(exclude=used), index, count), committed, None)
    rows = predict_stream(clf, todo, batch_size=batch_size, window=window, should_stop=ctx.should_stop)
    block: list[bytes] = []
    for row in rows:
        row["classifier"] = f"classifier_{state.best_iteration}"
        block.append(jsonl_line(row).encode())
        if len(block) == window:  # a whole window: commit it
            ctx.hold_lease()  # LeaseLost: after losing the lease, the parts under predicting/ are the new owner's
            parts.append(_commit_part(ctx.output, index, count, len(parts), block))
            committed, block = committed + len(block), []
            tick(window)
    ctx.hold_lease()
    if block:
        parts.append(_commit_part(ctx.output, index, count, len(parts), block))
        committed += len(block)
        tick(len(block))
    if ctx.should_stop() and committed < total:
        return  # the pipeline saves the state at this step: the re-run continues after the last part
    with ctx.output.open_write(layout.predictions(index, count)) as fh:
        for part in parts:
            fh.write(ctx.output.read_bytes(part))
    # The join can take minutes on a large shard: a runner frozen in it must not delete a new owner's parts.
    ctx.hold_lease()
    for part in parts:
        ctx.output.delete(part)
    state.counters.predicted_chunks = committed


def _commit_part(output: Storage, index: int, count: int, n: int, lines: list[bytes]) -> str:
    key = layout.prediction_part(index, count, n)
    output.write_bytes(key, b"".join(lines))
    return key


def do_report(ctx: RunContext, data: RunData, state: State) -> None:
    recovered = ctx.gateway.recover_unrecorded(since=state.created_at)
    if recovered:
        log.info("ledger: %d paid calls recovered from the response cache (lost to an earlier kill)", recovered)
    s = ctx.settings
    if s.meta_datagen.do_meta_datagen:
        reporting.write_meta_dataset(ctx, data, lambda endpoint: label_prompt(ctx, data, endpoint))
    if s.classification.predict_on_whole_set_at_the_end and state.best_iteration is not None:
        reporting.record_predictions(state, reporting.count_predictions(ctx, data, 1))  # predicted in one file
    state.counters.review_disagreements = exports.write_label_exports(ctx, data, state)
    # The report is the last step: describe the run as it will stand once this step is saved.
    reporting.render_report(ctx, dataclasses.replace(state, step=Step.DONE, status="done"))


def new_iteration(state: State) -> IterationRecord:
    record = IterationRecord(n=state.iteration)
    state.iterations.append(record)
    return record
