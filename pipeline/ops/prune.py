"""Delete what a retention policy no longer keeps, and collect what was never finished: :func:`prune`.

What it does, per run:

1. Lists data objects and refs, then manifests and sets (in that order, so a backup committing meanwhile is seen
   as complete or, at worst, as fresh objects inside the grace period).
2. Applies the policy (:mod:`pipeline.archive.retention`) to each stream's backups (every valid manifest counts, with or
   without a ref; every restore point of a chain, base or delta, counts as one). A capture that a kept restore
   point needs (:func:`pipeline.format.chain.required_points`: its path back to its base) is kept too (reason
   ``needed by <id>``), whatever the policy says of it. Backups named by an account **set** are kept (reason
   ``set <id>``) unless ``prune_sets``; then a set that loses a member is deleted first, so no set ever names a
   missing manifest.
3. HEADs every object it would delete. A backup with any object (ref, manifest, data) under retention or a legal
   hold is kept whole and reported with its retain-until date; so is a set, and then its members. Deleting cold
   data before the class's minimum storage duration is a warning (the store bills the remainder).
4. Collects data objects that no manifest references (abandoned uploads) and refs whose manifest is gone, once
   they are older than ``grace``; aborts unfinished uploads (S3 multipart uploads, the local sink's temporary
   files) idle for longer than ``grace``.

Without ``confirm`` nothing is deleted (a dry run). A chain whose every point goes is deleted newest point first,
one point at a time, stopping at the first failure, so a crash leaves a shorter chain and never a hole. Deleting a
backup removes its refs, then its manifest, then its data object, each with :meth:`Sink.purge` (every version,
never just a delete marker), and stops at the first failure, so a half-deleted backup is never listed and at worst
leaves an abandoned data object for the next run.
A delete the sink refuses because the archive was tampered with (the local sink's :class:`ArchiveTampered`: a
symlink where an object belongs) stops every further delete of the run; the local sink never removes anything but
a regular file reached without following a symlink, so no run deletes outside the archive.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pipeline.archive.chains import restore_point
from pipeline.archive.repository import DATA, KEYSLOTS, Ref, Repository, storage_error
from pipeline.archive.retention import Item, Policy, apply_policy, parse_created
from pipeline.archive.signing import SIGNATURES
from pipeline.archive.verify import LoadedManifest, load_quietly, manifest_names
from pipeline.base.errors import JsArchiveError
from pipeline.format.chain import RestorePoint, required_points
from pipeline.format.manifest import Manifest
from pipeline.format.sets import BackupSet, parse_set
from sinks import ObjectInfo, SinkError, SinkOptions
from sinks.base import IncompleteUpload
from sinks.local import ArchiveTampered

DEFAULT_GRACE = dt.timedelta(hours=24)
# Minimum storage durations in days: deleting earlier is billed as if the object had stayed that long.
MIN_STORAGE_DAYS = {
    "STANDARD_IA": 30,
    "ONEZONE_IA": 30,
    "GLACIER_IR": 90,
    "GLACIER": 90,
    "DEEP_ARCHIVE": 180,
    "NEARLINE": 30,
    "COLDLINE": 90,
    "ARCHIVE": 365,
}
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


def _lock_of(info: ObjectInfo | None, clock: dt.datetime) -> Lock | None:
    r = info.retention if info is not None else None
    if r is None or not (r.legal_hold or r.until > clock):
        return None
    return Lock(info.key, r.mode, _iso(r.until) if r.mode else None, r.legal_hold)


def _cold_warning(info: ObjectInfo | None, now: dt.datetime) -> str | None:
    if info is None or info.modified is None:
        return None
    days = MIN_STORAGE_DAYS.get((info.storage_class or "").upper())
    if days is None:
        return None
    age = now - info.modified
    if age >= dt.timedelta(days=days):
        return None
    early = dt.timedelta(days=days) - age
    return (
        f"{info.key} is in {info.storage_class}, which has a minimum storage duration of {days} days; it is "
        f"{age.days} days old, so deleting it now is billed as {early.days + (1 if early.seconds else 0)} more days"
    )


def _format_grace(grace: dt.timedelta) -> str:
    hours = grace.total_seconds() / 3600
    return f"{hours / 24:g}d" if hours >= 24 and hours % 24 == 0 else f"{hours:g}h"


class _Heads:
    """HEAD each key at most once, several at a time."""

    def __init__(self, repo: Repository, pool: concurrent.futures.Executor) -> None:
        self.repo = repo
        self.pool = pool
        self.cache: dict[str, ObjectInfo | None] = {}

    def fetch(self, keys: list[str]) -> None:
        todo = [k for k in dict.fromkeys(keys) if k not in self.cache]

        def one(key: str) -> ObjectInfo | None:
            try:
                return self.repo.sink.head(key)
            except SinkError as e:
                raise storage_error(e, f"cannot check {key} before deleting it") from None

        for key, info in zip(todo, self.pool.map(one, todo), strict=True):
            self.cache[key] = info

    def __getitem__(self, key: str) -> ObjectInfo | None:
        return self.cache[key]


def prune(opts: PruneOptions, say: Callable[[str], None] = lambda _m: None) -> PruneReport:
    """Plan (and with ``opts.confirm`` carry out) a prune of the archive at ``opts.url``; see the module doc."""
    started = time.monotonic()
    real_now = dt.datetime.now(dt.timezone.utc)
    now = opts.now or real_now
    lock_clock = min(now, real_now)  # an object counts as locked if it is by either clock
    repo = Repository.open(opts.url, opts.sink)
    report = PruneReport(
        url=repo.url,
        dry_run=not opts.confirm,
        policy=opts.policy.describe(),
        grace=_format_grace(opts.grace),
        prune_sets=opts.prune_sets,
        stream=opts.stream,
    )
    with concurrent.futures.ThreadPoolExecutor(max(1, opts.workers), thread_name_prefix="prune") as pool:
        heads = _Heads(repo, pool)
        # 1. what is there: data and refs before manifests (see the module doc)
        inv = _inventory(repo, opts.stream, pool, report)
        # 2. the policy, per stream; members of sets are kept unless sets are pruned too
        plans = _backup_plans(inv, opts, now, report)
        set_plans = {
            s.id: SetPlan(s.id, s.finished, KEEP, len(s.streams), signatures=sorted(inv.signed.get(s.id, [])))
            for s in inv.sets
        }
        members = {s.id: [e["manifest_id"] for e in s.streams] for s in inv.sets}
        if not opts.prune_sets:
            _keep_set_members(plans, members)
        # 3. locks: HEAD everything that would go; locked backups and sets stay whole, and so does every capture
        #    a kept or locked restore point needs (to a fixed point: keeping a capture can keep a set's member)
        while True:
            _hold_locked(repo, plans, set_plans, members, heads, lock_clock, opts.prune_sets)
            if not _keep_chain_needs(plans, inv.valid):
                break
        _note_data_state(plans, heads, now)
        report.backups = sorted(plans.values(), key=lambda p: (p.stream, p.created, p.manifest_id), reverse=True)
        report.backups.sort(key=lambda p: p.stream)
        report.sets = sorted(set_plans.values(), key=lambda s: (s.finished, s.set_id), reverse=True)

        # 4. leftovers
        cutoff = now - opts.grace
        if opts.stream is None:
            report.objects += _abandoned(repo, inv.data_objects, inv.valid, inv.invalid, cutoff, now, lock_clock, heads)
        report.objects += _dangling(repo, inv.refs, inv.ref_infos, inv.valid, inv.invalid, cutoff, lock_clock, heads)
        if opts.stream is None:
            report.objects += _stray_slots(inv.slot_objects, inv.loaded, cutoff, lock_clock, heads)
            report.objects += _unfinished(repo, cutoff)

        if opts.confirm:
            _execute(repo, report, pool, say)
    report.seconds = time.monotonic() - started
    return report


@dataclass
class _Inventory:
    """What the archive holds, read once, in the order that makes a concurrent backup safe (the module doc)."""

    data_objects: list[ObjectInfo]
    refs: list[Ref]
    ref_infos: dict[str, ObjectInfo]
    slot_objects: dict[str, list[ObjectInfo]]  # manifest id -> keyslots/<id>/… (slots added later)
    signed: dict[str, list[str]]  # manifest or set id -> signatures/<id>/… (they go with what they sign)
    loaded: dict[str, LoadedManifest]
    valid: dict[str, Manifest]
    invalid: list[LoadedManifest]
    sets: list[BackupSet]


def _inventory(
    repo: Repository, stream: str | None, pool: concurrent.futures.Executor, report: PruneReport
) -> _Inventory:
    try:
        data_objects = [] if stream else list(repo.sink.list(DATA))
    except SinkError as e:
        raise storage_error(e, f"cannot list {repo.url}") from None
    refs = repo.refs(stream)
    ref_infos = _listing(repo, f"refs/{stream}/" if stream else "refs/")
    slot_objects: dict[str, list[ObjectInfo]] = {}
    for info in _listing(repo, KEYSLOTS).values():
        slot_objects.setdefault(info.key[len(KEYSLOTS) :].partition("/")[0], []).append(info)
    signed: dict[str, list[str]] = {}
    for key in _listing(repo, SIGNATURES):
        signed.setdefault(key[len(SIGNATURES) :].partition("/")[0], []).append(key)
    ids, _stray = manifest_names(repo)
    loaded = dict(zip(ids, pool.map(lambda m: load_quietly(repo, m), ids), strict=True))
    valid = {mid: x.manifest for mid, x in loaded.items() if x.manifest is not None}
    invalid = [x for x in loaded.values() if x.manifest is None]
    for x in invalid:
        report.warnings.append(f"manifests/{x.id} is left alone: {x.problem}")
    sets = []
    for sid in sorted(repo.list_sets()):
        try:
            sets.append(parse_set(repo.load_set(sid), sid))
        except JsArchiveError as e:
            report.warnings.append(f"sets/{sid} is left alone: {e}")
    return _Inventory(data_objects, refs, ref_infos, slot_objects, signed, loaded, valid, invalid, sets)


def _backup_plans(inv: _Inventory, opts: PruneOptions, now: dt.datetime, report: PruneReport) -> dict[str, BackupPlan]:
    """What the policy does with each backup of each stream (a backup whose time cannot be read is kept)."""
    by_stream: dict[str, list] = {}
    for m in inv.valid.values():
        if opts.stream is None or m.stream == opts.stream:
            by_stream.setdefault(m.stream, []).append(m)
    refs_of: dict[tuple[str, str], list[Ref]] = {}
    for r in inv.refs:
        refs_of.setdefault((r.stream, r.backup_id), []).append(r)
    plans: dict[str, BackupPlan] = {}
    for stream in sorted(by_stream):
        ms = {m.id: m for m in by_stream[stream]}
        items = []
        for m in ms.values():
            try:
                items.append(Item(m.id, parse_created(m.created)))
            except ValueError:
                report.warnings.append(f"backup {m.id[:12]} has an unreadable created time {m.created!r}: kept")
        for d in apply_policy(items, opts.policy, now=now):
            m = ms[d.id]
            plans[m.id] = BackupPlan(
                manifest_id=m.id,
                backup_id=m.backup_id,
                stream=m.stream,
                created=m.created,
                stored_bytes=m.data_size,
                action=KEEP if d.keep else DELETE,
                reasons=list(d.reasons),
                refs=[r.key for r in refs_of.get((m.stream, m.backup_id), [])],
                data_object=m.data_object,
                added_slots=[i.key for i in inv.slot_objects.get(m.id, [])],
                signatures=sorted(inv.signed.get(m.id, [])),
                chain=m.chain["id"] if m.chain else None,
                parent=m.chain.get("parent") if m.chain else None,
            )
        for m in ms.values():
            if m.id not in plans:  # unreadable time
                plans[m.id] = BackupPlan(
                    m.id, m.backup_id, m.stream, m.created, m.data_size, KEEP, ["unreadable created time"]
                )
    return plans


def _keep_chain_needs(plans: dict[str, BackupPlan], valid: dict[str, Manifest]) -> bool:
    """Keep every capture that a kept (or locked) restore point needs; whether anything changed."""
    by_stream: dict[str, list[RestorePoint]] = {}
    for mid in plans:
        m = valid.get(mid)
        if m is not None:
            by_stream.setdefault(m.stream, []).append(restore_point(m))
    changed = False
    for points in by_stream.values():
        if not any(p.parent is not None for p in points):
            continue  # no deltas: every backup restores alone
        for p in points:
            if plans[p.id].action == DELETE:
                continue
            for need in required_points(points, [p.id]) - {p.id}:
                plan = plans[need]
                if plan.action == DELETE:
                    plan.action = KEEP
                    plan.reasons.append(f"needed by {p.id[:12]}")
                    changed = True
    return changed


def _keep_set_members(plans: dict[str, BackupPlan], members: dict[str, list[str]]) -> None:
    for sid, mids in members.items():
        for mid in mids:
            p = plans.get(mid)
            if p is not None and p.action == DELETE:
                p.action = KEEP
            if p is not None and p.action == KEEP and f"set {sid[:12]}" not in p.reasons:
                p.reasons.append(f"set {sid[:12]}")


def _hold_locked(
    repo: Repository,
    plans: dict[str, BackupPlan],
    set_plans: dict[str, SetPlan],
    members: dict[str, list[str]],
    heads: _Heads,
    lock_clock: dt.datetime,
    prune_sets: bool,
) -> None:
    """A backup with any locked object is kept whole; a set that would lose members but is locked keeps them all.
    Repeated to a fixed point: a locked set that keeps its members changes what the other sets would lose."""
    for p in plans.values():
        if p.action == DELETE:
            heads.fetch(_objects(repo, p))
    while True:
        for p in plans.values():
            if p.action != DELETE:
                continue
            locks = [lk for k in _objects(repo, p) if (lk := _lock_of(heads[k], lock_clock))]
            if locks:
                p.action, p.locks = LOCKED, locks
        changed = False
        if prune_sets:
            for sid, sp in set_plans.items():
                gone = [mid for mid in members[sid] if mid in plans and plans[mid].action == DELETE]
                sp.pruned_members = gone
                if sp.action == LOCKED:
                    continue
                sp.action = DELETE if gone else KEEP
                if gone:
                    heads.fetch([repo.set_key(sid)])
                    lock = _lock_of(heads[repo.set_key(sid)], lock_clock)
                    if lock is not None:
                        sp.action, sp.locks = LOCKED, [lock]
                        for mid in gone:
                            plans[mid].action = KEEP
                            plans[mid].reasons.append(f"locked set {sid[:12]}")
                        changed = True
        if not changed:
            break


def _note_data_state(plans: dict[str, BackupPlan], heads: _Heads, now: dt.datetime) -> None:
    """For each backup that goes: its data object's storage class, and whether deleting it early costs."""
    for p in plans.values():
        if p.action == DELETE:
            info = heads[p.data_object]
            p.storage_class = info.storage_class if info is not None else None
            if info is None:
                p.warnings.append(f"{p.data_object} is already missing")
            elif (w := _cold_warning(info, now)) is not None:
                p.warnings.append(w)


