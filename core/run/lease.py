"""The lease: one runner per output location, as a create-if-absent lock object with an expiry.

``acquire_lease`` creates ``lease.json`` or takes over a stale one; ``renew_lease`` pushes its expiry on;
``release_lease`` deletes it if it is still ours. Nothing here runs a step or reads the run's state.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from core.errors import LeaseHeld, ObjectNotFound
from core.run import layout

if TYPE_CHECKING:
    from core.storage.backends import Storage

LEASE_KEY = layout.LEASE


@dataclass(frozen=True)
class Lease:
    """A create-if-absent lock object with an expiry: one runner per output location."""

    owner: str
    expires_at: float
    host: str
    pid: int
    job_id: str = ""

    @classmethod
    def new(cls, ttl_s: float, pid: int, job_id: str = "", clock: Any = time.time) -> Lease:
        return cls(owner=uuid.uuid4().hex, expires_at=clock() + ttl_s, host=socket.gethostname(), pid=pid,
                   job_id=job_id)


def lease_is_stale(held: Lease, me: Lease, now: float, pid_alive: Any) -> bool:
    """Expired, or left by a dead process on this host, or by an earlier attempt of the same Batch job."""
    if now >= held.expires_at:
        return True
    if held.job_id and held.job_id == me.job_id:
        return True
    return held.host == me.host and held.pid != me.pid and not pid_alive(held.pid)


def acquire_lease(storage: Storage, me: Lease, pid_alive: Any, clock: Any = time.time) -> None:
    body = json.dumps(asdict(me)).encode()
    if storage.create_if_absent(LEASE_KEY, body):
        return
    try:
        held = Lease(**json.loads(storage.read_text(LEASE_KEY)))
    except ObjectNotFound:
        held = None
    except (json.JSONDecodeError, TypeError):
        held = Lease(owner="?", expires_at=0.0, host="?", pid=-1)
    if held is None or lease_is_stale(held, me, clock(), pid_alive):
        storage.delete(LEASE_KEY)
        if storage.create_if_absent(LEASE_KEY, body):
            return
    who = f"host {held.host}, pid {held.pid}, expires in {held.expires_at - clock():.0f}s" if held else "unknown"
    raise LeaseHeld(
        f"another run holds {storage.uri(LEASE_KEY)} ({who}); "
        "wait for it to finish, or delete the lease file if that run is gone"
    )


def renew_lease(storage: Storage, me: Lease, ttl_s: float, clock: Any = time.time) -> Lease:
    renewed = Lease(me.owner, clock() + ttl_s, me.host, me.pid, me.job_id)
    storage.write_text(LEASE_KEY, json.dumps(asdict(renewed)))
    return renewed


def release_lease(storage: Storage, me: Lease) -> None:
    try:
        held = json.loads(storage.read_text(LEASE_KEY))
    except (ObjectNotFound, json.JSONDecodeError):
        return
    if held.get("owner") == me.owner:
        storage.delete(LEASE_KEY)

