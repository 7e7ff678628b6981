"""The one orchestrator: load or create the state, take the lease, run steps until done, save after each.

    state = load or new ─► while step != DONE: run step ─► record timing ─► next_step() ─► save state

Dispatch lives in ``STEPS`` alone. A step that fails leaves the state at that step (saved), so the same
command resumes there; a stop request (SIGTERM) lets the current step finish what it has in flight, saves,
and returns without advancing. A heartbeat thread (``LeaseKeeper``) renews the lease every ttl/3; if a renewal
finds the lease taken by another runner, the run stops at the next safe point through the same stop path and
raises ``LeaseLost`` instead of saving: the state belongs to the new owner. Building adapters and reading
settings is the handlers' job.

A final prediction made apart from the run (N shards: ``bootstrapper predict --shard I/N``, or an AWS Batch
array job) is counted afterwards by ``refresh_report``: it reads every shard's file, records the counts (and
any missing shard) in the finished run's state, and re-renders the report through the same ``render_report``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.config import config_fingerprint
from core.errors import StateError
from core.run import layout, reporting, steps
from core.run.context import RunContext
from core.run.data import RunData
from core.run.final_prediction import PredictionSummary
from core.run.lease import Lease, LeaseKeeper, acquire_lease, release_lease
from core.run.state import Limits, State, Step, check_resumable, load_state, next_step, save_state
from core.storage.backends import Storage

log = logging.getLogger("bootstrapper")

StepFn = Callable[[RunContext, RunData, State], None]

STEPS: dict[Step, StepFn] = {
    Step.INGEST: steps.do_ingest,
    Step.SPLIT: steps.do_split,
    Step.RULES: steps.do_rules,
    Step.LABEL_TEST: steps.do_label_test,
    Step.LABEL_TRAIN: steps.do_label_train,
    Step.TRAIN: steps.do_train,
    Step.EVALUATE: steps.do_evaluate,
    Step.PREDICT: steps.do_predict,
    Step.REPORT: steps.do_report,
}


# ---- the final prediction's count, when it ran apart from the run (shards, array jobs) -------------------


def _finished_run(ctx: RunContext, job_id: str) -> tuple[State, Lease]:
    """The finished run's state, with the lease held: a report never races a running ``run``."""
    lease = Lease.new(ctx.settings.system.lease_ttl_s, os.getpid(), job_id)
    acquire_lease(ctx.output, lease, _pid_alive)
    try:
        state = status_state(ctx.output)
        check_resumable(state, config_fingerprint(ctx.settings))
        if state.step is not Step.DONE or state.best_iteration is None:
            raise StateError(f"the run at {ctx.output.root_uri} has not finished with a classifier (step "
                             f"{state.step.value}): finish it with `bootstrapper run` first")
    except BaseException:
        release_lease(ctx.output, lease)
        raise
    return state, lease


def refresh_report(ctx: RunContext, shards: int, *, job_id: str = "") -> tuple[State, PredictionSummary]:
    """Count an N-shard final prediction into the finished run's state, save it, and re-render the report.

    A missing, empty or short shard is recorded and logged by name, never raised: the report says which.
    """
    state, lease = _finished_run(ctx, job_id)
    try:
        summary = reporting.count_predictions(ctx, RunData(ctx.output), shards)
        reporting.record_predictions(state, summary)
        save_state(ctx.output, state)
        reporting.render_report(ctx, state)
        return state, summary
    finally:
        release_lease(ctx.output, lease)


def predict_shard(ctx: RunContext) -> State:
    """Shard ``ctx.shard`` of the final prediction, with the finished run's best classifier.

    Returns the state with this shard's counts; it is not saved (N shards run at once: ``refresh_report``
    counts them all into the saved state afterwards).
    """
    state = status_state(ctx.output)
    steps.do_predict(ctx, RunData(ctx.output), state)
    return state


def note_predictions_pending(ctx: RunContext, shards: int, jobs: dict[str, str], *, job_id: str = "") -> bool:
    """Say in the state and the report that an N-shard prediction is on its way (``jobs``: what runs it).

    Leaves a count already made alone; False when it did so.
    """
    state, lease = _finished_run(ctx, job_id)
    try:
        if (state.counters.predictions or {}).get("status") in ("complete", "incomplete"):
            return False
        state.counters.predictions = {"status": "pending", "shards": shards, "jobs": dict(jobs)}
        save_state(ctx.output, state)
        reporting.render_report(ctx, state)
        return True
    finally:
        release_lease(ctx.output, lease)


