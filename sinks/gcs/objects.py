"""Object operations of the GCS sink: create-only small writes, reads and ranged reads, HEAD, listing, delete."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

from sinks.base import IncompleteUpload, ObjectExists, ObjectInfo, ObjectNotFound, Retention, SinkError
from sinks.gcs import checksums
from sinks.gcs.client import CONTENT_TYPE, TIMEOUT
from sinks.gcs.errors import _Corrupt, _HTTPStatus
from sinks.gcs.retention import _retention_fields


class ObjectOperations:
    """The :class:`~sinks.base.Sink` calls on single objects for :class:`~sinks.gcs.sink.GCSSink`: a mixin, it works
    through the sink's ``_http``, ``_request``, ``_guard``, ``_name``, ``_target``, ``_object_url``, ``_upload_url``,
    ``_check_bucket``, ``_get_resource``, ``_discard``, ``_info`` and ``_retention_refused``."""

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> ObjectInfo:
        name = self._name(key)
        target = self._target(name)
        data = bytes(data)
        crc = checksums._crc32c_of(data)
        resource: dict[str, Any] = {
            "name": name,
            "contentType": CONTENT_TYPE,
            "storageClass": "STANDARD",  # manifests and refs must stay readable and cheap to read
            "crc32c": crc,  # GCS rejects the upload if the body does not match
            "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode("ascii"),
        }
        resource.update(_retention_fields(retention))
        boundary = uuid.uuid4().hex
        body = b"".join(
            (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps(resource).encode(),
                f"\r\n--{boundary}\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        headers = {"Content-Type": f"multipart/related; boundary={boundary}"}
        url = self._upload_url("multipart", if_absent)
        with self._guard("write", target):
            if if_absent and self.precheck_create and self._get_resource(name) is not None:
                raise ObjectExists(f"{target} already exists; archive objects are never overwritten")
            try:
                # A retry after a lost answer meets its own object (412, or the pre-check): RetryingSink sees that.
                stored = self._request("POST", url, data=body, headers=headers, ok=(200, 201)).json()
            except _HTTPStatus as e:
                if e.status == 404:
                    self._check_bucket(e.response)
                if e.status == 400 and retention is not None and "retention" in e.message.lower():
                    raise SinkError(self._retention_refused(target, e.message)) from e
                raise
            if int(stored.get("size", -1)) != len(data) or stored.get("crc32c") != crc:
                why = self._discard(name, stored.get("generation"))
                raise SinkError(
                    f"write {target}: GCS stored {stored.get('size')} bytes with CRC32C {stored.get('crc32c')}, "
                    f"expected {len(data)} bytes with CRC32C {crc}; "
                    + (f"the damaged object could not be deleted: {why}" if why else "the damaged object was deleted")
                )
            return self._info(stored, key)

    def get(self, key: str) -> bytes:
        name = self._name(key)
        target = self._target(name)

        def attempt() -> bytes:
            response = self._http().request("GET", self._object_url(name, media=True), timeout=TIMEOUT)
            if response.status_code != 200:
                raise _HTTPStatus(response)
            data = response.content
            hashes = dict(
                part.strip().split("=", 1) for part in response.headers.get("X-Goog-Hash", "").split(",") if "=" in part
            )
            expected = hashes.get("crc32c")
            if expected and checksums._crc32c_of(data) != expected:
                # Damaged in transit: worth another try; after the budget it is reported as an error.
                raise _Corrupt(f"the downloaded bytes do not match the stored CRC32C {expected}")
            return data

        with self._guard("read", target):
            try:
                return attempt()
            except _HTTPStatus as e:
                if e.status == 404:
                    self._check_bucket(e.response)
                raise

    def get_range(self, key: str, start: int, length: int) -> bytes:
        name = self._name(key)
        target = self._target(name)
        if start < 0 or length < 0:
            raise SinkError(f"invalid range {start}+{length} for {target}")
        if length == 0:
            return b""
        with self._guard("read", target):
            try:
                r = self._request(
                    "GET",
                    self._object_url(name, media=True),
                    headers={"Range": f"bytes={start}-{start + length - 1}"},
                    ok=(200, 206, 416),
                )
            except _HTTPStatus as e:
                if e.status == 404:
                    self._check_bucket(e.response)
                raise
            if r.status_code == 416:  # starts at or past the end: like reading a file there
                return b""
            data = r.content
            if r.status_code == 200:  # the server ignored the Range header
                data = data[start : start + length]
            return data[:length]

    def head(self, key: str) -> ObjectInfo | None:
        name = self._name(key)
        with self._guard("read metadata of", self._target(name)):
            resource = self._get_resource(name)
            return None if resource is None else self._info(resource, key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        target = self._target(full + "*")
        url = f"{self.endpoint}/storage/v1/b/{self.bucket}/o"
        infos: list[ObjectInfo] = []
        token: str | None = None
        with self._guard("list", target):
            while True:
                params = {"prefix": full, "maxResults": "1000"}
                if token:
                    params["pageToken"] = token
                try:
                    page = self._request("GET", url, params=params).json()
                except _HTTPStatus as e:
                    if e.status == 404:
                        self._check_bucket(e.response)
                    raise
                for item in page.get("items") or []:
                    name = item.get("name", "")
                    if name.endswith("/") or not name.startswith(full):
                        continue  # "folder" placeholders are not archive objects
                    infos.append(self._info(item))
                token = page.get("nextPageToken")
                if not token:
                    break
        infos.sort(key=lambda i: i.key)
        yield from infos

    def delete(self, key: str) -> None:
        name = self._name(key)
        with self._guard("delete", self._target(name)):
            r = self._request("DELETE", self._object_url(name), ok=(200, 204, 404))
            if r.status_code == 404:
                self._check_bucket(r)

    def thaw(self, key: str, *, days: int, tier: str) -> str:
        if self.head(key) is None:
            raise ObjectNotFound(f"{self._target(self._name(key))} does not exist")
        return "available"  # GCS reads every storage class, ARCHIVE included, without a restore

    def purge(self, key: str) -> None:
        # The live generation only: on a bucket with object versioning (or soft delete) GCS keeps the deleted
        # bytes as a noncurrent generation until the bucket's lifecycle rule or soft-delete window removes them.
        # GCS itself refuses (403) to delete an object under retention or a hold.
        self.delete(key)

    def list_incomplete(self, older_than: dt.datetime | None = None) -> list[IncompleteUpload]:
        # GCS has no API to list resumable upload sessions: only the writer that started one knows its URI.
        # An unfinished session never becomes an object and GCS discards it after a week, so nothing is lost.
        return []

    def abort_incomplete(self, item: IncompleteUpload) -> None:
        return None  # nothing is ever listed (see list_incomplete)
