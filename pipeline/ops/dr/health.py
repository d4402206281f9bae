"""What dr knows of one stream: its peers, its newest backup, and the verdict on it (the verdict names)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from pipeline.archive.retention import parse_created
from pipeline.format.manifest import Manifest

LOST_AFTER = 10.0  # seconds without contact before a replica counts as gone: the server's own threshold (G10)


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


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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
            # a restore point of a chain is the stream up to its chain's last_seq (a delta's summary counts its range)
            last_seq=int(m.chain["last_seq"]) if m.chain else int(s.get("last_seq", 0)),
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
