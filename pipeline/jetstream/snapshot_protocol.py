"""The snapshot protocol: subscribe a fresh concrete inbox, flush, request the snapshot, and hand every chunk to the
caller's coroutine, acking the chunk as soon as that coroutine returns (the chunk is enqueued)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors

from pipeline.base.errors import JsArchiveError, TransferFailed, setting
from pipeline.base.transfer import SNAPSHOT_CHUNK, SNAPSHOT_WINDOW
from pipeline.jetstream.api import API_TIMEOUT, ApiClient, unsubscribe_quietly

SNAPSHOT_IDLE_TIMEOUT = 10.0  # the server gives up after 5 s without acks; 10 s of silence means it is gone


@dataclass
class SnapshotResult:
    config: dict
    state: dict
    chunks: int = 0
    bytes: int = 0


async def take_snapshot(
    js: ApiClient,
    stream: str,
    on_chunk: Callable[[bytes], Awaitable[None]],
    *,
    no_consumers: bool = False,
    jsck: bool = False,
    chunk_size: int | None = SNAPSHOT_CHUNK,
    window_size: int | None = SNAPSHOT_WINDOW,
    idle_timeout: float = SNAPSHOT_IDLE_TIMEOUT,
    on_start: Callable[[dict], None] | None = None,
) -> SnapshotResult:
    """Stream a snapshot of ``stream`` into ``on_chunk``; each chunk is acked once ``on_chunk`` returns.

    ``on_chunk`` must return promptly (enqueue, do not upload): the server aborts a snapshot whose chunks
    are not acked within 5 s.
    """
    inbox = js.nc.new_inbox()  # concrete, never a wildcard: that wedges snapshots on servers <= 2.12
    sub = await js.nc.subscribe(inbox, pending_msgs_limit=0, pending_bytes_limit=0)
    try:
        # The server waits at most 2 s for interest on the inbox: make sure ours has reached it.
        await js.nc.flush(timeout=max(1, int(API_TIMEOUT)))
        req: dict[str, Any] = {"deliver_subject": inbox, "no_consumers": no_consumers, "jsck": jsck}
        if chunk_size:
            req["chunk_size"] = int(chunk_size)
        if window_size:
            req["window_size"] = int(window_size)  # ignored by old servers; never send the API-level header
        # With jsck the server answers only after checking every message.
        resp = await js.api(f"STREAM.SNAPSHOT.{stream}", req, stream=stream, timeout=600.0 if jsck else API_TIMEOUT * 3)
        result = SnapshotResult(config=resp.get("config") or {}, state=resp.get("state") or {})
        if on_start is not None:
            on_start(resp)
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_timeout)
            except nats.errors.TimeoutError:
                where = "lost the connection to the server" if not js.nc.is_connected else "no data"
                raise TransferFailed(
                    f"snapshot of stream {stream!r} broke off: {where} for {idle_timeout:g} s after "
                    f"{result.bytes} bytes (server stopped or unreachable?)"
                ) from None
            except nats.errors.ConnectionClosedError:
                raise TransferFailed(
                    f"snapshot of stream {stream!r} broke off: the connection closed after {result.bytes} bytes"
                ) from None
            if not msg.data:
                status = (msg.headers or {}).get("Status", "")
                if status in ("", "204"):
                    return result
                desc = (msg.headers or {}).get("Description", "")
                raise _snapshot_eof_error(stream, status, desc, result.bytes)
            await on_chunk(msg.data)
            result.chunks += 1
            result.bytes += len(msg.data)
            if msg.reply:
                await js.nc.publish(msg.reply, b"")
    finally:
        await unsubscribe_quietly(sub)


def _snapshot_eof_error(stream: str, status: str, desc: str, nbytes: int) -> JsArchiveError:
    if status == "408" and "Flow" in desc:
        return TransferFailed(
            f"snapshot of stream {stream!r} was aborted by the server after {nbytes} bytes: chunks were not "
            "acknowledged within 5 s (408 No Flow Response). The archive could not keep up; raise the buffer "
            f"({setting('buffer-blocks')}) or check the archive's health"
        )
    if status == "408":
        return TransferFailed(
            f"snapshot of stream {stream!r} was aborted by the server after {nbytes} bytes: it saw no interest on "
            f"the delivery inbox (408 {desc})"
        )
    return TransferFailed(
        f"snapshot of stream {stream!r} failed on the server after {nbytes} bytes: {status} {desc}".strip()
    )
