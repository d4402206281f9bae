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
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import google.auth
import google.auth.exceptions
import google_crc32c
import requests
from google.auth.transport.requests import AuthorizedSession

from sinks.base import (
    AccessDenied,
    Capabilities,
    IncompleteUpload,
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

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
SCOPES = (
    "https://www.googleapis.com/auth/devstorage.full_control",
    "https://www.googleapis.com/auth/devstorage.read_write",
)
EMULATOR_PROJECT = "jsarchive-emulator"
STORAGE_CLASSES = ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")
CHUNK_QUANTUM = 256 * 1024  # every resumable chunk but the last must be a multiple of this
MAX_CHUNK = 64 * 1024 * 1024
MAX_STALLS = 3  # chunk answers in a row that confirm no new byte before the upload is given up
CONTENT_TYPE = "application/octet-stream"
# (connect, read) seconds for one HTTP request; the retry budget bounds how often a request is repeated.
TIMEOUT = (10.0, 120.0)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RANGE = re.compile(r"bytes=0-(\d+)")
_ADC_HELP = (
    "Google credentials come from Application Default Credentials: run `gcloud auth application-default login`, "
    "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run where an attached service account "
    "or workload identity is available (GCE, GKE, Cloud Run, Cloud Functions); for an emulator set "
    "STORAGE_EMULATOR_HOST"
)


# -- small helpers -----------------------------------------------------------------------------------------------
def _crc32c_b64(checksum: google_crc32c.Checksum) -> str:
    return base64.b64encode(checksum.digest()).decode("ascii")


def _crc32c_of(data: bytes) -> str:
    return _crc32c_b64(google_crc32c.Checksum(data))


def _parse_time(value: str | None) -> dt.datetime | None:
    """RFC 3339 as GCS writes it (``Z``, 0-9 fractional digits) on every supported Python."""
    if not value:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", value.strip())
    if not m:
        return None
    base, frac, zone = m.groups()
    stamp = dt.datetime.fromisoformat(base + (f".{(frac + '000000')[:6]}" if frac else ""))
    if zone in (None, "Z"):
        return stamp.replace(tzinfo=dt.timezone.utc)
    sign = 1 if zone[0] == "+" else -1
    offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return stamp.replace(tzinfo=dt.timezone(sign * offset))


def _format_time(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _retention_fields(retention: Retention | None) -> dict[str, Any]:
    """Object resource fields for a retention request (the object retention API, plus a temporary hold)."""
    if retention is None:
        return {}
    mode = retention.mode.upper()
    if mode not in ("GOVERNANCE", "COMPLIANCE"):
        raise SinkError(f"unknown retention mode {retention.mode!r} (expected GOVERNANCE or COMPLIANCE)")
    fields: dict[str, Any] = {
        # GOVERNANCE = "Unlocked" (may be shortened or removed with storage.objects.overrideUnlockedRetention);
        # COMPLIANCE = "Locked" (can only be extended, by nobody shortened or removed).
        "retention": {
            "mode": "Locked" if mode == "COMPLIANCE" else "Unlocked",
            "retainUntilTime": _format_time(retention.until),
        },
    }
    if retention.legal_hold:
        fields["temporaryHold"] = True
    return fields


def _retention_of(resource: dict[str, Any]) -> Retention | None:
    """Retention as GCS reports it: object retention, else the bucket policy's expiry (mode ``BUCKET``)."""
    hold = bool(resource.get("temporaryHold"))
    r = resource.get("retention") or {}
    until = _parse_time(r.get("retainUntilTime"))
    if until is not None:
        mode = "COMPLIANCE" if str(r.get("mode", "")).lower() == "locked" else "GOVERNANCE"
        return Retention(mode=mode, until=until, legal_hold=hold)
    until = _parse_time(resource.get("retentionExpirationTime"))
    if until is not None:
        return Retention(mode="BUCKET", until=until, legal_hold=hold)
    if hold or resource.get("eventBasedHold"):
        # A hold without a retention time (as S3's legal hold alone): no mode, and a date that has passed.
        return Retention(mode="", until=dt.datetime.fromtimestamp(0, dt.timezone.utc), legal_hold=True)
    return None


def _message(response: requests.Response) -> str:
    """The human part of an error response."""
    try:
        body = response.json()
        err = body.get("error", body) if isinstance(body, dict) else {}
        msg = err.get("message") if isinstance(err, dict) else None
        if msg:
            return str(msg)
    except ValueError:
        pass
    text = (response.text or "").strip()
    return text[:300] if text else (response.reason or f"HTTP {response.status_code}")


class _Corrupt(Exception):
    """Downloaded bytes do not match the checksum GCS sent with them (retried, then reported)."""


class _HTTPStatus(Exception):
    """A response with a status the caller did not expect (internal; translated before it leaves the sink)."""

    def __init__(self, response: requests.Response) -> None:
        self.status = response.status_code
        self.response = response
        self.message = _message(response)
        super().__init__(f"HTTP {self.status}: {self.message}")


def transient(e: BaseException) -> bool:
    """Worth retrying: throttling, server errors, broken connections and timeouts (raw or already translated).

    Only requests and google-auth raise here: the sink uses no google-cloud client library, so google.api_core's
    exceptions never occur."""
    if isinstance(e, TransientError):
        return True
    if isinstance(e, _HTTPStatus):
        return e.status in TRANSIENT_STATUS
    if isinstance(e, _Corrupt):
        return True
    if isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return True
    if isinstance(e, google.auth.exceptions.RefreshError):
        return bool(getattr(e, "retryable", False))
    return isinstance(e, google.auth.exceptions.TransportError)


# -- the sink ----------------------------------------------------------------------------------------------------
class GCSSink:
    # Object retention or a bucket retention policy (checked per bucket: retention_unsupported). Every storage class
    # reads at once, purge removes the live generation only, and resumable sessions cannot be listed.
    capabilities = Capabilities(retention_lock=True)

    def __init__(self, bucket: str, prefix: str = "", options: SinkOptions | None = None) -> None:
        if not bucket or "/" in bucket:
            raise SinkError(f"invalid GCS bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.options = options or SinkOptions()
        self.policy = RetryPolicy.from_options(self.options)  # for the writer's chunks and clean-ups
        self.url = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        self.project: str | None = None
        # Where requests go is known without credentials: $STORAGE_EMULATOR_HOST, an explicit endpoint, or GCS.
        emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
        endpoint = (self.options.endpoint_url or emulator or DEFAULT_ENDPOINT).strip()
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        self.endpoint = endpoint.rstrip("/")
        # Emulators take no credentials (the google-cloud-storage convention); neither does a plain-http endpoint.
        self.anonymous = bool(emulator) or urllib.parse.urlsplit(self.endpoint).scheme == "http"
        # Check for an existing object before create-only writes where preconditions may be ignored (module doc).
        self.precheck_create = self.endpoint != DEFAULT_ENDPOINT
        self._session: requests.Session | None = None
        self._connect_lock = threading.Lock()
        self._bucket_seen = False

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> GCSSink:
        scheme, sep, rest = url.partition("://")
        if scheme != "gs" or not sep:
            raise SinkError(f"not a GCS archive URL: {url!r} (expected gs://bucket/prefix)")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise SinkError(f"archive URL {url!r} names no bucket")
        return cls(bucket, prefix, options)

    # -- connection ------------------------------------------------------------------------------------------------
    def _http(self) -> requests.Session:
        """The authorized session, created on first use (so opening a sink needs no credentials yet)."""
        with self._connect_lock:
            if self._session is None:
                self._session = self._connect()
            return self._session

    def _connect(self) -> requests.Session:
        session: requests.Session
        if self.anonymous:
            session = requests.Session()
            self.project = os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT
        else:
            try:
                credentials, project = google.auth.default(scopes=list(SCOPES))
            except google.auth.exceptions.DefaultCredentialsError as e:
                raise SinkError(f"no Google credentials for {self.url}: {str(e).rstrip('.')}. {_ADC_HELP}") from e
            self.project = os.environ.get("GOOGLE_CLOUD_PROJECT") or project
            session = AuthorizedSession(credentials)
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers["User-Agent"] = "jsarchive-gcs-sink"
        return session

    # -- names and URLs --------------------------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or any(ord(c) < 32 for c in key):
            raise SinkError(f"invalid object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _target(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}"

    def _object_url(self, name: str, *, media: bool = False) -> str:
        quoted = urllib.parse.quote(name, safe="")
        if media:
            return f"{self.endpoint}/download/storage/v1/b/{self.bucket}/o/{quoted}?alt=media"
        return f"{self.endpoint}/storage/v1/b/{self.bucket}/o/{quoted}"

    def _upload_url(self, upload_type: str, if_absent: bool) -> str:
        query = {"uploadType": upload_type}
        if if_absent:
            query["ifGenerationMatch"] = "0"
        return f"{self.endpoint}/upload/storage/v1/b/{self.bucket}/o?{urllib.parse.urlencode(query)}"

    # -- requests, retries and errors ------------------------------------------------------------------------------
    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, TransientError)

    def _retry(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` under the sink's retry policy: for the writer and clean-ups, which no wrapper can repeat."""
        return self.policy.call(transient, fn, *args, **kwargs)

    def _request(self, method: str, url: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        """One JSON API call, one attempt; a status outside ``ok`` raises :class:`_HTTPStatus`."""
        kwargs.setdefault("timeout", TIMEOUT)
        response = self._http().request(method, url, **kwargs)
        if response.status_code not in ok:
            raise _HTTPStatus(response)
        return response

    def _translate(self, e: BaseException, doing: str, target: str) -> SinkError:
        if isinstance(e, SinkError):
            return e
        if isinstance(e, _HTTPStatus):
            where = f"{doing} {target}"
            if e.status == 401:
                return AccessDenied(f"{where}: the credentials were rejected (401: {e.message}). {_ADC_HELP}")
            if e.status == 403:
                return AccessDenied(f"{where}: access denied (403: {e.message})")
            if e.status in (404, 410):
                return ObjectNotFound(f"{target} does not exist ({e.status}: {e.message})")
            if e.status == 412:
                return ObjectExists(f"{target} already exists; archive objects are never overwritten")
            if e.status in TRANSIENT_STATUS:
                return TransientError(
                    f"{where}: GCS kept failing for {self.options.retry_budget:g} s (last: {e.status} {e.message})"
                )
            return SinkError(f"{where}: GCS refused the request ({e.status}: {e.message})")
        if isinstance(e, _Corrupt):
            return TransientError(f"{doing} {target}: {e}")
        if isinstance(e, google.auth.exceptions.DefaultCredentialsError):
            return SinkError(f"no Google credentials for {self.url}: {str(e).rstrip('.')}. {_ADC_HELP}")
        kind = TransientError if transient(e) else SinkError
        if isinstance(e, google.auth.exceptions.RefreshError):
            return kind(f"{doing} {target}: cannot obtain a Google access token: {e}. {_ADC_HELP}")
        if isinstance(e, google.auth.exceptions.GoogleAuthError):
            return kind(f"{doing} {target}: Google authentication failed: {e}")
        if isinstance(e, requests.RequestException):
            return kind(f"{doing} {target}: cannot reach GCS at {self.endpoint}: {type(e).__name__}: {e}")
        return SinkError(f"{doing} {target} failed: {type(e).__name__}: {e}")

    @contextlib.contextmanager
    def _guard(self, doing: str, target: str) -> Iterator[None]:
        try:
            yield
        except SinkError:
            raise
        except Exception as e:
            raise self._translate(e, doing, target) from e

    def _check_bucket(self, response: requests.Response | None = None) -> None:
        """After a 404: raise ObjectNotFound naming the bucket if the bucket itself is missing."""
        if response is not None and "specified bucket does not exist" in _message(response).lower():
            raise ObjectNotFound(f"bucket {self.bucket} does not exist (archive {self.url})")
        if self._bucket_seen:
            return
        url = f"{self.endpoint}/storage/v1/b/{self.bucket}?fields=name"
        r = self._request("GET", url, ok=(200, 401, 403, 404))
        if r.status_code == 404:
            raise ObjectNotFound(f"bucket {self.bucket} does not exist (archive {self.url})")
        if r.status_code == 200:  # 401/403: not allowed to look at the bucket, so assume it exists
            self._bucket_seen = True

    def retention_unsupported(self) -> str | None:
        """Why this bucket cannot retain objects (object retention not enabled, and no bucket retention policy),
        asked before a locked backup starts; None if it can, or if the credentials may not read the bucket."""
        url = f"{self.endpoint}/storage/v1/b/{self.bucket}?fields=objectRetention,retentionPolicy"
        with self._guard("reading the bucket's retention settings of", self.url):
            r = self._request("GET", url, ok=(200, 401, 403, 404))
        if r.status_code == 404:
            raise ObjectNotFound(f"bucket {self.bucket} does not exist (archive {self.url})")
        if r.status_code != 200:
            return None
        doc = r.json() if r.content else {}
        if (doc.get("objectRetention") or {}).get("mode") == "Enabled" or doc.get("retentionPolicy"):
            return None
        return f"bucket {self.bucket} has neither object retention enabled nor a retention policy"

    # -- object resources ------------------------------------------------------------------------------------------
    def _key_of(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    def _info(self, resource: dict[str, Any], key: str | None = None) -> ObjectInfo:
        return ObjectInfo(
            key=key if key is not None else self._key_of(resource["name"]),
            size=int(resource.get("size") or 0),
            modified=_parse_time(resource.get("timeCreated") or resource.get("updated")),
            storage_class=resource.get("storageClass"),
            metadata=dict(resource.get("metadata") or {}),
            retention=_retention_of(resource),
            archived=False,  # every GCS class, ARCHIVE included, is readable at once
            thaw=None,
        )

    def _get_resource(self, name: str) -> dict[str, Any] | None:
        r = self._request("GET", self._object_url(name), ok=(200, 404))
        if r.status_code == 404:
            self._check_bucket(r)
            return None
        return r.json()

    def _discard(self, name: str, generation: str | None) -> str | None:
        """Delete one generation of an object we just created by mistake; returns why it failed, if it did."""
        url = self._object_url(name) + (f"?ifGenerationMatch={generation}" if generation else "")
        try:
            self._retry(self._request, "DELETE", url, ok=(200, 204, 404, 412))
        except Exception as e:
            return str(self._translate(e, "delete", self._target(name)))
        return None

    # -- Sink ------------------------------------------------------------------------------------------------------
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

    def _retention_refused(self, target: str, message: str) -> str:
        return (
            f"GCS refused to write {target} with a retention lock (400: {message}). Per-object retention needs a "
            f"bucket created with object retention enabled (gcloud storage buckets create gs://{self.bucket} "
            "--enable-per-object-retention; terraform: enable_object_retention = true); a bucket with a locked "
            "retention policy protects every object without a per-object lock"
        )

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> ObjectInfo:
        name = self._name(key)
        target = self._target(name)
        data = bytes(data)
        crc = _crc32c_of(data)
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
            if expected and _crc32c_of(data) != expected:
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


# -- the resumable writer ----------------------------------------------------------------------------------------
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
        _update_crc(self._crc, part if isinstance(part, bytes) else bytes(part))

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
                and there.get("crc32c") == _crc32c_b64(self._crc)
            ):
                self._need_status = False
                self._resource = there
                return
        self._session_error(r)

    def _finish(self) -> ObjectInfo:
        """Send the last bytes, then check size and CRC32C of what GCS stored."""
        total = self._committed + len(self._buf)
        expected = _crc32c_b64(self._crc)
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


def _update_crc(checksum: google_crc32c.Checksum, data: bytes) -> None:
    """Add ``data`` to the running CRC32C of an upload (a seam the tests use to simulate a wrong checksum)."""
    checksum.update(data)
