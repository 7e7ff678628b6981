"""Tests for core.storage, run against both backends through the ``storage`` fixture.

S3 runs against moto's standalone server (a real process, real HTTP). Error translation is checked
against real failures where one can be produced (a missing bucket, a port with nothing listening) and
on synthesized botocore errors for codes moto will not send (throttling, access denied).
"""

from __future__ import annotations

import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from core.errors import AlreadyExists, ObjectNotFound, RetryableError, StorageError, StorageUnavailable
from core.storage.backends import (
    LocalStorage,
    S3Storage,
    Storage,
    check_key,
    download_dir,
    make_s3_client,
    open_storage,
    upload_dir,
)
from core.storage.errors import local_errors, translate_local_error, translate_s3_error
from tests.fixtures.s3_server import S3Server, free_port, make_test_client

UNICODE_KEYS = ["données/résumé ✓.json", "日本語/キー.txt", "emoji/🙂.bin", "odd/sp ace+plus%20#h?q=1.txt"]
BAD_KEYS = ["../x", "a/../../x", "/etc/passwd", "", "a//b", "./a", "a/", "nul\x00byte"]


def test_roundtrip_bytes(storage: Storage) -> None:
    payload = bytes(range(256)) * 10
    storage.write_bytes("data/blob.bin", payload)
    assert storage.read_bytes("data/blob.bin") == payload


@pytest.mark.parametrize("text", ["", "plain ascii\n", "ünïcødé — 日本語 🙂\r\nline2"], ids=["empty", "ascii", "unicode"])
def test_roundtrip_text(storage: Storage, text: str) -> None:
    storage.write_text("t.txt", text)
    assert storage.read_text("t.txt") == text


def test_overwrite_replaces_content(storage: Storage) -> None:
    storage.write_bytes("k", b"first, longer content")
    storage.write_bytes("k", b"second")
    assert storage.read_bytes("k") == b"second"


@pytest.mark.parametrize("key", UNICODE_KEYS, ids=["accents", "cjk", "emoji", "url-special"])
def test_unicode_keys(storage: Storage, key: str) -> None:
    storage.write_text(key, f"content of {key}")
    assert storage.read_text(key) == f"content of {key}"
    assert storage.exists(key)
    assert key in list(storage.list())


@pytest.mark.parametrize("key", ["model.safetensors.gz", "q?versionId=abc"], ids=["gz-suffix", "versionid-in-key"])
def test_keys_are_not_interpreted(storage: Storage, key: str) -> None:
    # A ".gz" key must not be (de)compressed on the way, nor "?versionId=" read as an S3 version.
    storage.write_bytes(key, b"raw bytes, not gzip")
    assert storage.read_bytes(key) == b"raw bytes, not gzip"
    assert list(storage.list()) == [key]


def test_read_text_rejects_non_utf8(storage: Storage) -> None:
    storage.write_bytes("latin1.txt", "café".encode("latin-1"))
    with pytest.raises(StorageError, match="UTF-8"):
        storage.read_text("latin1.txt")


def test_list_is_sorted_recursive_and_folder_scoped(storage: Storage) -> None:
    keys = ["a/z.txt", "a/b/c/deep.txt", "a/b/x.txt", "ab/sibling.txt", "a.txt", "top.json"]
    for key in keys:
        storage.write_bytes(key, key.encode())
    under_a = ["a/b/c/deep.txt", "a/b/x.txt", "a/z.txt"]
    assert list(storage.list("a/")) == under_a
    assert list(storage.list("a")) == under_a  # folder semantics: never "ab/..." nor "a.txt"
    assert list(storage.list("a/b")) == ["a/b/c/deep.txt", "a/b/x.txt"]
    assert list(storage.list()) == sorted(keys)
    assert list(storage.list("missing/")) == []


def test_list_stays_inside_the_root(storage: Storage, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    storage.write_bytes("inside.txt", b"1")
    if isinstance(storage, S3Storage):  # neighbours that share the prefix string but not the folder
        client = request.getfixturevalue("s3_client")
        client.put_object(Bucket=storage.bucket, Key=f"{storage.prefix}2/outside.txt", Body=b"0")
        client.put_object(Bucket=storage.bucket, Key="root/other.txt", Body=b"0")
    else:
        (tmp_path / "outside.txt").write_bytes(b"0")
    assert list(storage.list()) == ["inside.txt"]


def test_exists_and_delete(storage: Storage) -> None:
    assert not storage.exists("d/k.txt")
    storage.write_bytes("d/k.txt", b"x")
    assert storage.exists("d/k.txt")
    assert not storage.exists("d")  # a folder is not an object
    storage.delete("d/k.txt")
    assert not storage.exists("d/k.txt")
    storage.delete("d/k.txt")  # deleting a missing key is fine
    storage.delete("never/existed")
    with pytest.raises(ObjectNotFound):
        storage.read_bytes("d/k.txt")


def test_missing_key_is_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound):
        storage.read_bytes("nope.bin")
    with pytest.raises(ObjectNotFound):
        storage.read_text("nope.txt")
    with pytest.raises(ObjectNotFound):
        storage.open_read("nope/deeper.bin")


