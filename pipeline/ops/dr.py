"""Disaster recovery: which recovery path each stream needs after servers were lost, and the plan that takes it.

Two paths exist (reference: jetstream-cluster-recovery.md §4). The automatic one: a replicated stream that keeps a
replica removes the lost servers with peer-remove and the cluster rebuilds the replicas from the survivors. The
manual one: a stream with no replica left (or one that peer-remove re-created empty) is deleted and restored from
its latest backup. ``dr status`` tells them apart; ``dr recover`` takes them, peer-removes first.

Liveness is judged the way the server's own signals allow: with the system account, a server that is a member of
the meta group but does not answer a ``$SYS.REQ.SERVER.PING.JSZ`` is gone at once; without it, a replica whose last
contact (``active``) is older than ``lost_after`` is gone. ``current`` alone is not used: a dead follower keeps
``current: true`` for about ten seconds (G10).

With an archive, status also sees what the cluster *lacks*: a stream is ``missing`` when the archive says it should
exist (:func:`expected_missing` holds the rule) and ``partial-restore`` marks a stream a jsarchive restore created and
never finished (pipeline.format.marks). Before anything is done, recover checks each restore against the live servers'
cluster names and tags (:func:`placement_problem`), so a backup pinned to a lost server's tag is a blocked step, not
a failed restore after the deletes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pipeline.archive.reader import open_manifest
from pipeline.archive.repository import Ref, Repository
from pipeline.archive.retention import parse_created
from pipeline.archive.sets import load_member
from pipeline.archive.trust import TrustPolicy
from pipeline.base.errors import ConflictError, JsArchiveError, NotFoundError, ServerRefused, TransferFailed
from pipeline.base.retry import within
from pipeline.flows.replace import replace_stream
from pipeline.flows.restore import RestoreOptions, restore_stream_async
from pipeline.format import marks
from pipeline.format.manifest import Manifest
from pipeline.format.sets import parse_set
from pipeline.jetstream.client import (
    PEER_REMOVE_IN_PROGRESS,
    ApiError,
    ConnectOptions,
    JetStream,
    connect,
    err_code,
    meta_unavailable,
)
from pipeline.jetstream.placement import RestoreTarget
from pipeline.keys.keyring import KeyRing
from sinks.base import SinkOptions

LOST_AFTER = 10.0  # seconds without contact before a replica counts as gone: the server's own threshold (G10)
INFO_TIMEOUT = 3.0  # a stream leader election takes about 3 s; a stream that stays silent longer has no replica
META_WAIT = 15.0  # how long a meta leader election may keep the JetStream API from answering
PING_WINDOW = 1.5  # how long to collect $SYS.REQ.SERVER.PING.JSZ answers when the member count is unknown

HEALTHY = "healthy"
HEALING = "healing"
NEEDS_PEER_REMOVE = "needs-peer-remove"
QUORUM_LOST = "quorum-lost"
LOST = "lost"
EMPTIED = "emptied"
R1_LOST = "r1-lost"
MISSING = "missing"
PARTIAL_RESTORE = "partial-restore"
VERDICTS = (HEALTHY, HEALING, NEEDS_PEER_REMOVE, QUORUM_LOST, LOST, EMPTIED, R1_LOST, MISSING, PARTIAL_RESTORE)
RESTORE_REQUIRED = frozenset({LOST, EMPTIED, R1_LOST, MISSING, PARTIAL_RESTORE})
PEER_REMOVE_HEALS = frozenset({NEEDS_PEER_REMOVE, QUORUM_LOST})


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# -- what is known about each stream -------------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    role: str  # leader | replica
    state: str  # current | lagging | gone
    active_s: float | None = None  # seconds since the leader last heard from it
    lag: int | None = None


@dataclass
class LatestBackup:
    """The newest backup of a stream, from its manifest's clear envelope (no key needed)."""

    manifest_id: str
    created: str
    age_s: float
    messages: int
    last_seq: int
    replicas: int
    stream: str = ""  # the backed-up stream (a renamed or drill restore carries another name)

    @classmethod
    def of(cls, m: Manifest, now: dt.datetime) -> LatestBackup:
        s = m.summary
        created = m.created
        return cls(
            manifest_id=m.id,
            created=created,
            age_s=round((now - parse_created(created)).total_seconds(), 1),
            messages=int(s.get("messages", 0)),
            last_seq=int(s.get("last_seq", 0)),
            replicas=int(s.get("replicas", 1)),
            stream=m.stream,
        )


