"""What ``jsarchive prune`` plans and reports: its options, a plan per backup, set and leftover object (keep,
delete or locked, and why), and the whole report with its exit code."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from pipeline.archive.repository import Repository
from pipeline.archive.retention import Policy
from pipeline.base.errors import JsArchiveError
from sinks import SinkOptions

DEFAULT_GRACE = dt.timedelta(hours=24)
KEEP, DELETE, LOCKED = "keep", "delete", "locked"


@dataclass
class PruneOptions:
    url: str
    policy: Policy = field(default_factory=Policy)
    stream: str | None = None  # apply the policy to this stream only (and collect nothing else)
    confirm: bool = False  # False: a dry run
    grace: dt.timedelta = DEFAULT_GRACE
    prune_sets: bool = False
    now: dt.datetime | None = None  # the clock for ages and grace (tests); None: the real time
    workers: int = 8
    sink: SinkOptions = field(default_factory=SinkOptions)


@dataclass
class Lock:
    key: str
    mode: str
    retain_until: str | None
    legal_hold: bool

    def describe(self) -> str:
        until = f" until {self.retain_until}" if self.retain_until else ""
        return (
            f"{self.key}: {self.mode or 'legal hold'}{until}{' + legal hold' if self.legal_hold and self.mode else ''}"
        )


@dataclass
class BackupPlan:
    manifest_id: str
    backup_id: str
    stream: str
    created: str
    stored_bytes: int
    action: str  # keep | delete | locked (the policy would delete it; retention keeps it)
    reasons: list[str] = field(default_factory=list)  # why it is kept: policy rules, "set <id>", …
    refs: list[str] = field(default_factory=list)
    data_object: str = ""
    added_slots: list[str] = field(default_factory=list)  # keyslots/<manifest id>/… objects
    signatures: list[str] = field(default_factory=list)  # signatures/<manifest id>/… objects
    storage_class: str | None = None
    locks: list[Lock] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    deleted: bool = False
    error: str | None = None
    chain: str | None = None  # the chain's id (its base's backup_id) when the backup is a restore point of one
    parent: str | None = None  # a delta's parent manifest id

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SetPlan:
    set_id: str
    finished: str
    action: str  # keep | delete | locked
    members: int
    pruned_members: list[str] = field(default_factory=list)  # manifest ids the policy removes
    locks: list[Lock] = field(default_factory=list)
    deleted: bool = False
    error: str | None = None
    signatures: list[str] = field(default_factory=list)  # signatures/<set id>/… objects

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ObjectPlan:
    """Something that is not a backup: an abandoned data object, a dangling ref, an unfinished upload."""

    kind: str  # "abandoned-data" | "dangling-ref" | "stray-key-slot" | "unfinished-upload"
    key: str
    size: int | None
    modified: str | None
    action: str  # keep | delete | locked
    reason: str
    upload_id: str | None = None
    storage_class: str | None = None
    locks: list[Lock] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    deleted: bool = False
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class PruneReport:
    url: str
    dry_run: bool
    policy: str
    grace: str
    prune_sets: bool
    stream: str | None = None
    backups: list[BackupPlan] = field(default_factory=list)
    sets: list[SetPlan] = field(default_factory=list)
    objects: list[ObjectPlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[JsArchiveError] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def exit_code(self) -> int:
        return self.errors[0].exit_code if self.errors else 0

    @property
    def locked(self) -> list[Lock]:
        out = [lk for b in self.backups if b.action == LOCKED for lk in b.locks]
        out += [lk for s in self.sets if s.action == LOCKED for lk in s.locks]
        return out + [lk for o in self.objects if o.action == LOCKED for lk in o.locks]

    def to_delete(self) -> tuple[int, int]:
        """(backups, bytes of their data objects) the run deletes (dry run: would delete)."""
        gone = [b for b in self.backups if b.action == DELETE]
        return len(gone), sum(b.stored_bytes for b in gone)

    def to_json(self) -> dict:
        n, nbytes = self.to_delete()
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "url": self.url,
            "policy": self.policy,
            "grace": self.grace,
            "prune_sets": self.prune_sets,
            "stream": self.stream,
            "backups": [b.to_json() for b in self.backups],
            "sets": [s.to_json() for s in self.sets],
            "objects": [o.to_json() for o in self.objects],
            "locked": [asdict(lk) for lk in self.locked],
            "warnings": self.warnings,
            "errors": [{"kind": e.kind, "exit_code": e.exit_code, "message": str(e)} for e in self.errors],
            "delete_backups": n,
            "delete_bytes": nbytes,
            "seconds": round(self.seconds, 3),
        }


def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.timezone.utc).isoformat() if t is not None else None


def _format_grace(grace: dt.timedelta) -> str:
    hours = grace.total_seconds() / 3600
    return f"{hours / 24:g}d" if hours >= 24 and hours % 24 == 0 else f"{hours:g}h"


def _objects(repo: Repository, p: BackupPlan) -> list[str]:
    """A backup's objects in the order they are deleted: refs (it disappears from listings), the manifest (the
    commit point: from here on it does not exist), slots added later, and last the data object."""
    return [*p.refs, repo.manifest_key(p.manifest_id), *p.added_slots, *p.signatures, p.data_object]
