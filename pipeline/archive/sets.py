"""Sets in an archive: load one (checked against its name), list them, and load a member's manifest."""

from __future__ import annotations

from pipeline.archive.repository import Repository
from pipeline.base.errors import IntegrityError, NotFoundError
from pipeline.format.manifest import Manifest
from pipeline.format.sets import BackupSet, parse_set
from sinks import SinkOptions


def load_set(repo: Repository, set_id: str | None) -> BackupSet:
    """A set by id or unique prefix, or the newest set (by ``finished``) when ``set_id`` is None."""
    if set_id:
        sid = repo.resolve_set(set_id)
        return parse_set(repo.load_set(sid), sid)
    sets = list_sets_in(repo)
    if not sets:
        raise NotFoundError(f"no account backup sets in {repo.url}")
    return sets[0]


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
