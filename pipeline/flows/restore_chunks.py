"""What a restore sends, as restore chunks: the stored S2 stream as is, a decoded archive re-framed, or a rewritten
(or merged chain) archive, each produced in a thread so the event loop only sends."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from pipeline.archive.chains import ChainSource
from pipeline.archive.reader import BlockReader
from pipeline.base.retry import until
from pipeline.base.transfer import TransferConfig
from pipeline.format import payload
from pipeline.format.rewrite import RewritePlan, rewrite_archive

DRAIN_PAUSE = 0.05  # between emptyings of the chunk queue while its producer thread ends


def restore_chunks(
    reader: BlockReader | ChainSource, encoding: str, plan: RewritePlan | None, transfer: TransferConfig
) -> AsyncIterator[bytes]:
    """The restore chunks of ``reader``'s archive (``plan``: rewritten, pass 2)."""
    if plan is not None:
        return _rewritten_chunks(reader, encoding, plan, transfer)
    if encoding == payload.S2_STREAM:
        return reader.chunks(transfer.restore_chunk)  # the stored bytes are what the server reads
    return _reframed_chunks(reader, encoding, transfer)


_END = object()


async def _rewritten_chunks(
    reader: BlockReader | ChainSource, encoding: str, plan: RewritePlan, transfer: TransferConfig
) -> AsyncIterator[bytes]:
    """Pass 2 (in a thread): blocks → decoded archive → rewrite → Snappy framing → restore chunks."""

    def produce() -> Iterator[bytes]:
        archive = rewrite_archive(payload.decoded(reader.blocks(), encoding), plan)
        return payload.rechunk(payload.server_stream(archive, payload.NATSARC), transfer.restore_chunk)

    async for chunk in _threaded(produce, max(2, transfer.in_flight * 2)):
        yield chunk


async def _reframed_chunks(reader: BlockReader, encoding: str, transfer: TransferConfig) -> AsyncIterator[bytes]:
    """A backup stored decoded (in a thread): blocks → Snappy framing → restore chunks."""

    def produce() -> Iterator[bytes]:
        return payload.rechunk(payload.server_stream(reader.blocks(), encoding), transfer.restore_chunk)

    async for chunk in _threaded(produce, max(2, transfer.in_flight * 2)):
        yield chunk


async def _threaded(make: Callable[[], Iterator[bytes]], depth: int) -> AsyncIterator[bytes]:
    """The items of a blocking iterator, produced in a thread with at most ``depth`` waiting."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in make():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    thread = threading.Thread(target=run, name="rewrite", daemon=True)
    thread.start()
    try:
        while True:
            item = await asyncio.to_thread(q.get)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # the producer may be blocked putting into a full queue: take what it puts until it has ended
        await until(lambda running: not running, pause=DRAIN_PAUSE)(_drain, q, thread)


async def _drain(q: queue.Queue, thread: threading.Thread) -> bool:
    """Empty ``q``; whether ``thread`` still runs."""
    with contextlib.suppress(queue.Empty):
        while True:
            q.get_nowait()
    return thread.is_alive()
