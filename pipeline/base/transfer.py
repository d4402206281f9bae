"""The data path's knobs as one value, shared by every backup, restore, export and import (s3transfer's
TransferConfig is the model): a front end builds one and passes it down; no stage invents its own defaults.

The defaults are the measured ones (protocol reference, section 6): they are what a run gets without flags. A knob
left at None is sized from the connection's measured round trip (:func:`auto_in_flight`, :func:`auto_snapshot_window`),
so one default is right on loopback and across regions; the flows record what was chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MiB = 1024 * 1024

SNAPSHOT_CHUNK = 256 * 1024  # the chunk the server sends; measured best on 2.15
SNAPSHOT_WINDOW = 16 * MiB  # bytes the server may have unacknowledged (servers >= 2.12.5)
SNAPSHOT_WINDOW_MAX = 32 * MiB  # the server clamps the window to this
RESTORE_CHUNK = MiB  # the chunk we send; the server takes up to max_payload
RESTORE_IN_FLIGHT = 4  # chunks sent ahead of their acks: the floor, and all loopback needs
RESTORE_IN_FLIGHT_MAX = 16  # 16 × 1 MiB: what beat 4 at 100 ms (bench_wan); more only queues in socket buffers
# What the bytes in flight must cover per second of round trip: a 1 Gbit/s link, above the V2 restore thread's
# ~100 MB/s on loopback (protocol reference, section 6). Sizing above the real rate costs only queued memory.
LINK_RATE = 128_000_000
WAN_RTT = 0.010  # from here on a link is "long": larger snapshot chunks (fewer acks) are worth it


def auto_in_flight(rtt: float | None, chunk: int) -> int:
    """Restore chunks to keep unacknowledged: the link's bandwidth × delay in chunks, plus two so the server's
    restore thread never waits for the next chunk while an ack travels; at least 4, at most 16 MiB worth (and never
    fewer than 16 chunks allowed). ``rtt`` in seconds; None (not measured) gives the loopback default."""
    if not rtt or rtt <= 0:
        return RESTORE_IN_FLIGHT
    chunk = max(1, int(chunk))
    need = math.ceil(rtt * LINK_RATE / chunk) + 2
    return max(RESTORE_IN_FLIGHT, min(need, max(RESTORE_IN_FLIGHT_MAX, RESTORE_IN_FLIGHT_MAX * MiB // chunk)))


def auto_restore_chunk(max_payload: int | None) -> int:
    """The restore chunk: 1 MiB, or the server's max_payload when that is smaller (a larger message is refused)."""
    return min(RESTORE_CHUNK, max_payload) if max_payload and max_payload > 0 else RESTORE_CHUNK


def auto_snapshot_window(rtt: float | None) -> int:
    """The snapshot window: twice the link's bandwidth × delay, between the loopback default and the server's
    maximum (32 MiB), so acks travelling back never leave the server with no slot to send into."""
    if not rtt or rtt <= 0:
        return SNAPSHOT_WINDOW
    return max(SNAPSHOT_WINDOW, min(SNAPSHOT_WINDOW_MAX, math.ceil(2 * rtt * LINK_RATE / MiB) * MiB))


def auto_snapshot_chunk(rtt: float | None) -> int:
    """The snapshot chunk: 1 MiB (the server's largest) across a long link, fewer acks per byte; else the
    measured loopback best."""
    return MiB if rtt and rtt >= WAN_RTT else SNAPSHOT_CHUNK


@dataclass(frozen=True)
class TransferConfig:
    """How bytes move; never what is moved. Memory is about ``(workers + buffer_blocks) × block_size`` on backup
    and ``(prefetch + workers) × block_size`` on restore."""

    # NATS → archive (backup)
    snapshot_chunk: int | None = None  # None: from the round trip (auto_snapshot_chunk()); 0: the server's default
    snapshot_window: int | None = None  # None: from the round trip (auto_snapshot_window()); 0: the server's default
    block_size: int | None = None  # None: 8 MiB, grown so no backup needs more than 10,000 blocks
    buffer_blocks: int = 2  # blocks queued between the NATS side and the seal threads
    stall_budget: float = 4.0  # longest the archive may hold up the NATS side (the server gives up after 5 s)
    # archive → NATS (restore)
    restore_chunk: int | None = None  # None: 1 MiB or the server's max_payload if smaller (auto_restore_chunk())
    in_flight: int | None = None  # None: from the round trip (auto_in_flight())
    prefetch: int = 4  # archive blocks fetched ahead of the one being decoded
    # both directions
    workers: int = 2  # threads that compress and seal (backup) or open and decompress (restore) blocks