@dataclass
class StreamHealth:
    stream: str
    verdict: str
    detail: str
    replicas: int | None = None  # configured; None when no replica answered
    cluster: str | None = None
    leader: str | None = None
    peers: list[Peer] = field(default_factory=list)
    messages: int | None = None
    last_seq: int | None = None
    remove: list[str] = field(default_factory=list)  # servers whose peer-remove heals it
    backup: LatestBackup | None = None
    mark: dict | None = None  # the unfinished restore mark of a partial-restore stream (pipeline.format.marks)
    listed: bool = True  # STREAM.NAMES lists it (a missing stream usually is not: nothing to delete first)

    @property
    def restore_required(self) -> bool:
        return self.verdict in RESTORE_REQUIRED

    def to_json(self) -> dict:
        d = asdict(self)
        d["restore_required"] = self.restore_required
        return d


def _peer(r: dict, role: str, gone_servers: set[str], lost_after: float, leaderless: bool) -> Peer:
    name = str(r.get("name", "?"))
    active = r.get("active")
    active_s = round(int(active) / 1e9, 1) if active is not None else None
    current = bool(r.get("current"))
    if (
        name in gone_servers
        or r.get("offline")
        or (active_s is not None and active_s > lost_after)
        # with no leader nobody has heard from a dead member: it shows current false, active 0 (reference §4.2 C)
        or (leaderless and not current and not active_s)
    ):
        state = "gone"
    elif current:
        state = "current"
    else:
        state = "lagging"
    return Peer(name=name, role=role, state=state, active_s=active_s, lag=r.get("lag"))


def judge(
    stream: str,
    info: dict | None,
    *,
    gone_servers: set[str] | frozenset[str] = frozenset(),
    backup: LatestBackup | None = None,
    lost_after: float = LOST_AFTER,
    not_found: bool = False,
) -> StreamHealth:
    """The verdict for one stream from its STREAM.INFO answer (None: no replica answered; ``not_found``: the name
    is listed but STREAM.INFO answered "not found").

    The rules are tried in order and the first that applies decides: a partial restore, a stream without a leader,
    replicas on lost servers, a stream emptied by losing every replica, one still catching up; else healthy."""
    if info is None:
        return _unanswered(stream, backup, not_found)
    h = _observed(stream, info, set(gone_servers), backup, lost_after)
    cl = info.get("cluster") or {}
    for rule in (_partial_restore, _leaderless, _on_lost_servers, _emptied, _healing):
        if rule(h, info, cl, backup):
            return h
    h.detail = f"{len(h.peers)} of {h.replicas} replica(s) current" if cl else "standalone"
    return h


def _unanswered(stream: str, backup: LatestBackup | None, not_found: bool) -> StreamHealth:
    if not_found:
        # Seen after a V2 restore aborted in a cluster: the meta group keeps the assignment (STREAM.NAMES lists
        # it, STREAM.LIST calls it missing) while no server created the stream; STREAM.DELETE clears the listing.
        why = "listed by the meta group, but no server holds it (STREAM.INFO answers not found, e.g. an assignment "
        why += "left by an aborted restore): delete the listing and restore"
        return StreamHealth(stream, MISSING if backup is not None else LOST, why, backup=backup, listed=True)
    if backup is not None and backup.replicas == 1:
        return StreamHealth(stream, R1_LOST, "R1 stream whose only server is gone: restore required", backup=backup)
    return StreamHealth(
        stream, LOST, "no replica answers (listed by the meta group as missing): restore required", backup=backup
    )


def _observed(stream: str, info: dict, gone: set[str], backup: LatestBackup | None, lost_after: float) -> StreamHealth:
    """The stream as its answer shows it, healthy until a rule says otherwise; its peers judged one by one."""
    cfg = info.get("config") or {}
    state = info.get("state") or {}
    cl = info.get("cluster") or {}
    leader = cl.get("leader")
    h = StreamHealth(
        stream,
        HEALTHY,
        "",
        replicas=int(cfg.get("num_replicas", 1) or 1),
        cluster=cl.get("name"),
        leader=leader,
        messages=int(state.get("messages", 0) or 0),
        last_seq=int(state.get("last_seq", 0) or 0),
        backup=backup,
    )
    if leader:
        h.peers.append(Peer(leader, "leader", "gone" if leader in gone else "current", 0.0))
    h.peers += [_peer(r, "replica", gone, lost_after, not leader) for r in cl.get("replicas") or []]
    return h


def _partial_restore(h: StreamHealth, info: dict, cl: dict, backup: LatestBackup | None) -> bool:
    # whatever its replicas say, its content is an unknown part of a backup: only a fresh restore fixes it
    mark = marks.mark_of(info) if marks.is_partial(info) else None
    if mark is None:
        return False
    h.verdict, h.mark = PARTIAL_RESTORE, asdict(mark)
    h.detail = (
        f"{mark.describe()}: a jsarchive restore created it and did not finish (killed, or still running); "
        "dr recover deletes it and restores it again"
    )
    return True


