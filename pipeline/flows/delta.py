"""Incremental backups (``--incremental``): whether the next capture of a stream can be a delta, and the delta itself.

A delta is a NATSARC1 archive of its own (docs/design/incremental.md): a head (the stream's state and every durable
consumer as ``STREAM.INFO`` and ``CONSUMER.LIST`` give them when the capture starts), then every message after the
parent's point up to the stream's last sequence, read with the catch-up reader a V2 full backup already uses
(pipeline/jetstream/livetail.py: pipelined ``STREAM.MSG.GET``, no side effects on any retention policy). It goes
through the same writer as any backup, so it is sealed, compressed and committed by a manifest the same way; the
manifest's clear ``chain`` envelope names the parent and the captured range.

A full backup is taken instead, and the result says why, when the archive has no incremental restore point of the
stream yet, when the newest one does not restore (a hole in its chain), when the stream was re-created or purged
past the parent (:func:`pipeline.format.chain.why_full`), or when the chain already has ``full_every`` points.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.archive.chains import chain_point, chained_points
from pipeline.archive.repository import Repository
from pipeline.base.errors import JsArchiveError, ServerRefused, setting
from pipeline.format import s2
from pipeline.format.chain import RestorePoint, plan_chain, why_full
from pipeline.format.natsarc import END_MARKER, Consumer, encode_head
from pipeline.format.snapshot import V2
from pipeline.jetstream.client import ServerInfo


@dataclass(frozen=True)
class ChainStart:
    """What the next capture of a stream is: a delta after ``parent``, or (parent None) a full backup that starts
    a chain, for the reason ``why_full``."""

    parent: RestorePoint | None
    chain_id: str | None  # the parent's chain
    points: int  # restore points on the parent's path (0 for a full backup)
    why_full: str | None = None


def check_server(server: ServerInfo) -> None:
    """Chains are V2 only: a delta is merged into one NATSARC1 archive at restore (docs/design/incremental.md)."""
    if server.snapshot_format != V2:
        raise ServerRefused(
            f"{setting('incremental')} needs snapshot format V2 (nats-server 2.15 or later): a restore merges the "
            f"chain into one NATSARC1 archive; nats-server {server.version} sends V1 (a tar). Leave out "
            f"{setting('incremental')} for a full backup"
        )


def chain_start(
    repo: Repository, stream: str, info: dict, full_every: int | None, known: ChainStart | None = None
) -> ChainStart:
    """Where the next capture of ``stream`` (``info``: its STREAM.INFO now) starts: after the newest point of the
    archive, or after ``known`` (a caller that committed the previous point itself: ``stream follow``, whose lease
    makes it the only writer of the chain), so that a long run does not list and read the whole chain every time.
    """
    if known is not None and known.parent is not None:
        parent, points = known.parent, known.points
    else:
        chained, _ = chained_points(repo, stream)
        if not chained:
            return ChainStart(None, None, 0, f"the archive holds no incremental backup of stream {stream!r} yet")
        try:
            plan = plan_chain(chained)
        except JsArchiveError as e:
            return ChainStart(None, None, 0, f"the newest restore point does not restore ({e})")
        parent, points = plan.point, len(plan.path)
    state = info.get("state") or {}
    why = why_full(
        parent,
        stream_created=str(info.get("created") or ""),
        first_seq=int(state.get("first_seq", 0) or 0),
        last_seq=int(state.get("last_seq", 0) or 0),
    )
    if why is None and full_every is not None and points >= full_every:
        why = f"its chain has {points} restore point(s) ({setting('full-every', full_every)})"
    if why is not None:
        return ChainStart(None, None, 0, why)
    return ChainStart(parent, parent.chain, points)


def after(manifest_id: str, stream: str, chain: dict, start: ChainStart | None) -> ChainStart:
    """The start of the capture after the point just committed (``chain``: its envelope; ``start``: where that
    capture started, None or parentless for a full backup)."""
    points = start.points + 1 if start is not None and start.parent is not None else 1
    return ChainStart(chain_point(manifest_id, stream, chain), chain["id"], points)


def durables(consumers: list[dict]) -> list[dict]:
    """The durable consumers among CONSUMER.LIST's answers: what a delta's head holds, as the server's own snapshot
    does (an ephemeral consumer's state is not kept on disk)."""
    return [c for c in consumers if (c.get("config") or {}).get("durable_name")]


def delta_consumer(info: dict) -> Consumer:
    """A durable's entry for a delta's head from its CONSUMER.INFO. The info has no pending map, so a consumer with
    unacknowledged messages is written as delivered up to its ack floor: a restore redelivers them, as the server's
    own clustered snapshot does, and never loses one."""
    floor = info.get("ack_floor") or {}
    delivered = info.get("delivered") or {}
    if int(info.get("num_ack_pending", 0) or 0) > 0:
        delivered = floor

    def pair(p: dict) -> dict:
        return {"consumer_seq": int(p.get("consumer_seq", 0) or 0), "stream_seq": int(p.get("stream_seq", 0) or 0)}

    config = dict(info.get("config") or {})
    return Consumer(str(info.get("name", "")), config, {"delivered": pair(delivered), "ack_floor": pair(floor)})


def delta_head(state: dict, consumers: list[dict], timestamp_ns: int) -> bytes:
    """The head of a delta's archive, S2-framed as a server's snapshot stream is, with its end marker: the writer
    takes it like a snapshot with no messages and then appends the messages read after the parent's point."""
    archive = encode_head(state, [delta_consumer(c) for c in durables(consumers)], timestamp_ns) + END_MARKER
    return s2.S2_STREAM_IDENTIFIER + b"".join(bytes(c) for c in s2.uncompressed_chunks(archive))


def chain_envelope(start: ChainStart, *, stream_created: str, first_seq: int, last_seq: int, captured: str) -> dict:
    """The manifest's clear ``chain`` envelope (pipeline/format/manifest.py checks it); ``id`` None for a base
    means the backup's own id."""
    return {
        "id": start.chain_id,
        "parent": start.parent.id if start.parent is not None else None,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "captured": captured,
        "stream_created": stream_created,
    }
