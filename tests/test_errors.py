"""Tests of core.errors: every class of the tree survives pickling, as a worker process hands it to its parent.

The classes are found by walking ``BootstrapperError``'s subclasses after importing every module of ``core``,
so a class added anywhere in core is tested without being listed here.
"""

from __future__ import annotations

import importlib
import pickle
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest

import core
from core.errors import BootstrapperError, ConfigError, LLMParamRefused, LLMRateLimited, NoUsableChunks, RetryableError
from core.ingest.chunking import IngestResult
from core.schema import SkippedInput

for _module in pkgutil.walk_packages(core.__path__, "core."):
    importlib.import_module(_module.name)


def _tree(cls: type[BootstrapperError]) -> Iterator[type[BootstrapperError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _tree(sub)


ERROR_CLASSES = sorted(set(_tree(BootstrapperError)), key=lambda c: f"{c.__module__}.{c.__qualname__}")

# Constructor arguments for the classes that take more than a message; a new class with its own constructor
# fails below until it is given an entry here.
RESULT = IngestResult(chunks=[], skipped=[SkippedInput(source="a.pdf", reason="no text")], files_read=0,
                      duplicates_dropped=0)
ARGS: dict[type[BootstrapperError], tuple[Any, ...]] = {
    ConfigError: ("training.truncation_type", "must be one of ('head', 'head-tail')"),
    LLMRateLimited: ("rate limited by model 'gpt-4o' (HTTP 429): slow down", 2.5),
    NoUsableChunks: ("every input was skipped", RESULT),
    LLMParamRefused: ("Logprobs is not enabled for models/gemini-2.5-pro", "logprobs"),
}


def _make(cls: type[BootstrapperError]) -> BootstrapperError:
    return cls(*ARGS.get(cls, (f"{cls.__name__} happened at s3://bucket/key",)))


def test_the_tree_is_found() -> None:
    assert {c.__name__ for c in ERROR_CLASSES} >= {"ConfigError", "LLMRateLimited", "NoUsableChunks", "LeaseHeld"}


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__qualname__)
def test_every_error_pickles_to_an_equal_one(cls: type[BootstrapperError]) -> None:
    original = _make(cls)
    original.add_note("while reading s3://bucket/key")
    if isinstance(original, RetryableError):
        original.attempt_errors = ("LLMUnavailable: first try", "LLMUnavailable: second try")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(original, protocol=protocol))
        assert type(copy) is cls
        assert str(copy) == str(original) and copy.args == original.args
        assert vars(copy) == vars(original)  # field, retry_after, result, attempt_errors, notes


def test_constructor_attributes_survive() -> None:
    config = pickle.loads(pickle.dumps(ConfigError("training.max_length", "must be >= 1")))
    assert (config.field, str(config)) == ("training.max_length", "training.max_length: must be >= 1")
    assert pickle.loads(pickle.dumps(LLMRateLimited("slow", retry_after=1.5))).retry_after == 1.5
    empty = pickle.loads(pickle.dumps(NoUsableChunks("nothing")))
    assert empty.result is None
    assert pickle.loads(pickle.dumps(NoUsableChunks("nothing", RESULT))).result == RESULT
