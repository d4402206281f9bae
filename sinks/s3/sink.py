"""The S3 sink itself: bucket and prefix, the lazily made client, one-attempt calls, keys, HEAD and object info.

The object operations, Object Lock, thawing and the clean-up of abandoned uploads are mixins from the sibling
modules; this class holds the state they share.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import botocore.exceptions as bce
from urllib3.exceptions import ProtocolError

from sinks.base import AccessDenied, Capabilities, ObjectInfo, ObjectNotFound, SinkError, SinkOptions, TransientError
from sinks.retry import RetryPolicy
from sinks.s3.client import make_client
from sinks.s3.cold import COLD_ARCHIVE_STATUS, COLD_CLASSES, ColdStorage, restore_state
from sinks.s3.errors import _NoSuchBucket, to_sink_error
from sinks.s3.incomplete import IncompleteUploads
from sinks.s3.objects import ObjectOperations
from sinks.s3.retention import ObjectLock, _retention_of
from sinks.s3.wire import _utc

T = TypeVar("T")


class S3Sink(ObjectOperations, ObjectLock, ColdStorage, IncompleteUploads):
    # Object Lock (the bucket must have it enabled: retention_unsupported), GLACIER / DEEP_ARCHIVE, versioned
    # buckets, and ListMultipartUploads.
    capabilities = Capabilities(retention_lock=True, cold_storage=True, versions=True, incomplete_uploads=True)

    def __init__(self, bucket: str, prefix: str = "", options: SinkOptions | None = None) -> None:
        segments = [s for s in prefix.split("/") if s]
        if not bucket or "/" in bucket:
            raise SinkError(f"invalid S3 bucket name {bucket!r}")
        if any(s in (".", "..") for s in segments):
            raise SinkError(f"invalid S3 prefix {prefix!r}")
        self.bucket = bucket
        self.prefix = "/".join(segments)
        self.options = options or SinkOptions()
        self.policy = RetryPolicy.from_options(self.options)  # for the writer's own steps
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._bucket_checked = False
        # False once the store has refused PutObject's If-None-Match as not implemented (see put()).
        self._conditional_put = True
        self._page_size = 1000  # ListObjectsV2 MaxKeys (tests lower it to exercise pagination)

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> S3Sink:
        scheme, sep, rest = url.partition("://")
        if scheme != "s3" or not sep:
            raise SinkError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise SinkError(f"archive URL {url!r} names no bucket (expected s3://bucket/prefix)")
        return cls(bucket, prefix, options)

    def __repr__(self) -> str:
        return f"S3Sink({self.url!r})"

    # -- client and error handling -----------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use (so opening a sink costs nothing and needs no credentials)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        return make_client(self.options, self.url)

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, TransientError)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """One attempt of ``fn``; whatever botocore raises leaves as a SinkError about ``what``."""
        try:
            return fn()
        except SinkError:
            raise
        except (bce.BotoCoreError, bce.ClientError, ProtocolError) as e:
            raise self._error(e, what) from e

    def _retried(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` under the sink's retry policy: for the writer, whose steps no wrapper can repeat."""
        return self.policy.call(self.is_transient, fn, *args, **kwargs)

    def _error(self, e: BaseException, what: str) -> SinkError:
        return to_sink_error(e, what, url=self.url, bucket=self.bucket, options=self.options)

    # -- keys --------------------------------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise SinkError(f"invalid object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _what(self, key: str) -> str:
        return f"{self.url}/{key}"

    @property
    def _sse(self) -> dict[str, str]:
        if not self.options.sse_kms_key:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.options.sse_kms_key}

    # -- HEAD and object info ----------------------------------------------------------------------------------
    def _check_bucket(self) -> None:
        """Tell a missing bucket from a missing key once per sink (HEAD answers a bare 404 for both)."""
        if self._bucket_checked:
            return
        try:
            self._call(self.url, lambda: self.client.head_bucket(Bucket=self.bucket))
        except ObjectNotFound:
            raise _NoSuchBucket(f"bucket {self.bucket} does not exist ({self.url})") from None
        except AccessDenied:
            pass  # HeadBucket needs s3:ListBucket, which a write-only role may lack: assume the bucket is there
        self._bucket_checked = True

    def _head(self, key: str, **extra: Any) -> dict[str, Any] | None:
        full = self._key(key)
        try:
            return self._call(self._what(key), lambda: self.client.head_object(Bucket=self.bucket, Key=full, **extra))
        except _NoSuchBucket:
            raise
        except ObjectNotFound:
            self._check_bucket()
            return None

    @staticmethod
    def _info(key: str, head: dict[str, Any]) -> ObjectInfo:
        storage_class = head.get("StorageClass") or "STANDARD"
        archived = storage_class in COLD_CLASSES or head.get("ArchiveStatus") in COLD_ARCHIVE_STATUS
        thaw = restore_state(head.get("Restore"))
        if thaw == "available":
            archived = False  # a restored copy is readable until its expiry date
        modified = head.get("LastModified")
        return ObjectInfo(
            key=key,
            size=int(head.get("ContentLength", 0)),
            modified=_utc(modified) if modified is not None else None,
            storage_class=storage_class,
            metadata=dict(head.get("Metadata") or {}),
            retention=_retention_of(head),
            archived=archived,
            thaw=thaw,
        )
