"""What a snapshot really holds, counted as it streams in: the backup's record of its own contents.

The snapshot API's ``state`` is sampled when the snapshot starts; neither format freezes the stream, so under live
traffic the archive can hold less (V2 skips messages deleted while it walks; V1 copies blocks as they are when read)
or more than that state claims. A backup therefore decodes what it receives — in a thread of its own, fed through
a bounded queue so the NATS side is never held up for long — and records what the archive holds (:class:`Held`),
which restore and verify compare with instead of the sampled state.

V2: S2 decoded, NATSARC1 walked (messages, first and last sequence, consumer entries, the archive's ``state.json``).
V1: the tar walked by :class:`pipeline.format.filestore.V1Census` (message records in ``msgs/*.blk`` against what
``index.db`` claims). Memory: the queue (``depth`` chunks) plus one S2 block and one record.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from pipeline.base.errors import IntegrityError, JsArchiveError
from pipeline.format import natsarc, s2
from pipeline.format.filestore import V1Census
from pipeline.format.snapshot import V2

_END = object()


@dataclass
class Held:
    """What a backup's archive holds (``body["held"]`` in the manifest)."""

    messages: int
    first_seq: int
    last_seq: int
    consumers: int | None = None  # V2: consumer entries (None: not counted)
    archive_state: dict | None = None  # V2: the archive's own state.json
    claimed: dict | None = None  # V1: what index.db claims (messages, first_seq, last_seq)
    notes: list[str] = field(default_factory=list)
    shortfall: str | None = None  # V1: how the blocks hold less than index.db claims (such a backup is not stored)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != []}


class Census:
    """Feed it the server's snapshot chunks (:meth:`feed`), then :meth:`finish` for what they held."""

    def __init__(self, snapshot_format: str, depth: int = 64) -> None:
        self.format = snapshot_format
        self._q: queue.Queue = queue.Queue(depth)
        self._result: Held | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._ended = False  # the end of the input was taken off the queue
        self._thread = threading.Thread(target=self._run, name="census", daemon=True)
        self._thread.start()

    async def feed(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        try:
            self._q.put_nowait(chunk)
        except queue.Full:  # the census is behind: wait for it in a thread, not on the event loop
            await asyncio.to_thread(self._q.put, chunk)

    async def finish(self) -> Held:
        await asyncio.to_thread(self._q.put, _END)
        await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def abort(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.put(_END, timeout=0.1)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._q.get_nowait()

    def _chunks(self) -> Iterator[bytes]:
        while not self._ended and not self._stop.is_set():
            item = self._q.get()
            if item is _END:
                self._ended = True
                return
            yield item

    def _decoded(self) -> Iterator[bytes]:
        decoder = s2.FramedDecoder()
        for chunk in self._chunks():
            yield from decoder.feed(chunk)
        if not self._stop.is_set():
            decoder.finish()

    def _run(self) -> None:
        try:
            self._result = self._count_v2() if self.format == V2 else self._count_v1()
        except JsArchiveError as e:
            self._error = e
        except Exception as e:  # noqa: BLE001 - a bug here must fail the backup with a clear line, not a hang
            self._error = IntegrityError(f"counting the snapshot's contents failed: {e}")
        finally:
            for _ in self._chunks():  # drain, so a feeder waiting on a full queue is released
                pass

    def _count_v2(self) -> Held:
        # count_archive, not ArchiveReader: its C walk steps over the messages (~1.5 us each in Python, the
        # census's whole cost on a 2-core machine). An archive without its end marker raises ArchiveTruncated.
        count = natsarc.count_archive(self._decoded())
        return Held(
            count.messages,
            count.first_seq,
            count.last_seq,
            consumers=count.consumers,
            archive_state=count.state or None,
        )

    def _count_v1(self) -> Held:
        census = V1Census()
        for block in self._decoded():
            census.feed(block)
        counts = census.finish()
        claimed = None
        if counts.claimed_messages is not None:
            claimed = {
                "messages": counts.claimed_messages,
                "first_seq": counts.claimed_first_seq,
                "last_seq": counts.claimed_last_seq,
            }
        return Held(
            counts.messages,
            counts.first_seq,
            counts.last_seq,
            claimed=claimed,
            notes=list(counts.notes),
            shortfall=counts.shortfall(),
        )
