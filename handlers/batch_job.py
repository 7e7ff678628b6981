"""AWS Batch entry point: run (or resume) one job from its config URI, or predict one shard as an array child.

The container's ENTRYPOINT is ``python -m handlers.batch_job``; the job definition's command supplies the rest:

    run [CONFIG_URI]                        the whole job; the job definition passes ``run Ref::config_uri``
    predict-shard [CONFIG_URI] --shards N   one child of the prediction array job: shard
                                            $AWS_BATCH_JOB_ARRAY_INDEX of N (or ``--index I`` by hand)
    report [CONFIG_URI] --shards N          count the N shards' predictions into the state and re-render
                                            report.md and metrics.json (missing shards are named, not fatal)

``CONFIG_URI`` falls back to ``$BOOTSTRAPPER_CONFIG_URI``. Exit codes, which the job definition's retry
strategy acts on:

    0  done (or, for ``run`` with ``predict_shards > 1``, the loop done and the prediction array job and
       its ``report`` job submitted; for ``report``, also when shards are missing: the report names them)
    1  a failure that retrying cannot fix (see the log), or an exception from outside our tree (a bug,
       logged with its traceback); Batch does not retry
    2  bad config or usage; Batch does not retry
    3  interrupted (SIGTERM: Spot reclaim, scale-in; or, for ``run``, $BOOTSTRAPPER_ATTEMPT_DEADLINE_S seconds
       passed, which the job definition sets a margin short of its timeout) or a transient failure (LLM
       provider, S3 or Batch still unavailable after the adapters' own retries). State is saved; Batch retries
       on 3 and the retry resumes where this attempt stopped, paying for no LLM call twice.

With ``training.predict_shards`` N > 1 (and ``classification.predict_on_whole_set_at_the_end``), ``run``
ends the pipeline without predicting in-process, then submits an array job of size N whose child I runs
``predict-shard`` for shard I/N, writing ``predictions-part-0000I-of-0000N.jsonl``, and a ``report`` job
that depends on the array job (``dependsOn: [{jobId: <array job>}]``). Batch starts a job that depends on
an array job once every child has succeeded; if a child fails for good, Batch fails the ``report`` job
without running it, and the report keeps saying the prediction is pending until someone re-runs the shard
and the ``report`` command. Create-if-absent markers (``batch/predict-array.json``, ``batch/report-job.json``
in the output location) keep a retried or repeated ``run`` from submitting either job twice; a retry that
finds the array job submitted but not the ``report`` job submits the latter.

Does not: redo what the CLI does (a child runs the CLI's ``bootstrapper predict`` command), build
adapters (``handlers.wiring`` does), or know anything of the pipeline beyond ``core.pipeline.run``'s outcome.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.config import Settings
from core.errors import BootstrapperError, ConfigError, LeaseLost, ObjectNotFound, RetryableError
from core.run import layout
from handlers import cli, wiring
from handlers.batch_errors import batch_error
from handlers.s3_trigger import CONFIG_URI_PARAMETER, DEFINITION_ENV, QUEUE_ENV, batch_job_name

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_RETRY = 0, 1, 2, 3
CONFIG_URI_ENV = "BOOTSTRAPPER_CONFIG_URI"
DEADLINE_ENV = "BOOTSTRAPPER_ATTEMPT_DEADLINE_S"  # serverless.yml: the job definition's timeout minus a margin
REPORT_DEFINITION_ENV = "BOOTSTRAPPER_REPORT_JOB_DEFINITION"  # the report job's (smaller) job definition
ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"
BATCH_QUEUE_ENV = "AWS_BATCH_JQ_NAME"  # Batch sets it in every job's container
ARRAY_MARKER_KEY = layout.ARRAY_MARKER
REPORT_MARKER_KEY = layout.REPORT_MARKER
MAX_ARRAY_SIZE = 10_000  # AWS Batch's limit on arrayProperties.size

log = logging.getLogger("bootstrapper")


# --- pure decisions ------------------------------------------------------------------------------


def config_uri_from(arg: str | None, environ: Mapping[str, str]) -> str:
    """The config URI from the command line, else the environment.

    An unsubstituted ``Ref::config_uri`` (a job submitted without ``--parameters config_uri=...``) counts as
    missing rather than as a file name.
    """
    if arg and not arg.startswith("Ref::"):
        return arg
    if environ.get(CONFIG_URI_ENV):
        return environ[CONFIG_URI_ENV]
    raise ConfigError("config_uri", f"no config given: pass it as an argument, as the Batch parameter "
                                    f"{CONFIG_URI_PARAMETER}, or in ${CONFIG_URI_ENV}")


def attempt_deadline(environ: Mapping[str, str], started: float) -> float | None:
    """The ``time.monotonic()`` by which this attempt stops itself: ``started`` + $BOOTSTRAPPER_ATTEMPT_DEADLINE_S.

    Batch never retries a job it killed for its timeout, so the job must stop (state saved, exit 3) before.
    None when the variable is unset (no deadline, as outside Batch).
    """
    raw = environ.get(DEADLINE_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(DEADLINE_ENV, f"expected a positive number of seconds, got {raw!r}")
    return started + seconds


def stop_condition(flag: Sequence[bool], deadline: float | None,
                   clock: Callable[[], float] = time.monotonic) -> Callable[[], bool]:
    """The pipeline's ``should_stop``: a stop signal set ``flag[0]``, or the attempt's deadline has passed."""
    warned = [False]

    def should_stop() -> bool:
        if flag[0]:
            return True
        if deadline is None or clock() < deadline:
            return False
        if not warned[0]:
            warned[0] = True
            log.warning("the attempt's deadline ($%s) has passed: stopping at the next safe point, before Batch's "
                        "timeout would end the job for good", DEADLINE_ENV)
        return True

    return should_stop


def array_size(settings: Settings) -> int:
    """Children of the prediction array job: 0 when the pipeline predicts in-process or not at all."""
    shards = int(settings.training.predict_shards)
    if not settings.classification.predict_on_whole_set_at_the_end or shards <= 1:
        return 0
    if shards > MAX_ARRAY_SIZE:
        raise ConfigError("training.predict_shards", f"AWS Batch array jobs hold at most {MAX_ARRAY_SIZE} "
                                                     f"children; got {shards}")
    return shards


def loop_settings(settings: Settings, shards: int) -> Settings:
    """The settings the in-process pipeline runs with: no in-process prediction when an array job predicts.

    ``predict_on_whole_set_at_the_end`` is not fingerprinted, so a resume under either value is allowed.
    """
    if not shards:
        return settings
    classification = settings.classification.model_copy(update={"predict_on_whole_set_at_the_end": False})
    return settings.model_copy(update={"classification": classification})


def array_target(environ: Mapping[str, str]) -> tuple[str, str]:
    """(job queue, job definition) for the prediction array job: the queue this job runs in by default."""
    queue = environ.get(QUEUE_ENV) or environ.get(BATCH_QUEUE_ENV) or ""
    definition = environ.get(DEFINITION_ENV) or ""
    if not queue or not definition:
        raise ConfigError("training.predict_shards", f"predicting in an array job needs ${DEFINITION_ENV} and a "
                                                     f"queue (${QUEUE_ENV}, or ${BATCH_QUEUE_ENV} inside Batch); "
                                                     "set them, or set training.predict_shards to 1")
    return queue, definition


def predict_job_name(config_uri: str) -> str:
    """``s3://b/jobs/spam/config.yaml`` -> ``bootstrapper-spam-predict`` (valid for Batch, <= 128 chars)."""
    folder = PurePosixPath(config_uri.removeprefix("s3://")).parent.name or "job"
    return batch_job_name(folder)[:120] + "-predict"


