"""The object store: raw images and model artefacts on any S3 server, through the `minio` SDK.

Images are content-addressed (`images/ab/cd/<sha256>.jpg`), so the same picture posted twice is
stored once. Reads and listings stream; nothing loads a whole bucket. Transient failures (connection
resets, 5xx, throttling) are retried with back-off by the HTTP pool; what remains is turned into an
`ObjectStoreError` naming the setting to fix.

Every wait is bounded: a connection and each answer get `CATALOGUE_S3_TIMEOUT_S` seconds, and a
request that timed out is tried once more, so a server that accepts connections and never answers
stops a command after about twice that time with one line naming the endpoint.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import S3Error
from urllib3.exceptions import HTTPError as Urllib3Error

from pipeline.config import Settings
from pipeline.errors import CatalogueError

log = logging.getLogger(__name__)

T = TypeVar("T")

CONTENT_TYPE_SUFFIX = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "application/json": ".json",
}
MULTIPART_PART_SIZE = 16 * 1024 * 1024
TIMEOUT_S = 20.0  # Settings.s3_timeout_s
RETRIES = 5  # answers that say "try again": 5xx, throttling, connection resets
TIMEOUT_RETRIES = 1  # a server that did not answer in time rarely answers the next attempt
HASH_CHUNK = 1024 * 1024

_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}


class ObjectStoreError(CatalogueError, RuntimeError):
    """The object store cannot be used with the configured settings."""


class ObjectStoreUnreachable(ObjectStoreError):
    pass


class ObjectStoreCredentialsRefused(ObjectStoreError):
    pass


class BucketMissing(ObjectStoreError):
    pass


class ObjectMissing(ObjectStoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str | None
    size: int
    content_type: str | None = None
    last_modified: datetime | None = None
    created: bool = False  # False when identical content was already there


def content_key(sha256: str, content_type: str, *, prefix: str = "images") -> str:
    """`images/ab/cd/<sha256>.jpg`: two levels of fan-out keep listings of one prefix short."""
    suffix = CONTENT_TYPE_SUFFIX.get(content_type, "")
    return f"{prefix}/{sha256[:2]}/{sha256[2:4]}/{sha256}{suffix}"


def sha256_of(data: bytes | Path) -> str:
    digest = hashlib.sha256()
    if isinstance(data, Path):
        with data.open("rb") as handle:
            for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
                digest.update(chunk)
    else:
        digest.update(data)
    return digest.hexdigest()


class ObjectStore:
    """One bucket on an S3 server."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        region: str = "us-east-1",
        bucket_setting: str = "CATALOGUE_S3_BUCKET_IMAGES",
        public_endpoint: str | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        parts = urlsplit(endpoint)
        self.endpoint = endpoint
        self.bucket = bucket
        self.timeout_s = timeout_s
        self._bucket_setting = bucket_setting
        self._client = Minio(
            parts.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parts.scheme == "https",
            region=region,
            http_client=_http_pool(timeout_s),
        )
        self._public_client = None
        if public_endpoint:
            public = urlsplit(public_endpoint)
            self._public_client = Minio(
                public.netloc,
                access_key=access_key,
                secret_key=secret_key,
                secure=public.scheme == "https",
                region=region,
            )

    @classmethod
    def for_images(cls, settings: Settings) -> ObjectStore:
        return cls._from_settings(settings, settings.bucket_images, "CATALOGUE_S3_BUCKET_IMAGES")

    @classmethod
    def for_models(cls, settings: Settings) -> ObjectStore:
        return cls._from_settings(settings, settings.bucket_models, "CATALOGUE_S3_BUCKET_MODELS")

    @classmethod
    def _from_settings(cls, settings: Settings, bucket: str, bucket_setting: str) -> ObjectStore:
        if settings.s3_endpoint is None:
            raise ObjectStoreError(
                "no S3 endpoint: set CATALOGUE_S3_ENDPOINT or start the local stack (catalogue up)"
            )
        return cls(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key or "",
            secret_key=settings.s3_secret_key or "",
            bucket=bucket,
            region=settings.s3_region,
            bucket_setting=bucket_setting,
            public_endpoint=settings.s3_public_endpoint,
            timeout_s=settings.s3_timeout_s,
        )

    # -- start-up -------------------------------------------------------------------------------
    def ensure_bucket(self, *, create: bool = True) -> bool:
        """Make sure the bucket exists; returns True when this call created it."""
        if self._call(lambda: self._client.bucket_exists(self.bucket)):
            return False
        if not create:
            raise BucketMissing(
                f"bucket '{self.bucket}' does not exist on {self.endpoint}: create it, or fix "
                f"{self._bucket_setting}, or set CATALOGUE_S3_CREATE_BUCKETS=true"
            )
        try:
            self._call(lambda: self._client.make_bucket(self.bucket))
        except ObjectStoreError as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc):
                raise
            return False
        log.info("created bucket %s on %s", self.bucket, self.endpoint)
        return True

    def check(self) -> None:
        """Prove the endpoint answers, the keys are accepted and the bucket exists."""
        if not self._call(lambda: self._client.bucket_exists(self.bucket)):
            raise BucketMissing(
                f"bucket '{self.bucket}' does not exist on {self.endpoint}: run `catalogue up` "
                f"or `catalogue db upgrade` to create it, or fix {self._bucket_setting}"
            )

    # -- writes ---------------------------------------------------------------------------------
    def put_content(
        self,
        data: bytes,
        *,
        content_type: str,
        prefix: str = "images",
        check_existing: bool = True,
        sha256: str | None = None,
    ) -> StoredObject:
        """Store `data` under its content hash; a second put of the same bytes writes nothing.

        `check_existing=False` skips the HEAD request when the caller already knows the object is
        new (the catalogue references no picture with this hash); a PUT of the same content to
        the same key is harmless anyway. `sha256`: the hash, when the caller computed it already.
        """
        sha = sha256 or sha256_of(data)
        key = content_key(sha, content_type, prefix=prefix)
        existing = self.stat(key) if check_existing else None
        if existing is not None and existing.size == len(data):
            return StoredObject(key, sha, len(data), content_type, existing.last_modified)
        self._call(
            lambda: self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
        )
        return StoredObject(key, sha, len(data), content_type, created=True)

    def put_content_file(
        self, path: Path, *, content_type: str, prefix: str = "images"
    ) -> StoredObject:
        """Like `put_content` for a file, streamed from disk (hashed first, then uploaded)."""
        sha = sha256_of(path)
        size = path.stat().st_size
        key = content_key(sha, content_type, prefix=prefix)
        existing = self.stat(key)
        if existing is not None and existing.size == size:
            return StoredObject(key, sha, size, content_type, existing.last_modified)
        self._call(
            lambda: self._client.fput_object(
                self.bucket,
                key,
                str(path),
                content_type=content_type,
                part_size=MULTIPART_PART_SIZE,
            )
        )
        return StoredObject(key, sha, size, content_type, created=True)

    def put(
        self, key: str, data: bytes | BinaryIO, *, content_type: str, length: int | None = None
    ) -> StoredObject:
        """Store under a chosen key (manifests, model artefacts); streams a file object."""
        if isinstance(data, bytes):
            length, stream = len(data), io.BytesIO(data)
        else:
            stream = data
        size = -1 if length is None else length

        def upload() -> None:
            if stream.seekable():
                stream.seek(0)
            self._client.put_object(
                self.bucket,
                key,
                stream,
                size,
                content_type=content_type,
                part_size=MULTIPART_PART_SIZE,
            )

        self._call(upload, key=key)
        stat = self.stat(key)
        return StoredObject(
            key, None, stat.size if stat else max(size, 0), content_type, created=True
        )

    def delete(self, key: str) -> None:
        self._call(lambda: self._client.remove_object(self.bucket, key), key=key)

    # -- reads ----------------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        def read() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(read, key=key)

    def open(self, key: str, *, chunk_size: int = HASH_CHUNK) -> Iterator[bytes]:
        """Stream an object in chunks without holding it in memory."""
        response = self._call(lambda: self._client.get_object(self.bucket, key), key=key)
        try:
            yield from response.stream(chunk_size)
        finally:
            response.close()
            response.release_conn()

    def download(self, key: str, path: Path) -> Path:
        self._call(lambda: self._client.fget_object(self.bucket, key, str(path)), key=key)
        return path

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def stat(self, key: str) -> StoredObject | None:
        try:
            info = self._call(lambda: self._client.stat_object(self.bucket, key), key=key)
        except ObjectMissing:
            return None
        return StoredObject(key, None, info.size or 0, info.content_type, info.last_modified)

    def list(self, prefix: str = "", *, recursive: bool = True) -> Iterator[StoredObject]:
        """Objects under `prefix`, page by page as the server returns them."""
        pages = self._call(
            lambda: self._client.list_objects(self.bucket, prefix=prefix, recursive=recursive)
        )
        try:
            for item in pages:
                if item.is_dir:
                    continue
                yield StoredObject(item.object_name, None, item.size or 0, None, item.last_modified)
        except (S3Error, Urllib3Error) as exc:
            raise self._explain(exc) from None

    def presigned_url(self, key: str, *, expires_s: int = 3600) -> str:
        """A time-limited link a moderator's browser can open (signed for the public endpoint)."""
        from datetime import timedelta

        client = self._public_client or self._client
        return client.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_s))

    # -- errors ---------------------------------------------------------------------------------
    def _call(self, operation: Callable[[], T], *, key: str | None = None) -> T:
        """Run one SDK call; retry throttling answers, explain what cannot be retried."""
        for attempt in range(RETRIES):
            try:
                return operation()
            except S3Error as exc:
                if exc.code in _TRANSIENT_CODES and attempt < RETRIES - 1:
                    time.sleep(0.2 * 2**attempt)
                    continue
                raise self._explain(exc, key=key) from None
            except Urllib3Error as exc:
                raise self._explain(exc) from None
        raise AssertionError("unreachable")

    def _explain(self, exc: Exception, *, key: str | None = None) -> ObjectStoreError:
        if isinstance(exc, S3Error):
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return ObjectMissing(f"object '{key}' is not in bucket '{self.bucket}'")
            if exc.code == "NoSuchBucket":
                return BucketMissing(
                    f"bucket '{self.bucket}' does not exist on {self.endpoint}: run "
                    f"`catalogue up` or `catalogue db upgrade` to create it, or fix "
                    f"{self._bucket_setting}"
                )
            if exc.code in _CREDENTIAL_CODES:
                return ObjectStoreCredentialsRefused(
                    f"the S3 server at {self.endpoint} refused the keys ({exc.code}): fix "
                    "CATALOGUE_S3_ACCESS_KEY and CATALOGUE_S3_SECRET_KEY"
                )
            return ObjectStoreError(
                f"the S3 server at {self.endpoint} answered {exc.code}: {exc.message}"
            )
        cause = getattr(exc, "reason", None) or exc
        # urllib3's NewConnectionError (refused, unknown host) is a ConnectTimeoutError by descent
        timed_out = isinstance(cause, TimeoutError | urllib3.exceptions.TimeoutError)
        if timed_out and not isinstance(cause, urllib3.exceptions.NewConnectionError):
            return ObjectStoreUnreachable(
                f"the S3 server at {self.endpoint} did not answer within {self.timeout_s:g}s "
                f"({TIMEOUT_RETRIES + 1} tries): check that it is running and not overloaded, "
                "fix CATALOGUE_S3_ENDPOINT, or raise CATALOGUE_S3_TIMEOUT_S for a slow server"
            )
        reason = str(cause).splitlines()[0]
        reason = reason.rsplit("new connection: ", 1)[-1][:200]  # "[Errno 111] Connection refused"
        return ObjectStoreUnreachable(
            f"cannot reach the S3 server at {self.endpoint} ({reason}): start it "
            "(catalogue up) or fix CATALOGUE_S3_ENDPOINT"
        )


def _http_pool(timeout_s: float = TIMEOUT_S) -> urllib3.PoolManager:
    """The one place the S3 client's waits are set: timeouts, and how often each is retried."""
    retry = urllib3.Retry(
        total=RETRIES,
        connect=TIMEOUT_RETRIES,
        read=TIMEOUT_RETRIES,
        backoff_factor=0.2,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=None,  # every method: S3 writes of one key are idempotent
        raise_on_status=False,
    )
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s),
        maxsize=16,
        retries=retry,
        cert_reqs="CERT_REQUIRED",
    )
