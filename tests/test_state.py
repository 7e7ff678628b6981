"""The pure transition function, state (de)serialisation and the lease."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import LeaseHeld, StateError
from core.pipeline import advance
from core.run.lease import Lease, acquire_lease, release_lease
from core.run.state import (
    SCHEMA_VERSION,
    IterationRecord,
    Limits,
    State,
    Step,
    best_iteration,
    check_resumable,
    load_state,
    next_step,
    save_state,
)
from core.storage.backends import LocalStorage

LIMITS = Limits(required_accuracy=0.9, max_iters=3, predict_at_end=True)


def _at_evaluate(acc: float, iteration: int = 1, pool: int = 100) -> State:
    s = State(config_fingerprint="f", step=Step.EVALUATE, iteration=iteration, pool_remaining=pool)
    s.iterations = [IterationRecord(n=i, metrics={"accuracy": acc}) for i in range(1, iteration + 1)]
    return s


@pytest.mark.parametrize("step,expected", [
    (Step.INGEST, Step.SPLIT), (Step.SPLIT, Step.RULES), (Step.RULES, Step.LABEL_TEST),
    (Step.LABEL_TEST, Step.LABEL_TRAIN), (Step.LABEL_TRAIN, Step.TRAIN), (Step.TRAIN, Step.EVALUATE),
    (Step.PREDICT, Step.REPORT), (Step.REPORT, Step.DONE), (Step.DONE, Step.DONE),
], ids=lambda v: v.value if isinstance(v, Step) else str(v))
def test_linear_transitions(step: Step, expected: Step) -> None:
    assert next_step(State(config_fingerprint="f", step=step), LIMITS)[0] is expected


def test_evaluate_reaching_accuracy_goes_to_predict() -> None:
    nxt, why = next_step(_at_evaluate(0.95), LIMITS)
    assert nxt is Step.PREDICT and "required_accuracy" in why


def test_evaluate_without_predict_goes_to_report() -> None:
    limits = Limits(0.9, 3, predict_at_end=False)
    assert next_step(_at_evaluate(0.95), limits)[0] is Step.REPORT


def test_evaluate_below_accuracy_loops() -> None:
    assert next_step(_at_evaluate(0.5), LIMITS) == (Step.LABEL_TRAIN, "")


def test_max_iters_stops_loop() -> None:
    nxt, why = next_step(_at_evaluate(0.5, iteration=3), LIMITS)
    assert nxt is Step.PREDICT and "max_iters=3" in why


def test_empty_pool_stops_loop() -> None:
    nxt, why = next_step(_at_evaluate(0.5, pool=0), LIMITS)
    assert nxt is Step.PREDICT and "pool" in why


def test_advance_opens_iteration_and_sets_reason() -> None:
    s = State(config_fingerprint="f", step=Step.LABEL_TEST)
    advance(s, LIMITS)
    assert s.step is Step.LABEL_TRAIN and s.iteration == 1 and [i.n for i in s.iterations] == [1]
    s = _at_evaluate(0.5, iteration=3)
    advance(s, LIMITS)
    assert s.step is Step.PREDICT and s.stop_reason.startswith("stopped at max_iters")


def test_best_iteration_prefers_accuracy_then_later() -> None:
    its = [IterationRecord(1, metrics={"accuracy": 0.8}), IterationRecord(2, metrics={"accuracy": 0.9}),
           IterationRecord(3, metrics={"accuracy": 0.9})]
    assert best_iteration(its) == 3
    assert best_iteration([IterationRecord(1)]) is None


def test_state_roundtrip_and_schema_check(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    s = _at_evaluate(0.7, iteration=2)
    s.counters.chunks = 10
    save_state(storage, s)
    back = load_state(storage)
    assert back is not None and back.step is Step.EVALUATE and back.iterations[1].metrics == {"accuracy": 0.7}
    assert back.counters.chunks == 10 and back.counters == s.counters
    raw = json.loads(storage.read_text("state.json"))
    raw["schema_version"] = SCHEMA_VERSION + 1
    storage.write_text("state.json", json.dumps(raw))
    with pytest.raises(StateError, match="schema_version"):
        load_state(storage)
    storage.write_text("state.json", "{not json")
    with pytest.raises(StateError, match="unreadable"):
        load_state(storage)


def test_changed_config_refused() -> None:
    with pytest.raises(StateError, match="--restart"):
        check_resumable(State(config_fingerprint="a"), "b")
    check_resumable(State(config_fingerprint="a"), "a")


def test_lease_refuses_second_live_runner(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    first = Lease.new(900, pid=111)
    acquire_lease(storage, first, pid_alive=lambda pid: True)
    second = Lease.new(900, pid=222)
    with pytest.raises(LeaseHeld, match="another run"):
        acquire_lease(storage, second, pid_alive=lambda pid: True)
    release_lease(storage, second)  # not the owner: no effect
    assert storage.exists("lease.json")
    assert _holder(storage) == first.owner, "the refused runner left the lease alone"
    release_lease(storage, first)
    acquire_lease(storage, second, pid_alive=lambda pid: True)
    assert _holder(storage) == second.owner


def _holder(storage: LocalStorage) -> str:
    return str(json.loads(storage.read_text("lease.json"))["owner"])


def test_lease_taken_over_from_dead_process_or_expired(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    acquire_lease(storage, Lease.new(900, pid=111), pid_alive=lambda pid: True)
    survivor = Lease.new(900, pid=222)
    acquire_lease(storage, survivor, pid_alive=lambda pid: pid != 111)  # 111 died (SIGKILL)
    assert _holder(storage) == survivor.owner
    expired = Lease(owner="x", expires_at=0.0, host="elsewhere", pid=1)
    storage.write_text("lease.json", json.dumps(expired.__dict__))
    successor = Lease.new(900, pid=333)
    acquire_lease(storage, successor, pid_alive=lambda pid: True)
    assert _holder(storage) == successor.owner


def test_lease_taken_over_by_retry_of_same_batch_job(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    held = Lease(owner="x", expires_at=9e18, host="other-host", pid=7, job_id="job-1")
    storage.write_text("lease.json", json.dumps(held.__dict__))
    with pytest.raises(LeaseHeld):
        acquire_lease(storage, Lease.new(900, pid=8, job_id="job-2"), pid_alive=lambda pid: True)
    assert _holder(storage) == "x"
    retry = Lease.new(900, pid=8, job_id="job-1")
    acquire_lease(storage, retry, pid_alive=lambda pid: True)
    assert _holder(storage) == retry.owner