def _leaderless(h: StreamHealth, info: dict, cl: dict, backup: LatestBackup | None) -> bool:
    if h.leader or not cl:
        return False
    dead = sorted(p.name for p in h.peers if p.state == "gone")
    alive = [p for p in h.peers if p.state != "gone"]
    members = len(h.peers)
    if len(alive) * 2 > max(members, h.replicas or 1):
        h.verdict, h.detail = HEALING, "electing a stream leader"
        return True
    if not alive:
        # Nothing survives for a peer-remove to promote: the meta group still answers for the stream's assignment
        # (seen for an R1 stream whose server was just removed), but only a restore brings it back.
        h.verdict = R1_LOST if (h.replicas or 1) == 1 else LOST
        h.detail = f"no replica left (on lost server(s) {', '.join(dead) or '?'}): restore required"
        return True
    survivor = ", ".join(p.name for p in alive)
    h.verdict, h.remove = QUORUM_LOST, dead
    h.detail = (
        f"quorum lost: {len(alive)} of {members} replicas left ({survivor}, last_seq {h.last_seq}); peer-remove "
        f"of {', '.join(dead) or 'the lost servers'} makes the survivor leader with what it holds"
    )
    if backup is not None:
        h.detail += f"; the latest backup has last_seq {backup.last_seq}"
        if backup.last_seq > (h.last_seq or 0):
            h.detail += " (more than the survivor: consider restoring it instead)"
    return True


def _on_lost_servers(h: StreamHealth, info: dict, cl: dict, backup: LatestBackup | None) -> bool:
    dead = sorted(p.name for p in h.peers if p.state == "gone")
    if not dead:
        return False
    h.verdict, h.remove = NEEDS_PEER_REMOVE, dead
    h.detail = f"replica(s) on lost server(s) {', '.join(dead)}: peer-remove them and the cluster rebuilds"
    return True


def _emptied(h: StreamHealth, info: dict, cl: dict, backup: LatestBackup | None) -> bool:
    # A purge keeps last_seq; only a stream re-created empty (peer-remove of every replica) is back at 0.
    if backup is None or backup.messages <= 0 or h.messages != 0 or h.last_seq != 0:
        return False
    h.verdict = EMPTIED
    h.detail = f"present but empty while the latest backup holds {backup.messages:,} messages: restore required"
    return True


def _healing(h: StreamHealth, info: dict, cl: dict, backup: LatestBackup | None) -> bool:
    lagging = [p.name for p in h.peers if p.state == "lagging"]
    desired = cl.get("desired")
    short = bool(cl) and len(h.peers) < (h.replicas or 1)
    if not (lagging or desired or short):
        return False
    parts = []
    if lagging:
        parts.append(f"catching up: {', '.join(lagging)}")
    if short:
        parts.append(f"{len(h.peers)} of {h.replicas} replicas placed")
    if desired:
        parts.append(str((desired.get("status") or {}).get("description") or "peer set changing"))
    h.verdict, h.detail = HEALING, "; ".join(parts)
    return True


# -- what is known about the servers -----------------------------------------------------------------------------


@dataclass
class LiveServer:
    """A JetStream server that answered the ping: where a restore can place replicas."""

    name: str
    cluster: str | None
    tags: list[str] = field(default_factory=list)


@dataclass
class ClusterView:
    system: bool  # judged with the system account (server liveness) or from stream info alone
    members: list[str] = field(default_factory=list)  # JetStream meta group members
    alive: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    meta_leader: str | None = None
    servers: list[LiveServer] = field(default_factory=list)  # the alive members' cluster and tags
    client_cluster: str | None = None  # where a restore without placement lands (G9)

    def to_json(self) -> dict:
        return asdict(self)


