"""One contract suite for the ``ObjectStore`` port, run against both adapters (local and S3)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app.settings import Settings
from app.storage import ObjectNotFound, ObjectStore, make_store
from app.storage.base import StorageError, put_all
from app.storage.local import LocalStore
from app.storage.s3 import S3Store
from tests.support.s3server import S3Server


def test_implements_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    store.ping()


def test_put_get_overwrite(store: ObjectStore) -> None:
    store.put("p/datasets/d/samples/a.png", b"first", content_type="image/png")
    assert store.get("p/datasets/d/samples/a.png") == b"first"
    store.put("p/datasets/d/samples/a.png", b"second, longer")
    assert store.get("p/datasets/d/samples/a.png") == b"second, longer"
    assert list(store.list("p/")) == ["p/datasets/d/samples/a.png"]


def test_empty_object_round_trips(store: ObjectStore) -> None:
    store.put("empty.bin", b"")
    assert store.exists("empty.bin")
    assert store.get("empty.bin") == b""


def test_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="nope/missing.png"):
        store.get("nope/missing.png")
    store.put("nope/other.png", b"x")
    with pytest.raises(ObjectNotFound):
        store.get("nope")  # a "directory" is not an object


def test_exists(store: ObjectStore) -> None:
    assert not store.exists("a/b.txt")
    store.put("a/b.txt", b"1")
    assert store.exists("a/b.txt")
    assert not store.exists("a/b")
    assert not store.exists("a")


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put("k/1", b"1")
    store.put("k/2", b"2")
    store.delete("k/1")
    store.delete("k/1")
    store.delete("never/there")
    assert not store.exists("k/1")
    assert store.get("k/2") == b"2"


def test_delete_prefix_counts_and_spares_other_prefixes(store: ObjectStore) -> None:
    for key in ("job1/checkpoints/00001.pt", "job1/checkpoints/00002.pt", "job1/plots/g.png", "job10/x"):
        store.put(key, key.encode())
    assert store.delete_prefix("job1/checkpoints/") == 2
    assert list(store.list("job1/")) == ["job1/plots/g.png"]
    assert store.delete_prefix("job1/") == 1
    assert store.delete_prefix("job1/") == 0
    assert list(store.list()) == ["job10/x"]


def test_list_is_sorted_and_filtered_by_prefix(store: ObjectStore) -> None:
    keys = ["b/2", "a/10", "a/2", "a/1/x", "ab", "c"]
    for key in keys:
        store.put(key, b"v")
    assert list(store.list()) == sorted(keys)
    assert list(store.list("a/")) == ["a/1/x", "a/10", "a/2"]
    assert list(store.list("a")) == ["a/1/x", "a/10", "a/2", "ab"]
    assert list(store.list("zzz/")) == []


def test_put_all_writes_every_object_and_raises_the_first_failure(store: ObjectStore) -> None:
    items = [(f"many/{i:03d}.bin", bytes([i % 256]) * (i + 1)) for i in range(40)]
    put_all(store, items, "application/octet-stream")
    assert list(store.list("many/")) == [k for k, _ in items]
    assert all(store.get(k) == data for k, data in items)

    written: list[str] = []

    class Failing:  # one write of many fails: the first error is the caller's, nothing lands afterwards
        def put(self, key: str, data: bytes, content_type: str = "") -> None:
            if key.endswith("007.bin"):
                raise OSError("disk full")
            store.put(key, data, content_type)
            written.append(key)

    more = [(f"more/{i:03d}.bin", b"x") for i in range(200)]
    with pytest.raises(OSError, match="disk full"):
        put_all(Failing(), more, "text/plain")  # type: ignore[arg-type]
    landed = list(store.list("more/"))
    assert sorted(written) == landed and "more/007.bin" not in landed
    time.sleep(0.2)
    assert list(store.list("more/")) == landed


def test_binary_round_trip_of_a_few_megabytes(store: ObjectStore) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # not a multiple of any chunk size
    store.put("blobs/model.pt", payload)
    assert store.get("blobs/model.pt") == payload


@pytest.mark.parametrize(
    "key",
    ["/etc/passwd", "../outside", "a/../../outside", "a/./b", "a//b", "", "dir/", "a\\b", "nul\x00byte"],
)
def test_local_store_refuses_keys_that_escape_or_are_malformed(tmp_path: Path, key: str) -> None:
    local = LocalStore(tmp_path / "root")
    with pytest.raises(ValueError, match="invalid object key"):
        local.put(key, b"x")
    with pytest.raises(ValueError, match="invalid object key"):
        local.get(key)
    assert not (tmp_path / "outside").exists()


def test_local_store_writes_atomically_without_leftovers(tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "root")
    local.put("a/b.bin", b"1" * 1000)
    local.put("a/b.bin", b"2" * 10)
    assert sorted(p.name for p in (tmp_path / "root" / "a").iterdir()) == ["b.bin"]
    assert local.get("a/b.bin") == b"2" * 10


def test_make_store_local(tmp_path: Path) -> None:
    made = make_store(Settings(data_dir=tmp_path))
    assert isinstance(made, LocalStore)
    made.put("x", b"y")
    assert (tmp_path / "objects" / "x").read_bytes() == b"y"


@pytest.mark.integration
def test_s3_store_rejects_wrong_credentials_and_missing_bucket(s3_server: S3Server) -> None:
    wrong = S3Store(
        s3_server.endpoint, s3_server.access_key, "not-the-secret", "gtc-any", region=s3_server.region
    )
    # A refusal is not an outage: raised at once, as the port's error, naming the code but not the bucket.
    with pytest.raises(
        StorageError,
        match="refused the request \\((SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId)\\)",
    ):
        wrong.put("k", b"v")
    missing = S3Store(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "gtc-no-such-bucket")
    with pytest.raises(ConnectionError, match="gtc-no-such-bucket"):
        missing.ping()
    with pytest.raises(StorageError, match="NoSuchBucket") as refused:
        missing.put("k", b"v")  # autoCreateBucket is off, like production MinIO
    assert "gtc-no-such-bucket" not in str(refused.value)


@pytest.mark.integration
def test_make_store_s3_uses_the_settings_bucket(settings: Settings) -> None:
    made = make_store(settings)
    assert isinstance(made, S3Store)
    made.ping()
    made.put("hello", b"world")
    assert made.get("hello") == b"world"


def test_s3_store_refuses_an_endpoint_with_a_scheme() -> None:
    with pytest.raises(ValueError, match="http://minio:9000"):
        S3Store("http://minio:9000", "a", "b", "bucket")
