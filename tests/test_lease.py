"""The lease is one writer, always: a stale lease is taken over by exactly one of several racing processes,
a heartbeat keeps it through a step longer than its TTL, and a runner whose lease was taken stops without
writing its state again. Against a local folder and the S3 server."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from core.config import load_settings
from core.errors import LeaseHeld, LeaseLost
from core.run import layout
from core.run.context import RunContext
from core.run.lease import Lease, LeaseKeeper, acquire_lease, release_lease, renew_lease
from core.run.state import State, save_state
from core.storage.backends import LocalStorage, S3Storage, Storage, make_s3_client
from tests.fixtures.s3_server import S3Server

RACERS, ROUNDS = 3, 30


def _open(where: tuple[str, ...]) -> Storage:
    if where[0] == "local":
        return LocalStorage(Path(where[1]))
    _kind, endpoint, bucket = where
    return S3Storage(bucket, "race", make_s3_client(endpoint, "us-east-1"))


class _SlowReads:
    """A storage that pauses after each read, so every racer sees the stale lease before any of them writes:
    without it the window is too narrow to lose (the old delete-then-create takeover passed 30 of 30 rounds
    locally; with the pause it let two or three runners win in 21 of 30)."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def read_with_etag(self, key: str) -> tuple[bytes, str]:
        got = self._inner.read_with_etag(key)
        time.sleep(0.05)
        return got


def _racer(where: tuple[str, ...], start: Any, results: Any) -> None:
    """One contender process: each round, wait for the others, then try to take the stale lease over."""
    storage: Any = _SlowReads(_open(where))
    for round_no in range(ROUNDS):
        start.wait()
        me = Lease.new(900, pid=os.getpid())
        try:
            acquire_lease(storage, me, pid_alive=lambda _pid: True)
            results.put((round_no, me.owner))
        except LeaseHeld:
            results.put((round_no, None))
        start.wait()  # the parent checks the round and plants the next stale lease


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, ...]:
    if request.param == "local":
        return ("local", str(tmp_path / "out"))
    server: S3Server = request.getfixturevalue("s3_server")
    return ("s3", server.endpoint_url, request.getfixturevalue("s3_bucket"))


def test_racing_processes_take_a_stale_lease_over_one_at_a_time(where: tuple[str, ...]) -> None:
    storage = _open(where)
    mp = multiprocessing.get_context("spawn")
    start, results = mp.Barrier(RACERS + 1), mp.Queue()
    procs = [mp.Process(target=_racer, args=(where, start, results), daemon=True) for _ in range(RACERS)]
    for p in procs:
        p.start()
    try:
        for round_no in range(ROUNDS):
            stale = Lease(owner=f"dead-{round_no}", expires_at=0.0, host="gone", pid=1)
            storage.write_bytes(layout.LEASE, stale.body())
            start.wait(timeout=60)
            got = [results.get(timeout=60) for _ in range(RACERS)]
            winners = [owner for n, owner in got if owner is not None and n == round_no]
            assert len(winners) == 1, f"round {round_no}: {len(winners)} winners"
            assert json.loads(storage.read_bytes(layout.LEASE))["owner"] == winners[0]
            start.wait(timeout=60)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


def test_heartbeat_keeps_the_lease_through_a_step_longer_than_the_ttl(where: tuple[str, ...]) -> None:
    storage = _open(where)
    me = Lease.new(2, pid=os.getpid())
    acquire_lease(storage, me, pid_alive=lambda _pid: True)
    keeper = LeaseKeeper(storage, me, 2).start()
    try:
        time.sleep(5)  # a slow step: 2.5 TTLs
        with pytest.raises(LeaseHeld):
            acquire_lease(storage, Lease.new(2, pid=os.getpid() + 1, job_id="other"), pid_alive=lambda _pid: True)
        assert not keeper.lost
        held = json.loads(storage.read_bytes(layout.LEASE))
        assert held["owner"] == me.owner and held["expires_at"] > time.time()
    finally:
        keeper.stop()
    release_lease(storage, keeper.lease)
    assert not storage.exists(layout.LEASE)


def test_renewal_refuses_a_lease_taken_over(where: tuple[str, ...]) -> None:
    storage = _open(where)
    me = Lease.new(900, pid=os.getpid())
    acquire_lease(storage, me, pid_alive=lambda _pid: True)
    me = renew_lease(storage, me, 900)
    thief = Lease.new(900, pid=1, job_id="thief")
    storage.write_bytes(layout.LEASE, thief.body())
    with pytest.raises(LeaseLost, match="took over"):
        renew_lease(storage, me, 900)
    assert json.loads(storage.read_bytes(layout.LEASE))["owner"] == thief.owner