def _depth(p: BackupPlan, ids: dict[str, BackupPlan]) -> int:
    """How many of ``ids`` lie on ``p``'s path back to its base (bounded: a loop in hostile parents ends it)."""
    seen: set[str] = set()
    n, cur = 0, p
    while cur.parent in ids and cur.manifest_id not in seen:
        seen.add(cur.manifest_id)
        n, cur = n + 1, ids[cur.parent]
    return n


def _deletion_order(gone: list[BackupPlan]) -> list[list[BackupPlan]]:
    """The backups to delete, one list per chain (each newest point first; a plain backup is a list of one), so
    that chains can go in parallel and each point only after every point that descends from it."""
    by_chain: dict[str, list[BackupPlan]] = {}
    for p in gone:
        by_chain.setdefault(p.chain or p.manifest_id, []).append(p)
    out = []
    for points in by_chain.values():
        ids = {p.manifest_id: p for p in points}
        depth = {p.manifest_id: _depth(p, ids) for p in points}
        out.append(sorted(points, key=lambda p: (depth[p.manifest_id], p.created, p.manifest_id), reverse=True))
    return out


def _objects(repo: Repository, p: BackupPlan) -> list[str]:
    """A backup's objects in the order they are deleted: refs (it disappears from listings), the manifest (the
    commit point: from here on it does not exist), slots added later, and last the data object."""
    return [*p.refs, repo.manifest_key(p.manifest_id), *p.added_slots, *p.signatures, p.data_object]


