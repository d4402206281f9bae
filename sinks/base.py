"""The sink interface: small objects, multipart writers, ranged reads, listing, and what a store can do."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


class SinkError(Exception):
    """A storage operation failed; the message says which object and why."""


class ObjectExists(SinkError):
    """A create-only write found the key already present."""


class ObjectNotFound(SinkError):
    """The key (or the bucket) does not exist."""


class AccessDenied(SinkError):
    """The credentials may not do this: permanent, never retried."""


class ObjectArchived(SinkError):
    """The object sits in a cold storage class and must be thawed (restored) before it can be read."""


class TransientError(SinkError):
    """Throttling, a server error, a dropped connection or a timeout: the same call may well succeed again.

    Adapters make one attempt per call and raise this; :class:`sinks.retry.RetryingSink` decides whether and how
    long to try again. Past the retry budget it reaches the caller as the plain :class:`SinkError` it also is.
    """


class Unsupported(SinkError):
    """The store cannot do this at all (see :class:`Capabilities`), whatever the bucket or credentials."""


@dataclass(frozen=True)
class Capabilities:
    """What a kind of store can do, declared by its adapter; the pipeline asks :func:`require` instead of guessing.

    Whether one bucket is set up for it (Object Lock enabled, object retention on) is a separate, per-bucket
    question: :meth:`Sink.retention_unsupported`.
    """

    retention_lock: bool = False  # can enforce Retention (S3 Object Lock, GCS object retention / bucket lock)
    cold_storage: bool = False  # objects can be archived (GLACIER, DEEP_ARCHIVE) and must be thawed to be read
    versions: bool = False  # purge removes every version by id (a plain delete would keep the bytes)
    incomplete_uploads: bool = False  # list_incomplete can find abandoned uploads (otherwise it returns [])


def require(sink: Sink, capability: str, *, what: str) -> None:
    """Raise :class:`Unsupported` ("<url> cannot <what>") unless ``sink`` declares ``capability``."""
    if capability not in Capabilities.__dataclass_fields__:
        raise ValueError(f"unknown sink capability {capability!r}")
    if not getattr(sink.capabilities, capability):
        raise Unsupported(f"{sink.url} cannot {what}")


@dataclass(frozen=True)
class SinkOptions:
    """Settings a sink may need beyond its URL. Credentials always come from the SDK's default chain."""

    # S3-compatible stores and emulators (--s3-endpoint / $AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL)
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    sse_kms_key: str | None = None  # S3 server-side encryption with this KMS key
    # The longest one call may spend retrying transient errors (throttling, 5xx, resets). The pipeline relies on
    # this staying under ~4 s so a slow store never stalls the NATS side into its 5 s timeout.
    retry_budget: float = 3.5
    # Bandwidth limits in bytes per second for the whole process (sinks.limits); None or 0: unlimited.
    limit_upload: int | None = None
    limit_download: int | None = None


@dataclass(frozen=True)
class Retention:
    """Object Lock / bucket-lock retention to apply to new objects."""

    mode: str  # GOVERNANCE | COMPLIANCE
    until: dt.datetime
    legal_hold: bool = False


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: dt.datetime | None = None
    storage_class: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    retention: Retention | None = None  # as the store reports it (mode, retain-until, legal hold)
    archived: bool = False  # cold (GLACIER / DEEP_ARCHIVE) and not readable until thawed
    thaw: str | None = None  # None | "ongoing" | "available" (a restored copy of an archived object)


@dataclass(frozen=True)
class IncompleteUpload:
    """An upload that was started and never completed or aborted: it is invisible, but may still cost storage."""

    key: str  # the object it would have become ("" when the store does not say: local temporary files)
    upload_id: str  # the S3 UploadId; the temporary file's name for a local directory
    started: dt.datetime | None = None
    last_activity: dt.datetime | None = None  # the newest of ``started`` and its last written part
    size: int | None = None  # bytes stored so far, when known


