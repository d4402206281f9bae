"""Disaster recovery: which recovery path each stream needs after servers were lost, and the plan that takes it.

Two paths exist (reference: jetstream-cluster-recovery.md §4). The automatic one: a replicated stream that keeps a
replica removes the lost servers with peer-remove and the cluster rebuilds the replicas from the survivors. The
manual one: a stream with no replica left (or one that peer-remove re-created empty) is deleted and restored from
its latest backup. ``dr status`` tells them apart; ``dr recover`` takes them, peer-removes first.

Liveness is judged the way the server's own signals allow: with the system account, a server that is a member of
the meta group but does not answer a ``$SYS.REQ.SERVER.PING.JSZ`` is gone at once; without it, a replica whose last
contact (``active``) is older than ``lost_after`` is gone. ``current`` alone is not used: a dead follower keeps
``current: true`` for about ten seconds (G10).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import nats.errors

from pipeline.errors import JsArchiveError, NotFoundError, ServerRefused, TransferFailed
from pipeline.jetstream import ApiError, ConnectOptions, JetStream, connect
from pipeline.keys import KeyRing
from pipeline.manifest import Manifest
from pipeline.repository import Ref, Repository
from pipeline.retention import parse_created
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
VERDICTS = (HEALTHY, HEALING, NEEDS_PEER_REMOVE, QUORUM_LOST, LOST, EMPTIED, R1_LOST)
RESTORE_REQUIRED = frozenset({LOST, EMPTIED, R1_LOST})
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
) -> StreamHealth:
    """The verdict for one stream from its STREAM.INFO answer (None: no replica answered)."""
    if info is None:
        if backup is not None and backup.replicas == 1:
            return StreamHealth(stream, R1_LOST, "R1 stream whose only server is gone: restore required", backup=backup)
        return StreamHealth(
            stream,
            LOST,
            "no replica answers (listed by the meta group as missing): restore required",
            backup=backup,
        )
    cfg = info.get("config") or {}
    state = info.get("state") or {}
    cl = info.get("cluster") or {}
    want = int(cfg.get("num_replicas", 1) or 1)
    leader = cl.get("leader")
    h = StreamHealth(
        stream,
        HEALTHY,
        "",
        replicas=want,
        cluster=cl.get("name"),
        leader=leader,
        messages=int(state.get("messages", 0) or 0),
        last_seq=int(state.get("last_seq", 0) or 0),
        backup=backup,
    )
    gone = set(gone_servers)
    if leader:
        h.peers.append(Peer(leader, "leader", "gone" if leader in gone else "current", 0.0))
    h.peers += [_peer(r, "replica", gone, lost_after, not leader) for r in cl.get("replicas") or []]
    dead = sorted(p.name for p in h.peers if p.state == "gone")
    alive = [p for p in h.peers if p.state != "gone"]
    members = len(h.peers) if cl else want
    if not leader and cl:
        if len(alive) * 2 > max(members, want):
            h.verdict, h.detail = HEALING, "electing a stream leader"
            return h
        survivor = ", ".join(p.name for p in alive) or "?"
        h.verdict, h.remove = QUORUM_LOST, dead
        h.detail = (
            f"quorum lost: {len(alive)} of {members} replicas left ({survivor}, last_seq {h.last_seq}); peer-remove "
            f"of {', '.join(dead) or 'the lost servers'} makes the survivor leader with what it holds"
        )
        if backup is not None:
            h.detail += f"; the latest backup has last_seq {backup.last_seq}"
            if backup.last_seq > (h.last_seq or 0):
                h.detail += " (more than the survivor: consider restoring it instead)"
        return h
    if dead:
        h.verdict, h.remove = NEEDS_PEER_REMOVE, dead
        h.detail = f"replica(s) on lost server(s) {', '.join(dead)}: peer-remove them and the cluster rebuilds"
        return h
    if backup is not None and backup.messages > 0 and h.messages == 0 and h.last_seq == 0:
        # A purge keeps last_seq; only a stream re-created empty (peer-remove of every replica) is back at 0.
        h.verdict = EMPTIED
        h.detail = f"present but empty while the latest backup holds {backup.messages:,} messages: restore required"
        return h
    lagging = [p.name for p in h.peers if p.state == "lagging"]
    desired = cl.get("desired")
    if lagging or desired or (cl and len(h.peers) < want):
        parts = []
        if lagging:
            parts.append(f"catching up: {', '.join(lagging)}")
        if cl and len(h.peers) < want:
            parts.append(f"{len(h.peers)} of {want} replicas placed")
        if desired:
            parts.append(str((desired.get("status") or {}).get("description") or "peer set changing"))
        h.verdict, h.detail = HEALING, "; ".join(parts)
        return h
    h.detail = f"{len(h.peers)} of {want} replica(s) current" if cl else "standalone"
    return h


# -- what is known about the servers -----------------------------------------------------------------------------


@dataclass
class ClusterView:
    system: bool  # judged with the system account (server liveness) or from stream info alone
    members: list[str] = field(default_factory=list)  # JetStream meta group members
    alive: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    meta_leader: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


async def cluster_view(sys_js: JetStream | None, window: float = PING_WINDOW) -> ClusterView:
    """Meta group members and which of them answer a server ping (needs the system account)."""
    if sys_js is None:
        return ClusterView(system=False)
    nc = sys_js.nc
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    answers: list[dict] = []
    try:
        await nc.publish("$SYS.REQ.SERVER.PING.JSZ", b"{}", reply=inbox)
        deadline = time.monotonic() + window
        expected: int | None = None
        while time.monotonic() < deadline and (expected is None or len(answers) < expected):
            try:
                msg = await sub.next_msg(timeout=max(0.05, deadline - time.monotonic()))
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                break
            with contextlib.suppress(ValueError):
                doc = json.loads(msg.data)
                answers.append(doc)
                meta = (doc.get("data") or {}).get("meta_cluster") or {}
                if meta.get("leader") and meta.get("cluster_size"):
                    expected = max(expected or 0, int(meta["cluster_size"]))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    if not answers:
        raise ServerRefused(
            "no server answered $SYS.REQ.SERVER.PING.JSZ: the --system-* credentials are not for the system account"
        )
    alive = {str((a.get("server") or {}).get("name")) for a in answers}
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
    )


# -- status -------------------------------------------------------------------------------------------------------


@dataclass
class StatusReport:
    checked_at: str
    cluster: ClusterView
    streams: list[StreamHealth]
    archive: str | None = None

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
        }


@dataclass
class StatusOptions:
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    system: ConnectOptions | None = None  # the system account: server liveness and peer-remove
    url: str | None = None  # archive: newest backup of each stream
    sink: SinkOptions = field(default_factory=SinkOptions)
    streams: list[str] = field(default_factory=list)  # only these (default: every stream of the account)
    lost_after: float = LOST_AFTER


def latest_backups(repo: Repository, now: dt.datetime | None = None) -> dict[str, LatestBackup]:
    """The newest backup of every stream in the archive, read from manifests' clear envelopes."""
    now = now or _utcnow()
    newest: dict[str, Ref] = {}
    for ref in repo.refs():  # newest first
        newest.setdefault(ref.stream, ref)
    return {stream: LatestBackup.of(repo.load_ref(ref), now) for stream, ref in newest.items()}


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


