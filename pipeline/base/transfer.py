"""The data path's knobs as one value, shared by every backup, restore, export and import (s3transfer's
TransferConfig is the model): a front end builds one and passes it down; no stage invents its own defaults.

The defaults are the measured ones (protocol reference, section 6): they are what a run gets without flags.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024

SNAPSHOT_CHUNK = 256 * 1024  # the chunk the server sends; measured best on 2.15
SNAPSHOT_WINDOW = 16 * MiB  # bytes the server may have unacknowledged (servers >= 2.12.5)
RESTORE_CHUNK = MiB  # the chunk we send; the server takes up to max_payload
RESTORE_IN_FLIGHT = 4  # chunks sent ahead of their acks


@dataclass(frozen=True)
class TransferConfig:
    """How bytes move; never what is moved. Memory is about ``(workers + buffer_blocks) × block_size`` on backup
    and ``(prefetch + workers) × block_size`` on restore."""

    # NATS → archive (backup)
    snapshot_chunk: int | None = SNAPSHOT_CHUNK  # None: the server's default
    snapshot_window: int | None = SNAPSHOT_WINDOW  # None: the server's default
    block_size: int | None = None  # None: 8 MiB, grown so no backup needs more than 10,000 blocks
    buffer_blocks: int = 2  # blocks queued between the NATS side and the seal threads
    stall_budget: float = 4.0  # longest the archive may hold up the NATS side (the server gives up after 5 s)
    # archive → NATS (restore)
    restore_chunk: int = RESTORE_CHUNK
    in_flight: int = RESTORE_IN_FLIGHT
    prefetch: int = 4  # archive blocks fetched ahead of the one being decoded
    # both directions
    workers: int = 2  # threads that compress and seal (backup) or open and decompress (restore) blocks