def _listing(repo: Repository, prefix: str) -> dict[str, ObjectInfo]:
    try:
        return {i.key: i for i in repo.sink.list(prefix)}
    except SinkError as e:
        raise storage_error(e, f"cannot list {repo.url}") from None


def _mentioned(backup_id: str, invalid: list[LoadedManifest]) -> bool:
    """Whether an unreadable manifest may belong to this backup (then its objects are left alone)."""
    return any(x.raw is not None and backup_id.encode() in x.raw for x in invalid)


def _abandoned(
    repo: Repository,
    data_objects: list[ObjectInfo],
    valid: dict,
    invalid: list[LoadedManifest],
    cutoff: dt.datetime,
    now: dt.datetime,
    lock_clock: dt.datetime,
    heads: _Heads,
) -> list[ObjectPlan]:
    used = {m.data_object for m in valid.values()}
    out = []
    for info in data_objects:
        if info.key in used:
            continue
        backup_id = info.key[len(DATA) :]
        plan = ObjectPlan(
            "abandoned-data",
            info.key,
            info.size,
            _iso(info.modified),
            DELETE,
            "no manifest references it (an upload that never committed)",
            storage_class=info.storage_class,
        )
        if _mentioned(backup_id, invalid):
            plan.action, plan.reason = KEEP, "an invalid manifest may belong to it: check with `jsarchive verify`"
        elif info.modified is not None and info.modified >= cutoff:
            plan.action, plan.reason = KEEP, "younger than the grace period (a backup may be committing)"
        else:
            heads.fetch([info.key])
            head = heads[info.key]
            if head is None:
                continue  # gone meanwhile
            if (lock := _lock_of(head, lock_clock)) is not None:
                plan.action, plan.locks = LOCKED, [lock]
            elif (w := _cold_warning(head, now)) is not None:
                plan.warnings.append(w)
        out.append(plan)
    return out


