"""The verdict on one stream from its STREAM.INFO answer: a list of rules, the first that applies decides."""

from __future__ import annotations

from dataclasses import asdict

from pipeline.format import marks
from pipeline.ops.dr.health import (
    EMPTIED,
    HEALING,
    HEALTHY,
    LOST,
    LOST_AFTER,
    MISSING,
    NEEDS_PEER_REMOVE,
    PARTIAL_RESTORE,
    QUORUM_LOST,
    R1_LOST,
    LatestBackup,
    Peer,
    StreamHealth,
)


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