async def cluster_view(sys_js: JetStream | None, window: float = PING_WINDOW) -> ClusterView:
    """Meta group members and which of them answer a server ping (needs the system account)."""
    if sys_js is None:
        return ClusterView(system=False)

    def everyone(answers: list[dict]) -> bool:
        # a meta leader's answer says how many servers the cluster has: stop once that many answered
        sizes = [
            int(meta["cluster_size"])
            for meta in (((a.get("data") or {}).get("meta_cluster") or {}) for a in answers)
            if meta.get("leader") and meta.get("cluster_size")
        ]
        return bool(sizes) and len(answers) >= max(sizes)

    answers = await sys_js.scatter("$SYS.REQ.SERVER.PING.JSZ", window, everyone)
    if not answers:
        raise ServerRefused(
            "no server answered $SYS.REQ.SERVER.PING.JSZ: the --system-* credentials are not for the system account"
        )
    alive = {str((a.get("server") or {}).get("name")) for a in answers}
    if not any((a.get("data") or {}).get("meta_cluster") for a in answers):
        # standalone JetStream servers have no meta group (a clustered one reports its meta group even leaderless)
        return ClusterView(
            system=True, members=sorted(alive), alive=sorted(alive), servers=_live_servers(answers, alive)
        )
    members: set[str] = set()
    leader = None
    for a in answers:
        name = str((a.get("server") or {}).get("name"))
        meta = (a.get("data") or {}).get("meta_cluster") or {}
        if not meta:
            continue
        members.add(name)
        # the leader's view is authoritative: followers report stale peers as current false, active 0
        if meta.get("leader") == name:
            leader = name
            members = {name} | {str(r["name"]) for r in meta.get("replicas") or [] if r.get("name")}
            break
        members |= {str(r["name"]) for r in meta.get("replicas") or [] if r.get("name")}
        leader = leader or meta.get("leader")
    if leader is None:
        raise ServerRefused(
            "the JetStream meta group has no leader (meta quorum lost): send $JS.API.META.RESCUE and peer-remove the "
            "lost servers through the system account, or restore into another deployment"
        )
    return ClusterView(
        system=True,
        members=sorted(members),
        alive=sorted(alive & members),
        gone=sorted(members - alive),
        meta_leader=leader,
        servers=_live_servers(answers, members),
    )


def _live_servers(answers: list[dict], members: set[str]) -> list[LiveServer]:
    servers = {}
    for a in answers:
        srv = a.get("server") or {}
        name = str(srv.get("name"))
        if name in members:
            # the server header of every $SYS answer carries its cluster and server_tags (omitted when empty)
            servers[name] = LiveServer(name, srv.get("cluster") or None, [str(t) for t in srv.get("tags") or []])
    return [servers[n] for n in sorted(servers)]


# -- status -------------------------------------------------------------------------------------------------------


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


@dataclass
class StatusOptions:
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    system: ConnectOptions | None = None  # the system account: server liveness and peer-remove
    url: str | None = None  # archive: newest backup of each stream
    sink: SinkOptions = field(default_factory=SinkOptions)
    streams: list[str] = field(default_factory=list)  # only these (default: every stream of the account)
    lost_after: float = LOST_AFTER
    ignore: list[str] = field(default_factory=list)  # globs: streams left out (deliberately deleted ones)


def ignored(stream: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(stream, g) for g in globs)


def latest_backups(repo: Repository, now: dt.datetime | None = None) -> dict[str, LatestBackup]:
    """The newest backup of every stream in the archive, read from manifests' clear envelopes."""
    now = now or _utcnow()
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


def _meta_unavailable(what: str) -> ServerRefused:
    return ServerRefused(
        f"JetStream did not answer {what}: the meta group may have lost quorum (every JetStream API call then "
        "answers 503 or times out); send $JS.API.META.RESCUE and peer-remove the lost servers through the system "
        "account, or restore into another deployment"
    )


async def _stream_list(js: JetStream) -> tuple[dict[str, dict], list[str]]:
    """STREAM.LIST: infos the meta leader could gather, and the names it lists as missing."""
    infos: dict[str, dict] = {}
    missing: list[str] = []
    offset = 0
    while True:
        resp = await js.api("STREAM.LIST", {"offset": offset}, timeout=10.0)
        page = resp.get("streams") or []
        for i in page:
            infos[i["config"]["name"]] = i
        missing += list(resp.get("missing") or [])
        offset += len(page)
        if not page or offset >= int(resp.get("total", 0)):
            return infos, missing


async def _info_or_none(js: JetStream, stream: str, tries: int = 2, not_found: set[str] | None = None) -> dict | None:
    """STREAM.INFO; None when no replica answers within a leader election or two. A name that every try answered
    "not found" (rather than not at all) goes into ``not_found``: the meta group lists it, no server holds it."""
    answered_404 = True
    for attempt in range(tries):
        try:
            info = await js.stream_info(stream, timeout=INFO_TIMEOUT)
        except (TransferFailed, ServerRefused, ApiError):
            info, answered_404 = None, False
        if info is not None:
            return info
        if attempt + 1 < tries:
            await asyncio.sleep(0.5)
    if answered_404 and not_found is not None:
        not_found.add(stream)
    return None


