"""What the archive says the cluster should hold: each stream's newest backup and the newest account set."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pipeline.archive.repository import Ref, Repository
from pipeline.archive.retention import parse_created
from pipeline.base.errors import JsArchiveError
from pipeline.format.sets import parse_set
from pipeline.ops.dr.health import LatestBackup, utcnow


def latest_backups(repo: Repository, now: dt.datetime | None = None) -> dict[str, LatestBackup]:
    """The newest backup of every stream in the archive, read from manifests' clear envelopes."""
    now = now or utcnow()
    by_stream: dict[str, list[Ref]] = {}
    for ref in repo.refs():  # one listing for the whole archive, newest first
        by_stream.setdefault(ref.stream, []).append(ref)
    # by the manifest's own created, not the ref's (unauthenticated) name: Repository.latest
    return {s: LatestBackup.of(repo.latest(s, refs=refs), now) for s, refs in sorted(by_stream.items())}


@dataclass
class NewestSet:
    """The newest account backup set: the last complete list of the account's streams."""

    id: str
    started: str
    finished: str
    members: dict[str, str]  # stream -> manifest id


def newest_set(repo: Repository, warnings: list[str]) -> NewestSet | None:
    """The newest valid set (by ``finished``); a set that does not parse is skipped with a warning, so one damaged
    object does not take dr status down in the middle of a recovery."""
    best = None
    for sid in repo.list_sets():
        try:
            bs = parse_set(repo.load_set(sid), sid)
        except JsArchiveError as e:
            warnings.append(f"set {sid[:12]} skipped: {e}")
            continue
        if best is None or (bs.finished, bs.id) > (best.finished, best.id):
            best = bs
    if best is None:
        return None
    members = {str(e["stream"]): str(e["manifest_id"]) for e in best.streams}
    return NewestSet(best.id, str(best.doc["started"]), best.finished, members)


def expected_missing(
    present: set[str] | frozenset[str], backups: dict[str, LatestBackup], newest: NewestSet | None
) -> dict[str, str]:
    """The streams the archive says the cluster should hold and it does not, each with the reason. The rule: a
    stream the cluster lacks is missing if it is a member of the archive's newest account backup set, or if its
    newest backup is newer than the start of that set (every backed-up stream when the archive has no sets).

    A stream deleted on purpose before the newest account set was taken is in neither part of the rule and so is
    never reported; one deleted after it, or in an archive without sets, is reported until ``--ignore`` leaves it
    out: nothing in the archive tells a deliberate deletion from a loss, and a loss must not go unseen."""
    out: dict[str, str] = {}
    for name in sorted((set(newest.members) if newest else set()) | set(backups)):
        if name in present:
            continue
        b = backups.get(name)
        if newest is not None and name in newest.members:
            why = f"a member of the newest account backup set {newest.id[:12]} (finished {newest.finished})"
        elif b is None:
            continue
        elif newest is None:
            why = f"backed up ({b.created}) and the archive has no account backup sets to say otherwise"
        elif parse_created(b.created) > parse_created(newest.started):
            why = (
                f"its newest backup ({b.created}) is newer than the newest account backup set {newest.id[:12]} "
                f"(started {newest.started})"
            )
        else:
            continue
        out[name] = f"not in the cluster, but {why}: restore required (--ignore {name} if it was deleted on purpose)"
    return out