async def _info_or_none(js: JetStream, stream: str, tries: int = 2) -> dict | None:
    """STREAM.INFO; None when no replica answers within a leader election or two."""
    for attempt in range(tries):
        try:
            info = await js.stream_info(stream, timeout=INFO_TIMEOUT)
        except (TransferFailed, ServerRefused, ApiError):
            info = None
        if info is not None:
            return info
        if attempt + 1 < tries:
            await asyncio.sleep(0.5)
    return None


async def gather_streams(js: JetStream, only: list[str] | None = None) -> dict[str, dict | None]:
    """Every stream name of the account with its info (None: nobody answered for it)."""
    deadline = time.monotonic() + META_WAIT
    while True:
        # right after a server loss the meta group may be electing a leader for a few seconds
        try:
            names = await js.stream_names()
            listed, _missing = await _stream_list(js)
            break
        except (TransferFailed, ServerRefused, ApiError) as e:
            transient = isinstance(e, TransferFailed) or "10008" in str(e) or "temporarily unavailable" in str(e)
            if not transient:
                raise
            if time.monotonic() >= deadline:
                raise _meta_unavailable("STREAM.NAMES / STREAM.LIST") from None
            await asyncio.sleep(0.5)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise NotFoundError(f"no stream named {', '.join(unknown)} in this account")
        names = [n for n in names if n in only]
    out: dict[str, dict | None] = {n: listed.get(n) for n in names}
    pending = [n for n, i in out.items() if i is None]
    # A leaderless stream whose survivor answers STREAM.INFO directly is not in STREAM.LIST; ask each one.
    sem = asyncio.Semaphore(8)

    async def ask(n: str) -> None:
        async with sem:
            out[n] = await _info_or_none(js, n)

    await asyncio.gather(*(ask(n) for n in pending))
    return out


