"""``bootstrapper``: the command line. Parses arguments, reads settings once, builds adapters, calls core.

Exit codes: 0 success (or a clean stop that a re-run resumes), 1 runtime failure, 2 bad config or usage,
3 the lease was taken over by another run (this one stopped without saving its state).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.errors import BootstrapperError, ConfigError, LeaseLost  # noqa: E402
from core.run import layout  # noqa: E402
from handlers import wiring  # noqa: E402

log = logging.getLogger("bootstrapper")


def cmd_ingest(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from core.run import layout
    from core.run.steps import ingest_inputs
    from core.storage.backends import open_storage

    job = wiring.load_job(args.config, environ)
    out = job.output_uri
    result = ingest_inputs(job.settings, open_storage(job.input_uri, s3_client=job.s3_client),
                           open_storage(out, s3_client=job.s3_client), wiring.progress_factory())
    print(f"{result.files_read} files read, {len(result.chunks)} chunks, {len(result.skipped)} inputs skipped, "
          f"{result.duplicates_dropped} duplicates dropped -> {out}/{layout.CHUNKS}, {out}/{layout.INGEST_REPORT}")
    return 0


def cmd_plan(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from core.run.plan import estimate, format_plan
    from core.run.steps import ingest_inputs
    from core.storage.backends import open_storage

    job = wiring.load_job(args.config, environ)
    # The run's credential checks, so a plan that passes means the run will not stop for a missing key.
    wiring.endpoints(job.settings, environ)
    result = ingest_inputs(job.settings, open_storage(job.input_uri, s3_client=job.s3_client), None,
                           wiring.progress_factory())
    print(format_plan(estimate(job.settings, result.chunks)))
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


def cmd_run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from core.pipeline import run
    from core.run import layout

    job = wiring.load_job(args.config, environ)
    flag = install_stop_handler()
    ctx = wiring.build_context(job, should_stop=lambda: flag[0],
                               new_s3_client=lambda: wiring.make_s3_client_from_env(environ))
    outcome = run(ctx, restart=args.restart, job_id=environ.get("AWS_BATCH_JOB_ID", ""))
    state, out = outcome.state, job.output_uri
    if outcome.stopped_early:
        print(f"stopped at step {state.step.value}; run the same command again to resume")
        return 0
    best = layout.classifier(state.best_iteration) if state.best_iteration else "none"
    print(f"done: {state.stop_reason}\nbest classifier: {out}/{best}\nreport: {out}/{layout.REPORT}")
    return 0


def cmd_predict(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from core.pipeline import predict_shard

    try:
        index, count = (int(x) for x in args.shard.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise ConfigError("--shard", f"expected I/N with 0 <= I < N, got {args.shard!r}") from None
    ctx = wiring.build_context(wiring.load_job(args.config, environ), shard=(index, count), trains=False,
                               llm_calls=False)
    counters = predict_shard(ctx).counters
    precision = counters.predict_precision or {}
    print(f"shard {index}/{count}: {counters.predicted_chunks} chunks predicted"
          f" at {precision.get('used', 'fp32')} ({precision.get('reason', '')})")
    return 0


def cmd_report(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from core.pipeline import refresh_report
    from core.run.final_prediction import detect_shards

    job = wiring.load_job(args.config, environ)
    settings, out = job.settings, job.output_uri
    ctx = wiring.build_context(job, trains=False, llm_calls=False)
    shards = args.shards or detect_shards(ctx.output, default=settings.training.predict_shards)
    _state, summary = refresh_report(ctx, shards)
    labels = ", ".join(f"{label} {n}" for label, n in summary.by_label.items()) or "none"
    print(f"{summary.predicted} chunks predicted in {shards} shard(s): {labels}")
    for problem in summary.problems():
        print(f"warning: {problem}", file=sys.stderr)
    if not summary.complete:
        print(f"incomplete: re-run the shards named above (bootstrapper predict {args.config} --shard I/{shards}), "
              "then this command again", file=sys.stderr)
    print(f"report: {out}/{layout.REPORT}")
    return 0


def cmd_status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from core.llm.ledger import Ledger, totals
    from core.pipeline import status_state
    from core.report.render import format_status
    from core.storage.backends import open_storage

    client = wiring.make_s3_client_from_env(environ) if args.output.startswith(wiring.S3) else None
    storage = open_storage(args.output, s3_client=client)
    state = status_state(storage)
    print(format_status(state, totals(Ledger(storage, layout.LEDGER).load_all())))
    return 0


def cmd_classify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from handlers.classify_cmd import classify_command

    return classify_command(args, environ)


def cmd_export(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from handlers.export_cmd import export_command

    return export_command(args, environ)


def cmd_init(args: argparse.Namespace, _environ: Mapping[str, str]) -> int:
    from pathlib import Path

    from handlers.init_config import init_project

    try:
        config = init_project(Path(args.folder), args.provider)
    except FileExistsError as exc:
        raise ConfigError("init", str(exc)) from None
    print(f"wrote {config} and {config.parent / 'input'}/\n"
          f"next: put your documents in {config.parent / 'input'}/, edit classes and desc in {config}, then\n"
          f"  bootstrapper plan {config}")
    return 0


def cmd_demo(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from handlers.demo import run_demo

    def run_config(config: str, demo_environ: Mapping[str, str], restart: bool) -> int:
        return run_command(["run", config] + (["--restart"] if restart else []), demo_environ)

    return run_demo(environ, run_config, restart=args.restart)


LOG_LEVELS = ("debug", "info", "warning", "error")


def _logging_options(defaults: bool) -> argparse.ArgumentParser:
    """``--json-logs`` and ``--log-level``, accepted before the subcommand and after it: the subcommands' copies
    default to SUPPRESS so an option given before the subcommand is not reset by the subparser."""
    opts = argparse.ArgumentParser(add_help=False)
    opts.add_argument("--json-logs", action="store_true", default=False if defaults else argparse.SUPPRESS,
                      help="JSON log lines even on a terminal (default: JSON unless stderr is a terminal, or as "
                           "$BOOTSTRAPPER_LOG_FORMAT=plain|json says)")
    opts.add_argument("--log-level", choices=LOG_LEVELS, default="info" if defaults else argparse.SUPPRESS,
                      help="least severe log lines shown (default: info)")
    return opts


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("classifier-bootstrapper")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bootstrapper", parents=[_logging_options(True)],
        description="Turn raw documents plus a description of classes into a fine-tuned text classifier, "
                    "labeled by LLMs. Exit codes: 0 done or cleanly stopped (re-run to resume), 1 failure, "
                    "2 bad config, 3 lease taken over by another run.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    common = _logging_options(False)

    commands: list[tuple[str, Any, str]] = [
        ("ingest", cmd_ingest, "read and chunk the inputs; write chunks.jsonl and ingest_report.json"),
        ("plan", cmd_plan, "estimate LLM calls, tokens and cost of a full run; spends nothing"),
        ("run", cmd_run, "run (or resume) the whole job"),
        ("predict", cmd_predict, "classify one shard of the remaining chunks with the best classifier"),
        ("report", cmd_report, "count the final prediction (every shard's file) and re-render report.md"),
    ]
    by_name = {}
    for name, fn, help_text in commands:
        s = sub.add_parser(name, help=help_text, parents=[common])
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

    s = sub.add_parser("classify", help="classify new documents with a trained classifier (as the run's final "
                                        "prediction would)", parents=[common])
    s.add_argument("model_dir", help="a classifier folder, e.g. OUTPUT/classifiers/classifier_2 (local or s3://)")
    s.add_argument("inputs", nargs="+", help="files or folders (local or s3://) of .txt .md .pdf .docx .jsonl")
    s.add_argument("-o", "--output", default="-", help="where the JSONL rows go (a path or s3:// URI; default: stdout)")
    s.add_argument("--probabilities", action="store_true", help="add every class's probability to each row")
    s.add_argument("--with-text", action="store_true", help="add each chunk's text to its row")
    s.add_argument("--precision", choices=["fp32", "bf16", "int8", "auto"], default=None,
                   help="default: what the run's precision check chose for this classifier, else fp32")
    s.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: 64)")
    s.add_argument("--chunk-size", type=int, default=None,
                   help="characters per chunk (default: the classifier's run's system.chunk_size)")
    s.set_defaults(fn=cmd_classify)

    s = sub.add_parser("export", help="push a classifier folder and its model card to the Hugging Face Hub",
                       parents=[common])
    s.add_argument("model_dir", help="a classifier folder, e.g. OUTPUT/classifiers/classifier_2 (local or s3://)")
    s.add_argument("--hub", required=True, metavar="REPO_ID", help="OWNER/NAME on the Hub ($HF_TOKEN, $HF_ENDPOINT)")
    s.add_argument("--private", action="store_true", help="create the repo private")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("init", help="write a commented config for a provider and an input/ folder, ready for plan",
                       parents=[common])
    s.add_argument("folder", nargs="?", default=".", help="where to write config.yaml and input/ (default: here)")
    from handlers.init_config import PROVIDERS

    s.add_argument("--provider", choices=sorted(PROVIDERS), default="openai",
                   help="whose models the config names (default: openai)")
    s.set_defaults(fn=cmd_init)

    s = sub.add_parser("status", help="where a run stands and what it cost", parents=[common])
    s.add_argument("output", help="the run's output location (folder or s3:// URI)")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("demo", help="the bundled SMS-spam example against the local oracle LLM server",
                       parents=[common])
    s.add_argument("--restart", action="store_true")
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        wiring.configure_logging(json_lines=True if args.json_logs else None,
                                 level=getattr(logging, args.log_level.upper()), environ=os.environ)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    wiring.tune_allocator()
    return run_command(argv, os.environ, args)


def run_command(argv: Sequence[str] | None, environ: Mapping[str, str],
                args: argparse.Namespace | None = None) -> int:
    """One command with its exit code; ``environ`` is the only environment it reads."""
    args = args or build_parser().parse_args(argv)
    try:
        return int(args.fn(args, environ))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except LeaseLost as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        print(f"stopped: {exc}", file=sys.stderr)
        return 3
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
