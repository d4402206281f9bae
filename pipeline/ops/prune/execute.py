"""Carrying out a confirmed prune: sets first, then each chain newest point first (chains in parallel), each backup
refs → manifest → slots → signatures → data, then the leftovers; a delete the sink refuses as tampering stops
every further delete of the run."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from pipeline.archive.repository import Repository, storage_error
from pipeline.base.errors import JsArchiveError
from pipeline.ops.prune.report import DELETE, KEEP, BackupPlan, ObjectPlan, PruneReport, _objects
from sinks import SinkError
from sinks.base import IncompleteUpload
from sinks.local import ArchiveTampered


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
