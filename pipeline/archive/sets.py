"""Sets in an archive: load one (checked against its name), list them, and load a member's manifest."""

from __future__ import annotations

import datetime as dt

from pipeline.archive.repository import Repository
from pipeline.archive.retention import parse_created
from pipeline.base.errors import IntegrityError, NotFoundError, UsageError, setting
from pipeline.format.manifest import Manifest
from pipeline.format.sets import BackupSet, parse_set
from sinks import SinkOptions


def load_set(repo: Repository, set_id: str | None, at: dt.datetime | None = None) -> BackupSet:
    """A set by id or unique prefix, or the newest set (by ``finished``) when ``set_id`` is None, of those
    finished at or before ``at`` when it is given (:func:`sets_at`). Both ``set_id`` and ``at``: UsageError."""
    if set_id and at is not None:
        raise UsageError(f"give a SET-ID or {setting('at')} TIME, not both")
    if set_id:
        sid = repo.resolve_set(set_id)
        return parse_set(repo.load_set(sid), sid)
    return sets_at(repo, at)[0]


def sets_at(repo: Repository, at: dt.datetime | None) -> list[BackupSet]:
    """The sets finished at or before ``at`` (all when None), newest first; never empty (NotFoundError, naming
    when the oldest set finished). A set is complete when it finishes, so ``finished`` is its point in time; one
    whose ``finished`` is not a time cannot be placed before ``at`` and is left out."""
    sets = list_sets_in(repo)
    if not sets:
        raise NotFoundError(f"no account backup sets in {repo.url}")
    if at is None:
        return sets
    when = {s.id: _finished(s) for s in sets}
    cut = at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)
    older = [s for s in sets if (t := when[s.id]) is not None and t <= cut]
    if not older:
        placed = [t for t in when.values() if t is not None]
        oldest = f": the oldest finished {min(placed).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}" if placed else ""
        raise NotFoundError(
            f"no account backup set in {repo.url} finished at or before "
            f"{cut.astimezone(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')} ({setting('at')}){oldest}"
        )
    return older


def _finished(s: BackupSet) -> dt.datetime | None:
    try:
        return parse_created(s.finished)
    except (ValueError, OverflowError):
        return None


def list_sets_in(repo: Repository) -> list[BackupSet]:
    """Every valid set, newest first (by ``finished``, then id)."""
    out = [parse_set(repo.load_set(sid), sid) for sid in repo.list_sets()]
    out.sort(key=lambda s: (s.finished, s.id), reverse=True)
    return out


def list_sets(url: str, sink: SinkOptions | None = None) -> list[dict]:
    """Summaries of every set in the archive at ``url``, newest first (no key needed)."""
    return [s.summary() for s in list_sets_in(Repository.open(url, sink))]


def load_member(repo: Repository, set_label: str, stream: str, manifest_id: str) -> Manifest:
    try:
        m = repo.load_manifest(manifest_id)
    except NotFoundError:
        raise NotFoundError(
            f"{set_label} lists stream {stream!r} with backup {manifest_id[:12]}, whose manifest is missing from "
            f"{repo.url}"
        ) from None
    if m.stream != stream:
        raise IntegrityError(
            f"{set_label} lists backup {manifest_id[:12]} as stream {stream!r}, but it is a backup of {m.stream!r}"
        )
    return m