def report_job_name(config_uri: str) -> str:
    """``s3://b/jobs/spam/config.yaml`` -> ``bootstrapper-spam-report``."""
    return predict_job_name(config_uri).removesuffix("-predict") + "-report"


def array_request(config_uri: str, shards: int, queue: str, definition: str) -> dict[str, Any]:
    """The SubmitJob request of the prediction array job; the children read their index from Batch."""
    return {"jobName": predict_job_name(config_uri), "jobQueue": queue, "jobDefinition": definition,
            "arrayProperties": {"size": shards}, "parameters": {CONFIG_URI_PARAMETER: config_uri},
            "containerOverrides": {"command": ["predict-shard", config_uri, "--shards", str(shards)]}}


def report_request(config_uri: str, shards: int, queue: str, definition: str, array_job_id: str) -> dict[str, Any]:
    """The SubmitJob request of the job that counts the shards' predictions once the array job has succeeded."""
    return {"jobName": report_job_name(config_uri), "jobQueue": queue, "jobDefinition": definition,
            "dependsOn": [{"jobId": array_job_id}], "parameters": {CONFIG_URI_PARAMETER: config_uri},
            "containerOverrides": {"command": ["report", config_uri, "--shards", str(shards)]}}


# --- effects -------------------------------------------------------------------------------------


def _submit_once(output: Any, batch: Any, marker: str, request: Mapping[str, Any], claim: dict[str, Any],
                 what: str) -> str | None:
    """Submit ``request`` once per output location, claimed by a create-if-absent ``marker``.

    The job id, or None when an earlier run claimed the marker.
    """
    claim = {**claim, "claimed_at": round(time.time(), 3)}
    if not output.create_if_absent(marker, json.dumps(claim).encode()):
        earlier = output.read_text(marker)
        log.info("%s already submitted (%s); to submit it again, delete %s or submit it by hand",
                 what, earlier, output.uri(marker))
        return None
    try:
        response = batch.submit_job(**request)
    except (BotoCoreError, ClientError) as exc:
        output.delete(marker)  # so that the next run of this job submits it
        raise batch_error(exc, f"submitting the {what}") from exc
    output.write_text(marker, json.dumps({**claim, "job_id": response["jobId"], "job_name": request["jobName"]}))
    return str(response["jobId"])


