"""What an archive holds, summed up (restic's ``stats``): backups, streams, logical and stored bytes, the age span,
locked bytes, storage classes and sets. No key is needed: everything comes from the catalog ``ls`` prints (refs,
manifests' clear envelopes, a HEAD of each data object) plus one listing of the archive's objects."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from pipeline.archive.catalog import BackupEntry, backup_entries
from pipeline.archive.repository import Repository, storage_error
from pipeline.archive.retention import parse_created
from sinks import SinkError, SinkOptions

SCHEMA = 1  # the version of to_json()'s document: a new field keeps it, a changed or removed one raises it


@dataclass
class StreamStats:
    stream: str
    backups: int = 0
    bytes: int = 0  # logical: the stream's bytes as its manifests' summaries give them
    stored_bytes: int = 0  # the data objects' sizes
    oldest: str | None = None
    newest: str | None = None


@dataclass
class ClassStats:
    backups: int = 0
    stored_bytes: int = 0


@dataclass
class ArchiveStats:
    url: str
    backups: int = 0  # distinct backups with a ref, a readable manifest and their data object
    streams: int = 0
    messages: int = 0
    bytes: int = 0
    stored_bytes: int = 0
    oldest: str | None = None  # the manifest's created time of the oldest / newest backup
    newest: str | None = None
    locked_backups: int = 0  # data objects under retention (a retain-until date ahead, or a legal hold) now
    locked_bytes: int = 0
    storage_classes: dict[str, ClassStats] = field(default_factory=dict)  # of the data objects; "" when unknown
    sets: int = 0  # account backup sets
    objects: int = 0  # everything stored under the archive: data, manifests, refs, sets, key slots, signatures, …
    object_bytes: int = 0
    problems: list[str] = field(default_factory=list)  # refs whose manifest or data object is missing or invalid
    per_stream: list[StreamStats] = field(default_factory=list)  # by stream name

    @property
    def ratio(self) -> float:
        """Logical over stored bytes (5.69 means the stream's bytes take 5.69 times their stored size)."""
        return self.bytes / self.stored_bytes if self.stored_bytes else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["ratio"] = round(self.ratio, 3)
        return {"ok": True, "schema": SCHEMA, **d}


def _locked(e: BackupEntry, now: dt.datetime) -> bool:
    if e.legal_hold:
        return True
    if not e.retain_until:
        return False
    try:
        return parse_created(e.retain_until) > now
    except (ValueError, OverflowError):
        return True  # a lock whose date cannot be read: assume it holds, as the store will


def archive_stats(url: str, sink: SinkOptions | None = None, *, now: dt.datetime | None = None) -> ArchiveStats:
    """The numbers of the archive at ``url`` (``now``: the clock for locks, tests; None: the real time)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    repo = Repository.open(url, sink)
    stats = ArchiveStats(url=repo.url)
    seen: set[str] = set()
    streams: dict[str, StreamStats] = {}
    # Oldest first (by the manifests' times), so the first and last backup seen are the oldest and newest.
    for e in reversed(backup_entries(repo)):
        if e.problem:
            stats.problems.append(f"{e.stream} {e.manifest_id[:12]}: {e.problem}")
            continue
        if e.manifest_id in seen:  # a second ref to the same backup
            continue
        seen.add(e.manifest_id)
        stats.backups += 1
        stats.messages += e.messages
        stats.bytes += e.bytes
        stats.stored_bytes += e.stored_bytes
        s = streams.setdefault(e.stream, StreamStats(e.stream))
        s.backups += 1
        s.bytes += e.bytes
        s.stored_bytes += e.stored_bytes
        s.oldest = s.oldest or e.created
        s.newest = e.created
        cls = stats.storage_classes.setdefault(e.storage_class or "", ClassStats())
        cls.backups += 1
        cls.stored_bytes += e.stored_bytes
        if _locked(e, now):
            stats.locked_backups += 1
            stats.locked_bytes += e.stored_bytes
        stats.oldest = stats.oldest or e.created
        stats.newest = e.created
    stats.per_stream = [streams[k] for k in sorted(streams)]
    stats.streams = len(streams)
    stats.sets = len(repo.list_sets())
    try:
        for info in repo.sink.list(""):
            stats.objects += 1
            stats.object_bytes += info.size
    except SinkError as e:
        raise storage_error(e, f"cannot list {repo.url}") from None
    return stats
