"""The S3 multipart writer: numbered caller parts, in any order and from several threads, as S3 parts of >= 5 MiB.

The caller's parts (sealed blocks) can be smaller than the 5 MiB that S3 requires of every part but the last, so
:class:`S3ObjectWriter` joins consecutive caller parts until an S3 part has at least 5 MiB (a caller part that large
goes up alone, without a copy). Each UploadPart carries ``x-amz-checksum-sha256`` of exactly its bytes, which S3
verifies (and which Object Lock buckets require of every write).
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from typing import TYPE_CHECKING, Any

from sinks.base import ObjectInfo, Retention, SinkError
from sinks.parts import OrderedParts
from sinks.s3.client import CONNECT_TIMEOUT, READ_TIMEOUT
from sinks.s3.wire import _b64, _version

if TYPE_CHECKING:
    from sinks.s3.sink import S3Sink

MIN_PART = 5 * 1024 * 1024  # S3's minimum size of every part but the last
MAX_PART = 5 * 1024 * 1024 * 1024  # and its maximum size of any part
MAX_PARTS = 10_000


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
