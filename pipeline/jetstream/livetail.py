"""The messages that arrived while a V2 snapshot ran, read and appended to the archive: a backup as of one sequence.

A V2 snapshot walks the stream from its first to its last sequence *as of the start* and skips what is deleted
meanwhile. A key of a KV bucket (history 1) overwritten during the walk loses both values: the old one is deleted
before the walk reaches it, the new one lies beyond the snapshot's last sequence. After the snapshot, we read every
message after that last sequence up to the stream's last (pipelined ``STREAM.MSG.GET``, which has no side effects on
any retention policy, unlike a consumer on an interest or work-queue stream), as NATSARC1 entries with their
original sequences and timestamps, and the writer appends them before the archive's end marker. We chase the
stream's end for a few rounds while it keeps moving; the last sequence read up to is the backup's **point**.

What the point promises: every message with a sequence up to the point that still existed when it was read is in
the archive. A message deleted by a write *after* the point (a KV overwrite landing in the last moments) can still
be missing — the window shrinks with every round, and :class:`Tail` says how many sequences were gone when read.
A restore replays the appended messages like the snapshot's own, so stream limits (max_msgs_per_subject, ...) drop
the values they supersede.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import nats.errors

from pipeline.base.errors import ConnectionFailed, IntegrityError, JsArchiveError, TransferFailed
from pipeline.format.natsarc import encode_entry
from pipeline.jetstream.client import JetStream, api_error

MAX_ROUNDS = 5
IN_FLIGHT = 256  # loopback, 20k messages: 64 in flight 6.5k msg/s, 256 8.9k, 1024 6.1k (the server bounds it)
BATCH_BYTES = 256 * 1024
NO_MESSAGE = 10037  # "no message found"


@dataclass
class Tail:
    snapshot_last_seq: int  # where the snapshot stopped
    point: int  # the sequence the archive is consistent as of (= snapshot_last_seq when nothing was added)
    messages: int = 0  # messages appended
    first_seq: int = 0
    last_seq: int = 0
    gone: int = 0  # sequences after the snapshot that were already deleted when read
    bytes: int = 0  # headers + payloads of the messages appended
    # the server's clock (STREAM.INFO ``ts``) at the last look, "" if it did not say: every message up to the point
    # was stored before it, so it is the capture's time
    server_time: str = ""
    rounds: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def parse_time_ns(text: str) -> int:
    """RFC 3339 with nanoseconds (as nats-server writes message times) → ns since the epoch."""
    head, _, frac = text.rstrip("Z").partition(".")
    tz = ""
    for sep in ("+", "-"):
        if sep in frac:
            frac, tz = frac.split(sep, 1)
            tz = sep + tz
    when = dt.datetime.fromisoformat(head + (tz or "+00:00"))
    digits = (frac + "000000000")[:9] if frac else "0"
    return int(when.timestamp()) * 1_000_000_000 + int(digits)


def _entry(stream: str, resp: dict) -> tuple[bytes, int]:
    """The NATSARC1 entry of a STREAM.MSG.GET answer, and its header + payload size."""
    msg = resp.get("message")
    if not isinstance(msg, dict):
        raise IntegrityError(f"stream {stream!r}: a message read after the snapshot came back without a message")
    try:
        hdrs = base64.b64decode(msg["hdrs"], validate=True) if msg.get("hdrs") else b""
        data = base64.b64decode(msg["data"], validate=True) if msg.get("data") else b""
        entry = encode_entry(str(msg["subject"]), parse_time_ns(str(msg["time"])), int(msg["seq"]), hdrs, data)
        return entry, len(hdrs) + len(data)
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        raise IntegrityError(f"stream {stream!r}: a message read after the snapshot is malformed ({e})") from None


async def _get(js: JetStream, stream: str, seq: int) -> tuple[bytes, int] | None:
    subject = f"{js.prefix}.STREAM.MSG.GET.{stream}"
    for attempt in range(3):
        try:
            msg = await js.nc.request(subject, json.dumps({"seq": seq}).encode(), timeout=10.0)
            break
        except nats.errors.TimeoutError:
            if attempt == 2:
                raise TransferFailed(
                    f"stream {stream!r}: no answer reading sequence {seq} after the snapshot"
                ) from None
        except nats.errors.NoRespondersError:
            raise TransferFailed(f"stream {stream!r} has no leader to read sequence {seq} from") from None
        except nats.errors.ConnectionClosedError:
            raise ConnectionFailed(
                "the connection to the NATS server closed while reading after the snapshot"
            ) from None
    try:
        resp = json.loads(msg.data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IntegrityError(f"stream {stream!r}: sequence {seq} came back as something that is not JSON") from None
    if "error" in resp:
        if int(resp["error"].get("err_code", 0) or 0) == NO_MESSAGE:
            return None
        raise api_error(resp["error"], stream)
    return _entry(stream, resp)


async def read_tail(
    js: JetStream,
    stream: str,
    after: int,
    emit: Callable[[bytes], Awaitable[None]],
    *,
    in_flight: int = IN_FLIGHT,
    max_rounds: int = MAX_ROUNDS,
) -> Tail:
    """Read every message of ``stream`` after sequence ``after`` up to its last (chasing it for ``max_rounds``),
    handing ``emit`` encoded NATSARC1 entries in order, in batches of about 256 KiB."""
    tail = Tail(snapshot_last_seq=after, point=after)
    buf: list[bytes] = []
    have = 0
    nxt = after + 1
    while tail.rounds < max_rounds:
        info = await js.stream_info(stream)
        if info is None:
            raise JsArchiveError(f"stream {stream!r} was deleted while it was backed up")
        upto = int((info.get("state") or {}).get("last_seq", 0) or 0)
        ts = info.get("ts")
        tail.server_time = ts if isinstance(ts, str) else ""
        if upto < nxt:
            break
        tail.rounds += 1
        ahead: deque[tuple[int, asyncio.Task]] = deque()
        try:
            while nxt <= upto or ahead:
                while nxt <= upto and len(ahead) < in_flight:
                    ahead.append((nxt, asyncio.ensure_future(_get(js, stream, nxt))))
                    nxt += 1
                seq, task = ahead.popleft()
                got = await task
                if got is None:
                    tail.gone += 1
                    continue
                entry, size = got
                tail.messages += 1
                tail.bytes += size
                tail.first_seq = tail.first_seq or seq
                tail.last_seq = seq
                buf.append(entry)
                have += len(entry)
                if have >= BATCH_BYTES:
                    await emit(b"".join(buf))
                    buf, have = [], 0
        finally:
            for _, task in ahead:
                task.cancel()
        tail.point = upto
    if buf:
        await emit(b"".join(buf))
    return tail