async def gather_streams(
    js: JetStream,
    only: list[str] | None = None,
    *,
    known: set[str] | frozenset[str] = frozenset(),
    not_found: set[str] | None = None,
) -> dict[str, dict | None]:
    """Every stream name of the account with its info (None: nobody answered for it, or every answer was "not
    found": those names also go into ``not_found``). ``only`` may name a stream the account lacks if it is
    ``known`` (the archive has it: it may be missing)."""
    try:  # right after a server loss the meta group may be electing a leader for a few seconds
        async for attempt in within(META_WAIT, meta_unavailable):
            with attempt:
                names = await js.stream_names()
                listed, _missing = await _stream_list(js)
    except (TransferFailed, ServerRefused, ApiError) as e:
        if meta_unavailable(e):
            raise _meta_unavailable("STREAM.NAMES / STREAM.LIST") from None
        raise
    if only:
        unknown = sorted(set(only) - set(names) - set(known))
        if unknown:
            raise NotFoundError(f"no stream named {', '.join(unknown)} in this account")
        names = [n for n in names if n in only]
    out: dict[str, dict | None] = {n: listed.get(n) for n in names}
    pending = [n for n, i in out.items() if i is None]
    # A leaderless stream whose survivor answers STREAM.INFO directly is not in STREAM.LIST; ask each one.
    sem = asyncio.Semaphore(8)

    async def ask(n: str) -> None:
        async with sem:
            out[n] = await _info_or_none(js, n, not_found=not_found)

    await asyncio.gather(*(ask(n) for n in pending))
    return out


async def _connect_system(opts: ConnectOptions | None) -> JetStream | None:
    return await connect(opts) if opts is not None else None


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
    now = _utcnow()
    repo = Repository.open(opts.url, opts.sink) if opts.url else None
    warnings: list[str] = []
    backups = latest_backups(repo, now) if repo else {}
    newest = newest_set(repo, warnings) if repo else None
    sys_js = await _connect_system(opts.system)
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


# -- the plan and recovery ---------------------------------------------------------------------------------------


@dataclass
class Action:
    kind: str  # peer-remove | wait | restore | note
    target: str  # server or stream
    detail: str
    blocked: str | None = None  # why this step cannot be taken (missing credentials, archive or backup)
    outcome: str = "planned"  # planned | done | failed (a blocked step stays planned: nothing is done)
    message: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class RecoveryPlan:
    status: StatusReport
    actions: list[Action]
    warnings: list[str] = field(default_factory=list)  # checks that could not be made (they do not block)

    @property
    def blocked(self) -> list[Action]:
        return [a for a in self.actions if a.blocked]

    def to_json(self) -> dict:
        return {
            "status": self.status.to_json(),
            "actions": [a.to_json() for a in self.actions],
            "warnings": self.warnings,
        }


def plan_recovery(report: StatusReport, *, have_system: bool, placement: str | None = None) -> RecoveryPlan:
    """Peer-remove every lost server (one at a time), wait for the replicated streams to heal, then delete and
    restore what has no replica left from its latest backup, restore what is missing and redo partial restores.
    Keyless and offline: :func:`check_restores` then blocks the restores the servers would refuse."""
    actions: list[Action] = []
    no_sys = None if have_system else "needs the system account (--system-user/--system-creds/--system-context)"
    healed_by_remove = [s for s in report.streams if s.verdict in PEER_REMOVE_HEALS]
    for server in report.cluster.gone:
        hosts = sorted(s.stream for s in report.streams if server in s.remove)
        detail = f"remove lost server {server} from the meta group"
        if hosts:
            detail += f"; rebuilds replicas of {', '.join(hosts)}"
        actions.append(Action("peer-remove", server, detail, blocked=no_sys))
    for s in healed_by_remove:
        if s.verdict == QUORUM_LOST:
            actions.append(Action("note", s.stream, s.detail))
    if report.cluster.gone or any(s.verdict == HEALING for s in report.streams):
        waiting = sorted(s.stream for s in report.streams if s.verdict in PEER_REMOVE_HEALS | {HEALING})
        if waiting:
            actions.append(Action("wait", ", ".join(waiting), "until every replica is current again"))
    for s in report.streams:
        if not s.restore_required:
            continue
        where = f" into {placement}" if placement else " with its backed-up placement"
        if report.archive is None:
            actions.append(Action("restore", s.stream, "restore from the latest backup", blocked="needs --archive URL"))
        elif s.backup is None:
            actions.append(
                Action("restore", s.stream, "restore from the latest backup", blocked=f"no backup in {report.archive}")
            )
        else:
            b = s.backup
            what = (
                f"backup {b.manifest_id[:12]} ({b.messages:,} messages, last_seq {b.last_seq}, "
                f"{format_age(b.age_s)} old){where}"
            )
            if s.verdict == MISSING and not s.listed:
                actions.append(Action("restore", s.stream, f"restore {what}"))
            elif s.verdict == MISSING:
                actions.append(Action("restore", s.stream, f"delete the stale listing, then restore {what}"))
            elif s.verdict == PARTIAL_RESTORE and b.stream and b.stream != s.stream:
                # a renamed restore (--as, a drill's prefix): recover cannot redo its rewrite, so it stays the
                # operator's, and nothing of another stream's name is deleted on a guess
                actions.append(
                    Action(
                        "restore",
                        s.stream,
                        f"partial restore of backup {b.manifest_id[:12]} of stream {b.stream!r} under another name",
                        blocked=(
                            f"a renamed or drill restore: delete it with `nats stream rm {s.stream} -f` and rerun "
                            f"that restore, or leave it out with --ignore {s.stream}"
                        ),
                    )
                )
            elif s.verdict == PARTIAL_RESTORE:
                actions.append(Action("restore", s.stream, f"delete the partial restore, then restore {what}"))
            else:
                actions.append(Action("restore", s.stream, f"delete, then restore {what}"))
    return RecoveryPlan(report, actions)


