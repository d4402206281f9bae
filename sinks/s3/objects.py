"""Object operations of the S3 sink: create-only PUT, GET and ranged GET, HEAD, listing, delete and purge."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any

import botocore.exceptions as bce

from sinks.base import AccessDenied, ObjectExists, ObjectInfo, ObjectNotFound, Retention, SinkError
from sinks.s3.cold import COLD_CLASSES
from sinks.s3.errors import _NoSuchBucket
from sinks.s3.multipart import MIN_PART, S3ObjectWriter
from sinks.s3.retention import _check_retention, _lock_params, _retention_of
from sinks.s3.wire import _b64, _utc, _version


class ObjectOperations:
    """The :class:`~sinks.base.Sink` calls on single objects for :class:`~sinks.s3.sink.S3Sink`: a mixin, it works
    through the sink's ``client``, ``_call``, ``_key``, ``_what``, ``_sse``, ``_head``, ``_info`` and
    ``_confirm_retention``."""

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