def test_create_if_absent_refuses_second_writer(storage: Storage) -> None:
    assert storage.create_if_absent("lease.json", b"first") is True
    assert storage.create_if_absent("lease.json", b"second") is False
    assert storage.read_bytes("lease.json") == b"first"


def test_create_if_absent_race_has_one_winner(storage: Storage) -> None:
    n_threads, rounds = 6, 5
    for round_no in range(rounds):
        key = f"race/{round_no}.lock"
        barrier = threading.Barrier(n_threads)
        winners: list[int] = []

        def contend(i: int, key: str = key, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            if storage.create_if_absent(key, f"runner-{i}".encode()):
                winners.append(i)

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1, f"round {round_no}: winners {winners}"
        assert storage.read_bytes(key) == f"runner-{winners[0]}".encode()


def test_replace_if_writes_only_over_the_version_read(storage: Storage) -> None:
    storage.write_bytes("lease.json", b"one")
    body, etag = storage.read_with_etag("lease.json")
    assert body == b"one"
    assert storage.replace_if("lease.json", etag, b"two") is True
    assert storage.replace_if("lease.json", etag, b"three") is False, "the version read is gone"
    assert storage.read_bytes("lease.json") == b"two"
    body, etag = storage.read_with_etag("lease.json")
    storage.write_bytes("lease.json", b"two")  # same bytes, new version: the token still changes locally
    storage.delete("lease.json")
    assert storage.replace_if("lease.json", etag, b"four") is False, "a deleted object is not replaced"
    assert not storage.exists("lease.json")
    with pytest.raises(ObjectNotFound):
        storage.read_with_etag("lease.json")
    assert list(storage.list("")) == []


def test_streaming_write_then_read(storage: Storage) -> None:
    chunk = os.urandom(64 * 1024)
    with storage.open_write("big/model.bin") as out:
        for _ in range(48):  # 3 MiB in 64 KiB writes
            out.write(chunk)
        assert not storage.exists("big/model.bin")  # appears only on close
    assert storage.exists("big/model.bin")
    blocks = []
    with storage.open_read("big/model.bin") as src:
        while block := src.read(100_000):
            assert len(block) <= 100_000  # streamed in pieces, not slurped
            blocks.append(block)
    assert len(blocks) == 32
    assert b"".join(blocks) == chunk * 48


def test_failed_streaming_write_publishes_nothing(storage: Storage) -> None:
    storage.write_bytes("keep.txt", b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with storage.open_write("keep.txt") as out:
            out.write(b"half-written new content")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with storage.open_write("fresh.txt") as out:
            out.write(b"partial")
            raise RuntimeError("boom")
    assert storage.read_bytes("keep.txt") == b"old"
    assert not storage.exists("fresh.txt")
    assert list(storage.list()) == ["keep.txt"]


def test_upload_and_download_dir(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "tokenizer").mkdir(parents=True)
    files = {"config.json": b"{}", "model.safetensors": os.urandom(200_000), "tokenizer/vocab.txt": "ünï\n".encode()}
    for rel, data in files.items():
        (src / rel).write_bytes(data)

    keys = upload_dir(storage, src, "runs/1/model")
    assert sorted(keys) == sorted(f"runs/1/model/{rel}" for rel in files)
    assert list(storage.list("runs/1/model")) == sorted(keys)

    dest = tmp_path / "downloaded"
    written = download_dir(storage, "runs/1/model/", dest)
    assert sorted(p.relative_to(dest).as_posix() for p in written) == sorted(files)
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data


def test_upload_dir_requires_a_directory(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a directory"):
        upload_dir(storage, tmp_path / "missing", "x")


@pytest.mark.parametrize("key", BAD_KEYS, ids=["dotdot", "nested-dotdot", "absolute", "empty", "double-slash", "dot", "trailing-slash", "nul"])
def test_keys_escaping_or_aliasing_root_are_rejected(storage: Storage, key: str) -> None:
    with pytest.raises(StorageError):
        storage.write_bytes(key, b"x")
    with pytest.raises(StorageError):
        storage.read_bytes(key)
    with pytest.raises(StorageError):
        storage.exists(key)
    with pytest.raises(StorageError):
        storage.delete(key)
    with pytest.raises(StorageError):
        storage.create_if_absent(key, b"x")


@pytest.mark.parametrize("prefix", ["..", "../sibling", "/abs/"], ids=["dotdot", "dotdot-sibling", "absolute"])
def test_list_prefix_escaping_root_is_rejected(storage: Storage, prefix: str) -> None:
    with pytest.raises(StorageError):
        list(storage.list(prefix))


def test_check_key_accepts_normal_keys() -> None:
    assert check_key("a/b.json") == "a/b.json"
    assert check_key("..hidden/x..y") == "..hidden/x..y"  # dots inside a name are fine


# --- local specifics --------------------------------------------------------------------------


def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.write_bytes("a/k.bin", b"1")
    store.write_bytes("a/k.bin", b"2")
    store.create_if_absent("a/lock", b"x")
    store.create_if_absent("a/lock", b"y")
    with pytest.raises(ValueError):
        with store.open_write("a/k.bin") as out:
            out.write(b"never")
            raise ValueError
    assert sorted(os.listdir(tmp_path / "a")) == ["k.bin", "lock"]
    assert (tmp_path / "a" / "k.bin").read_bytes() == b"2"


def test_local_in_progress_write_is_invisible(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    out = store.open_write("x.bin")
    out.write(b"data")
    assert list(store.list()) == []
    assert not store.exists("x.bin")
    assert len(os.listdir(tmp_path)) == 1  # the temp file is really there, just hidden
    out.close()
    assert list(store.list()) == ["x.bin"]


def test_local_permission_error_is_storage_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "k").write_bytes(b"x")
    locked.chmod(0o000)
    try:
        with pytest.raises(StorageError) as info:
            LocalStorage(locked).write_bytes("new", b"y")
        assert not isinstance(info.value, ObjectNotFound)
    finally:
        locked.chmod(0o755)


def test_local_os_errors_are_translated() -> None:
    # Runs as root in CI containers too, where a real EACCES cannot be provoked.
    with pytest.raises(StorageError) as info, local_errors("write /x"):
        raise PermissionError(13, "Permission denied")
    assert type(info.value) is StorageError
    with pytest.raises(ObjectNotFound), local_errors("read /x"):
        raise FileNotFoundError(2, "No such file or directory")


@pytest.mark.parametrize(
    ("exc", "expected", "message"),
    [
        (FileNotFoundError(2, "No such file or directory", "/x"), ObjectNotFound, "read /x: No such file or directory"),
        (IsADirectoryError(21, "Is a directory", "/x"), ObjectNotFound, "read /x: Is a directory"),
        (NotADirectoryError(20, "Not a directory", "/x/y"), ObjectNotFound, "read /x: Not a directory"),
        (PermissionError(13, "Permission denied", "/x"), StorageError, "read /x: [Errno 13] Permission denied: '/x'"),
        (OSError(28, "No space left on device"), StorageError, "read /x: [Errno 28] No space left on device"),
    ],
    ids=["missing", "is-dir", "not-dir", "denied", "disk-full"],
)
def test_local_error_table(exc: OSError, expected: type[Exception], message: str) -> None:
    ours = translate_local_error(exc, "read /x")
    assert type(ours) is expected and str(ours) == message
    assert translate_local_error(KeyError("bug"), "read /x") is None


def test_local_uris(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    assert store.root_uri == str(tmp_path)
    assert store.uri("a/b.json") == str(tmp_path / "a" / "b.json")


# --- S3 specifics -----------------------------------------------------------------------------


@pytest.mark.slow
def test_s3_list_paginates_past_1000(s3_client: Any, s3_bucket: str) -> None:
    store = S3Storage(s3_bucket, "many", s3_client)
    keys = [f"k/{i:05d}.txt" for i in range(1050)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: store.write_bytes(k, b"."), keys))
    assert list(store.list("k")) == keys
    assert sum(1 for _ in store.list()) == 1050


def test_s3_uris_and_open_storage(s3_client: Any, s3_bucket: str, tmp_path: Path) -> None:
    store = open_storage(f"s3://{s3_bucket}/some/prefix/", s3_client=s3_client)
    assert isinstance(store, S3Storage)
    assert store.root_uri == f"s3://{s3_bucket}/some/prefix"
    assert store.uri("a/b.json") == f"s3://{s3_bucket}/some/prefix/a/b.json"
    store.write_text("a/b.json", "{}")
    assert s3_client.get_object(Bucket=s3_bucket, Key="some/prefix/a/b.json")["Body"].read() == b"{}"
    bare = open_storage(f"s3://{s3_bucket}", s3_client=s3_client)
    assert bare.root_uri == f"s3://{s3_bucket}"
    assert list(bare.list()) == ["some/prefix/a/b.json"]
    local = open_storage(str(tmp_path / "out"))
    assert isinstance(local, LocalStorage) and local.root_uri == str(tmp_path / "out")
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    with pytest.raises(StorageError):
        open_storage("s3://", s3_client=s3_client)


def test_make_s3_client_talks_to_endpoint(s3_server: S3Server, s3_bucket: str) -> None:
    client = make_s3_client(s3_server.endpoint_url, "us-east-1")
    store = S3Storage(s3_bucket, "", client)
    store.write_bytes("via-made-client", b"ok")
    assert store.read_bytes("via-made-client") == b"ok"


def test_s3_missing_bucket_is_storage_error(s3_client: Any) -> None:
    store = S3Storage("no-such-bucket-for-tests", "p", s3_client)
    for operation in (
        lambda: store.read_bytes("k"),
        lambda: store.write_bytes("k", b"x"),
        lambda: list(store.list()),
        lambda: store.open_write("k"),
        lambda: store.create_if_absent("k", b"x"),
    ):
        with pytest.raises(StorageError) as info:
            operation()
        assert not isinstance(info.value, ObjectNotFound), info.value
        assert isinstance(info.value.__cause__, Exception)  # the library error stays attached


def test_s3_nothing_listening_is_unavailable() -> None:
    client = make_test_client(
        f"http://127.0.0.1:{free_port()}",
        connect_timeout=0.5,
        read_timeout=0.5,
        retries={"mode": "standard", "max_attempts": 1},
    )
    store = S3Storage("bucket", "p", client)
    started = time.monotonic()
    for operation in (
        lambda: store.read_bytes("k"),
        lambda: store.write_bytes("k", b"x"),
        lambda: list(store.list()),
        lambda: store.exists("k"),
        lambda: store.delete("k"),
        lambda: store.create_if_absent("k", b"x"),
    ):
        with pytest.raises(StorageUnavailable) as info:
            operation()
        assert isinstance(info.value, RetryableError)
    assert time.monotonic() - started < 10


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, ObjectNotFound),
        ("404", 404, ObjectNotFound),
        ("SlowDown", 503, StorageUnavailable),
        ("InternalError", 500, StorageUnavailable),
        ("RequestTimeout", 400, StorageUnavailable),
        ("ThrottlingException", 400, StorageUnavailable),
        ("SomethingNew", 502, StorageUnavailable),
        ("AccessDenied", 403, StorageError),
        ("NoSuchBucket", 404, StorageError),
        ("InvalidAccessKeyId", 403, StorageError),
        ("PreconditionFailed", 412, AlreadyExists),
        ("ConditionalRequestConflict", 409, AlreadyExists),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_client_error_translation(code: str, status: int, expected: type[Exception]) -> None:
    ours = translate_s3_error(_client_error(code, status), "read s3://b/k")
    assert type(ours) is expected
    # smart-open wraps botocore errors in OSError/ValueError: the cause chain is searched.
    wrapped = ValueError("wrapped")
    wrapped.__cause__ = _client_error(code, status)
    assert type(translate_s3_error(wrapped, "x")) is expected


@pytest.mark.parametrize(
    "exc",
    [
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"),
        ConnectionResetError("reset"),
        OSError("smart-open gave up after retries"),
    ],
    ids=["endpoint", "closed", "read-timeout", "reset", "bare-oserror"],
)
def test_network_errors_are_unavailable(exc: Exception) -> None:
    assert type(translate_s3_error(exc, "x")) is StorageUnavailable


def test_unrelated_errors_are_not_translated() -> None:
    assert translate_s3_error(KeyError("bug"), "x") is None
    assert type(translate_s3_error(botocore.exceptions.NoCredentialsError(), "x")) is StorageError


def test_guarded_stream_is_a_binary_file(storage: Storage) -> None:
    with storage.open_write("f.bin") as out:
        assert out.writable()
        out.write(memoryview(b"abc"))
        out.write(bytearray(b"def"))
    with storage.open_read("f.bin") as src:
        assert src.readable()
        wrapped = io.BufferedReader(src)  # type: ignore[arg-type]
        assert wrapped.read() == b"abcdef"
