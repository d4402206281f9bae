"""A stream's restore points as the archive holds them: one :class:`~pipeline.format.chain.RestorePoint` per manifest.

A manifest written by an incremental backup carries the clear ``chain`` envelope (docs/design/incremental.md); any
other backup is the base of a chain of its own (its ``backup_id``), with the range its summary counted and its
``created`` as the capture time. Everything here reads clear fields only, so prune and verify need no key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pipeline.archive.reader import OpenedBackup, open_manifest
from pipeline.archive.repository import Repository
from pipeline.archive.retention import parse_created
from pipeline.base.errors import IntegrityError, JsArchiveError, NotFoundError
from pipeline.format import manifest as mf
from pipeline.format.chain import ChainPlan, MergeStats, RestorePoint, merge_archives, plan_chain
from pipeline.format.selection import parse_time
from pipeline.keys.keyring import KeyRing


def _ns(text: str) -> int:
    try:
        return parse_time(text)
    except JsArchiveError:
        return 0


def restore_point(m: mf.Manifest) -> RestorePoint:
    """The restore point manifest ``m`` is (its ``chain`` envelope, or a base of its own)."""
    ch = m.chain
    if ch is None:
        try:
            t = parse_created(m.created)
            captured = int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1_000
        except (ValueError, OverflowError):
            captured = 0
        summary = m.summary
        return RestorePoint(
            id=m.id,
            parent=None,
            chain=m.backup_id,
            stream=m.stream,
            stream_created="",
            first_seq=int(summary.get("first_seq", 0) or 0),
            last_seq=int(summary.get("last_seq", 0) or 0),
            captured_ns=captured,
        )
    return chain_point(m.id, m.stream, ch)


def chain_point(manifest_id: str, stream: str, ch: dict) -> RestorePoint:
    """The restore point a ``chain`` envelope (as pipeline/format/manifest.py checks it) describes."""
    return RestorePoint(
        id=manifest_id,
        parent=ch.get("parent"),
        chain=ch["id"],
        stream=stream,
        stream_created=ch["stream_created"],
        first_seq=ch["first_seq"],
        last_seq=ch["last_seq"],
        captured_ns=_ns(ch["captured"]),
    )


def points_by_stream(manifests: Iterable[mf.Manifest]) -> dict[str, list[RestorePoint]]:
    """The restore points of each stream among ``manifests``."""
    out: dict[str, list[RestorePoint]] = {}
    for m in manifests:
        out.setdefault(m.stream, []).append(restore_point(m))
    return out


def stream_points(repo: Repository, stream: str) -> tuple[list[RestorePoint], dict[str, mf.Manifest]]:
    """Every restore point of ``stream`` that a ref names (refs are listed per stream; each manifest is read and
    checked once), and their manifests by id. A ref whose manifest is missing or invalid is left out: then its
    point is missing, which is what :func:`~pipeline.format.chain.plan_chain` reports as a hole."""
    manifests: dict[str, mf.Manifest] = {}
    for ref in repo.refs(stream):
        try:
            m = repo.load_ref(ref)
        except (IntegrityError, NotFoundError):
            continue
        if m.stream == stream and m.backup_id == ref.backup_id:
            manifests[m.id] = m
    return [restore_point(m) for m in manifests.values()], manifests


def chained_points(
    repo: Repository, stream: str, also: mf.Manifest | None = None
) -> tuple[list[RestorePoint], dict[str, mf.Manifest]]:
    """The points of ``stream`` that incremental backups wrote (a plain full backup is no chain's point), with
    ``also`` among them even if no ref names it (asked for by its id after its ref was lost)."""
    points, manifests = stream_points(repo, stream)
    chained = [p for p in points if manifests[p.id].chain is not None]
    if also is not None and also.chain is not None and also.id not in manifests:
        chained.append(restore_point(also))
        manifests[also.id] = also
    return chained, manifests


class _Decoded:
    """An opened backup's decoded archive, read afresh each time it is iterated (a restore reads it twice)."""

    def __init__(self, opened: OpenedBackup) -> None:
        self.opened = opened

    def __iter__(self) -> Iterator[bytes]:
        return self.opened.decoded()


@dataclass
class ChainSource:
    """The one NATSARC1 archive a restore to a point of a chain reads: the path's archives merged
    (:func:`pipeline.format.chain.merge_archives`). ``blocks()`` may be called more than once; each call reads
    the chain again."""

    plan: ChainPlan
    opened: list[OpenedBackup]  # one per point of plan.path, base first
    stats: MergeStats = field(default_factory=MergeStats)

    @property
    def state_from(self) -> OpenedBackup:
        """The capture whose config, consumers and first sequence the restore takes."""
        return next(o for o in self.opened if o.manifest.id == self.plan.state_from.id)

    @property
    def stored_bytes(self) -> int:
        return sum(o.manifest.data_size for o in self.opened)

    def blocks(self) -> Iterator[bytes]:
        self.stats = MergeStats()
        return merge_archives(self.plan, [_Decoded(o) for o in self.opened], stats=self.stats)


def open_chain(
    repo: Repository,
    m: mf.Manifest,
    keys: KeyRing,
    *,
    named: bool,
    until_seq: int | None = None,
    at_ns: int | None = None,
    check: Callable[[mf.Manifest], None] | None = None,
    prefetch: int = 4,
    workers: int = 2,
) -> ChainSource | None:
    """The merged source for restoring ``m`` when it is a restore point of a chain (None when it is a backup of
    its own: it restores alone). ``named``: ``m`` was asked for by its id, so the target is its own point;
    otherwise ``until_seq`` or ``at_ns`` (or neither: the newest point). ``check`` vets each manifest on the path
    (trust) before its key is asked for."""
    if m.chain is None:
        return None
    if named:
        own = restore_point(m)
        if own.is_base and until_seq is None:
            return None  # a base asked for by its id is a full backup
        until_seq = min(until_seq, own.last_seq) if until_seq is not None else own.last_seq
        at_ns = None
    chained, manifests = chained_points(repo, m.stream, also=m if named else None)
    plan = plan_chain(chained, until_seq=until_seq, at_ns=at_ns)
    whole_base = len(plan.path) == 1 and plan.at_ns is None and plan.until_seq >= plan.point.last_seq
    if whole_base and plan.point.id == m.id:
        return None  # the whole of one base: nothing to merge
    opened = []
    for p in plan.path:
        pm = manifests[p.id]
        if check is not None:
            check(pm)
        opened.append(open_manifest(repo, pm, keys, prefetch=prefetch, workers=workers, label=""))
    return ChainSource(plan, opened)


def point_totals(repo: Repository, m: mf.Manifest) -> tuple[int, int] | None:
    """For a restore point of a chain: the messages its path captured in all (each capture's summary counts its own
    range) and the point's last sequence — what a restore of it holds, less what limits removed since the base. None
    for a backup of its own, or a point whose path does not restore."""
    if m.chain is None:
        return None
    own = restore_point(m)
    chained, manifests = chained_points(repo, m.stream, also=m)
    try:
        plan = plan_chain(chained, until_seq=own.last_seq)
    except JsArchiveError:
        return None
    return sum(int(manifests[p.id].summary.get("messages", 0) or 0) for p in plan.path), own.last_seq
