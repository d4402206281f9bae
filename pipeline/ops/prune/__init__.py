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

from pipeline.archive.repository import Repository
from pipeline.ops.prune.execute import _execute
from pipeline.ops.prune.heads import MIN_STORAGE_DAYS, _Heads
from pipeline.ops.prune.inventory import _inventory
from pipeline.ops.prune.leftovers import _abandoned, _dangling, _stray_slots, _unfinished
from pipeline.ops.prune.plan import _backup_plans, _hold_locked, _keep_chain_needs, _keep_set_members, _note_data_state
from pipeline.ops.prune.report import (
    DEFAULT_GRACE,
    DELETE,
    KEEP,
    LOCKED,
    BackupPlan,
    Lock,
    ObjectPlan,
    PruneOptions,
    PruneReport,
    SetPlan,
    _format_grace,
)

__all__ = [
    "DEFAULT_GRACE",
    "DELETE",
    "KEEP",
    "LOCKED",
    "MIN_STORAGE_DAYS",
    "BackupPlan",
    "Lock",
    "ObjectPlan",
    "PruneOptions",
    "PruneReport",
    "SetPlan",
    "prune",
]


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
