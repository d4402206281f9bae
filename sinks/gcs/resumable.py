"""Resumable uploads: starting a session (``open_writer``) and :class:`GCSObjectWriter`, which feeds it in part order.

Parts may arrive in any order from several threads; early ones wait in an :class:`~sinks.parts.OrderedParts`, and a
``write_part`` call returns once its part has been taken into the upload buffer, which stays below one chunk plus one
part. Chunks are multiples of 256 KiB (GCS's rule for every chunk but the last). A chunk that fails with a transient
error is resumed from the offset the server reports as committed (a status query), and the whole object's CRC32C is
compared with the server's after the upload is finalised.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import TYPE_CHECKING, Any

import google_crc32c
import requests

from sinks.base import ObjectExists, ObjectInfo, Retention, SinkError
from sinks.gcs import checksums
from sinks.gcs.client import CONTENT_TYPE, TIMEOUT
from sinks.gcs.errors import TRANSIENT_STATUS, _HTTPStatus, _message, transient
from sinks.gcs.retention import _retention_fields
from sinks.parts import OrderedParts

if TYPE_CHECKING:
    from sinks.gcs.sink import GCSSink

log = logging.getLogger("sinks.gcs")  # the one logger of the GCS sink, whichever module logs

STORAGE_CLASSES = ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")
CHUNK_QUANTUM = 256 * 1024  # every resumable chunk but the last must be a multiple of this
MAX_CHUNK = 64 * 1024 * 1024
MAX_STALLS = 3  # chunk answers in a row that confirm no new byte before the upload is given up
_RANGE = re.compile(r"bytes=0-(\d+)")


class ResumableUploads:
    """``open_writer`` of :class:`~sinks.gcs.sink.GCSSink`: a mixin, it works through the sink's ``_name``,
    ``_target``, ``_guard``, ``_get_resource``, ``_request``, ``_upload_url``, ``_check_bucket`` and
    ``_retention_refused``."""

    def open_writer(
        self,
        key: str,
        *,
        part_size: int,
        metadata: dict[str, str] | None = None,
        storage_class: str | None = None,
        retention: Retention | None = None,
    ) -> GCSObjectWriter:
        name = self._name(key)
        target = self._target(name)
        resource: dict[str, Any] = {"name": name, "contentType": CONTENT_TYPE}
        if metadata:
            resource["metadata"] = {str(k): str(v) for k, v in metadata.items()}
        if storage_class:
            sc = storage_class.upper()
            if sc not in STORAGE_CLASSES:
                raise SinkError(f"GCS has no storage class {storage_class!r} (use one of {', '.join(STORAGE_CLASSES)})")
            resource["storageClass"] = sc
        resource.update(_retention_fields(retention))
        chunk = min(MAX_CHUNK, max(CHUNK_QUANTUM, part_size // CHUNK_QUANTUM * CHUNK_QUANTUM))
        with self._guard("start uploading", target):
            # Fails early on a missing bucket or an existing object (the precondition still decides at the end).
            if self._get_resource(name) is not None:
                raise ObjectExists(f"{target} already exists; archive objects are never overwritten")
            r = self._start_upload(resource, target, retention)
            session_uri = r.headers.get("Location")
            if not session_uri:
                raise SinkError(f"start uploading {target}: GCS returned no resumable session URI")
        return GCSObjectWriter(self, key, name, session_uri, chunk)

    def _start_upload(self, resource: dict[str, Any], target: str, retention: Retention | None) -> requests.Response:
        headers = {"Content-Type": "application/json; charset=UTF-8", "X-Upload-Content-Type": CONTENT_TYPE}
        try:
            return self._request(
                "POST", self._upload_url("resumable", True), data=json.dumps(resource), headers=headers, ok=(200, 201)
            )
        except _HTTPStatus as e:
            if e.status == 404:
                self._check_bucket(e.response)
            if e.status == 400 and retention is not None:
                raise SinkError(self._retention_refused(target, e.message)) from e
            raise


_OPEN, _COMPLETING, _DONE, _ABORTED, _FAILED = "open", "completing", "done", "aborted", "failed"


class GCSObjectWriter:
    """One resumable upload fed in part order.

    ``write_part`` deposits its part and returns once the part has been taken into the upload buffer (a copy); the
    thread that holds the next part in order becomes the *feeder*: it appends parts while less than one chunk is
    buffered and sends full chunks, then hands over. So at most one chunk plus one part is buffered, plus the parts
    the caller has in flight.
    """

    def __init__(self, sink: GCSSink, key: str, name: str, session_uri: str, chunk_size: int) -> None:
        self._sink = sink
        self._key = key
        self._name = name
        self._target = sink._target(name)
        self._uri = session_uri
        self._chunk = chunk_size
        self._cond = threading.Condition()
        self._parts = OrderedParts(self._target)
        self._feeding = False
        self._state = _OPEN
        self._error: SinkError | None = None
        # Bytes the server has not confirmed yet; self._buf[0] is at offset self._committed of the object.
        self._buf = bytearray()
        self._committed = 0
        self._crc = google_crc32c.Checksum()
        self._need_status = False
        self._stalls = 0
        self._resource: dict[str, Any] | None = None
        self.resumed = 0  # how often an interrupted chunk was resumed from the server's committed offset

    # -- ObjectWriter ----------------------------------------------------------------------------------------------
    def write_part(self, number: int, data: bytes, sha256: bytes) -> None:
        """Store part ``number`` (1-based). ``sha256`` is not needed: GCS checks the whole object's CRC32C."""
        with self._cond:
            self._check_usable()
            self._parts.add(number, data, sha256)
            self._cond.notify_all()
            while True:
                self._check_usable(writing=True)
                if self._parts.taken(number):
                    return
                if not self._feeding and self._parts.ready():
                    self._run_feeder(until=number)
                    continue
                self._cond.wait()

    def complete(self) -> ObjectInfo:
        with self._cond:
            self._check_usable()
            self._state = _COMPLETING
            while self._feeding:
                self._cond.wait()
            self._check_usable(writing=True)
            self._run_feeder(until=None)
            try:
                self._parts.check_complete()
            except SinkError as e:
                self._fail(e)
                raise
            self._feeding = True
        try:
            info = self._finish()
            info_generation = (self._resource or {}).get("generation")
        except Exception as e:
            with self._cond:
                self._fail(e)
            if self._error is e:
                raise
            raise self._error from e  # type: ignore[misc]
        finally:
            with self._cond:
                self._feeding = False
                self._cond.notify_all()
        with self._cond:
            aborted = self._state == _ABORTED
            self._state = _ABORTED if aborted else _DONE
            self._buf = bytearray()
            self._cond.notify_all()
        if aborted:  # abort() ran while the last chunk was on its way: keep the promise that nothing appears
            why = self._sink._discard(self._name, info_generation)
            raise SinkError(
                f"the upload of {self._target} was aborted while it completed; "
                + (f"the object could not be deleted: {why}" if why else "the object was deleted")
            )
        return info

    def abort(self) -> None:
        """Cancel the upload session so no object appears; safe to call more than once."""
        with self._cond:
            if self._state in (_DONE, _ABORTED):
                return
            self._state = _ABORTED
            self._parts.clear()
            if not self._feeding:
                self._buf = bytearray()
            self._cond.notify_all()
        sink = self._sink
        try:
            # 499 is GCS's (and fake-gcs-server's) answer to a cancelled session; 404/410 mean it is gone already.
            r = sink._retry(sink._request, "DELETE", self._uri, ok=(200, 204, 404, 410, 499, 405, 501))
        except Exception as e:
            raise SinkError(
                f"could not cancel the upload of {self._target} ({sink._translate(e, 'cancel', self._target)}); "
                "an unfinished session never becomes an object and expires within a week"
            ) from e
        if r.status_code in (405, 501):
            log.debug(
                "%s cannot cancel resumable sessions (%s); the unfinished upload is left to expire",
                sink.endpoint,
                r.status_code,
            )

    # -- state -----------------------------------------------------------------------------------------------------
    def _check_usable(self, writing: bool = False) -> None:
        if self._error is not None:
            raise type(self._error)(str(self._error))  # a fresh instance: several threads may raise it
        if self._state == _ABORTED:
            raise SinkError(f"the upload of {self._target} was aborted")
        if self._state == _DONE or (self._state == _COMPLETING and not writing):
            raise SinkError(f"the upload of {self._target} is already finished")

    def _fail(self, e: BaseException) -> None:
        """Record the first failure (lock held); every waiting and later call raises it."""
        if self._error is None:
            self._error = self._sink._translate(e, "upload", self._target)
        if self._state != _ABORTED:
            self._state = _FAILED
        self._buf = bytearray()  # nothing more will be sent: free the memory (waiting writers drop their parts)
        self._cond.notify_all()

    def _run_feeder(self, until: int | None) -> None:
        """Become the feeder (lock held on entry and exit) and append/send until ``until`` is in the buffer."""
        self._feeding = True
        try:
            while True:
                if until is not None and self._parts.taken(until) and len(self._buf) < self._chunk:
                    return  # our part is in; a thread with a later part takes over
                while len(self._buf) < self._chunk and (part := self._parts.take()) is not None:
                    self._append(part.data)
                    self._cond.notify_all()
                if len(self._buf) < self._chunk:
                    return  # the next part has not arrived yet
                self._cond.release()
                try:
                    self._sink._retry(self._step, False)
                finally:
                    self._cond.acquire()
                self._check_usable(writing=True)
        except Exception as e:
            self._fail(e)
            if self._error is e:
                raise
            raise self._error from e  # type: ignore[misc]
        finally:
            self._feeding = False
            self._cond.notify_all()

    def _append(self, part: bytes) -> None:
        self._buf += part
        checksums._update_crc(self._crc, part if isinstance(part, bytes) else bytes(part))

    # -- the resumable protocol ------------------------------------------------------------------------------------
    def _put(self, content_range: str, body: bytes) -> requests.Response:
        headers = {"Content-Range": content_range}
        if body:
            headers["Content-Type"] = CONTENT_TYPE
        try:
            r = self._sink._http().request("PUT", self._uri, data=body, headers=headers, timeout=TIMEOUT)
        except BaseException as e:
            if transient(e):
                self._need_status = True
            raise
        if r.status_code in TRANSIENT_STATUS:
            self._need_status = True
            raise _HTTPStatus(r)
        return r

    def _advance(self, response: requests.Response) -> None:
        """Drop what the server has confirmed (its ``Range`` header) from the buffer."""
        m = _RANGE.fullmatch(response.headers.get("Range", "").strip())
        committed = int(m.group(1)) + 1 if m else 0
        sent_up_to = self._committed + len(self._buf)
        if committed < self._committed or committed > sent_up_to:
            raise SinkError(
                f"upload of {self._target}: GCS reports {committed} bytes received, but {self._committed} were "
                f"already confirmed and {sent_up_to} sent"
            )
        del self._buf[: committed - self._committed]
        self._committed = committed

    def _step(self, final: bool) -> None:
        """Send one chunk (or the last one), first asking where to resume if the previous attempt failed."""
        if self._need_status:
            self._query_status(final)
            if self._resource is not None:
                return
        n = len(self._buf) if final else min(self._chunk, len(self._buf) // CHUNK_QUANTUM * CHUNK_QUANTUM)
        start = self._committed
        if final:
            total = start + n
            content_range = f"bytes {start}-{total - 1}/{total}" if n else f"bytes */{total}"
        else:
            content_range = f"bytes {start}-{start + n - 1}/*"
        r = self._put(content_range, bytes(self._buf[:n]))
        if r.status_code == 308:
            self._advance(r)
            self._stalls = 0 if self._committed > start else self._stalls + 1
            if self._stalls > MAX_STALLS:
                raise SinkError(f"upload of {self._target}: GCS keeps accepting no bytes at offset {start}")
        elif r.status_code in (200, 201):
            if not final:
                raise SinkError(f"upload of {self._target}: GCS finalised the object before its last chunk")
            self._resource = r.json()
        else:
            self._session_error(r)

    def _session_error(self, r: requests.Response) -> None:
        if r.status_code == 412:
            raise ObjectExists(f"{self._target} already exists; archive objects are never overwritten")
        if r.status_code in (404, 410):
            raise SinkError(
                f"upload of {self._target}: the resumable session is gone ({r.status_code}: {_message(r)}); "
                "it expired or was cancelled"
            )
        raise _HTTPStatus(r)

    def _query_status(self, final: bool) -> None:
        r = self._put("bytes */*", b"")
        total = self._committed + len(self._buf)
        if r.status_code == 308:
            self._need_status = False
            before = self._committed
            self._advance(r)
            self.resumed += 1
            log.info(
                "resuming the upload of %s at byte %d (server had %d confirmed)", self._target, self._committed, before
            )
            return
        if r.status_code in (200, 201):
            resource = r.json()
            if final and int(resource.get("size", -1)) == total:
                self._need_status = False
                self._resource = resource  # the last chunk had arrived; only its answer was lost
                return
            # fake-gcs-server finalises a session when asked for its status: a truncated object now exists.
            why = self._sink._discard(self._name, resource.get("generation"))
            raise SinkError(
                f"upload of {self._target} was interrupted and the storage server finalised it at "
                f"{resource.get('size')} of {total}+ bytes when asked where to resume (fake-gcs-server does this; "
                "real GCS does not), so it cannot be resumed; "
                + (f"the partial object could not be deleted: {why}" if why else "the partial object was deleted")
            )
        if final and r.status_code in (404, 410):
            # The session may be gone because the last chunk finished it: is the object there and ours?
            there = self._sink._get_resource(self._name)
            if (
                there is not None
                and int(there.get("size", -1)) == total
                and there.get("crc32c") == checksums._crc32c_b64(self._crc)
            ):
                self._need_status = False
                self._resource = there
                return
        self._session_error(r)

    def _finish(self) -> ObjectInfo:
        """Send the last bytes, then check size and CRC32C of what GCS stored."""
        total = self._committed + len(self._buf)
        expected = checksums._crc32c_b64(self._crc)
        sink = self._sink
        while self._resource is None:
            sink._retry(self._step, True)
        stored = self._resource
        if "crc32c" not in stored or "size" not in stored:
            stored = sink._retry(sink._get_resource, self._name) or stored
        if int(stored.get("size", -1)) != total or stored.get("crc32c") != expected:
            why = sink._discard(self._name, stored.get("generation"))
            raise SinkError(
                f"upload of {self._target} arrived damaged: GCS stored {stored.get('size')} bytes with CRC32C "
                f"{stored.get('crc32c')}, expected {total} bytes with CRC32C {expected}; "
                + (f"the damaged object could not be deleted: {why}" if why else "the damaged object was deleted")
            )
        return sink._info(stored, self._key)
