"""What prune collects besides backups, once it is older than the grace period: data objects no manifest
references (abandoned uploads), refs whose manifest is gone, key slots added to a manifest that is gone, and
unfinished uploads. Anything an unreadable manifest may belong to is left alone."""

from __future__ import annotations

import datetime as dt

from pipeline.archive.repository import DATA, Ref, Repository, storage_error
from pipeline.archive.verify import LoadedManifest
from pipeline.ops.prune.heads import _cold_warning, _Heads, _lock_of
from pipeline.ops.prune.report import DELETE, KEEP, LOCKED, ObjectPlan, _iso
from sinks import ObjectInfo, SinkError


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