def test_ensure_held_renews_only_when_the_lease_may_have_expired_and_then_finds_the_new_owner(
        where: tuple[str, ...]) -> None:
    """Before a checkpoint or prediction-part write: a lease with more than half its TTL left is surely ours (a
    takeover needs it expired), so nothing is called; one nearer its end (a frozen process) is renewed first,
    and a lease taken meanwhile raises LeaseLost instead of letting the write go ahead."""
    storage = _open(where)
    now = [1000.0]
    me = Lease.new(60, pid=os.getpid(), clock=lambda: now[0])
    acquire_lease(storage, me, pid_alive=lambda _pid: True, clock=lambda: now[0])
    keeper = LeaseKeeper(storage, me, 60, clock=lambda: now[0])  # not started: no heartbeat
    thief = Lease.new(900, pid=1, job_id="thief")
    storage.write_bytes(layout.LEASE, thief.body())
    now[0] += 20  # 40 s of 60 left: no one can have taken it, so no renewal is made (one would meet the thief)
    keeper.ensure_held()
    assert not keeper.lost
    now[0] += 20  # 20 s left: as after a freeze; renewal finds the thief
    with pytest.raises(LeaseLost, match="took over"):
        keeper.ensure_held()
    assert keeper.lost
    with pytest.raises(LeaseLost):
        keeper.ensure_held()  # and stays lost
    assert json.loads(storage.read_bytes(layout.LEASE))["owner"] == thief.owner

class _NoLedger:
    def flush(self) -> None:
        pass


def _context(storage: Storage, ttl: int) -> RunContext:
    settings = load_settings("{classification: {classes: [a, b], desc: x}, path: {input: in, output: out}}")
    settings = settings.model_copy(update={"system": settings.system.model_copy(update={"lease_ttl_s": ttl})})
    return RunContext(settings=settings, input=storage, output=storage, gateway=None, ledger=_NoLedger(),  # type: ignore[arg-type]
                      large=None, small=None, format_modes={})  # type: ignore[arg-type]


def test_a_stolen_lease_stops_the_run_without_a_state_write(where: tuple[str, ...], monkeypatch: Any) -> None:
    from core import pipeline
    from core.config import config_fingerprint
    from core.run.state import Step

    storage = _open(where)
    ctx = _context(storage, ttl=2)
    save_state(storage, State(config_fingerprint=config_fingerprint(ctx.settings)))
    before = storage.read_bytes(layout.STATE)
    thief = Lease.new(900, pid=1, job_id="thief")
    seen: dict[str, Any] = {}

    def slow_step(step_ctx: RunContext, _data: Any, state: State) -> None:
        state.counters.chunks = 99  # what a step would record: must never reach state.json
        storage.write_bytes(layout.LEASE, thief.body())  # another job takes the lease over mid-step
        started = time.monotonic()
        while not step_ctx.should_stop() and time.monotonic() - started < 20:
            time.sleep(0.05)
        seen["stopped_after_s"] = time.monotonic() - started

    monkeypatch.setitem(pipeline.STEPS, Step.INGEST, slow_step)
    with pytest.raises(LeaseLost):
        pipeline.run(ctx, pid_alive=lambda _pid: True)
    assert seen["stopped_after_s"] < 2, "the heartbeat (every ttl/3) raised the stop flag"
    assert storage.read_bytes(layout.STATE) == before, "no state written after the lease was lost"
    assert json.loads(storage.read_bytes(layout.LEASE))["owner"] == thief.owner, "the thief's lease is left alone"


def test_a_run_longer_than_the_ttl_keeps_its_lease(where: tuple[str, ...], monkeypatch: Any) -> None:
    from core import pipeline
    from core.run.state import Step, load_state

    storage = _open(where)
    ctx = _context(storage, ttl=2)
    contenders: list[str] = []

    def slow_step(_ctx: RunContext, _data: Any, state: State) -> None:
        time.sleep(5)
        try:
            acquire_lease(storage, Lease.new(2, pid=1, job_id="other"), pid_alive=lambda _pid: True)
            contenders.append("took it")
        except LeaseHeld:
            contenders.append("refused")
        raise RuntimeError("stop here")  # the test's end: a step failure leaves the saved state alone

    monkeypatch.setitem(pipeline.STEPS, Step.INGEST, slow_step)
    with pytest.raises(RuntimeError, match="stop here"):
        pipeline.run(ctx, pid_alive=lambda _pid: True)
    assert contenders == ["refused"]
    state = load_state(storage)
    assert state is not None and state.step is Step.INGEST
    assert not storage.exists(layout.LEASE), "released at the end"