@dataclass
class PlacementProblem:
    why: str
    fits: int = 0  # live servers that match the placement (fewer than the replicas asked for)

    def fix(self, moved: bool) -> str:
        flags = "another --cluster/--tag" if moved else "--cluster/--tag"
        if self.fits:
            return f"pass --replicas {self.fits} (or fewer) or {flags} naming more live servers"
        return f"pass {flags} naming live servers"


def placement_problem(
    config: dict, servers: list[LiveServer], client_cluster: str | None = None
) -> PlacementProblem | None:
    """Why no live server set can take a stream with this config (placement and replicas, as the meta leader
    picks peers: the cluster must match, every tag must be on each chosen server, one replica per server), or None.
    Without placement a stream lands in the cluster of the server the client is connected to (G9). Tags are
    compared ignoring case, so a doubt never blocks a restore the server would take."""
    pl = config.get("placement") or {}
    want_cluster = pl.get("cluster") or None
    want_tags = [str(t) for t in pl.get("tags") or []]
    replicas = int(config.get("num_replicas", 1) or 1)
    if want_cluster:
        pool = [x for x in servers if x.cluster == want_cluster]
        if not pool:
            clusters = ", ".join(sorted({str(x.cluster) for x in servers})) or "none"
            return PlacementProblem(
                f"placement cluster {want_cluster!r}: no live server is in it (live clusters: {clusters})"
            )
    else:
        pool = [x for x in servers if client_cluster is None or x.cluster == client_cluster]
    if want_tags:
        wanted = {t.lower() for t in want_tags}
        matched = [x for x in pool if wanted <= {t.lower() for t in x.tags}]
        if not matched:
            have = "; ".join(f"{x.name}: {','.join(x.tags) or '-'}" for x in pool) or "none"
            where = f" in cluster {want_cluster or client_cluster}" if (want_cluster or client_cluster) else ""
            return PlacementProblem(
                f"placement tags {','.join(want_tags)}: no live server{where} has them all (live servers' tags: {have})"
            )
        pool = matched
    if len(pool) < replicas:
        names = ", ".join(x.name for x in pool)
        return PlacementProblem(
            f"R{replicas} needs {replicas} live servers matching its placement; {len(pool)} do ({names or 'none'})",
            fits=len(pool),
        )
    return None


def check_restores(the_plan: RecoveryPlan, opts: RecoverOptions) -> None:
    """Block each restore step the server would refuse, before anything is done: the backup must open with the
    given keys (placement is in the sealed body) and its data object must be readable, and with the system account
    its placement (as --cluster/--tag/--replicas change it) must be met by live servers."""
    steps = [a for a in the_plan.actions if a.kind == "restore" and not a.blocked]
    if not steps or opts.url is None:
        return
    view = the_plan.status.cluster
    moved = opts.target.moves
    repo = Repository.open(opts.url, opts.sink)
    by_name = {s.stream: s for s in the_plan.status.streams}
    for a in steps:
        b = by_name[a.target].backup
        assert b is not None
        try:
            m = repo.load_manifest(b.manifest_id)
            body = open_manifest(repo, m, opts.keys).body
        except JsArchiveError as e:
            a.blocked = f"backup {b.manifest_id[:12]} cannot be restored: {e}"
            continue
        if not view.system:
            continue
        cfg = opts.target.apply(body.get("config") or {})
        problem = placement_problem(cfg, view.servers, view.client_cluster)
        if problem is None:
            continue
        source = "--cluster/--tag" if moved else "the backed-up placement"
        a.blocked = f"{source}: {problem.why}; {problem.fix(moved)}"
    if not view.system:
        the_plan.warnings.append(
            "the restores' placement was not checked against the live servers (cluster names and tags come from the "
            "system account: --system-user/--system-creds/--system-context); a placement no live server meets fails "
            "at restore with 'no suitable peers'"
        )