class ObjectWriter(Protocol):
    """One large object written as numbered parts (1-based) that are concatenated in number order."""

    def write_part(self, number: int, data: bytes, sha256: bytes) -> None:
        """Store part ``number``. Thread-safe; parts may arrive in any order (a writer may hold a call back until
        its predecessors have arrived, to bound memory)."""

    def complete(self) -> ObjectInfo:
        """Make the object visible under its key. Every part from 1 to the highest number must have been written."""

    def abort(self) -> None:
        """Discard everything written; the key stays absent. Safe to call more than once."""


class Sink(Protocol):
    url: str
    capabilities: Capabilities

    def is_transient(self, error: BaseException) -> bool:
        """Whether ``error``, raised by one of this sink's calls, is worth another try (see :class:`TransientError`)."""

    def retention_unsupported(self) -> str | None:
        """Why this bucket cannot lock objects (asked before a locked backup starts); None if it can. Only
        meaningful where ``capabilities.retention_lock`` holds."""

    def open_writer(
        self,
        key: str,
        *,
        part_size: int,
        metadata: dict[str, str] | None = None,
        storage_class: str | None = None,
        retention: Retention | None = None,
    ) -> ObjectWriter: ...

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> ObjectInfo:
        """A small object, written whole; with ``if_absent`` it fails with :class:`ObjectExists` if present."""

    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, start: int, length: int) -> bytes: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def thaw(self, key: str, *, days: int, tier: str) -> str:
        """Start making an archived object readable for ``days``; returns "started", "ongoing" or "available"."""

    def purge(self, key: str) -> None:
        """Delete ``key`` for good. On a versioned store every version and delete marker of it is removed by its
        version id (a plain delete would only add a delete marker and keep the bytes); raises
        :class:`AccessDenied`, before deleting anything, if a version is under retention or a legal hold. Where
        there are no versions this is :meth:`delete`."""

    def list_incomplete(self, older_than: dt.datetime | None = None) -> list[IncompleteUpload]:
        """Uploads that never completed and saw no activity since ``older_than`` (None: all of them). Stores
        that cannot list unfinished uploads return []."""

    def abort_incomplete(self, item: IncompleteUpload) -> None:
        """Discard an unfinished upload returned by :meth:`list_incomplete`; already gone is not an error."""


class SinkWrapper:
    """A sink around another, restic's Backend wrappers: every call goes to ``inner`` unless a subclass changes it,
    and so do attributes outside the protocol (``bucket``, ``root``, ``client`` ...). Retries
    (:class:`sinks.retry.RetryingSink`) and bandwidth limits (:class:`sinks.limits.LimitedSink`) are wrappers."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on the wrapper; "inner" is guarded so a half-built copy cannot recurse.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def is_transient(self, error: BaseException) -> bool:
        return self.inner.is_transient(error)

    def retention_unsupported(self) -> str | None:
        return self.inner.retention_unsupported()

    def open_writer(
        self,
        key: str,
        *,
        part_size: int,
        metadata: dict[str, str] | None = None,
        storage_class: str | None = None,
        retention: Retention | None = None,
    ) -> ObjectWriter:
        return self.inner.open_writer(
            key, part_size=part_size, metadata=metadata, storage_class=storage_class, retention=retention
        )

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> ObjectInfo:
        return self.inner.put(key, data, if_absent=if_absent, retention=retention)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.inner.get_range(key, start, length)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def thaw(self, key: str, *, days: int, tier: str) -> str:
        return self.inner.thaw(key, days=days, tier=tier)

    def purge(self, key: str) -> None:
        self.inner.purge(key)

    def list_incomplete(self, older_than: dt.datetime | None = None) -> list[IncompleteUpload]:
        return self.inner.list_incomplete(older_than)

    def abort_incomplete(self, item: IncompleteUpload) -> None:
        self.inner.abort_incomplete(item)
