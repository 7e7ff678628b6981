"""The edge: read settings once, build the concrete adapters, hand a ``RunContext`` to the pipeline.

Everything that touches ``os.environ``, the terminal or logging configuration lives here (and in the
handlers that call it), never in ``core``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from core.config import Settings, load_settings
from core.errors import ConfigError
from core.llm import providers
from handlers.credentials import ORACLE_MODEL_PREFIX, endpoints

S3 = "s3://"
log = logging.getLogger("bootstrapper")
STAND_IN_NOTICE = ("The models are the local oracle (`openai/oracle-*`), a stand-in server that answers from the "
                   "human labels found in the input. The accuracy figures show how well the classifier learns "
                   "those human labels, not how good an LLM's labels would be, and the spend figures are not real "
                   "costs.")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: what CloudWatch Logs Insights queries."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                               "message": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class ColourFormatter(logging.Formatter):
    """Plain lines for a terminal, the level coloured where it matters (warnings yellow, errors red)."""

    COLOURS: ClassVar[dict[int, str]] = {logging.WARNING: "\033[33m", logging.ERROR: "\033[31m",
                                         logging.CRITICAL: "\033[1;31m"}

    def __init__(self, colour: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        self.colour = colour

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        code = self.COLOURS.get(record.levelno) if self.colour else None
        return f"{code}{line}\033[0m" if code else line


def log_format(json_flag: bool | None, environ: Mapping[str, str], tty: bool) -> str:
    """``json`` or ``plain``: the flag wins, then ``$BOOTSTRAPPER_LOG_FORMAT``, then plain only on a terminal
    (a container's stderr goes to CloudWatch, where JSON lines are queryable).

    >>> log_format(None, {}, tty=True), log_format(None, {}, tty=False)
    ('plain', 'json')
    >>> log_format(None, {"BOOTSTRAPPER_LOG_FORMAT": "plain"}, tty=False), log_format(True, {}, tty=True)
    ('plain', 'json')
    """
    if json_flag:
        return "json"
    chosen = environ.get("BOOTSTRAPPER_LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "plain"):
        return chosen
    if chosen:
        raise ConfigError("BOOTSTRAPPER_LOG_FORMAT", f"must be plain or json, got {chosen!r}")
    return "plain" if tty else "json"


def configure_logging(*, json_lines: bool | None = None, level: int = logging.INFO,
                      environ: Mapping[str, str] | None = None) -> None:
    """Human lines on a terminal (coloured unless ``$NO_COLOR``), JSON lines otherwise; see ``log_format``."""
    environ = {} if environ is None else environ
    tty = sys.stderr.isatty()
    chosen = log_format(json_lines, environ, tty)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else
                         ColourFormatter(colour=tty and not environ.get("NO_COLOR")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("LiteLLM", "litellm", "httpx", "httpx2", "botocore", "urllib3", "transformers", "filelock", "smart_open"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # transformers prints a load report and weight-loading bars on every model load; our own progress says enough.
    # (read when transformers is first imported, which happens later and only for commands that train)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def unexpected_error_line(exc: Exception) -> str:
    """One line naming an exception from outside our tree (a bug, or a library error no adapter translated).

    The pipeline saves its state after every step, so a re-run resumes at the step that failed.
    """
    message = " ".join(str(exc).split())
    return (f"unexpected {type(exc).__name__}: {message} (not an error this program knows: the traceback is "
            "logged; state is saved up to the last finished step)")


def tune_allocator() -> None:
    """Make glibc return freed memory to the system (a process-wide setting, so it belongs at the edge).

    Training with dynamic padding allocates tensors of ever-changing sizes; with glibc's defaults the freed
    blocks stay in the heap and RSS climbs. Serving allocations over 1 MB by mmap and trimming at once cut
    peak RSS by ~230 MB per training run here for ~10% more training time (64 KB cut more, ~350 MB, but cost
    ~30% in mmap/munmap system time). A no-op where there is no glibc (macOS, musl).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        libc.mallopt(m_mmap_threshold, 1024 * 1024)
        libc.mallopt(m_trim_threshold, 0)
    except (OSError, AttributeError):
        pass


def progress_factory(enabled: bool | None = None) -> Callable[[str, int], Callable[[int], None]]:
    """tqdm bars on a terminal; elsewhere a JSON log line every ~10% (no carriage-return spam in logs)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    log = logging.getLogger("bootstrapper")

    def factory(stage: str, total: int) -> Callable[[int], None]:
        if enabled:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=stage, unit="it", leave=False, dynamic_ncols=True)

            def tick(n: int) -> None:
                bar.update(n)
                if bar.n >= total:
                    bar.close()

            return tick
        done = [0, 0]
        started = time.monotonic()

        def tick_log(n: int) -> None:
            done[0] += n
            decile = (done[0] * 10) // max(total, 1)
            if decile > done[1] or done[0] >= total:
                done[1] = decile
                log.info("%s: %d/%d (%.0fs)", stage, done[0], total, time.monotonic() - started)

        return tick_log

    return factory


def make_s3_client_from_env(environ: Mapping[str, str]) -> Any:
    from core.storage.backends import make_s3_client

    return make_s3_client(endpoint_url=environ.get("AWS_ENDPOINT_URL") or None,
                          region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None)


def read_text_uri(uri: str, s3_client: Any = None) -> str:
    from core.storage.backends import open_storage

    if uri.startswith(S3):
        bucket_key = uri[len(S3):]
        parent, _, name = bucket_key.rpartition("/")
        return open_storage(S3 + parent, s3_client=s3_client).read_text(name)
    return Path(uri).read_text(encoding="utf-8")


def resolve_location(value: str, config_uri: str) -> str:
    """``path.input``/``path.output`` relative to the config file's folder (local or S3)."""
    if value.startswith(S3) or Path(value).is_absolute():
        return value
    if config_uri.startswith(S3):
        base = PurePosixPath(config_uri[len(S3):]).parent
        parts: list[str] = []
        for piece in (base / value).parts:
            if piece == "..":
                if len(parts) <= 1:
                    raise ConfigError("path", f"{value!r} climbs above the bucket of {config_uri}")
                parts.pop()
            elif piece != ".":
                parts.append(piece)
        return S3 + "/".join(parts)
    return str((Path(config_uri).resolve().parent / value).resolve())


def load_config(config_uri: str, environ: Mapping[str, str], s3_client: Any = None) -> tuple[Settings, str, str]:
    """Settings plus the resolved input and output locations. Raises ConfigError (exit code 2)."""
    try:
        text = read_text_uri(config_uri, s3_client)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"cannot read {config_uri}: {exc}") from exc
    settings = load_settings(text, environ, source=config_uri)
    return (settings, resolve_location(settings.path.input, config_uri),
            resolve_location(settings.path.output, config_uri))


