"""Objects held in this process's memory: the store behind ``mem://NAME[/prefix]`` (restic's ``mem`` backend).

It exists so that the archive layer can be tested (and tried) with no directory, server or emulator. Every
``open_sink("mem://NAME/...")`` in one process reaches the same named store, because the pipeline opens a repository
by its URL many times in one run; stores live until :meth:`MemorySink.forget` (or the end of :meth:`MemorySink.scratch`)
or the end of the process. Nothing is ever written to disk.

Memory is bounded only by the process: every object, and every part of an unfinished upload, is a ``bytes`` object
held in RAM, with no limit and no eviction. Use it for tests and demonstrations, never for a real archive.

Semantics follow the local directory (sinks/local.py): create-only writes, keys in plain lexicographic order,
short reads past the end, parts in any order that become visible only on ``complete``, unfinished uploads listed.
Beyond it, a store created with ``object_lock=True`` enforces :class:`~sinks.base.Retention` as GCS object retention
does: an object under retention or a legal hold can be neither deleted nor overwritten until its retain-until time
(the store keeps no versions, so refusing is the only way to keep the bytes). Both modes are enforced alike: the
Sink protocol has no way to bypass governance mode.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from sinks.base import (
    AccessDenied,
    Capabilities,
    IncompleteUpload,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    Retention,
    SinkError,
)
from sinks.parts import OrderedParts

SCHEME = "mem://"
DEFAULT_CLASS = "MEMORY"  # what a write that names no storage class records (a directory says "LOCAL")
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


@dataclass
class _Object:
    data: bytes
    modified: dt.datetime
    storage_class: str
    metadata: dict[str, str] = field(default_factory=dict)
    retention: Retention | None = None

    def locked(self, now: dt.datetime) -> bool:
        r = self.retention
        return r is not None and (r.legal_hold or r.until > now)


@dataclass
class _Upload:
    key: str  # the full key in the store (prefix included)
    started: dt.datetime
    last_activity: dt.datetime
    size: int = 0


class _Store:
    """One named store: objects and unfinished uploads by full key, under one lock."""

    def __init__(self, name: str, object_lock: bool) -> None:
        self.name = name
        self.object_lock = object_lock
        self.lock = threading.Lock()
        self.objects: dict[str, _Object] = {}
        self.uploads: dict[str, _Upload] = {}  # by upload id


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def _check_name(name: str) -> str:
    if not name or "/" in name or "\x00" in name or name in (".", ".."):
        raise SinkError(f"invalid memory store name {name!r}")
    return name


class MemorySink:
    # Retention is enforced (on stores created with object_lock); no cold storage, no versions (a delete is final).
    capabilities = Capabilities(retention_lock=True, incomplete_uploads=True)

    def __init__(self, name: str, prefix: str = "") -> None:
        segments = [s for s in prefix.split("/") if s]
        if any(s in (".", "..") or "\x00" in s for s in segments):
            raise SinkError(f"invalid memory store prefix {prefix!r}")
        self.name = _check_name(name)
        self.prefix = "/".join(segments)
        self.url = f"{SCHEME}{name}/{self.prefix}" if self.prefix else f"{SCHEME}{name}"
        with _STORES_LOCK:
            store = _STORES.get(name)
            if store is None:
                store = _STORES[name] = _Store(name, object_lock=False)
        self._store = store

    @classmethod
    def from_url(cls, url: str) -> MemorySink:
        if not url.startswith(SCHEME):
            raise SinkError(f"{url!r} is not a memory store URL (mem://NAME[/prefix])")
        name, _, prefix = url[len(SCHEME) :].partition("/")
        if not name:
            raise SinkError(f"archive URL {url!r} names no memory store (mem://NAME[/prefix])")
        return cls(name, prefix)

    # -- the registry ------------------------------------------------------------------------------------------
    @staticmethod
    def create(name: str | None = None, *, object_lock: bool = False) -> str:
        """Create the store ``name`` (a fresh unique name if None) and return its URL; :class:`SinkError` if a store
        of that name exists. ``object_lock``: the store accepts and enforces retention (an Object Lock bucket)."""
        name = _check_name(name or f"store-{uuid.uuid4().hex[:12]}")
        with _STORES_LOCK:
            if name in _STORES:
                raise SinkError(f"memory store {name!r} already exists")
            _STORES[name] = _Store(name, object_lock)
        return f"{SCHEME}{name}"

    @staticmethod
    def forget(name: str) -> None:
        """Drop the store ``name`` and everything in it, freeing the memory even where a sink on it lingers (it
        then sees an empty store, and its unfinished uploads fail); a store that does not exist is not an error."""
        with _STORES_LOCK:
            store = _STORES.pop(name, None)
        if store is not None:
            with store.lock:
                store.objects.clear()
                store.uploads.clear()

    @staticmethod
    @contextlib.contextmanager
    def scratch(name: str | None = None, *, object_lock: bool = False) -> Iterator[str]:
        """A new store for the ``with`` block: yields its URL, forgets it on the way out."""
        url = MemorySink.create(name, object_lock=object_lock)
        try:
            yield url
        finally:
            MemorySink.forget(url[len(SCHEME) :])

    # -- keys --------------------------------------------------------------------------------------------------
    def _full(self, key: str) -> str:
        parts = key.split("/")
        if not key or "\x00" in key or any(p in ("", ".", "..") for p in parts):
            raise SinkError(f"invalid object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _base(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _what(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _info(self, key: str, obj: _Object, *, metadata: bool = True) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=len(obj.data),
            modified=obj.modified,
            storage_class=obj.storage_class,
            # as S3 and GCS: a HEAD reports user metadata, a listing does not
            metadata=dict(obj.metadata) if metadata else {},
            retention=obj.retention,
        )

    def _check_retention(self, retention: Retention | None) -> Retention | None:
        if retention is None:
            return None
        if retention.mode not in LOCK_MODES:
            raise SinkError(f"unknown Object Lock mode {retention.mode!r} (expected GOVERNANCE or COMPLIANCE)")
        why = self.retention_unsupported()
        if why:
            raise SinkError(f"cannot lock objects in {self.url}: {why}")
        until = _utc(retention.until)
        if until <= _now():
            raise SinkError(f"retain-until {until.isoformat()} is not in the future")
        return Retention(retention.mode, until, retention.legal_hold)

    def _refuse_if_locked(self, key: str, obj: _Object | None, doing: str) -> None:
        """Under the store's lock: :class:`AccessDenied` if ``obj`` is under retention or a legal hold."""
        if obj is None or not obj.locked(_now()):
            return
        r = obj.retention
        assert r is not None
        hold = ", legal hold" if r.legal_hold else ""
        raise AccessDenied(
            f"cannot {doing} {self._what(key)}: it is under retention ({r.mode} until {r.until.isoformat()}{hold})"
        )

    # -- Sink --------------------------------------------------------------------------------------------------
    def is_transient(self, error: BaseException) -> bool:
        return False  # nothing in memory fails one moment and works the next

    def retention_unsupported(self) -> str | None:
        if self._store.object_lock:
            return None
        return f"memory store {self.name} was created without object lock (MemorySink.create(object_lock=True))"

    def open_writer(
        self,
        key: str,
        *,
        part_size: int,
        metadata: dict[str, str] | None = None,
        storage_class: str | None = None,
        retention: Retention | None = None,
    ) -> MemoryObjectWriter:
        full = self._full(key)
        retention = self._check_retention(retention)
        store = self._store
        upload_id = uuid.uuid4().hex
        now = _now()
        with store.lock:
            if full in store.objects:
                raise ObjectExists(f"{self._what(key)} already exists; archive objects are never overwritten")
            store.uploads[upload_id] = _Upload(full, now, now)
        template = _Object(b"", now, storage_class or DEFAULT_CLASS, dict(metadata or {}), retention)
        return MemoryObjectWriter(self, key, full, upload_id, template)

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> ObjectInfo:
        full = self._full(key)
        retention = self._check_retention(retention)
        obj = _Object(bytes(data), _now(), DEFAULT_CLASS, {}, retention)
        store = self._store
        with store.lock:
            old = store.objects.get(full)
            if old is not None:
                if if_absent:
                    raise ObjectExists(f"{self._what(key)} already exists; archive objects are never overwritten")
                self._refuse_if_locked(key, old, "overwrite")
            store.objects[full] = obj
        return self._info(key, obj)

    def _get_object(self, key: str) -> _Object:
        full = self._full(key)
        with self._store.lock:
            obj = self._store.objects.get(full)
        if obj is None:
            raise ObjectNotFound(f"{self._what(key)} does not exist")
        return obj

    def get(self, key: str) -> bytes:
        return self._get_object(key).data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        obj = self._get_object(key)
        if start < 0:
            raise SinkError(f"cannot read {self._what(key)}: invalid range start {start}")
        if length <= 0:
            return b""
        return obj.data[start : start + length]  # past the end: what there is, as S3 and GCS return

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        with self._store.lock:
            obj = self._store.objects.get(full)
        return None if obj is None else self._info(key, obj)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order (as S3 and GCS list them)."""
        dirs = prefix.rpartition("/")[0]
        if "\x00" in prefix or (dirs and any(p in ("", ".", "..") for p in dirs.split("/"))):
            raise SinkError(f"invalid listing prefix {prefix!r}")
        base = self._base()
        want = base + prefix
        with self._store.lock:
            found = sorted((k, o) for k, o in self._store.objects.items() if k.startswith(want))
        for full, obj in found:  # a snapshot: writers are not held up by a slow consumer of the listing
            yield self._info(full[len(base) :], obj, metadata=False)

    def delete(self, key: str) -> None:
        full = self._full(key)
        with self._store.lock:
            self._refuse_if_locked(key, self._store.objects.get(full), "delete")
            self._store.objects.pop(full, None)

    def thaw(self, key: str, *, days: int, tier: str) -> str:
        if self.head(key) is None:
            raise ObjectNotFound(f"{self._what(key)} does not exist")
        return "available"  # memory has no cold storage

    def purge(self, key: str) -> None:
        self.delete(key)  # no versions: a delete is final (and refused under retention)

    def list_incomplete(self, older_than: dt.datetime | None = None) -> list[IncompleteUpload]:
        """Uploads under this sink's prefix that were opened and neither completed nor aborted, with no part
        written since ``older_than``."""
        base = self._base()
        with self._store.lock:
            uploads = [(uid, u.key, u.started, u.last_activity, u.size) for uid, u in self._store.uploads.items()]
        out = [
            IncompleteUpload(key[len(base) :], uid, started, last, size)
            for uid, key, started, last, size in uploads
            if key.startswith(base) and (older_than is None or last < older_than)
        ]
        return sorted(out, key=lambda u: u.upload_id)

    def abort_incomplete(self, item: IncompleteUpload) -> None:
        full = self._full(item.key) if item.key else None
        with self._store.lock:
            upload = self._store.uploads.get(item.upload_id)
            if upload is not None and (full is None or upload.key == full):
                del self._store.uploads[item.upload_id]


class MemoryObjectWriter:
    """Joins parts in number order; parts that arrive early wait in memory (bounded by the caller's concurrency)."""

    def __init__(self, sink: MemorySink, key: str, full: str, upload_id: str, template: _Object) -> None:
        self._sink = sink
        self._key = key
        self._full = full
        self._upload_id = upload_id
        self._template = template  # metadata, storage class and retention of the object to be
        self._lock = threading.Lock()
        self._parts = OrderedParts(key)
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False

    def _check_open(self) -> _Upload:
        """Under the writer's lock: the live upload, or why there is none."""
        if self._done:
            raise SinkError(f"upload of {self._key} is already finished")
        store = self._sink._store
        with store.lock:
            upload = store.uploads.get(self._upload_id)
        if upload is None:
            raise SinkError(f"upload of {self._key} was aborted (by abort_incomplete, or its store was forgotten)")
        return upload

    def write_part(self, number: int, data: bytes, sha256: bytes) -> None:
        with self._lock:
            upload = self._check_open()
            # A copy: the caller may reuse its buffer as soon as this returns.
            self._parts.add(number, bytes(data), sha256)
            while (part := self._parts.take()) is not None:
                self._chunks.append(part.data)
                self._size += len(part.data)
            with self._sink._store.lock:
                upload.last_activity = _now()
                upload.size = self._size

    def complete(self) -> ObjectInfo:
        with self._lock:
            self._check_open()
            self._parts.check_complete()
            self._done = True
            t = self._template
            obj = _Object(b"".join(self._chunks), _now(), t.storage_class, t.metadata, t.retention)
            self._chunks.clear()
            store = self._sink._store
            with store.lock:
                store.uploads.pop(self._upload_id, None)
                if self._full in store.objects:
                    raise ObjectExists(
                        f"{self._sink._what(self._key)} already exists; archive objects are never overwritten"
                    )
                store.objects[self._full] = obj
        return self._sink._info(self._key, obj)

    def abort(self) -> None:
        with self._lock:
            self._done = True
            self._parts.clear()
            self._chunks.clear()
            store = self._sink._store
            with store.lock:
                store.uploads.pop(self._upload_id, None)
