"""``bootstrapper``: the command line. Parses arguments, reads settings once, builds adapters, calls core.

Exit codes: 0 success (or a clean stop that a re-run resumes), 1 runtime failure, 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.errors import BootstrapperError, ConfigError  # noqa: E402
from handlers import wiring  # noqa: E402

log = logging.getLogger("bootstrapper")


def _s3_client_if_needed(*uris: str) -> Any:
    if any(u.startswith("s3://") for u in uris):
        return wiring.make_s3_client_from_env(os.environ)
    return None


def _load(config: str) -> tuple[Any, str, str, Any]:
    client = _s3_client_if_needed(config)
    settings, inp, out = wiring.load_config(config, os.environ, client)
    client = client or _s3_client_if_needed(inp, out)
    return settings, inp, out, client


def cmd_ingest(args: argparse.Namespace) -> int:
    from core.steps import ingest_inputs
    from core.storage import open_storage

    settings, inp, out, client = _load(args.config)
    result = ingest_inputs(settings, open_storage(inp, s3_client=client), open_storage(out, s3_client=client))
    print(f"{result.files_read} files read, {len(result.chunks)} chunks, {len(result.skipped)} inputs skipped, "
          f"{result.duplicates_dropped} duplicates dropped -> {out}/chunks.jsonl, {out}/ingest_report.json")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from core.plan import estimate, format_plan
    from core.steps import ingest_inputs
    from core.storage import open_storage

    settings, inp, _out, client = _load(args.config)
    result = ingest_inputs(settings, open_storage(inp, s3_client=client), None)
    print(format_plan(estimate(settings, result.chunks)))
    return 0


def install_stop_handler() -> list[bool]:
    """SIGTERM (Spot reclaim, job cancel, Ctrl-C via SIGINT) -> finish in-flight work, save state, exit."""
    flag = [False]

    def handler(signum: int, _frame: Any) -> None:
        if flag[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag[0] = True
        log.warning("signal %d received: stopping at the next safe point (state is saved)", signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return flag


def cmd_run(args: argparse.Namespace) -> int:
    from core.pipeline import run

    settings, inp, out, client = _load(args.config)
    flag = install_stop_handler()
    ctx = wiring.build_context(settings, inp, out, s3_client=client, should_stop=lambda: flag[0],
                               new_s3_client=lambda: wiring.make_s3_client_from_env(os.environ))
    outcome = run(ctx, restart=args.restart, job_id=os.environ.get("AWS_BATCH_JOB_ID", ""))
    state = outcome.state
    if outcome.stopped_early:
        print(f"stopped at step {state.step.value}; run the same command again to resume")
        return 0
    best = f"classifiers/classifier_{state.best_iteration}/" if state.best_iteration else "none"
    print(f"done: {state.stop_reason}\nbest classifier: {out}/{best}\nreport: {out}/report.md")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from core.pipeline import status_state
    from core.steps import do_predict

    try:
        index, count = (int(x) for x in args.shard.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise ConfigError("--shard", f"expected I/N with 0 <= I < N, got {args.shard!r}") from None
    settings, inp, out, client = _load(args.config)
    ctx = wiring.build_context(settings, inp, out, s3_client=client, shard=(index, count))
    state = status_state(ctx.output)
    do_predict(ctx, state)
    precision = state.counters.get("predict_precision", {})
    print(f"shard {index}/{count}: {state.counters.get('predicted_chunks', 0)} chunks predicted"
          f" at {precision.get('used', 'fp32')} ({precision.get('reason', '')})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from core.pipeline import refresh_report
    from core.prediction_counts import detect_shards

    settings, inp, out, client = _load(args.config)
    ctx = wiring.build_context(settings, inp, out, s3_client=client)
    shards = args.shards or detect_shards(ctx.output, default=settings.training.predict_shards)
    _state, summary = refresh_report(ctx, shards)
    labels = ", ".join(f"{label} {n}" for label, n in summary.by_label.items()) or "none"
    print(f"{summary.predicted} chunks predicted in {shards} shard(s): {labels}")
    for problem in summary.problems():
        print(f"warning: {problem}", file=sys.stderr)
    if not summary.complete:
        print(f"incomplete: re-run the shards named above (bootstrapper predict {args.config} --shard I/{shards}), "
              "then this command again", file=sys.stderr)
    print(f"report: {out}/report.md")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from core.ledger import Ledger, totals
    from core.pipeline import status_state
    from core.report import format_status
    from core.storage import open_storage

    storage = open_storage(args.output, s3_client=_s3_client_if_needed(args.output))
    state = status_state(storage)
    print(format_status(state, totals(Ledger(storage, "ledger/").load_all())))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from handlers.demo import run_demo

    return run_demo(restart=args.restart)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bootstrapper",
        description="Turn raw documents plus a description of classes into a fine-tuned text classifier, "
                    "labeled by LLMs. Exit codes: 0 done or cleanly stopped (re-run to resume), 1 failure, "
                    "2 bad config.")
    p.add_argument("--json-logs", action="store_true", help="JSON log lines even on a terminal")
    sub = p.add_subparsers(dest="command", required=True)

    commands: list[tuple[str, Any, str]] = [
        ("ingest", cmd_ingest, "read and chunk the inputs; write chunks.jsonl and ingest_report.json"),
        ("plan", cmd_plan, "estimate LLM calls, tokens and cost of a full run; spends nothing"),
        ("run", cmd_run, "run (or resume) the whole job"),
        ("predict", cmd_predict, "classify one shard of the remaining chunks with the best classifier"),
        ("report", cmd_report, "count the final prediction (every shard's file) and re-render report.md"),
    ]
    by_name = {}
    for name, fn, help_text in commands:
        s = sub.add_parser(name, help=help_text)
        s.add_argument("config", help="config.yaml (local path or s3:// URI)")
        s.set_defaults(fn=fn)
        by_name[name] = s
    by_name["run"].add_argument("--restart", action="store_true",
                                help="discard earlier progress (the LLM response cache is kept)")
    by_name["predict"].add_argument("--shard", default="0/1",
                                    help="I/N: this worker's shard (AWS Batch array index / size)")
    by_name["report"].add_argument("--shards", type=int, default=None,
                                   help="N: how many shards predicted (default: read from the prediction files' "
                                        "names, else training.predict_shards)")

    s = sub.add_parser("status", help="where a run stands and what it cost")
    s.add_argument("output", help="the run's output location (folder or s3:// URI)")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("demo", help="the bundled SMS-spam example against the local oracle LLM server")
    s.add_argument("--restart", action="store_true")
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    wiring.configure_logging(json_lines=True if args.json_logs else None)
    wiring.tune_allocator()
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except BootstrapperError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # outside our tree: named in one line, its traceback logged, never bare
        line = wiring.unexpected_error_line(exc)
        log.error("%s", line, exc_info=exc)
        print(f"error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