async def _connect_system(opts: ConnectOptions | None) -> JetStream | None:
    return await connect(opts) if opts is not None else None


async def status_async(opts: StatusOptions) -> StatusReport:
    """One verdict per stream of the account (see :func:`judge`)."""
    repo = Repository.open(opts.url, opts.sink) if opts.url else None
    backups = latest_backups(repo) if repo else {}
    sys_js = await _connect_system(opts.system)
    try:
        view = await cluster_view(sys_js)
    finally:
        if sys_js is not None:
            await sys_js.close()
    async with await connect(opts.connect) as js:
        infos = await gather_streams(js, opts.streams or None)
    gone = set(view.gone)
    streams = [
        judge(n, infos[n], gone_servers=gone, backup=backups.get(n), lost_after=opts.lost_after) for n in sorted(infos)
    ]
    if not view.system:
        # without server liveness, the lost servers are the ones the streams' leaders have not heard from
        view.gone = sorted({p.name for s in streams for p in s.peers if p.state == "gone"})
    return StatusReport(
        checked_at=_utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        cluster=view,
        streams=streams,
        archive=repo.url if repo else None,
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

    @property
    def blocked(self) -> list[Action]:
        return [a for a in self.actions if a.blocked]

    @property
    def nothing_to_do(self) -> bool:
        return not any(a.kind in ("peer-remove", "restore") for a in self.actions)

    def to_json(self) -> dict:
        return {"status": self.status.to_json(), "actions": [a.to_json() for a in self.actions]}


def plan_recovery(report: StatusReport, *, have_system: bool, placement: str | None = None) -> RecoveryPlan:
    """Peer-remove every lost server (one at a time), wait for the replicated streams to heal, then delete and
    restore what has no replica left from its latest backup."""
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
            actions.append(
                Action(
                    "restore",
                    s.stream,
                    f"delete, then restore backup {b.manifest_id[:12]} ({b.messages:,} messages, last_seq "
                    f"{b.last_seq}, {format_age(b.age_s)} old){where}",
                )
            )
    return RecoveryPlan(report, actions)


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
    cluster: str | None = None  # restore placement (default: the backed-up one)
    tags: list[str] = field(default_factory=list)
    replicas: int | None = None
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
    parts = []
    if opts.cluster:
        parts.append(f"cluster {opts.cluster}")
    if opts.tags:
        parts.append("tags " + ",".join(opts.tags))
    return " and ".join(parts) or None


async def plan_async(opts: RecoverOptions) -> RecoveryPlan:
    report = await status_async(opts)
    return plan_recovery(report, have_system=opts.system is not None, placement=_placement(opts))


def plan(opts: RecoverOptions) -> RecoveryPlan:
    return asyncio.run(plan_async(opts))


async def peer_remove(sys_js: JetStream, server: str, deadline_s: float = 30.0) -> str:
    """``$JS.API.SERVER.REMOVE`` by name, as ``nats server cluster peer-remove``; one at a time (G12)."""
    deadline = time.monotonic() + deadline_s
    while True:
        resp = await sys_js.request(f"{sys_js.prefix}.SERVER.REMOVE", json.dumps({"peer": server}).encode(), 10.0)
        err = resp.get("error")
        if not err:
            if resp.get("success"):
                return "removed"
            raise ServerRefused(f"peer-remove {server}: unexpected answer {resp}")
        code = int(err.get("err_code", 0) or 0)
        if code == 10044:  # not a member (any more): already done
            return "was not a member any more"
        if code != 10202 or time.monotonic() >= deadline:  # 10202: another membership change is in progress
            raise ServerRefused(f"peer-remove {server}: {err.get('description', err)} (error {code})")
        await asyncio.sleep(0.5)


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


async def recover_async(opts: RecoverOptions, say: Callable[[str], None] = lambda _m: None) -> RecoveryResult:
    """Take the plan: peer-removes, wait for rebuilds, delete + restore from backups, verify; then status again."""
    from pipeline.restore import RestoreOptions, restore_stream_async

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
            try:
                if not await js.delete_until_gone(a.target):
                    raise TransferFailed(f"stream {a.target!r} could not be deleted before its restore")
                r = await restore_stream_async(
                    RestoreOptions(
                        url=opts.url,
                        stream=a.target,
                        backup=health.backup.manifest_id,
                        connect=opts.connect,
                        keys=opts.keys,
                        cluster=opts.cluster,
                        tags=list(opts.tags),
                        replicas=opts.replicas,
                        wait=opts.wait,
                        sink=opts.sink,
                    )
                )
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