def format_age(seconds: float) -> str:
    """90s, 5m, 3h, 12d: the largest unit that still shows at least 2 of it."""
    s = int(seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= 2 * n:
            return f"{s // n}{unit}"
    return f"{s}s"


@dataclass
class RecoverOptions(StatusOptions):
    keys: KeyRing = field(default_factory=KeyRing)
    trust: TrustPolicy | None = None  # what a backup must prove before it is restored (pipeline/archive/trust.py)
    safety_backup: bool = True  # back up a live stream (marked pre-restore) before it is deleted to be restored
    sign_key: object | None = None  # signs those safety backups (pipeline.archive.signing)
    target: RestoreTarget = field(default_factory=lambda: RestoreTarget())  # default: the backed-up placement
    wait: float = 120.0  # per wait step: replicas rebuilding, a restored stream becoming healthy


@dataclass
class RecoveryResult:
    plan: RecoveryPlan
    final: StatusReport | None
    seconds: float

    @property
    def failed(self) -> list[Action]:
        return [a for a in self.plan.actions if a.outcome == "failed" or a.blocked]

    @property
    def ok(self) -> bool:
        return not self.failed and self.final is not None and self.final.healthy

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "seconds": self.seconds,
            "actions": [a.to_json() for a in self.plan.actions],
            "warnings": self.plan.warnings,
            "before": self.plan.status.to_json(),
            "after": self.final.to_json() if self.final else None,
        }


class RecoveryFailed(JsArchiveError):
    exit_code = 1
    kind = "recovery"

    def __init__(self, message: str, result: RecoveryResult, exit_code: int = 1) -> None:
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


def _placement(opts: RecoverOptions) -> str | None:
    return opts.target.describe()


async def plan_async(opts: RecoverOptions) -> RecoveryPlan:
    report = await status_async(opts)
    the_plan = plan_recovery(report, have_system=opts.system is not None, placement=_placement(opts))
    await asyncio.to_thread(check_restores, the_plan, opts)
    return the_plan


def plan(opts: RecoverOptions) -> RecoveryPlan:
    return asyncio.run(plan_async(opts))


async def peer_remove(sys_js: JetStream, server: str, deadline_s: float = 30.0) -> str:
    """``$JS.API.SERVER.REMOVE`` by name, as ``nats server cluster peer-remove``; one at a time (G12)."""

    async def once() -> str:
        resp = await sys_js.request(f"{sys_js.prefix}.SERVER.REMOVE", json.dumps({"peer": server}).encode(), 10.0)
        err = resp.get("error")
        if not err:
            if resp.get("success"):
                return "removed"
            raise ServerRefused(f"peer-remove {server}: unexpected answer {resp}")
        code = int(err.get("err_code", 0) or 0)
        if code == 10044:  # not a member (any more): already done
            return "was not a member any more"
        e = ServerRefused(f"peer-remove {server}: {err.get('description', err)} (error {code})")
        e.err_code = code  # type: ignore[attr-defined]
        raise e

    async for attempt in within(deadline_s, lambda e: err_code(e) == PEER_REMOVE_IN_PROGRESS):
        with attempt:
            return await once()
    raise AssertionError("unreachable: the policy re-raises the last error")


async def _wait_healthy(js: JetStream, streams: list[str], lost_after: float, wait: float) -> dict[str, StreamHealth]:
    deadline = time.monotonic() + wait
    last: dict[str, StreamHealth] = {}
    todo = list(streams)
    while todo:
        for n in list(todo):
            h = judge(n, await _info_or_none(js, n, tries=1), lost_after=lost_after)
            last[n] = h
            if h.verdict == HEALTHY:
                todo.remove(n)
        if not todo or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    return last


