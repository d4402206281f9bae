"""Google Cloud Storage as an archive: ``gs://bucket/prefix``.

The sink speaks the GCS JSON API directly over an authorized ``requests`` session from google-auth, so every request,
status code and retry is under its control:

* large objects are one **resumable upload** fed in part order. Parts may arrive in any order from several threads;
  early ones wait in an :class:`~sinks.parts.OrderedParts`, and a ``write_part`` call returns once its part has been
  taken into the upload buffer, which stays below one chunk plus one part, so memory is bounded by the caller's
  in-flight parts. Chunks are multiples of 256 KiB (GCS's rule for every chunk but the last). A chunk that fails
  with a transient error is resumed from the offset the server reports as committed (a status query), and the whole
  object's CRC32C is compared with the server's after the upload is finalised;
* small objects are one multipart upload that carries its CRC32C and MD5, so GCS itself rejects a damaged body;
* create-only writes use ``ifGenerationMatch=0`` so nothing is ever overwritten, also not by a retry;
* every call makes one attempt: transient failures (429, 5xx, connection resets, timeouts) leave as
  :class:`~sinks.base.TransientError` for :class:`sinks.retry.RetryingSink` to repeat (the resumable writer repeats
  its chunks itself, under the same policy, since a retry must first ask where to resume), and everything else as
  :class:`~sinks.base.SinkError` subclasses whose message names the bucket and object.

Credentials come from Application Default Credentials (google-auth). With ``$STORAGE_EMULATOR_HOST`` set (the
google-cloud-storage convention, though that library is not used) or a plain-``http://`` ``SinkOptions.endpoint_url``,
requests go there without credentials.

Retention maps onto GCS object retention (``GOVERNANCE`` = ``Unlocked``, ``COMPLIANCE`` = ``Locked``, sent with the
upload, so the bucket needs object retention enabled); ``legal_hold`` becomes a temporary hold. A bucket-lock
policy's expiry is reported as mode ``BUCKET``. Every GCS storage class is readable at once: nothing is ``archived``.

Emulator gaps (measured against fake-gcs-server 1.54 and gcp-storage-emulator 2026.7.19; the tests pin them):

* fake-gcs-server *finalises* a resumable upload when asked for its status, so an interrupted upload there cannot be
  resumed: the writer notices the premature object, deletes it and fails with a clear error. On resumable uploads it
  ignores ``ifGenerationMatch``, ``storageClass`` and ``temporaryHold`` (it keeps ``retention``); it answers a DELETE
  of the session with 499 but does not cancel it; it ignores a CRC32C sent with a simple upload and
  ``ifGenerationMatch`` on deletes. It does honour ``ifGenerationMatch=0`` on simple (multipart) uploads.
* gcp-storage-emulator ignores every precondition, drops ``retention`` and ``temporaryHold`` and cannot cancel a
  session (501); it does resume properly (status query → 308 + ``Range``) and checks a CRC32C sent with an upload.
  Its status reply for a session that has received nothing claims one byte; resuming there then fails cleanly.
* Neither enforces retention or holds.

Against an emulator or a custom endpoint the sink therefore also checks for an existing object before create-only
small writes (the writer always looks before it starts). Between that check and the write another writer can slip
in and be overwritten; on real GCS the precondition alone decides.

Importing this package imports google-auth and requests; :func:`sinks.open_sink` does so only when a ``gs://`` URL is
opened.

* :mod:`sinks.gcs.sink` -- :class:`GCSSink`: state, session, one-attempt requests, names, URLs, object resources;
* :mod:`sinks.gcs.client` -- the endpoint (GCS, emulator, custom) and the google-auth authorized session;
* :mod:`sinks.gcs.errors` -- HTTP, requests and google-auth errors as sink errors, and which are transient;
* :mod:`sinks.gcs.objects` -- small writes, reads, ranged reads, HEAD, list, delete, purge, thaw;
* :mod:`sinks.gcs.resumable` -- :class:`GCSObjectWriter` and the resumable upload protocol;
* :mod:`sinks.gcs.retention` -- object retention, holds and bucket retention;
* :mod:`sinks.gcs.checksums` -- CRC32C; :mod:`sinks.gcs.times` -- RFC 3339 times.
"""

from __future__ import annotations

# The underscored names are not public; the tests check them directly. To replace a checksum function, patch it on
# sinks.gcs.checksums, where the sink looks it up.
from sinks.gcs.checksums import _crc32c_of as _crc32c_of
from sinks.gcs.checksums import _update_crc as _update_crc
from sinks.gcs.client import CONTENT_TYPE, DEFAULT_ENDPOINT, EMULATOR_PROJECT, SCOPES, TIMEOUT
from sinks.gcs.errors import TRANSIENT_STATUS, transient
from sinks.gcs.errors import _HTTPStatus as _HTTPStatus
from sinks.gcs.resumable import CHUNK_QUANTUM, MAX_CHUNK, MAX_STALLS, STORAGE_CLASSES, GCSObjectWriter
from sinks.gcs.retention import _retention_fields as _retention_fields
from sinks.gcs.retention import _retention_of as _retention_of
from sinks.gcs.sink import GCSSink
from sinks.gcs.times import _parse_time as _parse_time

__all__ = [
    "CHUNK_QUANTUM",
    "CONTENT_TYPE",
    "DEFAULT_ENDPOINT",
    "EMULATOR_PROJECT",
    "MAX_CHUNK",
    "MAX_STALLS",
    "SCOPES",
    "STORAGE_CLASSES",
    "TIMEOUT",
    "TRANSIENT_STATUS",
    "GCSObjectWriter",
    "GCSSink",
    "transient",
]
