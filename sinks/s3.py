"""S3 and S3-compatible stores as an archive: boto3, multipart uploads with a SHA-256 checksum on every part.

``s3://bucket/prefix`` keeps every object under ``prefix/``. Credentials come from boto3's default chain (environment,
profile, SSO, web identity / IRSA, container endpoint, IMDS); ``SinkOptions`` picks the endpoint, region, profile and
SSE-KMS key. boto3's own retries are off and each call makes one attempt: throttling, 5xx and broken connections
leave as :class:`~sinks.base.TransientError` for :class:`sinks.retry.RetryingSink` to repeat (the writer repeats its
part uploads itself, under the same policy), and every other botocore error as another :class:`~sinks.base.SinkError`.

Multipart uploads: the caller's parts (sealed blocks) can be smaller than the 5 MiB that S3 requires of every part but
the last, so :class:`S3ObjectWriter` joins consecutive caller parts until an S3 part has at least 5 MiB (a caller
part that large goes up alone, without a copy). Each UploadPart carries ``x-amz-checksum-sha256`` of exactly its
bytes, which S3 verifies
(and which Object Lock buckets require of every write).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime as dt
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3
import botocore.exceptions as bce
from botocore.config import Config
from urllib3.exceptions import ProtocolError

from sinks.base import (
    AccessDenied,
    Capabilities,
    IncompleteUpload,
    ObjectArchived,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    Retention,
    SinkError,
    SinkOptions,
    TransientError,
)
from sinks.parts import OrderedParts
from sinks.retry import RetryPolicy

T = TypeVar("T")

MIN_PART = 5 * 1024 * 1024  # S3's minimum size of every part but the last
MAX_PART = 5 * 1024 * 1024 * 1024  # and its maximum size of any part
MAX_PARTS = 10_000
COLD_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})  # need RestoreObject before GET (GLACIER_IR does not)
COLD_ARCHIVE_STATUS = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})  # Intelligent-Tiering archive tiers
TIERS = ("Standard", "Bulk", "Expedited")
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
MAX_POOL_CONNECTIONS = 64  # parallel part uploads and prefetching ranged GETs share one client

TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "ConditionalRequestConflict",  # a concurrent conditional write is in progress: S3 asks to retry
        "500",
        "502",
        "503",
        "504",
    }
)
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccountProblem",
        "403",
    }
)
CREDENTIALS_HELP = (
    "boto3 looks for credentials in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, plus "
    "AWS_SESSION_TOKEN for temporary ones), then in the shared files ~/.aws/credentials and ~/.aws/config for the "
    "profile named by --profile or AWS_PROFILE (including SSO and credential_process), then web identity (IRSA on EKS: "
    "AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), the ECS/EKS container endpoint and the EC2 instance metadata "
    "service (IMDS)"
)

_RESTORE_ONGOING = re.compile(r'ongoing-request\s*=\s*"(true|false)"', re.IGNORECASE)


def transient(e: BaseException) -> bool:
    """Whether a botocore error is throttling, a 5xx, a timeout or a dropped connection: worth another try."""
    if isinstance(e, bce.ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in TRANSIENT_CODES or status in TRANSIENT_STATUS
    return isinstance(
        e,
        (
            bce.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError, SSLError
            bce.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
            bce.IncompleteReadError,
            bce.FlexibleChecksumError,  # a response body that does not match its checksum: fetch it again
            ProtocolError,
        ),
    )


def restore_state(header: str | None) -> str | None:
    """The ``x-amz-restore`` header as a thaw state: None (never restored), "ongoing" or "available"."""
    if not header:
        return None
    m = _RESTORE_ONGOING.search(header)
    if m is None:
        return None
    return "ongoing" if m.group(1).lower() == "true" else "available"


def _version(version_id: str | None) -> dict[str, str]:
    """VersionId for a follow-up call on the version just written. "null" (unversioned bucket) is left out: S3
    accepts it but moto answers 400, and without it the call addresses the same, current object anyway."""
    return {"VersionId": version_id} if version_id and version_id != "null" else {}


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def _check_retention(retention: Retention | None) -> None:
    if retention is not None and retention.mode not in LOCK_MODES:
        raise SinkError(f"unknown Object Lock mode {retention.mode!r} (expected GOVERNANCE or COMPLIANCE)")


def _lock_params(retention: Retention | None) -> dict[str, Any]:
    if retention is None:
        return {}
    params: dict[str, Any] = {"ObjectLockMode": retention.mode, "ObjectLockRetainUntilDate": _utc(retention.until)}
    if retention.legal_hold:
        params["ObjectLockLegalHoldStatus"] = "ON"
    return params


def _retention_met(head: dict[str, Any], want: Retention) -> tuple[bool, bool]:
    """Whether the object's reported lock satisfies ``want``: (mode and retain-until, legal hold).

    COMPLIANCE satisfies a GOVERNANCE request, and a later retain-until date an earlier one (a bucket default may be
    stricter than what was asked for). S3 keeps retain-until dates to the second or millisecond, hence the slack.
    """
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    strength = {"GOVERNANCE": 1, "COMPLIANCE": 2}
    time_ok = (
        mode in strength
        and until is not None
        and strength[mode] >= strength[want.mode]
        and _utc(until) >= _utc(want.until) - dt.timedelta(seconds=1)
    )
    hold_ok = not want.legal_hold or head.get("ObjectLockLegalHoldStatus") == "ON"
    return time_ok, hold_ok


def _retention_of(head: dict[str, Any]) -> Retention | None:
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    hold = head.get("ObjectLockLegalHoldStatus") == "ON"
    if mode and until is not None:
        return Retention(mode=mode, until=_utc(until), legal_hold=hold)
    if hold:
        # A legal hold without a retention period. Retention has no way to say "no mode, no date", so mode is ""
        # and the date is the epoch (already passed: nothing but the hold protects the object).
        return Retention(mode="", until=dt.datetime.fromtimestamp(0, dt.timezone.utc), legal_hold=True)
    return None


class _NoSuchBucket(ObjectNotFound):
    """The bucket itself is missing (kept apart so that ``head`` does not mistake it for an absent key)."""


class S3Sink:
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
        config = Config(
            # One attempt per call: sinks.retry does the retrying, bounded by options.retry_budget. (botocore's
            # "max_attempts" counts retries, not attempts, so it would allow a hidden second try.)
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=MAX_POOL_CONNECTIONS,
        )
        try:
            session = boto3.session.Session(profile_name=self.options.profile, region_name=self.options.region)
            # endpoint_url None lets boto3 apply $AWS_ENDPOINT_URL / $AWS_ENDPOINT_URL_S3 itself.
            return session.client("s3", endpoint_url=self.options.endpoint_url, config=config)
        except bce.ProfileNotFound:
            raise SinkError(
                f"AWS profile {self.options.profile!r} is not defined in ~/.aws/config or ~/.aws/credentials "
                "(or the files named by AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE)"
            ) from None
        except (bce.BotoCoreError, ValueError) as e:
            raise SinkError(f"cannot set up the S3 client for {self.url}: {e}") from e

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
        if isinstance(e, bce.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            message = err.get("Message") or ""
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            op = e.operation_name
            detail = f"{code}: {message}" if message and message != code else code or f"HTTP {status}"
            mapped: SinkError
            if code == "InvalidObjectState":
                cls = err.get("StorageClass") or "cold storage"
                mapped = ObjectArchived(
                    f"{what} is archived ({cls}) and cannot be read before it is thawed: run `jsarchive thaw "
                    f"{self.url} ID` (ID: the backup) and retry once the restore has finished"
                )
            elif code == "NoSuchBucket":
                mapped = _NoSuchBucket(f"bucket {self.bucket} does not exist ({op} {what})")
            elif code == "NoSuchUpload":
                mapped = SinkError(
                    f"the multipart upload of {what} no longer exists (aborted, or removed by a lifecycle rule)"
                )
            elif code in ("NoSuchKey", "NotFound", "NoSuchVersion", "404") or status == 404:
                mapped = ObjectNotFound(f"{what} does not exist")
            elif code == "PreconditionFailed" or status == 412:
                mapped = ObjectExists(f"{what} already exists; archive objects are never overwritten")
            elif code in DENIED_CODES or status in (401, 403):
                mapped = AccessDenied(
                    f"access denied: {op} on {what} ({detail}); check the IAM and bucket policies for the "
                    "credentials in use (S3 also answers 403 for a missing object when s3:ListBucket is not granted)"
                )
            else:
                kind = TransientError if transient(e) else SinkError
                mapped = kind(f"{op} on {what} failed: {detail} (HTTP {status})")
            mapped._s3_code = code  # type: ignore[attr-defined]
            return mapped
        if isinstance(e, (bce.NoCredentialsError, bce.PartialCredentialsError, bce.CredentialRetrievalError)):
            return SinkError(f"no usable AWS credentials to access {what} ({e}). {CREDENTIALS_HELP}")
        if isinstance(e, bce.ProfileNotFound):
            return SinkError(f"AWS profile {self.options.profile!r} is not defined (accessing {what}): {e}")
        if isinstance(e, bce.FlexibleChecksumError):
            return TransientError(f"reading {what}: the data received does not match its stored checksum ({e})")
        if isinstance(e, (bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError, ProtocolError)):
            endpoint = self.options.endpoint_url or "the S3 endpoint"
            return TransientError(
                f"cannot reach {endpoint} for {what} after retrying for up to {self.options.retry_budget:g} s: {e}"
            )
        return SinkError(f"S3 request for {what} failed: {e}")

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

    def retention_unsupported(self) -> str | None:
        """Why this bucket cannot lock objects, asked before a locked backup starts; None if it can (or if the
        credentials may not read the bucket's lock configuration: then the first locked upload will say)."""
        try:
            resp = self._call(self.url, lambda: self.client.get_object_lock_configuration(Bucket=self.bucket))
        except AccessDenied:
            return None
        except SinkError as e:
            if getattr(e, "_s3_code", "") == "ObjectLockConfigurationNotFoundError":
                return f"bucket {self.bucket} does not have Object Lock enabled"
            raise
        if (resp.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") != "Enabled":
            return f"bucket {self.bucket} does not have Object Lock enabled"
        return None

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

    def _confirm_retention(self, key: str, retention: Retention, version_id: str | None) -> dict[str, Any]:
        """HEAD the object; if it lacks the requested lock, apply it with PutObjectRetention / PutObjectLegalHold.

        Real S3 applies the Object Lock headers of PutObject and CreateMultipartUpload itself; this covers stores
        that drop them on one path (moto 5.x does on multipart uploads).
        """
        what = self._what(key)
        full = self._key(key)
        version = _version(version_id)
        head = self._head(key, **version)
        if head is None:
            raise SinkError(f"{what} vanished right after it was written")
        time_ok, hold_ok = _retention_met(head, retention)
        if time_ok and hold_ok:
            return head
        try:
            return self._apply_retention(key, retention, version, time_ok, hold_ok)
        except SinkError:
            # The object is complete but not protected as asked. Remove it rather than leave a finished-looking,
            # unlocked copy (best effort: if part of the lock did apply, the delete is refused and prune collects it).
            with contextlib.suppress(SinkError):
                self._call(what, lambda: self.client.delete_object(Bucket=self.bucket, Key=full, **version))
            raise

    def _apply_retention(
        self, key: str, retention: Retention, version: dict[str, str], time_ok: bool, hold_ok: bool
    ) -> dict[str, Any]:
        what = self._what(key)
        full = self._key(key)
        if not time_ok:
            lock = {"Mode": retention.mode, "RetainUntilDate": _utc(retention.until)}
            self._call(
                what,
                lambda: self.client.put_object_retention(Bucket=self.bucket, Key=full, Retention=lock, **version),
            )
        if not hold_ok:
            self._call(
                what,
                lambda: self.client.put_object_legal_hold(
                    Bucket=self.bucket, Key=full, LegalHold={"Status": "ON"}, **version
                ),
            )
        head = self._head(key, **version)
        if head is None or not all(_retention_met(head, retention)):
            raise SinkError(
                f"{what} was written, but the store does not report the requested Object Lock ({retention.mode} "
                f"until {_utc(retention.until).isoformat()}{', legal hold' if retention.legal_hold else ''}); "
                f"is Object Lock enabled on bucket {self.bucket}?"
            )
        return head

    # -- Sink --------------------------------------------------------------------------------------------------
    def open_writer(
        self,
        key: str,
        *,
        part_size: int,
        metadata: dict[str, str] | None = None,
        storage_class: str | None = None,
        retention: Retention | None = None,
    ) -> S3ObjectWriter:
        full = self._key(key)
        what = self._what(key)
        _check_retention(retention)
        if self._head(key) is not None:
            raise ObjectExists(f"{what} already exists; archive objects are never overwritten")
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": full,
            "ChecksumAlgorithm": "SHA256",
            "Metadata": dict(metadata or {}),
            **self._sse,
            **_lock_params(retention),
        }
        if storage_class:
            params["StorageClass"] = storage_class
        # Not idempotent: if a response is lost and the call retried, the first upload is orphaned. Buckets should
        # carry an AbortIncompleteMultipartUpload lifecycle rule (the terraform modules set one).
        resp = self._call(what, lambda: self.client.create_multipart_upload(**params))
        # Join caller parts only up to S3's minimum: a caller part of >= 5 MiB then goes up as it is (no copy, its
        # digest reused), and there are never more S3 parts than caller parts. ``part_size`` is only a hint here.
        return S3ObjectWriter(self, key, resp["UploadId"], MIN_PART, retention)

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> ObjectInfo:
        full = self._key(key)
        what = self._what(key)
        _check_retention(retention)
        checksum = _b64(hashlib.sha256(data).digest())
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": full,
            "Body": data,
            # Both headers: x-amz-sdk-checksum-algorithm is what S3 accepts in place of Content-MD5 for Object Lock.
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": checksum,
            "StorageClass": "STANDARD",  # manifests and refs must stay readable without a thaw
            **self._sse,
            **_lock_params(retention),
        }
        if if_absent:
            if self._conditional_put:
                params["IfNoneMatch"] = "*"
            elif self._head(key) is not None:
                # Fallback for stores that reject If-None-Match: HEAD, then PUT. Another writer can create the key
                # between the two and be overwritten. Keys written create-only are content-addressed (manifests,
                # sets) or carry a random backup id (refs), so the replacement holds the same bytes, but the check
                # is not atomic here as it is with If-None-Match.
                raise ObjectExists(f"{what} already exists; archive objects are never overwritten")
        # A retry of this create-only PUT after a lost answer meets its own object: RetryingSink tells that apart.
        try:
            resp = self._call(what, lambda: self.client.put_object(**params))
        except SinkError as e:
            if "IfNoneMatch" in params and getattr(e, "_s3_code", None) == "NotImplemented":
                self._conditional_put = False
                return self.put(key, data, if_absent=if_absent, retention=retention)
            raise
        version_id = resp.get("VersionId")
        if retention is not None:
            head = self._confirm_retention(key, retention, version_id)
        else:
            head = self._head(key, **_version(version_id))
            if head is None:
                raise SinkError(f"{what} vanished right after it was written")
        if int(head.get("ContentLength", -1)) != len(data):
            raise SinkError(f"{what} holds {head.get('ContentLength')} bytes after writing {len(data)}")
        return self._info(key, head)

    def get(self, key: str) -> bytes:
        full = self._key(key)

        def once() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            try:
                return body.read()
            finally:
                body.close()

        return self._call(self._what(key), once)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        full = self._key(key)
        if start < 0 or length < 0:
            raise SinkError(f"invalid range {start}+{length} of {self._what(key)}")
        if length == 0:
            return b""

        def once() -> bytes:
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=full, Range=f"bytes={start}-{start + length - 1}")
            except bce.ClientError as e:
                if e.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # starts at or past the end: nothing to read, like a file read past EOF
                raise
            body = resp["Body"]
            try:
                return body.read()  # a short read (range past the end) is returned as is
            finally:
                body.close()

        return self._call(self._what(key), once)

    def head(self, key: str) -> ObjectInfo | None:
        head = self._head(key)
        return None if head is None else self._info(key, head)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key (relative to the sink's prefix) starts with ``prefix``, in key order.

        ListObjectsV2 returns keys in UTF-8 byte order, which is the order of Python's str comparison. Cold objects
        are reported archived by storage class; whether a restored copy exists only ``head`` can tell.
        """
        if prefix.startswith("/"):
            raise SinkError(f"invalid listing prefix {prefix!r}")
        base = f"{self.prefix}/" if self.prefix else ""
        what = self._what(prefix) if prefix else self.url
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base + prefix, "MaxKeys": self._page_size}
        while True:
            page = self._call(what, lambda kw=dict(kwargs): self.client.list_objects_v2(**kw))
            for obj in page.get("Contents") or []:
                key = obj["Key"][len(base) :]
                if not key or key.endswith("/"):
                    continue  # "folder" placeholder objects made by consoles
                storage_class = obj.get("StorageClass") or "STANDARD"
                modified = obj.get("LastModified")
                yield ObjectInfo(
                    key=key,
                    size=int(obj.get("Size", 0)),
                    modified=_utc(modified) if modified is not None else None,
                    storage_class=storage_class,
                    archived=storage_class in COLD_CLASSES,
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def delete(self, key: str, *, version_id: str | None = None) -> None:
        """Delete ``key``. On a versioned bucket this adds a delete marker unless ``version_id`` names a version;
        deleting a version under Object Lock retention or legal hold is refused with :class:`AccessDenied`."""
        full = self._key(key)
        what = self._what(key)
        version = {"VersionId": version_id} if version_id else {}
        try:
            self._call(what, lambda: self.client.delete_object(Bucket=self.bucket, Key=full, **version))
        except _NoSuchBucket:
            raise
        except ObjectNotFound:
            pass  # already gone
        except AccessDenied as e:
            raise AccessDenied(
                f"cannot delete {what}{f' (version {version_id})' if version_id else ''}: {e} -- an object under "
                "Object Lock retention or a legal hold cannot be deleted before it expires"
            ) from None

    def purge(self, key: str) -> None:
        """Delete every version and delete marker of ``key`` by version id, after checking that no version is
        under Object Lock retention or a legal hold (then :class:`AccessDenied`, and nothing is deleted). A plain
        delete on a versioned bucket would only add a delete marker and keep the bytes (and their cost) forever.
        Needs s3:ListBucketVersions, s3:GetObject(Version) and s3:DeleteObject(Version)."""
        full = self._key(key)
        what = self._what(key)
        versions = []  # (version id, is a delete marker); "null" on unversioned buckets
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full, "MaxKeys": self._page_size}
        while True:
            page = self._call(what, lambda kw=dict(kwargs): self.client.list_object_versions(**kw))
            for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
                for v in page.get(kind) or []:
                    if v.get("Key") == full:
                        versions.append((str(v.get("VersionId") or "null"), marker))
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")
        now = dt.datetime.now(dt.timezone.utc)
        for vid, marker in versions:
            head = None if marker else self._head(key, **_version(vid))
            lock = _retention_of(head) if head is not None else None
            if lock is not None and (lock.legal_hold or lock.until > now):
                hold = ", legal hold" if lock.legal_hold else ""
                raise AccessDenied(
                    f"cannot delete {what}: version {vid} is under Object Lock ({lock.mode or 'no mode'} until "
                    f"{lock.until.isoformat()}{hold})"
                )
        for vid, _marker in versions:
            self.delete(key, version_id=None if vid == "null" else vid)

    def list_incomplete(self, older_than: dt.datetime | None = None) -> list[IncompleteUpload]:
        """Multipart uploads under the prefix that were started, and had their last part uploaded, before
        ``older_than`` (ListMultipartUploads, then ListParts for each candidate)."""
        base = f"{self.prefix}/" if self.prefix else ""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base, "MaxUploads": self._page_size}
        out = []
        while True:
            page = self._call(self.url, lambda kw=dict(kwargs): self.client.list_multipart_uploads(**kw))
            for up in page.get("Uploads") or []:
                started = _utc(up["Initiated"]) if up.get("Initiated") is not None else None
                if older_than is not None and started is not None and started >= older_than:
                    continue
                item = self._upload_activity(up["Key"][len(base) :], up["Key"], up["UploadId"], started)
                if item is None:
                    continue  # completed or aborted meanwhile
                if older_than is None or item.last_activity is None or item.last_activity < older_than:
                    out.append(item)
            if not page.get("IsTruncated"):
                return out
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")

    def _upload_activity(
        self, key: str, full: str, upload_id: str, started: dt.datetime | None
    ) -> IncompleteUpload | None:
        last, size = started, 0
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "UploadId": upload_id}
        while True:
            try:
                page = self._call(self._what(key), lambda kw=dict(kwargs): self.client.list_parts(**kw))
            except SinkError as e:
                if getattr(e, "_s3_code", None) == "NoSuchUpload" or isinstance(e, ObjectNotFound):
                    return None
                raise
            for part in page.get("Parts") or []:
                size += int(part.get("Size", 0))
                if part.get("LastModified") is not None:
                    t = _utc(part["LastModified"])
                    last = t if last is None or t > last else last
            if not page.get("IsTruncated"):
                return IncompleteUpload(key, upload_id, started, last, size)
            kwargs["PartNumberMarker"] = page.get("NextPartNumberMarker")

    def abort_incomplete(self, item: IncompleteUpload) -> None:
        full = self._key(item.key)
        try:
            self._call(
                self._what(item.key),
                lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=item.upload_id),
            )
        except SinkError as e:
            if getattr(e, "_s3_code", None) != "NoSuchUpload":
                raise

    def thaw(self, key: str, *, days: int, tier: str) -> str:
        if tier not in TIERS:
            raise SinkError(f"unknown restore tier {tier!r} (expected one of {', '.join(TIERS)})")
        if days < 1:
            raise SinkError(f"a thaw must keep the restored copy for at least 1 day (got {days})")
        full = self._key(key)
        what = self._what(key)
        info = self.head(key)
        if info is None:
            raise ObjectNotFound(f"{what} does not exist")
        if not info.archived:
            return "available"
        if info.thaw == "ongoing":
            return "ongoing"
        request: dict[str, Any] = {"GlacierJobParameters": {"Tier": tier}}
        if info.storage_class != "INTELLIGENT_TIERING":
            request["Days"] = days  # Intelligent-Tiering archive restores move the object back; they take no Days

        def once() -> str:
            try:
                resp = self.client.restore_object(Bucket=self.bucket, Key=full, RestoreRequest=request)
            except bce.ClientError as e:
                if e.response.get("Error", {}).get("Code") == "RestoreAlreadyInProgress":
                    return "ongoing"
                raise
            # 202 Accepted: a restore was started; 200 OK: a restored copy already exists (its expiry was extended)
            return "available" if resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 200 else "started"

        return self._call(what, once)


class S3ObjectWriter:
    """A multipart upload fed with numbered caller parts, in any order, from several threads.

    Caller parts are joined in number order into S3 parts of at least ``target`` bytes. Parts that arrive before
    their predecessors wait in an :class:`~sinks.parts.OrderedParts` (bounded by the caller's concurrency). Cutting S3
    parts happens under the lock; uploading them happens outside it, in the calling threads, so several S3 parts go up
    in parallel. Whichever thread is in ``write_part`` takes the next S3 part that is ready, so a part released by a
    late predecessor is not left waiting for one thread.
    """

    def __init__(self, sink: S3Sink, key: str, upload_id: str, target: int, retention: Retention | None) -> None:
        self._sink = sink
        self._key = key
        self._full = sink._key(key)
        self._what = sink._what(key)
        self.upload_id = upload_id
        self._target = target
        self._retention = retention
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when an upload finishes
        self._order = OrderedParts(self._what)  # caller parts waiting for their predecessors
        self._pending: list[tuple[bytes, bytes]] = []  # joined caller parts, not yet a full S3 part
        self._pending_len = 0
        self._ready: collections.deque[tuple[int, list[tuple[bytes, bytes]]]] = collections.deque()
        self._s3_next = 1  # the next S3 part number
        self._parts: dict[int, dict[str, Any]] = {}  # S3 part number -> CompleteMultipartUpload entry
        self._in_flight = 0
        self._written = 0  # bytes joined in order
        self._error: SinkError | None = None
        self._state = "open"  # open | completing | done | failed | aborted

    # -- helpers (call with the lock held) ---------------------------------------------------------------------
    def _raise_if_unusable(self) -> None:
        if self._state == "aborted":
            raise SinkError(f"the upload of {self._what} was aborted")
        if self._error is not None:
            # A fresh exception of the same kind, so concurrent callers do not share one traceback.
            raise type(self._error)(f"the upload of {self._what} already failed: {self._error}")
        if self._state != "open":
            raise SinkError(f"the upload of {self._what} is already finished")

    def _cut(self) -> None:
        if self._s3_next > MAX_PARTS:
            raise SinkError(f"{self._what} needs more than {MAX_PARTS} S3 parts; use a larger part size")
        self._ready.append((self._s3_next, self._pending))
        self._s3_next += 1
        self._pending = []
        self._pending_len = 0

    # -- ObjectWriter ------------------------------------------------------------------------------------------
    def write_part(self, number: int, data: bytes, sha256: bytes) -> None:
        with self._lock:
            self._raise_if_unusable()
            self._order.add(number, data, sha256)
            while (part := self._order.take()) is not None:
                self._pending.append((part.data, part.sha256))
                self._pending_len += len(part.data)
                self._written += len(part.data)
                if self._pending_len >= self._target:
                    try:
                        self._cut()
                    except SinkError as e:
                        self._error = e
                        raise
        self._drain()

    def _drain(self) -> None:
        """Upload S3 parts that are ready until none is left (other threads in here take some of them)."""
        while True:
            with self._lock:
                if self._error is not None:
                    self._raise_if_unusable()
                if not self._ready or self._state == "aborted":
                    return
                number, chunks = self._ready.popleft()
                self._in_flight += 1
            try:
                entry = self._upload(number, chunks)
            except BaseException as e:
                with self._lock:
                    self._in_flight -= 1
                    if self._error is None:
                        self._error = e if isinstance(e, SinkError) else SinkError(f"uploading {self._what}: {e}")
                    self._idle.notify_all()
                raise
            with self._lock:
                self._in_flight -= 1
                self._parts[number] = entry
                self._idle.notify_all()

    def _upload(self, number: int, chunks: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        if len(chunks) == 1 and len(chunks[0][1]) == 32:
            body, digest = chunks[0]  # exactly one caller part: its digest is the S3 part's
        else:
            body = b"".join(c[0] for c in chunks)
            digest = hashlib.sha256(body).digest()
        checksum = _b64(digest)
        sink = self._sink

        def once() -> dict[str, Any]:
            return sink.client.upload_part(
                Bucket=sink.bucket,
                Key=self._full,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )

        resp = sink._retried(sink._call, f"{self._what} (part {number})", once)
        return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum}

    def complete(self) -> ObjectInfo:
        with self._lock:
            self._raise_if_unusable()
            self._order.check_complete()
            self._state = "completing"
            if self._pending or self._s3_next == 1:  # the last (possibly short) part; an empty object has one too
                self._cut()
        try:
            self._drain()
            with self._lock:
                while self._in_flight:
                    self._idle.wait()
                if self._error is not None:
                    raise type(self._error)(str(self._error))
                parts = [self._parts[n] for n in range(1, self._s3_next)]
            info = self._finish(parts)
        except BaseException:
            with self._lock:
                if self._state == "completing":
                    self._state = "failed"
            raise
        with self._lock:
            self._state = "done"
        return info

    def _finish(self, parts: list[dict[str, Any]]) -> ObjectInfo:
        sink = self._sink
        attempts = 0

        def once() -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            return sink.client.complete_multipart_upload(
                Bucket=sink.bucket,
                Key=self._full,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",  # never replace an object that appeared while we uploaded
            )

        try:
            resp = sink._retried(sink._call, self._what, once)
        except SinkError as e:
            # A retried CompleteMultipartUpload whose first attempt succeeded (response lost) finds no upload: then
            # the object is there with our size.
            if attempts < 2 or getattr(e, "_s3_code", None) != "NoSuchUpload":
                raise
            resp = {}
        version_id = resp.get("VersionId")
        if self._retention is not None:
            head = sink._retried(sink._confirm_retention, self._key, self._retention, version_id)
        else:
            head = sink._retried(sink._head, self._key, **_version(version_id))
            if head is None:
                raise SinkError(f"{self._what} is missing after its multipart upload was completed")
        size = int(head.get("ContentLength", -1))
        if size != self._written:
            raise SinkError(f"{self._what} holds {size} bytes after a multipart upload of {self._written}")
        return sink._info(self._key, head)

    def abort(self) -> None:
        sink = self._sink
        with self._lock:
            if self._state == "aborted":
                return
            finished = self._state == "done"
            self._state = "aborted"
            self._order.clear()
            self._pending = []
            self._ready.clear()
            # Let uploads in flight finish first: a part that lands after AbortMultipartUpload would survive it.
            deadline = time.monotonic() + sink.options.retry_budget + CONNECT_TIMEOUT + READ_TIMEOUT + 5
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
        if finished:
            return  # the object is complete; there is no upload left to discard
        try:
            sink._retried(
                sink._call,
                self._what,
                lambda: sink.client.abort_multipart_upload(Bucket=sink.bucket, Key=self._full, UploadId=self.upload_id),
            )
        except SinkError as e:
            if getattr(e, "_s3_code", None) == "NoSuchUpload":
                return  # already aborted, completed, or expired
            raise SinkError(
                f"could not abort the multipart upload {self.upload_id} of {self._what}: {e}; its parts keep "
                "costing storage until a lifecycle rule (AbortIncompleteMultipartUpload) removes them"
            ) from e