def _dangling(
    repo: Repository,
    refs: list[Ref],
    ref_infos: dict[str, ObjectInfo],
    valid: dict,
    invalid: list[LoadedManifest],
    cutoff: dt.datetime,
    lock_clock: dt.datetime,
    heads: _Heads,
) -> list[ObjectPlan]:
    backups = {(m.stream, m.backup_id) for m in valid.values()}
    out = []
    for r in refs:
        if (r.stream, r.backup_id) in backups or _mentioned(r.backup_id, invalid):
            continue
        info = ref_infos.get(r.key)
        plan = ObjectPlan(
            "dangling-ref",
            r.key,
            info.size if info else None,
            _iso(info.modified) if info else None,
            DELETE,
            "its backup has no manifest",
        )
        if info is not None and info.modified is not None and info.modified >= cutoff:
            plan.action, plan.reason = KEEP, "younger than the grace period"
        else:
            heads.fetch([r.key])
            if (lock := _lock_of(heads[r.key], lock_clock)) is not None:
                plan.action, plan.locks = LOCKED, [lock]
        out.append(plan)
    return out


def _stray_slots(
    slot_objects: dict[str, list[ObjectInfo]],
    loaded: dict[str, LoadedManifest],
    cutoff: dt.datetime,
    lock_clock: dt.datetime,
    heads: _Heads,
) -> list[ObjectPlan]:
    """Key slots added to a manifest that no longer exists (its backup was pruned while the slot was written)."""
    out = []
    for mid, infos in sorted(slot_objects.items()):
        if mid in loaded:
            continue
        for info in infos:
            plan = ObjectPlan(
                "stray-key-slot", info.key, info.size, _iso(info.modified), DELETE, "its manifest does not exist"
            )
            if info.modified is not None and info.modified >= cutoff:
                plan.action, plan.reason = KEEP, "younger than the grace period"
            else:
                heads.fetch([info.key])
                if (lock := _lock_of(heads[info.key], lock_clock)) is not None:
                    plan.action, plan.locks = LOCKED, [lock]
            out.append(plan)
    return out


