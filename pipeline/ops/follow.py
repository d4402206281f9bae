"""Continuous archiving: ``stream follow`` commits a delta of a stream every ``interval`` until it is stopped.

Each segment is an incremental backup (pipeline/flows/backup.py with ``incremental``), so it is committed by its
manifest like any backup and the recovery point is at most one interval (plus the segment's own time) old. A
segment with nothing new is not written. Restarting resumes from the newest committed point of the chain, because
that is where every incremental backup starts; a follower killed mid-segment leaves only an uncommitted data object
(``prune`` collects it) and loses nothing, the server still holding every message it had not committed.

One follower per stream: a lease in a NATS KV bucket of the followed account (pipeline/jetstream/lease.py) is
taken before the first segment and renewed every third of its TTL; a second follower is refused (exit 6) and a
follower whose lease was lost stops after the segment it is writing. Stopping (SIGTERM, SIGINT, or ``segments``
reached) lets the current segment commit, then releases the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pipeline.base.errors import JsArchiveError, NotFoundError
from pipeline.flows.backup import BackupOptions, BackupResult, backup_stream_async
from pipeline.jetstream.client import connect
from pipeline.jetstream.lease import Lease, LeaseLost, lease_key

LEASE_BUCKET = "jsarchive_leases"


@dataclass
class FollowOptions:
    each: BackupOptions  # the stream, the archive and how each segment is written (``incremental`` is implied)
    interval: float = 10.0  # seconds from one segment's start to the next's
    segments: int | None = None  # stop after this many segments were committed (None: until stopped)
    lease_bucket: str = LEASE_BUCKET
    lease_ttl: float = 30.0


@dataclass
class FollowReport:
    stream: str
    segments: int = 0  # committed
    messages: int = 0
    last_seq: int | None = None  # the newest committed point
    skipped: int = 0  # rounds with nothing new
    stopped_by: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


async def follow_async(
    opts: FollowOptions,
    stop: asyncio.Event | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> FollowReport:
    stop = stop or asyncio.Event()
    each = replace(opts.each, incremental=True)
    report = FollowReport(each.stream)
    js = await connect(each.connect)
    async with js:
        if await js.stream_info(each.stream) is None:
            raise NotFoundError(f"stream {each.stream!r} does not exist on the server")
        lease = Lease(js, opts.lease_bucket, lease_key("follow", each.stream), opts.lease_ttl)
        await lease.acquire()
        lost: list[LeaseLost] = []
        renewer = asyncio.create_task(_renew(lease, opts.lease_ttl / 3, lost, stop))
        try:
            while not stop.is_set():
                started = time.monotonic()
                info = await js.stream_info(each.stream)
                last = int(((info or {}).get("state") or {}).get("last_seq", 0) or 0)
                if report.last_seq is not None and last == report.last_seq:
                    report.skipped += 1
                else:
                    res = await backup_stream_async(each)
                    # the next segment continues from this one without reading the chain back from the archive
                    each = replace(each, chain_hint=res.next_start)
                    _count(report, res)
                    say(_segment_line(res))
                if lost:
                    raise lost[0]
                if opts.segments is not None and report.segments >= opts.segments:
                    report.stopped_by = "segments"
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, opts.interval - (time.monotonic() - started)))
            report.stopped_by = report.stopped_by or "signal"
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, JsArchiveError):
                await renewer
            await lease.release()
    return report


def follow(opts: FollowOptions, say: Callable[[str], None] = lambda _m: None) -> FollowReport:
    """Follow until SIGTERM/SIGINT or ``opts.segments``; the current segment commits before it returns."""
    import signal

    async def run() -> FollowReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await follow_async(opts, stop, say)

    return asyncio.run(run())


async def _renew(lease: Lease, every: float, lost: list[LeaseLost], stop: asyncio.Event) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await lease.renew()
        except LeaseLost as e:
            lost.append(e)
            stop.set()
            return


def _count(report: FollowReport, res: BackupResult) -> None:
    report.segments += 1
    report.messages += res.messages if res.chain and res.chain.get("parent") else 0
    report.last_seq = res.point if res.point is not None else report.last_seq
    report.warnings += res.warnings


def _segment_line(res: BackupResult) -> str:
    ch = res.chain or {}
    if ch.get("parent"):
        return (
            f"segment {res.manifest_id[:12]}: sequences {ch['first_seq']}-{ch['last_seq']}, {res.messages:,} message(s)"
        )
    return f"full backup {res.manifest_id[:12]} starts the chain, up to sequence {res.point}"
