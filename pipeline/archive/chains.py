"""A stream's restore points as the archive holds them: one :class:`~pipeline.format.chain.RestorePoint` per manifest.

A manifest written by an incremental backup carries the clear ``chain`` envelope (docs/design/incremental.md); any
other backup is the base of a chain of its own (its ``backup_id``), with the range its summary counted and its
``created`` as the capture time. Everything here reads clear fields only, so prune and verify need no key.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.archive.repository import Repository
from pipeline.archive.retention import parse_created
from pipeline.base.errors import IntegrityError, JsArchiveError, NotFoundError
from pipeline.format import manifest as mf
from pipeline.format.chain import RestorePoint
from pipeline.format.selection import parse_time


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
    return RestorePoint(
        id=m.id,
        parent=ch.get("parent"),
        chain=ch["id"],
        stream=m.stream,
        stream_created=ch["stream_created"],
        first_seq=ch["first_seq"],
        last_seq=ch["last_seq"],
        captured_ns=_ns(ch["captured"]),
    )


def is_chained(m: mf.Manifest) -> bool:
    """Whether ``m`` belongs to a chain of more than itself as far as its own fields say (a delta, or a base an
    incremental backup wrote)."""
    return m.chain is not None


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
