"""``bootstrapper export MODEL_DIR --hub REPO_ID``: push a classifier folder and its model card to the Hugging Face
Hub with ``huggingface_hub``, as one commit.

The token comes from ``$HF_TOKEN`` (or ``$HUGGING_FACE_HUB_TOKEN``), the endpoint from ``$HF_ENDPOINT`` (a private
Hub, or a stand-in in tests). The CLI keeps huggingface_hub offline for every other command (no model is ever
fetched from the hub), so this command alone switches that off, for its own calls. Hub errors are translated by
one table: 401/403 -> HubError naming the token, 429/5xx/network -> HubUnavailable (retryable), other 4xx ->
HubError.

Does not: train, evaluate, or write the card (the evaluate step did); ONNX export is not here yet.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import ConfigError, HubError, HubUnavailable
from handlers.classify_cmd import FETCHED_PREFIX, _local_model

TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
DEFAULT_ENDPOINT = "https://huggingface.co"
# httpx's and requests' connection-level failures, by class name (huggingface_hub has used both clients)
NETWORK_ERRORS = {"TransportError", "TimeoutException", "ConnectError", "ConnectionError", "Timeout", "OSError"}


def hub_error(exc: Exception, repo_id: str) -> Exception:
    """Our error for a huggingface_hub/requests failure, by HTTP status (the adapter's one table).

    >>> class E(Exception): response = type("R", (), {"status_code": 403})()
    >>> type(hub_error(E("forbidden"), "me/x")).__name__
    'HubError'
    >>> class F(Exception): response = type("R", (), {"status_code": 503})()
    >>> type(hub_error(F("down"), "me/x")).__name__
    'HubUnavailable'
    """
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return HubError(f"the Hub refused the token for {repo_id} (HTTP {status}): set $HF_TOKEN to a token with "
                        f"write access to it")
    names = {c.__name__ for c in type(exc).__mro__}
    network = bool(names & NETWORK_ERRORS)
    if (status is None and network) or status == 429 or (status is not None and status >= 500):
        return HubUnavailable(f"the Hub could not take the export of {repo_id} now ({exc}); try again")
    return HubError(f"the Hub refused the export of {repo_id}" + (f" (HTTP {status})" if status else "") + f": {exc}")


def files_to_push(folder: Path) -> list[Path]:
    """Every file of the classifier folder, the model card first (sorted, so commits are reproducible)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return sorted(files, key=lambda p: (p.name != "README.md", p.as_posix()))


@contextmanager
def _online() -> Iterator[None]:
    """huggingface_hub's offline switch off for this block only (the CLI sets HF_HUB_OFFLINE for the rest)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def export_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if not args.hub:
        raise ConfigError("--hub", "say where to push: --hub OWNER/NAME")
    token = next((environ[v] for v in TOKEN_VARS if environ.get(v)), None)
    if token is None:
        raise ConfigError("HF_TOKEN", "pushing to the Hub needs a token with write access: set $HF_TOKEN")
    model_dir = _local_model(args.model_dir, environ)
    try:
        if not (model_dir / "README.md").exists():
            raise ConfigError("model_dir", f"{args.model_dir} has no model card (README.md): export a classifier "
                                           "folder a run wrote (classifiers/classifier_<N>/)")
        url = push(model_dir, args.hub, token=token, endpoint=environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT,
                   private=args.private)
    finally:
        if model_dir.name.startswith(FETCHED_PREFIX):
            shutil.rmtree(model_dir, ignore_errors=True)
    print(f"pushed {args.model_dir} to {url}")
    return 0


def push(folder: Path, repo_id: str, *, token: str, endpoint: str, private: bool = False) -> str:
    """Create ``repo_id`` if needed and commit every file of ``folder`` to it; the commit's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    operations: list[Any] = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                             for p in files_to_push(folder)]
    try:
        with _online():
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.create_commit(repo_id, operations, commit_message="Upload classifier from classifier-bootstrapper",
                                     repo_type="model")
    except Exception as exc:  # every library failure goes through the one table (hub_error)
        raise hub_error(exc, repo_id) from exc
    return str(info.commit_url)