def limits_of(ctx: RunContext) -> Limits:
    s = ctx.settings
    return Limits(required_accuracy=s.system.required_accuracy, max_iters=s.training.max_iters,
                  predict_at_end=s.classification.predict_on_whole_set_at_the_end)


def advance(state: State, limits: Limits) -> State:
    """Move ``state`` past its finished step; entering LABEL_TRAIN opens a new iteration."""
    nxt, reason = next_step(state, limits)
    if nxt is Step.LABEL_TRAIN:
        state.iteration += 1
        steps.new_iteration(state)
    if reason and not state.stop_reason:
        state.stop_reason = reason
    state.step = nxt
    if nxt is Step.DONE:
        state.status = "done"
    return state


def _wipe(ctx: RunContext) -> None:
    """``--restart``: forget everything in the output location except the response cache (already paid for)."""
    for key in list(ctx.output.list("")):
        if not layout.kept_on_restart(key):
            ctx.output.delete(key)


@dataclass(frozen=True)
class RunOutcome:
    state: State
    stopped_early: bool  # a stop request interrupted the run; re-run to resume


def run(ctx: RunContext, *, restart: bool = False, job_id: str = "",
        pid_alive: Callable[[int], bool] | None = None) -> RunOutcome:
    fingerprint = config_fingerprint(ctx.settings)
    ttl = ctx.settings.system.lease_ttl_s
    lease = Lease.new(ttl, os.getpid(), job_id)
    acquire_lease(ctx.output, lease, pid_alive or _pid_alive)
    keeper = LeaseKeeper(ctx.output, lease, ttl).start()
    asked_to_stop = ctx.should_stop
    # A lost lease stops the steps where a SIGTERM would (training, prediction, labeling check this).
    # The checkpoint and prediction parts a stop keeps are written only while the lease is surely held.
    ctx = dataclasses.replace(ctx, should_stop=lambda: asked_to_stop() or keeper.lost, hold_lease=keeper.ensure_held)
    try:
        if restart:
            _wipe(ctx)
        state = load_state(ctx.output)
        if state is None:
            state = State(config_fingerprint=fingerprint)
            save_state(ctx.output, state)
        else:
            check_resumable(state, fingerprint)
            if state.step is not Step.DONE:
                log.info("resuming at step %s (iteration %d)", state.step.value, state.iteration)
        limits = limits_of(ctx)
        refusals = getattr(ctx.gateway, "refusals", None)
        if refusals is not None:
            refusals.merge(state.refused_params)
        while state.step is not Step.DONE:
            keeper.check()
            if ctx.should_stop():
                return RunOutcome(state, True)
            step = state.step
            log.info("step %s started%s", step.value, f" (iteration {state.iteration})" if state.iteration else "")
            started = time.monotonic()
            try:
                STEPS[step](ctx, RunData(ctx.output), state)
            finally:
                ctx.ledger.flush()
            took = time.monotonic() - started
            if refusals is not None:
                state.refused_params = refusals.to_json()
            state.step_seconds[step.value] = round(state.step_seconds.get(step.value, 0.0) + took, 2)
            keeper.renew_now()  # LeaseLost if another runner took over: the state is theirs, never save over it
            if ctx.should_stop():
                # The step may be incomplete (labeling stops taking work): run it again on resume.
                save_state(ctx.output, state)
                log.info("stop requested: state saved at step %s; re-run to resume", step.value)
                return RunOutcome(state, True)
            advance(state, limits)
            save_state(ctx.output, state)
            log.info("step %s finished in %.1fs", step.value, took)
        return RunOutcome(state, False)
    finally:
        keeper.stop()
        ctx.ledger.flush()
        if not keeper.lost:
            release_lease(ctx.output, keeper.lease)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status_state(output: Storage) -> State:
    state = load_state(output)
    if state is None:
        raise StateError(f"no run found at {output.uri(layout.STATE)}")
    return state