async def _still_the_partial(js: JetStream, planned: StreamHealth) -> None:
    """Refuse to delete a partial restore that is not the one the plan saw: another restore took the name, it
    completed, or it is still being written (a running restore looks like a killed one, except that it grows)."""
    info = await js.stream_info(planned.stream, timeout=INFO_TIMEOUT)
    if info is None:
        return
    mark = marks.mark_of(info)
    want = (planned.mark or {}).get("restore_id")
    if mark is None or mark.restore_id != want or not mark.partial:
        now = mark.describe() if mark else "it carries no restore mark"
        raise ConflictError(
            f"stream {planned.stream!r} changed since the plan ({now}): not deleted; run dr recover again"
        )
    state = info.get("state") or {}
    seen = (int(state.get("messages", 0) or 0), int(state.get("last_seq", 0) or 0))
    if seen != (planned.messages, planned.last_seq):
        raise ConflictError(
            f"partial restore {planned.stream!r} is still being written ({seen[0]:,} messages, last_seq {seen[1]}; "
            f"{planned.messages:,} and {planned.last_seq} at the plan): a restore may be running, so it was not "
            "deleted; run dr recover again once it has ended"
        )


async def recover_async(opts: RecoverOptions, say: Callable[[str], None] = lambda _m: None) -> RecoveryResult:
    """Take the plan: peer-removes, wait for rebuilds, delete + restore from backups, verify; then status again."""
    t0 = time.monotonic()
    the_plan = await plan_async(opts)
    if the_plan.blocked:
        return RecoveryResult(the_plan, None, round(time.monotonic() - t0, 3))
    async with await connect(opts.connect) as js:
        sys_js = await _connect_system(opts.system)
        try:
            for a in the_plan.actions:
                if a.kind != "peer-remove":
                    continue
                t = time.monotonic()
                try:
                    assert sys_js is not None
                    a.message = await peer_remove(sys_js, a.target)
                    a.outcome = "done"
                except JsArchiveError as e:
                    a.outcome, a.message = "failed", str(e)
                a.seconds = round(time.monotonic() - t, 3)
                say(f"peer-remove {a.target}: {a.outcome} {a.message}".rstrip())
        finally:
            if sys_js is not None:
                await sys_js.close()
        for a in the_plan.actions:
            if a.kind != "wait":
                continue
            t = time.monotonic()
            names = [n.strip() for n in a.target.split(",")]
            final = await _wait_healthy(js, names, opts.lost_after, opts.wait)
            stuck = {n: h for n, h in final.items() if h.verdict != HEALTHY}
            a.outcome = "failed" if stuck else "done"
            a.message = "; ".join(f"{n}: {h.verdict} ({h.detail})" for n, h in stuck.items()) or "all current"
            a.seconds = round(time.monotonic() - t, 3)
            say(f"wait for {a.target}: {a.outcome} after {a.seconds:.1f} s")
        restores = [a for a in the_plan.actions if a.kind == "restore"]
        for a in restores:
            t = time.monotonic()
            health = next(s for s in the_plan.status.streams if s.stream == a.target)
            assert health.backup is not None and opts.url is not None
            ropts = RestoreOptions(
                url=opts.url,
                stream=a.target,
                backup=health.backup.manifest_id,
                connect=opts.connect,
                keys=opts.keys,
                target=opts.target,
                wait=opts.wait,
                sink=opts.sink,
                trust=opts.trust,
            )
            try:
                if health.verdict == PARTIAL_RESTORE:
                    await _still_the_partial(js, health)
                if health.verdict != MISSING or health.listed:
                    # what is deleted is proven replaceable first (pipeline/flows/replace.py): the backup verified deep,
                    # the target preflighted; an emptied stream still answers, so it is saved first as well
                    live = health.verdict == EMPTIED
                    out = await replace_stream(
                        ropts,
                        take_safety_backup=live and opts.safety_backup,
                        live_snapshot_possible=live,
                        no_backup_reason=None if live else f"{health.verdict}: no replica of it holds data to save",
                        sign_key=opts.sign_key,
                    )
                    r = out.restored
                else:
                    # a missing stream is not deleted: if one of that name appeared since the plan, the restore refuses
                    r = await restore_stream_async(ropts)
                a.outcome = "done"
                a.message = (
                    f"{r.messages:,} messages, last_seq {r.last_seq}, {len(r.consumers)} consumer(s), "
                    f"R{r.num_replicas} led by {r.leader}"
                )
            except JsArchiveError as e:
                a.outcome, a.message = "failed", str(e)
            a.seconds = round(time.monotonic() - t, 3)
            say(f"restore {a.target}: {a.outcome} {a.message}")
    final = await status_async(opts)
    return RecoveryResult(the_plan, final, round(time.monotonic() - t0, 3))


def recover(opts: RecoverOptions, say: Callable[[str], None] = lambda _m: None) -> RecoveryResult:
    return asyncio.run(recover_async(opts, say))
