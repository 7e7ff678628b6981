"""Labeling spread over worker processes, for when one event loop's CPU is the limit.

litellm spends about 3 ms of CPU per call (building the request through the OpenAI SDK, parsing, pricing,
logging), so one event loop saturates one core at roughly 300 calls/s: at concurrency 50 and 200 ms latency
the calls queue behind each other's CPU work and the batch takes ~1.4x its ideal time. ``label_in_processes``
splits a batch over ``processes`` forked children, each running ``core.llm.labeling.label_many`` on its own loop
with its share of the concurrency limit and its own gateway (cache, ledger part, LLM client) built by a
``WorkerFactory`` that the handler supplies, so no socket or client is shared across a fork.

What stays true with workers: every finished label is appended to a log part under ``prefix`` by the child that
made it (parts are per-writer objects, so writers never collide); the response cache is content-addressed,
so a resumed run pays for nothing twice whichever process made the call; ``should_stop`` (a SIGTERM in the
parent) stops the children taking new chunks while calls in flight finish and are recorded; a child dies with
its parent (``PR_SET_PDEATHSIG``), so a killed job stops spending at once, as a single process would.

Does not: decide how many processes to use (the caller does), retry a failed child (a re-run resumes from the
parts), or work where ``fork`` is unavailable (callers fall back to ``label_many`` in-process).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import PermanentError, RetryableError
from core.llm.labeling import LabelPrompt, label_many
from core.schema import Chunk, Label
from core.storage.jsonl_log import LogWriter

log = logging.getLogger("bootstrapper")

POLL_S = 0.2  # how often the parent checks should_stop and its children while waiting for labels
PR_SET_PDEATHSIG = 1


@dataclass
class LabelWorker:
    """What a child needs, built inside the child: a gateway, the output storage, and how to flush them."""

    chat: Any  # core.llm.labeling.Chat (an LLMGateway)
    storage: Any  # core.storage.Storage for the output location
    close: Callable[[], None]  # flushes the worker's ledger


# Called in the child with its share of the concurrency limit.
WorkerFactory = Callable[[int], LabelWorker]


def fork_available() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as integers allow, larger shares first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def plan_processes(n_chunks: int, requested: int, concurrency: int, *, min_chunks_per_process: int = 100) -> int:
    """How many processes a batch is worth: forking costs little, but a tiny batch gains nothing from it.

    Never more processes than concurrency slots (each child needs at least one call in flight).
    """
    if requested <= 1 or not fork_available():
        return 1
    return max(1, min(requested, concurrency, n_chunks // min_chunks_per_process))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when its parent dies, so an orphan never keeps calling the LLM."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's stop event still reaches the child
        pass


def _child(factory: WorkerFactory, share: int, endpoint: Any, prompt: LabelPrompt, chunks: list[Chunk],
           stage: str, prefix: str, flush_interval_s: float, call_opts: dict[str, Any],
           conn: multiprocessing.connection.Connection, stop: Any) -> None:
    _die_with_parent()
    # The parent owns signals: it turns SIGTERM/SIGINT into the stop event, so a Ctrl-C sent to the whole
    # process group does not abort calls in flight here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    code = 0
    try:
        worker = factory(share)
        try:
            sink = LogWriter(worker.storage, prefix, flush_interval_s=flush_interval_s)
            asyncio.run(label_many(worker.chat, endpoint, prompt, chunks, stage=stage, sink=sink, workers=share,
                                   on_done=lambda label: conn.send(("label", label.to_dict())),
                                   should_stop=stop.is_set, **call_opts))
        finally:
            worker.close()
        # What the child's gateway learned a model refuses, for the parent to keep in the run's state.
        refusals = getattr(worker.chat, "refusals", None)
        conn.send(("done", refusals.to_json() if refusals is not None else {}))
    except BaseException as exc:  # noqa: BLE001 - everything goes to the parent, which raises it
        code = 1
        try:
            conn.send(("error", exc))  # ours all pickle (core.errors), so the parent raises the error itself
        except (OSError, EOFError):  # the parent is gone; nothing left to tell
            pass
        except Exception:  # noqa: BLE001 - a foreign error that does not pickle
            # The parent reports a worker that died without saying why; the log keeps what it was.
            log.error("labeling worker %s could not send its error to the parent", os.getpid(), exc_info=exc)
    finally:
        conn.close()
        # Skip the interpreter's exit handlers: they belong to the parent (its atexit hooks, its S3 client's
        # pooled sockets), and the child's own work is already flushed.
        os._exit(code)


def label_in_processes(
    factory: WorkerFactory,
    endpoint: Any,
    prompt: LabelPrompt,
    chunks: Sequence[Chunk],
    *,
    stage: str,
    prefix: str,
    processes: int,
    workers: int,
    flush_interval_s: float = 2.0,
    on_done: Callable[[Label], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    refusals: Any = None,
    **call_opts: Any,
) -> list[Label]:
    """Label ``chunks`` in ``processes`` children sharing ``workers`` concurrent calls; labels in finishing order.

    ``refusals`` (a ``ParamRefusals``) gets what each child learned a model refuses.

    Raises the first child's error (an auth error, a storage failure) after stopping the others; a child that
    dies without a word (OOM, a signal) raises ``RetryableError``: what it recorded is on storage for a resume.
    """
    processes = max(1, min(processes, workers, len(chunks)))
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    parts = [list(chunks[i::processes]) for i in range(processes)]
    conns: dict[multiprocessing.connection.Connection, multiprocessing.process.BaseProcess] = {}
    for part, share in zip(parts, split_evenly(workers, processes)):
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(factory, share, endpoint, prompt, part, stage, prefix,
                                                flush_interval_s, call_opts, writer, stop),
                           name=f"labeler-{len(conns)}", daemon=True)
        proc.start()
        writer.close()  # the parent's copy: EOF on the reader then means the child is gone
        conns[reader] = proc

    results: list[Label] = []
    errors: list[BaseException] = []
    reported: set[multiprocessing.connection.Connection] = set()  # children that sent their error
    open_conns = set(conns)
    try:
        while open_conns:
            if should_stop() and not stop.is_set():
                log.info("stop requested: labeling workers finish their calls in flight and stop")
                stop.set()
            for conn in multiprocessing.connection.wait(list(open_conns), timeout=POLL_S):
                assert isinstance(conn, multiprocessing.connection.Connection)
                try:
                    kind, payload = conn.recv()
                except EOFError:
                    open_conns.discard(conn)
                    proc = conns[conn]
                    proc.join(timeout=5)
                    if proc.exitcode != 0 and conn not in reported:
                        errors.append(RetryableError(
                            f"labeling worker {proc.name} died (exit code {proc.exitcode}) without saying why; "
                            "its finished labels are saved and a re-run resumes from them"))
                        stop.set()
                    continue
                if kind == "label":
                    label = Label.from_dict(payload)
                    results.append(label)
                    if on_done is not None:
                        on_done(label)
                elif kind == "done" and payload and refusals is not None:
                    refusals.merge(payload)
                elif kind == "error":
                    reported.add(conn)
                    errors.append(payload)
                    stop.set()  # one child's auth or storage failure will be every child's
    finally:
        stop.set()
        for proc in conns.values():
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        for conn in conns:
            conn.close()
    if errors:
        # An auth error explains the others; raise it first.
        errors.sort(key=lambda e: not isinstance(e, PermanentError))
        raise errors[0]
    return results
