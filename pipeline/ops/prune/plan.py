"""What prune decides for each backup and set: the retention policy per stream, the captures a kept restore point
needs, the members of sets, and the locks that keep a backup or set whole; then the state of the data that goes."""

from __future__ import annotations

import datetime as dt

from pipeline.archive.chains import restore_point
from pipeline.archive.repository import Ref, Repository
from pipeline.archive.retention import Item, apply_policy, parse_created
from pipeline.format.chain import RestorePoint, required_points
from pipeline.format.manifest import Manifest
from pipeline.ops.prune.heads import _cold_warning, _Heads, _lock_of
from pipeline.ops.prune.inventory import _Inventory
from pipeline.ops.prune.report import (
    DELETE,
    KEEP,
    LOCKED,
    BackupPlan,
    PruneOptions,
    PruneReport,
    SetPlan,
    _objects,
)


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
        if not (prune_sets and _hold_locked_sets(repo, plans, set_plans, members, heads, lock_clock)):
            break


def _hold_locked_sets(
    repo: Repository,
    plans: dict[str, BackupPlan],
    set_plans: dict[str, SetPlan],
    members: dict[str, list[str]],
    heads: _Heads,
    lock_clock: dt.datetime,
) -> bool:
    """Each set that loses members goes, unless it is locked: then it keeps them all. Whether any set kept some."""
    changed = False
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
    return changed


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
