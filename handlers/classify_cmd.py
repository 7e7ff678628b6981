"""``bootstrapper classify MODEL_DIR INPUT... [-o OUT]``: the edge of ``core.run.classify``.

Fetches an ``s3://`` classifier folder to a temporary directory, lists each input (a file, or every object
under a folder or prefix, keyed relative to it as ``path.input`` is in a run, so chunk ids match the run's),
writes the JSONL rows to a file, an S3 object or stdout, and prints the per-label summary (to stderr when the
rows go to stdout).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from core.errors import ConfigError
from core.storage.backends import download_dir, open_storage
from core.storage.jsonl_log import jsonl_line
from handlers import wiring

FETCHED_PREFIX = "bootstrapper-classifier-"  # temporary copies of s3:// classifiers, removed after the command


def _local_model(model_dir: str, environ: Mapping[str, str]) -> Path:
    if not model_dir.startswith(wiring.S3):
        path = Path(model_dir)
        if not (path / "config.json").exists():
            raise ConfigError("model_dir", f"{model_dir} is not a classifier folder (no config.json)")
        return path
    local = Path(tempfile.mkdtemp(prefix=FETCHED_PREFIX))
    download_dir(open_storage(model_dir, s3_client=wiring.make_s3_client_from_env(environ)), "", local)
    if not (local / "config.json").exists():
        raise ConfigError("model_dir", f"{model_dir} holds no classifier (no config.json)")
    return local


def _files(inputs: list[str], environ: Mapping[str, str]) -> Iterator[tuple[str, bytes]]:
    """``(key, bytes)`` per input object; a folder's keys are relative to it, a single file's is its name."""
    client = wiring.make_s3_client_from_env(environ) if any(i.startswith(wiring.S3) for i in inputs) else None
    for given in inputs:
        if not given.startswith(wiring.S3) and Path(given).is_file():
            yield Path(given).name, Path(given).read_bytes()
            continue
        if not given.startswith(wiring.S3) and not Path(given).is_dir():
            raise ConfigError("inputs", f"{given} is neither a file nor a folder")
        storage = open_storage(given, s3_client=client)
        keys = list(storage.list(""))
        if not keys and given.startswith(wiring.S3):  # an s3:// URI naming one object
            parent, _, name = given.rstrip("/").rpartition("/")
            storage, keys = open_storage(parent, s3_client=client), [name]
        for key in keys:
            yield key, storage.read_bytes(key)


def _open_output(target: str, environ: Mapping[str, str]) -> tuple[Any, TextIO | None]:
    """(binary writer context or None for stdout, text stream for stdout)."""
    if target == "-":
        return None, sys.stdout
    if target.startswith(wiring.S3):
        parent, _, name = target.rpartition("/")
        return open_storage(parent, s3_client=wiring.make_s3_client_from_env(environ)).open_write(name), None
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    return open_storage(str(Path(target).parent)).open_write(Path(target).name), None


def classify_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.batch_size < 1:
        raise ConfigError("--batch-size", f"must be >= 1, got {args.batch_size}")
    model_dir = _local_model(args.model_dir, environ)
    try:
        return _classify(args, environ, model_dir)
    finally:
        if model_dir.name.startswith(FETCHED_PREFIX):  # our copy of an s3:// classifier
            shutil.rmtree(model_dir, ignore_errors=True)


def _classify(args: argparse.Namespace, environ: Mapping[str, str], model_dir: Path) -> int:
    from core.model.classifier import load_classifier
    from core.run.classify import DEFAULT_CHUNK_SIZE, ClassifySummary, classify_documents, precision_for, run_info

    precision = precision_for(model_dir, args.precision)
    clf = load_classifier(model_dir, precision=precision)  # type: ignore[arg-type]
    info = run_info(model_dir)
    chunk_size = args.chunk_size if args.chunk_size is not None else int(info.get("chunk_size") or DEFAULT_CHUNK_SIZE)
    summary = ClassifySummary()
    rows = classify_documents(clf, _files(args.inputs, environ), chunk_size=chunk_size,
                              truncation_type=clf.truncation_type, batch_size=args.batch_size,
                              probabilities=args.probabilities, with_text=args.with_text,
                              progress=wiring.progress_factory(), summary=summary)
    writer, stream = _open_output(args.output, environ)
    if writer is None:
        assert stream is not None
        for row in rows:
            stream.write(jsonl_line(row))
        stream.flush()
    else:
        with writer as fh:
            for row in rows:
                fh.write(jsonl_line(row).encode())
    report = sys.stderr if args.output == "-" else sys.stdout
    print("\n".join([*summary.lines(), f"precision: {clf.precision}, chunk size: {chunk_size}"]), file=report)
    if args.output != "-":
        print(f"rows: {args.output}", file=report)
    return 0
