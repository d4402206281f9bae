"""The cluster as the system account sees it: meta group members, which of them answer, their clusters and tags."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.base.errors import ServerRefused
from pipeline.jetstream.client import ConnectOptions, JetStream, connect

PING_WINDOW = 1.5  # how long to collect $SYS.REQ.SERVER.PING.JSZ answers when the member count is unknown


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


async def connect_system(opts: ConnectOptions | None) -> JetStream | None:
    return await connect(opts) if opts is not None else None
