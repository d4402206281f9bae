"""The restore protocol: request the restore, publish the chunks with several in flight, each with its own reply
subject, then the empty EOF, and return the server's final stream info."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client

from pipeline.base.errors import ServerRefused, TransferFailed
from pipeline.base.retry import within
from pipeline.base.transfer import RESTORE_IN_FLIGHT
from pipeline.jetstream.api import ApiClient, unsubscribe_quietly
from pipeline.jetstream.api_errors import api_error, no_responders

RESTORE_INIT_TIMEOUT = 30.0  # clustered: the meta leader places the stream and the new leader answers
RESTORE_ACK_TIMEOUT = 30.0
RESTORE_EOF_TIMEOUT = 3600.0  # older servers do the whole restore after EOF
FIRST_CHUNK_GRACE = 2.0  # how long the first restore chunk may find no subscriber (well inside the 5 s watchdog)
FIRST_CHUNK_PAUSE = 0.05


async def upload_restore(
    js: ApiClient,
    stream: str,
    request: dict,
    chunks: AsyncIterator[bytes],
    *,
    in_flight: int = RESTORE_IN_FLIGHT,
    on_sent: Callable[[int], None] | None = None,
    on_accepted: Callable[[], None] | None = None,
) -> dict:
    """Restore ``stream`` from the chunks; returns the server's final stream info (config, state).

    ``on_accepted`` is called once the server has accepted the request: from then on a failure may leave a
    partial stream behind, and the caller owns cleaning it up.
    """
    in_flight = max(1, int(in_flight))
    first_alone = not _answers_locally(js)
    resp = await js.api(f"STREAM.RESTORE.{stream}", request, stream=stream, timeout=RESTORE_INIT_TIMEOUT)
    deliver = resp.get("deliver_subject")
    if not deliver:
        raise ServerRefused(f"the server accepted the restore of {stream!r} but named no subject to send to")
    if on_accepted is not None:
        on_accepted()
    loop = asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future] = {}
    inbox = js.nc.new_inbox()

    async def on_ack(msg: Any) -> None:
        fut = waiting.pop(msg.subject.rpartition(".")[2], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    sub = await js.nc.subscribe(f"{inbox}.*", cb=on_ack, pending_msgs_limit=0, pending_bytes_limit=0)
    pending: deque[tuple[int, asyncio.Future]] = deque()
    seq = 0

    async def settle(n: int, fut: asyncio.Future) -> None:
        try:
            msg = await asyncio.wait_for(fut, RESTORE_ACK_TIMEOUT)
        except asyncio.TimeoutError:
            raise TransferFailed(
                f"restore of {stream!r}: the server did not acknowledge chunk {n} within {RESTORE_ACK_TIMEOUT:g} s"
            ) from None
        _check_restore_reply(stream, msg, f"chunk {n}")

    try:
        async for chunk in chunks:
            seq += 1
            if seq == 1 and first_alone:
                _check_restore_reply(stream, await _first_chunk(js.nc, stream, deliver, chunk), "chunk 1")
                if on_sent is not None:
                    on_sent(len(chunk))
                continue
            fut = loop.create_future()
            waiting[str(seq)] = fut
            try:
                await js.nc.publish(deliver, chunk, reply=f"{inbox}.{seq}")
            except nats.errors.ConnectionClosedError:
                raise TransferFailed(f"restore of {stream!r}: the connection closed at chunk {seq}") from None
            pending.append((seq, fut))
            if on_sent is not None:
                on_sent(len(chunk))
            while len(pending) >= in_flight:
                await settle(*pending.popleft())
        while pending:
            await settle(*pending.popleft())
    except BaseException:
        # End the server's side now rather than leaving it to its 5 s stall watchdog, so the caller can
        # delete whatever it created (a 2.15 server keeps a partial stream) without racing it.
        with contextlib.suppress(Exception):  # the restore already failed; its cause is what matters
            await js.nc.request(deliver, b"", timeout=10.0)
        for _, fut in pending:
            fut.cancel()
        await unsubscribe_quietly(sub)
        raise
    try:
        return await _final_info(js.nc, stream, deliver)
    finally:
        await unsubscribe_quietly(sub)


async def _final_info(nc: Client, stream: str, deliver: str) -> dict:
    """Send the empty EOF and return the stream info the server answers once the restore is done."""
    try:
        final = await nc.request(deliver, b"", timeout=RESTORE_EOF_TIMEOUT)
    except nats.errors.NoRespondersError:
        raise TransferFailed(_abandoned(stream)) from None
    except nats.errors.TimeoutError:
        raise TransferFailed(f"restore of {stream!r}: no final answer after the last chunk") from None
    info = _check_restore_reply(stream, final, "the end of the upload")
    if not info or info.get("type") != "io.nats.jetstream.api.v1.stream_create_response":
        raise TransferFailed(f"restore of {stream!r}: the server's final answer was not a stream info")
    return info


def _answers_locally(js: ApiClient) -> bool:
    """Whether the server we are connected to is the one that answers the restore request, alone: standalone
    (no cluster in its INFO), JetStream enabled, and no domain or API prefix that could route the request on.
    That server subscribes to the delivery subject before it answers, so a first chunk sent after the answer
    cannot miss it, and the first chunk need not wait alone for its ack (one round trip)."""
    info = js.nc._server_info or {}  # nats-py keeps INFO here; there is no public accessor
    return not info.get("cluster") and bool(info.get("jetstream")) and js.prefix == "$JS.API"


async def _first_chunk(nc: Client, stream: str, deliver: str, chunk: bytes) -> Any:
    """Send the first chunk alone until the server takes it.

    In a cluster the stream leader answers the restore request as soon as it has subscribed to the delivery
    subject, but that interest can reach the server we are connected to after the answer does. A chunk sent in
    that gap finds no subscriber (503 no responders) and was received by nobody, so sending it again is safe;
    the rest is pipelined once the first one is in. (Seen with several restores at once into a 3-node cluster.)
    """
    until_subscribed = within(FIRST_CHUNK_GRACE, no_responders, pause=FIRST_CHUNK_PAUSE)
    try:
        return await until_subscribed(nc.request, deliver, chunk, timeout=RESTORE_ACK_TIMEOUT)
    except nats.errors.NoRespondersError:
        raise TransferFailed(_abandoned(stream)) from None
    except nats.errors.TimeoutError:
        raise TransferFailed(
            f"restore of {stream!r}: the server did not acknowledge chunk 1 within {RESTORE_ACK_TIMEOUT:g} s"
        ) from None
    except nats.errors.ConnectionClosedError:
        raise TransferFailed(f"restore of {stream!r}: the connection closed at chunk 1") from None


def _abandoned(stream: str) -> str:
    return (
        f"restore of {stream!r} broke off: the server abandoned it (no chunk for 5 s, or it failed on an earlier chunk)"
    )


def _check_restore_reply(stream: str, msg: Any, what: str) -> dict:
    status = (msg.headers or {}).get("Status", "")
    if status == "503":
        raise TransferFailed(_abandoned(stream))
    if status and status not in ("200", "204"):
        raise TransferFailed(
            f"restore of {stream!r} failed at {what}: status {status} {msg.headers.get('Description', '')}"
        )
    if not msg.data:
        return {}
    text = msg.data.decode("utf-8", "replace")
    if text.startswith("-ERR"):
        raise TransferFailed(f"restore of {stream!r} failed at {what}: {text.strip()}")
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        raise TransferFailed(f"restore of {stream!r}: unexpected answer at {what}: {text[:200]!r}") from None
    if "error" in body:
        raise api_error(body["error"], stream)
    return body
