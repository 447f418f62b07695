"""The object store against the real S3 server (SeaweedFS in the harness, any S3 in production)."""

from __future__ import annotations

import hashlib
import io
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from pipeline.storage import (
    BucketMissing,
    ObjectMissing,
    ObjectStore,
    ObjectStoreCredentialsRefused,
    ObjectStoreUnreachable,
    content_key,
)


def _jpeg(colour: tuple[int, int, int], size=(60, 80)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def store(migrated, settings) -> ObjectStore:
    return ObjectStore.for_images(settings)


def test_round_trip_is_content_addressed(store):
    data = _jpeg((200, 30, 30))
    sha = hashlib.sha256(data).hexdigest()
    stored = store.put_content(data, content_type="image/jpeg")
    assert stored.key == f"images/{sha[:2]}/{sha[2:4]}/{sha}.jpg"
    assert stored.sha256 == sha and stored.created
    assert store.get(stored.key) == data
    assert b"".join(store.open(stored.key, chunk_size=100)) == data
    assert store.exists(stored.key)
    stat = store.stat(stored.key)
    assert stat.size == len(data) and stat.content_type == "image/jpeg"


def test_the_same_picture_twice_is_stored_once(store):
    data = _jpeg((10, 200, 10))
    first = store.put_content(data, content_type="image/jpeg")
    second = store.put_content(data, content_type="image/jpeg")
    assert first.key == second.key
    assert first.created and not second.created
    prefix = first.key.rsplit("/", 1)[0] + "/"
    assert [o.key for o in store.list(prefix) if o.key == first.key] == [first.key]


def test_file_upload_streams_from_disk(store, tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(_jpeg((1, 2, 3), size=(1080, 1350)))
    stored = store.put_content_file(path, content_type="image/jpeg")
    assert stored.key == content_key(hashlib.sha256(path.read_bytes()).hexdigest(), "image/jpeg")
    assert store.get(stored.key) == path.read_bytes()
    assert not store.put_content_file(path, content_type="image/jpeg").created


def test_listing_streams_past_one_page(store):
    """More objects than one ListObjects page (1,000) under a prefix; all come back."""
    keys = [f"listing-test/{i:05d}.txt" for i in range(1_050)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: store.put(k, k.encode(), content_type="text/plain"), keys))
    listed = store.list("listing-test/")
    assert next(listed).key == keys[0]  # a generator: the first page arrives before the rest
    assert sorted([keys[0], *(o.key for o in listed)]) == keys
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(store.delete, keys))
    assert list(store.list("listing-test/")) == []


def test_delete_and_missing_objects(store):
    stored = store.put("tmp/delete-me.json", b"{}", content_type="application/json")
    store.delete(stored.key)
    assert not store.exists(stored.key)
    assert store.stat(stored.key) is None
    with pytest.raises(ObjectMissing, match=r"tmp/delete-me\.json"):
        store.get(stored.key)


def test_wrong_keys_are_named(services, settings):
    bad = ObjectStore(
        endpoint=services.s3_endpoint,
        access_key=services.s3_access_key,
        secret_key="not-the-secret",
        bucket=settings.bucket_images,
    )
    with pytest.raises(ObjectStoreCredentialsRefused, match="CATALOGUE_S3_SECRET_KEY"):
        bad.check()


def test_unreachable_endpoint_is_named(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends
    down = ObjectStore(
        endpoint=f"http://127.0.0.1:{port}",
        access_key="k",
        secret_key="s",
        bucket=settings.bucket_images,
    )
    with pytest.raises(ObjectStoreUnreachable, match="CATALOGUE_S3_ENDPOINT"):
        down.check()


def test_missing_bucket_is_named_or_created(services):
    store = ObjectStore(
        endpoint=services.s3_endpoint,
        access_key=services.s3_access_key,
        secret_key=services.s3_secret_key,
        bucket=f"{services.role_prefix}-new",
        bucket_setting="CATALOGUE_S3_BUCKET_IMAGES",
    )
    with pytest.raises(BucketMissing, match="CATALOGUE_S3_BUCKET_IMAGES"):
        store.check()
    with pytest.raises(BucketMissing, match="CATALOGUE_S3_CREATE_BUCKETS"):
        store.ensure_bucket(create=False)
    assert store.ensure_bucket(create=True) is True
    assert store.ensure_bucket(create=True) is False  # at start-up, every time: harmless
    store.check()