def _unfinished(repo: Repository, cutoff: dt.datetime) -> list[ObjectPlan]:
    try:
        items = repo.sink.list_incomplete(None)
    except SinkError as e:
        raise storage_error(e, f"cannot list unfinished uploads in {repo.url}") from None
    out = []
    for u in items:
        last = u.last_activity or u.started
        fresh = last is not None and last >= cutoff
        out.append(
            ObjectPlan(
                "unfinished-upload",
                u.key or f".incomplete/{u.upload_id}",
                u.size,
                _iso(last),
                KEEP if fresh else DELETE,
                "younger than the grace period (an upload may be running)"
                if fresh
                else "an upload that never completed, idle for longer than the grace period",
                upload_id=u.upload_id,
            )
        )
    return out


# -- carrying it out ------------------------------------------------------------------------------------------------


def _execute(
    repo: Repository, report: PruneReport, pool: concurrent.futures.Executor, say: Callable[[str], None]
) -> None:
    # A deletion the sink refused because the archive was tampered with (a symlink where an object belongs) ends
    # the run: whoever planted it may have planted more, so nothing else is deleted until someone has looked.
    tampered: list[str] = []

    def stopped() -> str | None:
        return f"not deleted: prune stopped when it found {tampered[0]}" if tampered else None

    def purge(key: str) -> None:
        try:
            repo.sink.purge(key)
        except SinkError as e:
            if isinstance(e, ArchiveTampered):
                tampered.append(key)
            raise storage_error(e, f"cannot delete {key}") from None

    # sets first: no set may name a manifest that is gone
    for sp in report.sets:
        if sp.action != DELETE:
            continue
        if stopped():
            sp.error = stopped()
            continue
        try:
            purge(repo.set_key(sp.set_id))
            for key in sp.signatures:  # after the set: a signature of a set that is gone signs nothing
                purge(key)
            sp.deleted = True
            say(f"deleted set {sp.set_id[:12]}")
        except JsArchiveError as e:
            sp.error = str(e)
            report.errors.append(e)
            for mid in sp.pruned_members:  # its members stay: the set still names them
                for p in report.backups:
                    if p.manifest_id == mid and p.action == DELETE:
                        p.action = KEEP
                        p.reasons.append(f"set {sp.set_id[:12]} could not be deleted")

    def backup(p: BackupPlan) -> None:
        try:
            for key in _objects(repo, p):  # the commit order, reversed
                if stopped():
                    p.error = stopped()
                    return
                purge(key)
            p.deleted = True
            say(f"deleted backup {p.manifest_id[:12]} of {p.stream} ({p.created})")
        except JsArchiveError as e:
            p.error = str(e)
            report.errors.append(e)

    def chain(points: list[BackupPlan]) -> None:
        for p in points:  # newest first: what is left is always a chain without a hole
            backup(p)
            if not p.deleted:
                return

    list(pool.map(chain, _deletion_order([p for p in report.backups if p.action == DELETE])))

    def leftover(o: ObjectPlan) -> None:
        if stopped():
            o.error = stopped()
            return
        try:
            if o.kind == "unfinished-upload":
                try:
                    key = "" if o.key.startswith(".incomplete/") else o.key
                    repo.sink.abort_incomplete(IncompleteUpload(key, o.upload_id or ""))
                except SinkError as e:
                    if isinstance(e, ArchiveTampered):
                        tampered.append(o.key)
                    raise storage_error(e, f"cannot abort the upload of {o.key}") from None
            else:
                purge(o.key)
            o.deleted = True
            say(f"deleted {o.kind} {o.key}")
        except JsArchiveError as e:
            o.error = str(e)
            report.errors.append(e)

    list(pool.map(leftover, [o for o in report.objects if o.action == DELETE]))
