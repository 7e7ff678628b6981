"""The lease: one runner per output location, as a lock object with an expiry, taken and renewed by
conditional writes.

``acquire_lease`` creates ``lease.json`` if absent, or takes over a stale one with one conditional write on the
version it read (``Storage.replace_if``): of two runners that both find it stale, exactly one wins.
``renew_lease`` pushes the expiry on with the same conditional write, and raises ``LeaseLost`` when the lease
is no longer ours. ``LeaseKeeper`` renews from a thread every ttl/3, so a step longer than the TTL keeps it,
and raises its ``lost`` flag when a renewal finds the lease taken. ``release_lease`` deletes it if still ours.

Nothing here runs a step or reads the run's state; stopping on ``lost`` is the pipeline's business.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from core.errors import LeaseHeld, LeaseLost, ObjectNotFound, RetryableError
from core.run import layout

if TYPE_CHECKING:
    from core.storage.backends import Storage

LEASE_KEY = layout.LEASE
log = logging.getLogger("bootstrapper")


@dataclass(frozen=True)
class Lease:
    """A lock object with an expiry: one runner per output location."""

    owner: str
    expires_at: float
    host: str
    pid: int
    job_id: str = ""

    @classmethod
    def new(cls, ttl_s: float, pid: int, job_id: str = "", clock: Any = time.time) -> Lease:
        return cls(owner=uuid.uuid4().hex, expires_at=clock() + ttl_s, host=socket.gethostname(), pid=pid,
                   job_id=job_id)

    def body(self) -> bytes:
        return json.dumps(asdict(self)).encode()


def lease_is_stale(held: Lease, me: Lease, now: float, pid_alive: Any) -> bool:
    """Expired, or left by a dead process on this host, or by an earlier attempt of the same Batch job."""
    if now >= held.expires_at:
        return True
    if held.job_id and held.job_id == me.job_id:
        return True
    return held.host == me.host and held.pid != me.pid and not pid_alive(held.pid)


def _parse(body: bytes) -> Lease:
    """The lease in ``body``; one that is not a lease reads as long expired (stale)."""
    try:
        return Lease(**json.loads(body))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
        return Lease(owner="?", expires_at=0.0, host="?", pid=-1)


def acquire_lease(storage: Storage, me: Lease, pid_alive: Any, clock: Any = time.time) -> None:
    """Take the lease: create it, or replace a stale one in one conditional write; ``LeaseHeld`` if live."""
    held: Lease | None = None
    for _ in range(3):  # a lease released between our create and our read: try creating again
        if storage.create_if_absent(LEASE_KEY, me.body()):
            return
        try:
            body, etag = storage.read_with_etag(LEASE_KEY)
        except ObjectNotFound:
            continue
        held = _parse(body)
        if not lease_is_stale(held, me, clock(), pid_alive):
            break
        if storage.replace_if(LEASE_KEY, etag, me.body()):
            return
        held = None  # another runner took the stale lease over first: look at theirs
    if held is None:
        try:
            held = _parse(storage.read_text(LEASE_KEY).encode())
        except ObjectNotFound:
            pass
    who = f"host {held.host}, pid {held.pid}, expires in {held.expires_at - clock():.0f}s" if held else "unknown"
    raise LeaseHeld(
        f"another run holds {storage.uri(LEASE_KEY)} ({who}); "
        "wait for it to finish, or delete the lease file if that run is gone"
    )


def renew_lease(storage: Storage, me: Lease, ttl_s: float, clock: Any = time.time) -> Lease:
    """Our lease with a new expiry, written only over our own; ``LeaseLost`` if it is another runner's or gone."""
    try:
        body, etag = storage.read_with_etag(LEASE_KEY)
    except ObjectNotFound:
        raise LeaseLost(f"{storage.uri(LEASE_KEY)} was deleted under this run") from None
    held = _parse(body)
    renewed = replace(me, expires_at=clock() + ttl_s)
    if held.owner != me.owner or not storage.replace_if(LEASE_KEY, etag, renewed.body()):
        raise LeaseLost(f"another run (host {held.host}, pid {held.pid}) took over {storage.uri(LEASE_KEY)}")
    return renewed


def release_lease(storage: Storage, me: Lease) -> None:
    try:
        held = json.loads(storage.read_text(LEASE_KEY))
    except (ObjectNotFound, json.JSONDecodeError):
        return
    if held.get("owner") == me.owner:
        storage.delete(LEASE_KEY)


class LeaseKeeper:
    """Renews a held lease every ``ttl_s / 3`` from a daemon thread until ``stop``.

    ``lost`` turns true (and stays) once a renewal finds the lease taken or deleted; a storage outage is
    logged and retried at the next beat (the lease stays ours until it expires, and a later renewal finds
    out whether someone took it meanwhile).
    """

    def __init__(self, storage: Storage, lease: Lease, ttl_s: float, clock: Any = time.time) -> None:
        self.storage, self.lease, self.ttl_s, self._clock = storage, lease, ttl_s, clock
        self._lost = threading.Event()
        self._done = threading.Event()
        self._renewing = threading.Lock()  # our two renewers (beat, renew_now) must not race each other
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def check(self) -> None:
        """Raise ``LeaseLost`` if a renewal found the lease taken: nothing more may be written."""
        if self.lost:
            raise LeaseLost(f"another run took over {self.storage.uri(LEASE_KEY)}; this run stopped "
                            "without saving its state")

    def renew_now(self) -> None:
        """Renew at once, raising ``LeaseLost`` if the lease is taken: a write right after it is ours alone.

        A renewed lease cannot be taken over before it expires, a full TTL later.
        """
        self.check()
        with self._renewing:
            try:
                self.lease = renew_lease(self.storage, self.lease, self.ttl_s, self._clock)
            except LeaseLost:
                self._lost.set()
                raise

    def ensure_held(self) -> None:
        """Raise ``LeaseLost`` unless the lease is surely ours for a while: call it right before a write that would
        clobber a new owner's work (a checkpoint, a prediction part).

        While more than half the TTL is left, no other job can have taken the lease (a takeover needs it expired,
        by the taker's clock: hosts' clocks must agree within TTL/2), so no call is made; the heartbeat keeps it
        so. (The same Batch job's next attempt, or a runner on this host that finds our pid dead, takes over at
        once, but only after this process has stopped.) Less than that left means this process was frozen or
        the heartbeat failed: renew first, which finds out. A freeze between this check and the write remains
        possible; S3 has no condition across two objects to close it.
        """
        self.check()
        if self.lease.expires_at - self._clock() < self.ttl_s / 2:
            self.renew_now()

    def _beat(self) -> None:
        while not self._done.wait(self.ttl_s / 3):
            try:
                self.renew_now()
            except LeaseLost as exc:
                log.error("lease lost: %s; stopping at the next safe point without saving state", exc)
                return
            except RetryableError as exc:
                log.warning("lease renewal failed (%s); trying again in %.0fs", exc, self.ttl_s / 3)