@dataclass(frozen=True)
class Job:
    """A loaded config: its settings, the resolved input and output locations, and an S3 client if one is needed."""

    settings: Settings
    input_uri: str
    output_uri: str
    s3_client: Any = None
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)  # where provider keys are read


def _s3_client_for(environ: Mapping[str, str], *uris: str) -> Any:
    return make_s3_client_from_env(environ) if any(u.startswith(S3) for u in uris) else None


def load_job(config_uri: str, environ: Mapping[str, str]) -> Job:
    """The config at ``config_uri`` (local or s3://) with ``BOOTSTRAPPER_*`` overrides from ``environ``."""
    client = _s3_client_for(environ, config_uri)
    settings, inp, out = load_config(config_uri, environ, client)
    return Job(settings, inp, out, client or _s3_client_for(environ, inp, out), environ)


def report_notes(models: tuple[str, str], output_uri: str, recount: str = "`bootstrapper report CONFIG`") -> Any:
    """What the report should say that core cannot know: a stand-in LLM, how to fetch from S3, how to recount."""
    from core.report.render import ReportNotes

    stand_in = any(m.startswith(ORACLE_MODEL_PREFIX) for m in models)
    return ReportNotes(stand_in_llm=STAND_IN_NOTICE if stand_in else "",
                       fetch="aws s3 cp --recursive {src} {dst}" if output_uri.startswith(S3) else "",
                       recount=recount)


def resolve_base_model(settings: Settings, work_dir: Path, s3_client: Any) -> str:
    """``training.model_path`` as something transformers loads: an ``s3://`` folder is downloaded first."""
    from core.storage.backends import download_dir, open_storage

    base = settings.training.model_path
    if not base.startswith(S3):
        return base
    local = work_dir / "base_model"
    if not (local / "config.json").exists():
        download_dir(open_storage(base, s3_client=s3_client), "", local)
    return str(local)