def submit_prediction_array(output: Any, batch: Any, request: Mapping[str, Any], parent_job_id: str) -> str | None:
    """Submit the array job once per output location; its job id, or None when an earlier run submitted it."""
    size = request["arrayProperties"]["size"]
    job_id = _submit_once(output, batch, ARRAY_MARKER_KEY, request,
                          {"parent_job_id": parent_job_id, "size": size}, "prediction array job")
    if job_id is not None:
        log.info("prediction array job %s submitted: %d children", job_id, size)
    return job_id


def submit_report_job(output: Any, batch: Any, request: Mapping[str, Any], parent_job_id: str) -> str | None:
    """Submit the ``report`` job once per output location; its job id, or None when an earlier run did."""
    depends_on = [d["jobId"] for d in request["dependsOn"]]
    job_id = _submit_once(output, batch, REPORT_MARKER_KEY, request,
                          {"parent_job_id": parent_job_id, "depends_on": depends_on}, "report job")
    if job_id is not None:
        log.info("report job %s submitted: it counts the predictions once %s has succeeded", job_id,
                 ", ".join(depends_on))
    return job_id


def recorded_job_id(output: Any, marker: str) -> str | None:
    """The job id an earlier run recorded in ``marker``; None when it claimed the marker but never recorded one."""
    try:
        return json.loads(output.read_text(marker)).get("job_id") or None
    except (ObjectNotFound, json.JSONDecodeError, AttributeError):
        return None


def submit_prediction_jobs(output: Any, batch: Any, config_uri: str, shards: int, target: tuple[str, str],
                           parent_job_id: str, report_definition: str = "") -> dict[str, str]:
    """The array job, then the ``report`` job depending on it; the ids of the jobs submitted by this call.

    The report job runs with ``report_definition`` when given (smaller resources), else the array's definition.
    """
    queue, definition = target
    submitted: dict[str, str] = {}
    array_id = submit_prediction_array(output, batch, array_request(config_uri, shards, queue, definition),
                                       parent_job_id)
    if array_id is not None:
        submitted["array"] = array_id
    else:
        array_id = recorded_job_id(output, ARRAY_MARKER_KEY)
    if array_id is None:
        log.warning("%s names no array job id (an earlier run stopped while submitting it): no report job is "
                    "submitted; once the shards have predicted, run `python -m handlers.batch_job report %s "
                    "--shards %d`", output.uri(ARRAY_MARKER_KEY), config_uri, shards)
        return submitted
    report = report_request(config_uri, shards, queue, report_definition or definition, array_id)
    report_id = submit_report_job(output, batch, report, parent_job_id)
    if report_id is not None:
        submitted["report"] = report_id
    return submitted


