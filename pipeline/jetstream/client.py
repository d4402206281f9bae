"""The JetStream API jsarchive speaks (see docs/operations.md and the protocol reference), and :func:`connect`.

Only what jsarchive needs: connect with natscli's options (:mod:`~pipeline.jetstream.connect`), JetStream API requests
with their errors mapped to messages a person understands (:mod:`~pipeline.jetstream.api`,
:mod:`~pipeline.jetstream.api_errors`), stream/consumer info, and the two transfers:

- :meth:`JetStream.snapshot` (:mod:`~pipeline.jetstream.snapshot_protocol`) subscribes to a fresh concrete inbox,
  flushes, requests the snapshot and hands every chunk to a caller's coroutine, acking the chunk as soon as that
  coroutine returns (the chunk is enqueued).
- :meth:`JetStream.restore` (:mod:`~pipeline.jetstream.restore_protocol`) requests the restore and publishes chunks
  with several in flight, each with its own reply subject, then the empty EOF, and returns the server's final stream
  info.

Every name callers import from here stays importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.errors

from pipeline.base.errors import JsArchiveError, NotFoundError, TransferFailed
from pipeline.base.retry import within
from pipeline.base.transfer import MiB
from pipeline.format.snapshot import format_for_version
from pipeline.jetstream.api import API_TIMEOUT, ApiClient
from pipeline.jetstream.api_errors import (
    JS_CLUSTER_NOT_AVAILABLE,
    PEER_REMOVE_IN_PROGRESS,
    ApiError,
    api_error,
    err_code,
    meta_unavailable,
    no_responders,
)
from pipeline.jetstream.connect import ConnectOptions, open_connection
from pipeline.jetstream.natscli_context import load_context
from pipeline.jetstream.restore_protocol import (
    FIRST_CHUNK_GRACE,
    RESTORE_ACK_TIMEOUT,
    RESTORE_EOF_TIMEOUT,
    RESTORE_INIT_TIMEOUT,
    upload_restore,
)
from pipeline.jetstream.snapshot_protocol import SNAPSHOT_IDLE_TIMEOUT, SnapshotResult, take_snapshot

__all__ = [
    "API_TIMEOUT",
    "FIRST_CHUNK_GRACE",
    "JS_CLUSTER_NOT_AVAILABLE",
    "PEER_REMOVE_IN_PROGRESS",
    "RESTORE_ACK_TIMEOUT",
    "RESTORE_EOF_TIMEOUT",
    "RESTORE_INIT_TIMEOUT",
    "SNAPSHOT_IDLE_TIMEOUT",
    "ApiError",
    "ConnectOptions",
    "JetStream",
    "ServerInfo",
    "SnapshotResult",
    "api_error",
    "connect",
    "err_code",
    "load_context",
    "meta_unavailable",
    "no_responders",
    "parse_version",
]

DELETE_POLL_PAUSE = 0.25  # between looks at STREAM.NAMES while a deleted stream is still listed


def parse_version(text: str) -> tuple[int, int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)


@dataclass
class ServerInfo:
    version: str
    name: str
    cluster: str | None
    jetstream: bool
    max_payload: int
    api_level: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    @property
    def snapshot_format(self) -> str:
        return format_for_version(self.version_tuple)


class StreamStillListed(Exception):
    """STREAM.NAMES still lists a stream that was deleted."""


def _not_gone_yet(e: BaseException) -> bool:
    """Worth another look: the stream is still listed, or the API did not answer the delete or the listing."""
    return isinstance(e, (StreamStillListed, JsArchiveError))


class JetStream(ApiClient):
    """The JetStream API on one connection: account, stream and consumer requests, deletes, and the two transfers."""

    async def close(self) -> None:
        # Closing a broken connection must not mask the real error.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.close(), timeout=5)

    async def __aenter__(self) -> JetStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def scatter(self, subject: str, window: float, enough: Callable[[list[dict]], bool]) -> list[dict]:
        """Publish one request to every server (``$SYS.REQ.SERVER.PING.*``) and collect the JSON answers until
        ``enough(answers)`` or ``window`` seconds have passed; answers that are not JSON are left out."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        answers: list[dict] = []
        try:
            await self.nc.publish(subject, b"{}", reply=inbox)
            deadline = time.monotonic() + window
            while time.monotonic() < deadline and not enough(answers):
                try:
                    msg = await sub.next_msg(timeout=max(0.05, deadline - time.monotonic()))
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    break
                with contextlib.suppress(ValueError):
                    doc = json.loads(msg.data)
                    if isinstance(doc, dict):
                        answers.append(doc)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return answers

    def server_info(self) -> ServerInfo:
        info = dict(self.nc._server_info or {})  # nats-py keeps INFO here; there is no public accessor
        return ServerInfo(
            version=str(info.get("version", "0.0.0")),
            name=str(info.get("server_name", "")),
            cluster=info.get("cluster"),
            jetstream=bool(info.get("jetstream")),
            max_payload=int(self.nc.max_payload or MiB),
        )

    async def account_info(self) -> dict:
        return await self.api("INFO")

    async def rtt(self, timeout: float = 5.0) -> float | None:
        """The connection's round trip in seconds (one PING/PONG, sent beside other requests so it costs no
        round trip of its own); None if it could not be measured, which callers treat as loopback."""
        try:
            return float(await asyncio.wait_for(self.nc.rtt(), timeout))
        except (asyncio.TimeoutError, nats.errors.Error, OSError):
            return None

    async def api_level(self) -> int | None:
        info = await self.account_info()
        level = (info.get("api") or {}).get("level")
        return int(level) if level is not None else None

    async def stream_info(self, stream: str, *, timeout: float = API_TIMEOUT) -> dict | None:
        try:
            return await self.api(f"STREAM.INFO.{stream}", stream=stream, timeout=timeout)
        except NotFoundError:
            return None

    async def stream_names(self) -> list[str]:
        names: list[str] = []
        offset = 0
        while True:
            resp = await self.api("STREAM.NAMES", {"offset": offset})
            page = resp.get("streams") or []
            names.extend(page)
            offset += len(page)
            if not page or offset >= int(resp.get("total", 0)):
                return names

    async def consumers(self, stream: str) -> list[dict]:
        out: list[dict] = []
        offset = 0
        while True:
            resp = await self.api(f"CONSUMER.LIST.{stream}", {"offset": offset}, stream=stream)
            page = resp.get("consumers") or []
            out.extend(page)
            offset += len(page)
            if not page or offset >= int(resp.get("total", 0)):
                return out

    async def consumer_names(self, stream: str, *, timeout: float = API_TIMEOUT) -> list[str]:
        resp = await self.api(f"CONSUMER.NAMES.{stream}", {"offset": 0}, stream=stream, timeout=timeout)
        return list(resp.get("consumers") or [])

    async def delete_stream(self, stream: str, *, timeout: float = API_TIMEOUT) -> bool:
        """Delete ``stream``; True if it is gone afterwards (a delete can take effect without an answer)."""
        try:
            await self.api(f"STREAM.DELETE.{stream}", stream=stream, timeout=timeout)
            return True
        except NotFoundError:
            return True
        except TransferFailed:
            return stream not in await self.stream_names()

    async def create_stream(self, config: dict, *, timeout: float = API_TIMEOUT) -> dict:
        return await self.api(f"STREAM.CREATE.{config['name']}", config, stream=config["name"], timeout=timeout)

    async def update_stream(self, config: dict, *, timeout: float = API_TIMEOUT) -> dict:
        return await self.api(f"STREAM.UPDATE.{config['name']}", config, stream=config["name"], timeout=timeout)

    async def delete_until_gone(self, stream: str, deadline_s: float = 30.0) -> bool:
        """Delete ``stream`` and wait until STREAM.NAMES no longer lists it; False if it is still listed at the
        deadline. A stream with no replica left is deleted without an answer (G14): the name list is the proof."""
        try:
            await within(deadline_s, _not_gone_yet, pause=DELETE_POLL_PAUSE)(self._delete_and_look, stream)
        except (StreamStillListed, JsArchiveError):
            return False
        return True

    async def _delete_and_look(self, stream: str) -> None:
        with contextlib.suppress(JsArchiveError):
            await self.delete_stream(stream, timeout=5.0)
        if stream in await self.stream_names():
            raise StreamStillListed(stream)

    # The two transfers, each in its protocol's module; as methods, so a test can tap them on the class.
    snapshot = take_snapshot
    restore = upload_restore


async def connect(opts: ConnectOptions) -> JetStream:
    """The JetStream API over a connection made as natscli would make it (flags over the selected context)."""
    opts = opts.resolved()
    js = JetStream(await open_connection(opts), opts.api_prefix)
    if opts.timeout is not None:
        js.api_timeout = opts.timeout
    js.trace = opts.trace
    return js