def worker_factory(settings: Settings, output_uri: str, new_s3_client: Callable[[], Any] | None,
                   refusals: Any = None) -> Any:
    """Builds, inside a labeling worker process, the same gateway ``build_context`` builds, from scratch.

    A forked child must not use the parent's S3 client (its pooled sockets are shared across the fork), so
    an s3:// output needs ``new_s3_client``; without one, None (labeling stays in the job's process).
    ``refusals``: the parent's ``ParamRefusals``; a forked child starts from a copy of what it knows then.
    """
    if output_uri.startswith(S3) and new_s3_client is None:
        return None

    def make(concurrency: int) -> Any:
        from core.llm.cache import ResponseCache
        from core.llm.client import LiteLLMClient, LLMOptions
        from core.llm.fanout import LabelWorker
        from core.llm.gateway import LLMGateway
        from core.llm.ledger import Ledger
        from core.run import layout
        from core.storage.backends import open_storage

        sysc = settings.system
        client = new_s3_client() if output_uri.startswith(S3) and new_s3_client is not None else None
        out = open_storage(output_uri, s3_client=client)
        llm = LiteLLMClient(LLMOptions(concurrency_limit=concurrency, timeout_s=sysc.llm_timeout_s,
                                       max_retries=sysc.llm_max_retries))
        ledger = Ledger(out, layout.LEDGER, flush_interval_s=sysc.flush_interval_s)
        from core.llm.capabilities import ParamRefusals

        known = ParamRefusals(refusals.to_json() if refusals is not None else None)
        return LabelWorker(chat=LLMGateway(llm, ResponseCache(out, layout.CACHE), ledger, refusals=known),
                           storage=out, close=ledger.close)

    return make


def build_context(job: Job, *, should_stop: Callable[[], bool] = lambda: False, shard: tuple[int, int] = (0, 1),
                  progress: bool | None = None, new_s3_client: Callable[[], Any] | None = None,
                  settings: Settings | None = None, recount: str = "`bootstrapper report CONFIG`",
                  trains: bool = True, llm_calls: bool = True) -> Any:
    """The ``RunContext`` of ``job`` (with ``settings`` in place of the job's own, when given).

    ``llm_calls``: the command may call an LLM, so each provider's credentials are checked now, before any
    spend (a missing key is a ConfigError naming its variable). Predicting and reporting never call one.

    ``trains``: the run may train or embed, so an ``s3://`` base model is fetched now (a command that only
    predicts or reports with a trained classifier never needs it).
    """
    from core.llm.cache import ResponseCache
    from core.llm.client import LiteLLMClient, LLMOptions
    from core.llm.gateway import LLMGateway
    from core.llm.ledger import Ledger
    from core.run import layout
    from core.run.context import RunContext
    from core.storage.backends import open_storage

    settings = settings or job.settings
    input_uri, output_uri, s3_client = job.input_uri, job.output_uri, job.s3_client
    if s3_client is None and (input_uri.startswith(S3) or output_uri.startswith(S3)):
        raise ConfigError("path", "an s3:// location needs an S3 client")
    out = open_storage(output_uri, s3_client=s3_client)
    inp = open_storage(input_uri, s3_client=s3_client)
    sysc = settings.system
    llm = LiteLLMClient(LLMOptions(concurrency_limit=sysc.concurrency_limit, timeout_s=sysc.llm_timeout_s,
                                   max_retries=sysc.llm_max_retries))
    ledger = Ledger(out, layout.LEDGER, flush_interval_s=sysc.flush_interval_s)
    gateway = LLMGateway(llm, ResponseCache(out, layout.CACHE), ledger)
    large, small = endpoints(settings, job.environ, check=llm_calls)
    modes = {e.model: llm.supports_response_format(e) for e in (large, small)}
    if llm_calls:
        for e in {large.model: large, small.model: small}.values():
            form = providers.facts(e.model).form
            log.info("structured output for %s: %s%s", e.model, modes[e.model],
                     f" ({form})" if modes[e.model] == "json_schema" and form else "")
    ctx = RunContext(settings=settings, input=inp, output=out, gateway=gateway, ledger=ledger, large=large,
                     small=small, format_modes=modes, progress=progress_factory(progress),
                     should_stop=should_stop, shard=shard,
                     worker_factory=worker_factory(settings, output_uri, new_s3_client, gateway.refusals),
                     notes=report_notes((large.model, small.model), output_uri, recount))
    if trains:
        ctx.base_model = resolve_base_model(settings, ctx.work_dir, s3_client)
    return ctx