def make_batch_client(environ: Mapping[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    # Standard mode retries throttling (SubmitJob's TooManyRequestsException) with backoff before we see it.
    config = Config(retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=10, read_timeout=30)
    return boto3.session.Session().client("batch", endpoint_url=environ.get("AWS_ENDPOINT_URL") or None,
                                          region_name=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"),
                                          config=config)


# What the report tells a user to run to count an N-shard prediction again (``{shards}`` is filled in).
RECOUNT = "`python -m handlers.batch_job report CONFIG_URI --shards {shards}` (or `bootstrapper report CONFIG`)"


def run_job(config_uri: str, environ: Mapping[str, str],
            batch_factory: Callable[[Mapping[str, str]], Any] = make_batch_client) -> int:
    """``run``: the pipeline to the end (or to a stop request), then, if sharded, the array and report jobs."""
    from core.pipeline import note_predictions_pending, run

    deadline = attempt_deadline(environ, time.monotonic())  # Batch began timing a little earlier: the margin covers it
    job = wiring.load_job(config_uri, environ)
    out = job.output_uri
    shards = array_size(job.settings)
    target = array_target(environ) if shards else None  # a missing setting fails now, before anything is spent
    stop = cli.install_stop_handler()
    ctx = wiring.build_context(job, settings=loop_settings(job.settings, shards),
                               should_stop=stop_condition(stop, deadline),
                               new_s3_client=lambda: wiring.make_s3_client_from_env(environ), recount=RECOUNT)
    batch = None
    if target is not None:  # made before the run: a missing region must fail before anything is spent
        try:
            batch = batch_factory(environ)
        except BotoCoreError as exc:  # no region, typically
            raise ConfigError("AWS_DEFAULT_REGION", f"cannot create an AWS Batch client: {exc}") from exc
    job_id = environ.get("AWS_BATCH_JOB_ID", "")
    outcome = run(ctx, job_id=job_id)
    state = outcome.state
    if outcome.stopped_early:
        log.warning("interrupted at step %s: state saved; exiting %d so that Batch retries and resumes",
                    state.step.value, EXIT_RETRY)
        return EXIT_RETRY
    # An earlier attempt with predict_shards=1 may already have predicted in-process.
    if batch is not None and "predict" not in state.step_seconds:
        submitted = submit_prediction_jobs(ctx.output, batch, config_uri, shards, target, job_id,
                                           report_definition=environ.get(REPORT_DEFINITION_ENV, ""))
        if submitted:
            jobs = {"array": recorded_job_id(ctx.output, ARRAY_MARKER_KEY) or "?",
                    "report": recorded_job_id(ctx.output, REPORT_MARKER_KEY) or "?"}
            try:
                note_predictions_pending(ctx, shards, jobs, job_id=job_id)
            except BootstrapperError as exc:  # the jobs are submitted: only the report's wording is at stake
                log.warning("could not note the pending prediction in the report: %s", exc)
    log.info("done: %s; outputs under %s", state.stop_reason, out)
    return EXIT_OK


def report_job(config_uri: str, shards: int, environ: Mapping[str, str]) -> int:
    """``report``: count the shards' predictions into the finished run's state and re-render the report."""
    from core.pipeline import refresh_report

    job = wiring.load_job(config_uri, environ)
    out = job.output_uri
    ctx = wiring.build_context(job, recount=RECOUNT, trains=False, llm_calls=False)
    # Counting has no safe point to stop at and is quick to redo: leave at once and let Batch retry.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(EXIT_RETRY))
    _state, summary = refresh_report(ctx, shards, job_id=environ.get("AWS_BATCH_JOB_ID", ""))
    log.info("final prediction: %d chunks predicted in %d shards (%s)%s; report re-rendered under %s",
             summary.predicted, shards, ", ".join(f"{k} {v}" for k, v in summary.by_label.items()) or "none",
             "" if summary.complete else f"; INCOMPLETE, {len(summary.problems())} shard(s) missing or short", out)
    return EXIT_OK


def predict_shard(config_uri: str, shards: int, index: int | None, environ: Mapping[str, str]) -> int:
    """``predict-shard``: one array child's share of the final prediction, through the CLI's ``predict``."""
    if index is None:
        raw = environ.get(ARRAY_INDEX_ENV, "")
        if not raw.isdigit():
            raise ConfigError("--index", f"no shard index: ${ARRAY_INDEX_ENV} is {raw!r} (not an array child?); "
                                         "pass --index I to run one shard by hand")
        index = int(raw)
    # Prediction has no safe point to stop at: a part file appears only when complete, so leaving at once
    # loses nothing, and exit 3 has Batch retry this child (the retry writes the whole part again).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(EXIT_RETRY))
    # The CLI's command, not its main: main would turn a RetryableError into exit 1, which Batch does not retry.
    args = cli.build_parser().parse_args(["predict", config_uri, "--shard", f"{index}/{shards}"])
    return int(args.fn(args, environ))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m handlers.batch_job", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("run", help="run or resume the job (the job definition's default command)")
    s.add_argument("config_uri", nargs="?", help=f"s3://.../config.yaml (default: ${CONFIG_URI_ENV})")
    s = sub.add_parser("predict-shard", help="one child of the prediction array job")
    s.add_argument("config_uri", nargs="?")
    s.add_argument("--shards", type=int, required=True, help="the array size N")
    s.add_argument("--index", type=int, default=None, help=f"shard index I (default: ${ARRAY_INDEX_ENV})")
    s = sub.add_parser("report", help="count the shards' predictions and re-render report.md (after the array job)")
    s.add_argument("config_uri", nargs="?")
    s.add_argument("--shards", type=int, required=True, help="the array size N")
    return p


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    wiring.configure_logging(json_lines=True)  # Batch sends stdout/stderr to CloudWatch: one JSON object a line
    wiring.tune_allocator()
    try:
        config_uri = config_uri_from(args.config_uri, environ)
        if args.command == "predict-shard":
            return predict_shard(config_uri, args.shards, args.index, environ)
        if args.command == "report":
            return report_job(config_uri, args.shards, environ)
        return run_job(config_uri, environ)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return EXIT_CONFIG
    except (RetryableError, LeaseLost) as exc:
        log.error("%s: %s; state is saved, a retry resumes", type(exc).__name__, exc)
        return EXIT_RETRY
    except BootstrapperError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return EXIT_FAILED
    except Exception as exc:  # outside our tree: named in one line, its traceback logged, never bare
        log.error("%s", wiring.unexpected_error_line(exc), exc_info=exc)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
