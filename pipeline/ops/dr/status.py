"""dr status: one verdict per stream of the account, plus what the archive expects and the account lacks."""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
from dataclasses import dataclass, field

from pipeline.archive.repository import Repository
from pipeline.archive.sets import load_member
from pipeline.base.errors import JsArchiveError
from pipeline.jetstream.client import connect
from pipeline.ops.dr.expected import NewestSet, expected_missing, latest_backups, newest_set
from pipeline.ops.dr.gather import gather_streams
from pipeline.ops.dr.health import HEALTHY, MISSING, PARTIAL_RESTORE, VERDICTS, LatestBackup, StreamHealth, utcnow
from pipeline.ops.dr.judge import judge
from pipeline.ops.dr.options import StatusOptions
from pipeline.ops.dr.view import ClusterView, cluster_view, connect_system


@dataclass
class StatusReport:
    checked_at: str
    cluster: ClusterView
    streams: list[StreamHealth]
    archive: str | None = None
    ignored: list[str] = field(default_factory=list)  # left out by --ignore (present or missing)
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(VERDICTS, 0)
        for s in self.streams:
            out[s.verdict] += 1
        return out

    @property
    def healthy(self) -> bool:
        return all(s.verdict == HEALTHY for s in self.streams) and not self.cluster.gone

    def to_json(self) -> dict:
        return {
            "checked_at": self.checked_at,
            "archive": self.archive,
            "cluster": self.cluster.to_json(),
            "counts": self.counts,
            "healthy": self.healthy,
            "streams": [s.to_json() for s in self.streams],
            "ignored": self.ignored,
            "warnings": self.warnings,
        }


def ignored(stream: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(stream, g) for g in globs)


def _partial_backup(repo: Repository, h: StreamHealth, backups: dict[str, LatestBackup], now: dt.datetime) -> None:
    """A partial restore is redone from the backup it was restoring when that is in this archive (the operator may
    have chosen an older one on purpose), otherwise from the stream's latest backup."""
    mid = str((h.mark or {}).get("backup") or "")
    try:
        m = repo.load_manifest(mid if len(mid) == 64 else repo.resolve(mid))
    except JsArchiveError:
        m = None
    if m is not None:
        h.backup = LatestBackup.of(m, now)
    elif h.stream in backups:
        h.backup = backups[h.stream]
        h.detail += f"; backup {mid[:12] or '?'} is not in {repo.url}: its latest backup is restored instead"


def _missing(
    repo: Repository,
    present: set[str],
    backups: dict[str, LatestBackup],
    newest: NewestSet | None,
    opts: StatusOptions,
    left_out: list[str],
    now: dt.datetime,
) -> list[StreamHealth]:
    out = []
    for name, why in expected_missing(present, backups, newest).items():
        if opts.streams and name not in opts.streams:
            continue
        if ignored(name, opts.ignore):
            left_out.append(name)
            continue
        backup = backups.get(name)
        if backup is None and newest is not None and name in newest.members:
            try:  # a set member whose refs are gone: the set still names its manifest
                backup = LatestBackup.of(load_member(repo, f"set {newest.id[:12]}", name, newest.members[name]), now)
            except JsArchiveError as e:
                why += f"; its backup in the set cannot be read ({e})"
        out.append(StreamHealth(name, MISSING, why, backup=backup, listed=False))
    return out


async def status_async(opts: StatusOptions) -> StatusReport:
    """One verdict per stream of the account (see :func:`judge`), plus the streams the archive expects and the
    account lacks (``missing``, see :func:`expected_missing`)."""
    now = utcnow()
    repo = Repository.open(opts.url, opts.sink) if opts.url else None
    warnings: list[str] = []
    backups = latest_backups(repo, now) if repo else {}
    newest = newest_set(repo, warnings) if repo else None
    sys_js = await connect_system(opts.system)
    try:
        view = await cluster_view(sys_js)
    finally:
        if sys_js is not None:
            await sys_js.close()
    known = set(backups) | set(newest.members if newest else ())
    async with await connect(opts.connect) as js:
        view.client_cluster = js.server_info().cluster
        not_found: set[str] = set()
        everything = await gather_streams(js, opts.streams or None, known=known, not_found=not_found)
    left_out = sorted(n for n in everything if ignored(n, opts.ignore))
    infos = {n: i for n, i in everything.items() if n not in left_out}
    gone = set(view.gone)
    streams = [
        judge(
            n, infos[n], gone_servers=gone, backup=backups.get(n), lost_after=opts.lost_after, not_found=n in not_found
        )
        for n in sorted(infos)
    ]
    if not view.system:
        # without server liveness, the lost servers are the ones the streams' leaders have not heard from
        view.gone = sorted({p.name for s in streams for p in s.peers if p.state == "gone"})
    if repo is not None:
        for h in streams:
            if h.verdict == PARTIAL_RESTORE:
                _partial_backup(repo, h, backups, now)
        # present: every name the account lists, ignored or not (an ignored present stream is not missing)
        streams += _missing(repo, set(everything), backups, newest, opts, left_out, now)
        streams.sort(key=lambda h: h.stream)
    return StatusReport(
        checked_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        cluster=view,
        streams=streams,
        archive=repo.url if repo else None,
        ignored=sorted(left_out),
        warnings=warnings,
    )


def status(opts: StatusOptions) -> StatusReport:
    return asyncio.run(status_async(opts))
