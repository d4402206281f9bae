"""The catalog of an archive: one entry a backup, from its ref, its manifest's clear envelope and a HEAD of its data
object. No key is needed. ``ls`` prints it, ``stats`` sums it up."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
from dataclasses import asdict, dataclass

from pipeline.archive.repository import Ref, Repository
from pipeline.archive.retention import parse_created
from pipeline.base.errors import JsArchiveError
from sinks import ObjectInfo, SinkError

LIST_WORKERS = 8  # refs, manifests and HEADs read at once


@dataclass
class BackupEntry:
    manifest_id: str
    stream: str
    created: str
    messages: int = 0
    bytes: int = 0
    stored_bytes: int = 0
    snapshot_format: str = ""
    server_version: str = ""
    encrypted: bool = True
    key_slots: int = 0
    problem: str | None = None  # a ref whose manifest is missing or invalid, or a missing data object
    backup_id: str = ""
    origin: str | None = None  # the manifest's clear origin type: "natscli" (import), "pre-restore" (safety backup)
    chain: dict | None = None  # a restore point of a chain: its clear envelope (id, parent, first_seq, last_seq, ...)
    # from a HEAD of the data object (None when it could not be read)
    storage_class: str | None = None
    lock_mode: str | None = None  # GOVERNANCE | COMPLIANCE | BUCKET (GCS retention policy) | "" (legal hold only)
    retain_until: str | None = None
    legal_hold: bool = False

    @property
    def point(self) -> str:
        """How this backup sits in its chain, for a listing: "" (no chain), "full" (a base), or the delta's range."""
        if not self.chain:
            return ""
        if not self.chain.get("parent"):
            return "full"
        return f"delta {self.chain['first_seq']}-{self.chain['last_seq']} after {str(self.chain['parent'])[:12]}"

    @property
    def ratio(self) -> float:
        return self.bytes / self.stored_bytes if self.stored_bytes else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["ratio"] = round(self.ratio, 3)
        return d


def _entry(repo: Repository, ref: Ref, head: bool) -> BackupEntry:
    try:
        m = repo.load_ref(ref)
    except JsArchiveError as e:
        return BackupEntry(
            manifest_id=ref.backup_id, stream=ref.stream, created=ref.time, problem=str(e), backup_id=ref.backup_id
        )
    s = m.summary
    entry = BackupEntry(
        manifest_id=m.id,
        stream=m.stream,
        created=m.created,
        messages=int(s.get("messages", 0)),
        bytes=int(s.get("bytes", 0)),
        stored_bytes=m.data_size,
        snapshot_format=m.snapshot_format,
        server_version=str(m.server.get("version", "")),
        encrypted=m.encrypted,
        key_slots=len(m.key_slots),
        backup_id=m.backup_id,
        origin=_origin_type(m.envelope.get("origin")),
        chain=m.chain,
    )
    if head:
        try:
            info = repo.sink.head(m.data_object)
        except SinkError:
            return entry  # not allowed to look (or a hiccup): the listing itself is still right
        if info is None:
            entry.problem = f"the data object {m.data_object} is missing"
        else:
            _apply_head(entry, info)
    return entry


def _origin_type(origin: object) -> str | None:
    kind = origin.get("type") if isinstance(origin, dict) else None
    return kind if isinstance(kind, str) else None


def _apply_head(entry: BackupEntry, info: ObjectInfo) -> None:
    entry.storage_class = info.storage_class
    if info.retention is not None:
        entry.lock_mode = info.retention.mode
        entry.retain_until = info.retention.until.isoformat() if info.retention.mode else None
        entry.legal_hold = info.retention.legal_hold


def backup_entries(repo: Repository, stream: str | None = None, *, head: bool = True) -> list[BackupEntry]:
    """Every backup with a ref, newest ``created`` first; ``head`` also reads the data object's storage class and
    lock. A ref name's time is only what its writer said, so the order is the manifest's (a ref whose manifest
    cannot be read is placed by its name, the only time it has)."""
    refs = repo.refs(stream)
    with concurrent.futures.ThreadPoolExecutor(LIST_WORKERS, thread_name_prefix="ls") as pool:
        entries = list(pool.map(lambda r: _entry(repo, r, head), refs))
    entries.sort(key=lambda e: (created_time(e.created), e.stream, e.manifest_id), reverse=True)
    return entries


def created_time(created: str) -> dt.datetime:
    """A backup's ``created`` (or its ref name's time) as a time; the earliest time there is if it says none."""
    try:
        return parse_created(created)  # also reads a ref name's basic ISO 8601 time (20261201T192045.123456Z)
    except (ValueError, OverflowError):
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)  # no time at all: last
