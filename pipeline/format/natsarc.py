"""Readers for the decoded snapshot: the V2 NATSARC1 message archive and the V1 file-store tar.

V2 (nats-server >= 2.15, ``server/archive/archive.go``)::

    "NATSARC1"                       8-byte magic
    entry*:
      uvarint name_len
      varint  timestamp              zig-zag, int64 nanoseconds since the Unix epoch
      uvarint sequence               0: not a message
      uvarint header_size
      uvarint payload_size
      name (name_len bytes)
      header (header_size bytes) || payload (payload_size bytes)

The entries are ``state.json`` (the stream state), one ``consumers/<name>`` per consumer (``{"config", "state"}``),
then one entry per stored message (name = subject, sequence strictly increasing; gaps are deleted messages), and
an end marker: an entry whose every field is 0. :class:`ArchiveReader` reads them incrementally from the decoded
blocks, holding one entry at a time.

V1 (nats-server <= 2.14) is a PAX tar of the stream's file-store directory. :func:`read_v1_tar` lists its
members and keeps the small metadata files (stream and consumer configs, consumer state). Decoding the message
blocks (``msgs/<N>.blk``) is not supported: their records only make sense together with the deletes kept in
``msgs/index.db`` and in tombstones, whose formats changed between server versions.
"""

from __future__ import annotations

import itertools
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from pipeline.base.errors import IntegrityError
from pipeline.format import objects

try:  # the C walk behind count_archive (optional: see setup.py)
    from pipeline.format._natsarc import walk as _walk  # type: ignore[import-not-found]
except ImportError:  # no compiler at install time, or a source checkout that was never built
    _walk = None

MAGIC = b"NATSARC1"
STATE_ENTRY = "state.json"
CONSUMER_PREFIX = "consumers/"
MAX_NAME = 1 << 20  # a subject or consumer entry name; far above what a server accepts
MAX_ENTRY = 1 << 30  # header + payload of one entry (messages are at most 64 MiB; consumer state can be large)


class ArchiveError(IntegrityError):
    """The decoded snapshot is not a valid NATSARC1 archive (or V1 tar)."""


class ArchiveTruncated(ArchiveError):
    """The archive ends before its end marker."""


@dataclass(frozen=True)
class Entry:
    """One raw archive entry."""

    name: str
    timestamp: int  # ns since the Unix epoch
    sequence: int  # 0 for state and consumer entries
    header: bytes
    payload: bytes


@dataclass(frozen=True)
class Headers:
    """A parsed NATS header block (``NATS/1.0[ status[ description]]\\r\\nName: value\\r\\n…\\r\\n``)."""

    fields: dict[str, list[str]]
    status: str = ""
    description: str = ""


def parse_headers(raw: bytes) -> Headers | None:
    """The header block of a message, or None if there is none. Never fails: odd lines are skipped."""
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    lines = text.split("\r\n")
    first = lines[0].split(None, 2)
    status = first[1] if len(first) > 1 else ""
    description = first[2] if len(first) > 2 else ""
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name = name.strip()
        if sep and name:
            fields.setdefault(name, []).append(value.strip())
    return Headers(fields, status, description)


@dataclass(slots=True)
class Message:
    """A stored message from a V2 archive."""

    subject: str
    sequence: int
    timestamp: int  # ns since the Unix epoch, UTC
    header: bytes  # the raw NATS header block, b"" if the message has none
    data: bytes  # the payload after the header block

    @property
    def headers(self) -> Headers | None:
        return parse_headers(self.header)

    @property
    def size(self) -> int:
        """Header plus payload bytes."""
        return len(self.header) + len(self.data)


@dataclass
class Consumer:
    """A consumer entry: its config and its state as the server saved them."""

    name: str
    config: dict
    state: dict


@dataclass
class ConsumerPosition:
    """The parts of a consumer's state that say how far it got (the same for V1 ``o.dat`` and V2 JSON)."""

    delivered_consumer_seq: int = 0
    delivered_stream_seq: int = 0
    ack_floor_consumer_seq: int = 0
    ack_floor_stream_seq: int = 0
    ack_pending: int = 0  # delivered, not yet acknowledged
    redelivered: int = 0  # messages delivered more than once and still pending

    @classmethod
    def from_v2_state(cls, state: dict) -> ConsumerPosition:
        delivered = state.get("delivered") or {}
        floor = state.get("ack_floor") or {}
        return cls(
            delivered_consumer_seq=int(delivered.get("consumer_seq", 0) or 0),
            delivered_stream_seq=int(delivered.get("stream_seq", 0) or 0),
            ack_floor_consumer_seq=int(floor.get("consumer_seq", 0) or 0),
            ack_floor_stream_seq=int(floor.get("stream_seq", 0) or 0),
            ack_pending=len(state.get("pending") or {}),
            redelivered=len(state.get("redelivered") or {}),
        )


# -- V2: NATSARC1 -------------------------------------------------------------------------------------------------


_HEADER_MAX = 50  # five uvarints of at most 10 bytes
# Decoding a 9-byte uvarint read as one little-endian integer: byte i holds bits 7i..7i+6 in its low 7 bits.
_CONT9 = int.from_bytes(b"\x80" * 9, "little")  # the continuation bits of 9 bytes
_CONT8 = int.from_bytes(b"\x80" * 8, "little")  # ... set on the first 8, clear on the last
_E1, _O1 = 0x7F007F007F007F007F, 0x7F007F007F007F00  # 7-bit groups of even / odd bytes: pair them up
_E2, _O2 = 0x3FFF00003FFF00003FFF, 0x3FFF00003FFF0000  # 14-bit groups: pair them up
_E3, _O3 = 0xFFFFFFF000000000FFFFFFF, 0xFFFFFFF00000000  # 28-bit groups: pair them up
_LOW56 = (1 << 56) - 1


# -- writing --------------------------------------------------------------------------------------------------


def put_uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_entry(name: str, timestamp: int, sequence: int, header: bytes, payload: bytes) -> bytes:
    """One NATSARC1 entry."""
    raw = name.encode()
    zz = (timestamp << 1) ^ (timestamp >> 63)
    return b"".join(
        (
            put_uvarint(len(raw)),
            put_uvarint(zz & 0xFFFFFFFFFFFFFFFF),
            put_uvarint(sequence),
            put_uvarint(len(header)),
            put_uvarint(len(payload)),
            raw,
            header,
            payload,
        )
    )


#: The entry that ends an archive: an empty name and every field 0.
END_MARKER = b"\x00" * 5


def encode_head(state: dict, consumers: Iterable[Consumer], timestamp: int = 0) -> bytes:
    """The magic, the ``state.json`` entry and one ``consumers/<name>`` entry per consumer: what precedes the
    messages of an archive a client writes.

    ``consumer_count`` is set to the number of consumer entries: a 2.15 restore reads exactly that many before it
    takes the next entries for messages (``stream_backup.go`` ``RestoreStreamV2``).
    """
    consumers = list(consumers)
    st = dict(state)
    st["consumer_count"] = len(consumers)
    parts = [MAGIC, encode_entry(STATE_ENTRY, timestamp, 0, b"", json.dumps(st).encode())]
    for c in consumers:
        body = json.dumps({"config": c.config, "state": c.state}).encode()
        parts.append(encode_entry(CONSUMER_PREFIX + c.name, timestamp, 0, b"", body))
    return b"".join(parts)


def _truncated(at: int) -> ArchiveTruncated:
    return ArchiveTruncated(f"natsarc: the archive is truncated: it ends inside an entry at byte {at}")


def _uvarint(buf: bytes, pos: int, base: int) -> tuple[int, int]:
    """A uvarint at ``buf[pos:]``: ``(value, next position)``; errors name the archive offset ``base + pos``."""
    value = shift = 0
    for i in range(pos, min(pos + 10, len(buf))):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value >= 1 << 64:
                break
            return value, i + 1
        shift += 7
    else:
        if len(buf) - pos < 10:
            raise _truncated(base + pos)
    raise ArchiveError(f"natsarc: bad varint at byte {base + pos}")


def _raw_entries(blocks: Iterable[bytes]) -> Iterator[tuple[bytes, int, int, bytes, bytes]]:
    """``(name, timestamp, sequence, header, payload)`` for each entry before the end marker, checked.

    The hot loop of ``cat`` and ``inspect``: it keeps the buffer in locals and parses the usual varints inline.
    """
    it = iter(blocks)
    buf = b""
    pos = 0
    base = 0  # archive offset of buf[0]

    def refill(need: int) -> bool:
        """Have ``need`` bytes after ``pos`` (False if the input ends first)."""
        nonlocal buf, pos, base
        parts = [buf[pos:]]
        have = len(parts[0])
        base += pos
        pos = 0
        while have < need:
            block = next(it, None)
            if block is None:
                buf = b"".join(parts)
                return False
            parts.append(block)
            have += len(block)
        buf = b"".join(parts)
        return True

    refill(len(MAGIC))
    if buf[: len(MAGIC)] != MAGIC:
        raise ArchiveError(f"natsarc: not a NATSARC1 archive (it starts with {buf[:8]!r})")
    pos = len(MAGIC)
    last_seq = 0
    while True:
        if len(buf) - pos < _HEADER_MAX and not refill(_HEADER_MAX) and pos >= len(buf):
            raise ArchiveTruncated(
                f"natsarc: the archive is truncated: it ends at byte {base + pos} without its end marker"
            )
        at = pos
        if len(buf) - pos >= _HEADER_MAX and buf[pos] < 0x80:
            # fast path (a full header is buffered): a one-byte name length, the timestamp, then sequence and
            # sizes inline up to three bytes each
            name_len = buf[pos]
            pos += 1
            if buf[pos + 8] < 0x80 and (x := int.from_bytes(buf[pos : pos + 9], "little")) & _CONT9 == _CONT8:
                # a 9-byte varint (zig-zag timestamps from 1971 to 2116): gather its 7-bit groups with masks
                x = (x & _E1) | ((x & _O1) >> 1)
                x = (x & _E2) | ((x & _O2) >> 2)
                x = (x & _E3) | ((x & _O3) >> 4)
                zz = (x & _LOW56) | ((x >> 64) << 56)
                pos += 9
            else:
                zz, pos = _uvarint(buf, pos, base)
            seq = buf[pos]
            if seq < 0x80:
                pos += 1
            elif buf[pos + 1] < 0x80:
                seq = (seq & 0x7F) | buf[pos + 1] << 7
                pos += 2
            elif buf[pos + 2] < 0x80:
                seq = (seq & 0x7F) | (buf[pos + 1] & 0x7F) << 7 | buf[pos + 2] << 14
                pos += 3
            else:
                seq, pos = _uvarint(buf, pos, base)
            hsize = buf[pos]
            if hsize < 0x80:
                pos += 1
            elif buf[pos + 1] < 0x80:
                hsize = (hsize & 0x7F) | buf[pos + 1] << 7
                pos += 2
            elif buf[pos + 2] < 0x80:
                hsize = (hsize & 0x7F) | (buf[pos + 1] & 0x7F) << 7 | buf[pos + 2] << 14
                pos += 3
            else:
                hsize, pos = _uvarint(buf, pos, base)
            psize = buf[pos]
            if psize < 0x80:
                pos += 1
            elif buf[pos + 1] < 0x80:
                psize = (psize & 0x7F) | buf[pos + 1] << 7
                pos += 2
            elif buf[pos + 2] < 0x80:
                psize = (psize & 0x7F) | (buf[pos + 1] & 0x7F) << 7 | buf[pos + 2] << 14
                pos += 3
            else:
                psize, pos = _uvarint(buf, pos, base)
        else:
            name_len, pos = _uvarint(buf, pos, base)
            zz, pos = _uvarint(buf, pos, base)
            seq, pos = _uvarint(buf, pos, base)
            hsize, pos = _uvarint(buf, pos, base)
            psize, pos = _uvarint(buf, pos, base)
        if name_len == 0:
            if zz or seq or hsize or psize:
                raise ArchiveError(f"natsarc: entry at byte {base + at} has no name")
            if len(buf) > pos or refill(1):
                raise ArchiveError(f"natsarc: data after the end marker at byte {base + pos}")
            return
        if name_len > MAX_NAME or hsize + psize > MAX_ENTRY:
            raise ArchiveError(
                f"natsarc: entry at byte {base + at} declares impossible sizes (name {name_len}, header {hsize}, "
                f"payload {psize})"
            )
        if seq:
            if seq <= last_seq:
                raise ArchiveError(f"natsarc: message sequence {seq} at byte {base + at} follows sequence {last_seq}")
            last_seq = seq
        end = pos + name_len + hsize + psize
        if end > len(buf):
            need = end - pos
            if not refill(need):  # refill moves the unread bytes to the front: pos is 0 afterwards
                raise _truncated(base + len(buf))
            end = need
        name = buf[pos : pos + name_len]
        pos += name_len
        if hsize:
            yield name, (zz >> 1) ^ -(zz & 1), seq, buf[pos : pos + hsize], buf[pos + hsize : end]
        else:
            yield name, (zz >> 1) ^ -(zz & 1), seq, b"", buf[pos:end]
        pos = end


def iter_entries(blocks: Iterable[bytes]) -> Iterator[Entry]:
    """Every entry of a NATSARC1 archive up to (not including) its end marker, checking the layout as it goes.

    Raises :class:`ArchiveError` for a bad magic, an impossible size, a message sequence that does not increase,
    data after the end marker, and :class:`ArchiveTruncated` if the archive ends before the end marker.
    """
    for name, ts, seq, hdr, payload in _raw_entries(blocks):
        yield Entry(name.decode("utf-8", "replace"), ts, seq, hdr, payload)


class ArchiveReader:
    """A V2 archive read front to back: the state and consumers on construction, then the messages.

    ``reader = ArchiveReader(blocks)`` reads up to the first message; ``reader.state`` and ``reader.consumers``
    are then set. ``reader.messages()`` yields the messages once; afterwards ``reader.complete`` is True (the end
    marker was there). Entries of unknown names are kept in ``reader.other`` (name, sequence, size).
    """

    def __init__(self, blocks: Iterable[bytes]) -> None:
        self._raw = _raw_entries(blocks)
        self.state: dict = {}
        self.consumers: list[Consumer] = []
        self.other: list[tuple[str, int, int]] = []
        self.complete = False
        self._first: tuple[bytes, int, int, bytes, bytes] | None = None
        self._started = False
        for raw in self._raw:
            if raw[2]:
                self._first = raw
                return
            self._meta(raw)
        self.complete = True

    def _meta(self, raw: tuple[bytes, int, int, bytes, bytes]) -> None:
        entry = Entry(raw[0].decode("utf-8", "replace"), *raw[1:])
        if entry.name == STATE_ENTRY:
            self.state = entry_json(entry)
        elif entry.name.startswith(CONSUMER_PREFIX):
            obj = entry_json(entry)
            self.consumers.append(
                Consumer(
                    name=entry.name[len(CONSUMER_PREFIX) :],
                    config=obj.get("config") or {},
                    state=obj.get("state") or {},
                )
            )
        else:
            self.other.append((entry.name, entry.sequence, len(entry.header) + len(entry.payload)))

    def sequences(self) -> Iterator[int]:
        """The sequence of each message, in order (the cheap walk a census needs: no message objects)."""
        if self._started:
            raise RuntimeError("ArchiveReader can be walked only once")
        self._started = True
        rest = self._raw
        if self._first is not None:
            first, self._first = self._first, None
            rest = itertools.chain([first], rest)
        for raw in rest:
            if raw[2]:
                yield raw[2]
            else:
                self._meta(raw)
        self.complete = True

    def messages(self) -> Iterator[Message]:
        if self._started:
            raise RuntimeError("ArchiveReader.messages() can be iterated only once")
        self._started = True
        subjects: dict[bytes, str] = {}  # subjects repeat: decode each once (bounded)
        rest = self._raw
        if self._first is not None:
            first, self._first = self._first, None
            rest = itertools.chain([first], rest)
        for name, ts, seq, hdr, payload in rest:
            if not seq:
                self._meta((name, ts, seq, hdr, payload))
                continue
            subject = subjects.get(name)
            if subject is None:
                subject = name.decode("utf-8", "replace")
                if len(subjects) < 100_000:
                    subjects[name] = subject
            yield Message(subject, seq, ts, hdr, payload)
        self.complete = True

    def close(self) -> None:
        self._raw.close()  # type: ignore[attr-defined]


def entry_json(entry: Entry) -> dict:
    """A ``state.json`` or ``consumers/<name>`` entry as a dict: archive bytes, so bounded like every archive
    object (pipeline/format/objects.py: nesting and number length checked before the parser recurses)."""
    try:
        obj = objects.parse_json(entry.header + entry.payload, f"natsarc entry {entry.name!r}", MAX_ENTRY)
    except IntegrityError:
        raise ArchiveError(f"natsarc: entry {entry.name!r} is not JSON") from None
    if not isinstance(obj, dict):
        raise ArchiveError(f"natsarc: entry {entry.name!r} is not a JSON object")
    return obj


# -- counting: the backup's census ----------------------------------------------------------------------------


@dataclass
class ArchiveCount:
    """What a NATSARC1 archive holds, counted without keeping its messages (:func:`count_archive`)."""

    messages: int = 0
    first_seq: int = 0  # 0 if there are no messages
    last_seq: int = 0
    consumers: int = 0  # consumers/<name> entries
    state: dict = field(default_factory=dict)  # the state.json entry ({} if there is none)


def count_archive(blocks: Iterable[bytes], *, accelerated: bool | None = None) -> ArchiveCount:
    """Count the messages and consumer entries of a NATSARC1 archive and read its ``state.json``, checking it all.

    The same checks, errors and messages as :class:`ArchiveReader` (:class:`ArchiveError`,
    :class:`ArchiveTruncated`), at a fraction of its cost: the C walk of ``pipeline.format._natsarc`` steps over message
    entries without copying them. ``accelerated``: None uses it if it was built, False the pure-Python reader.
    Memory: one block plus one entry (consumer entries are checked to be JSON objects, then dropped).
    """
    if accelerated is None:
        accelerated = _walk is not None
    if not accelerated:
        return _count_py(blocks)
    if _walk is None:
        raise RuntimeError(
            "the NATSARC1 accelerator pipeline.format._natsarc is not built (no C compiler at install time?)"
        )
    return _count_c(blocks, _walk)


def _count_meta(out: ArchiveCount, name: bytes, body: bytes) -> None:
    # Decoding with "replace" cannot make these prefixes out of other bytes: ArchiveReader._meta's test on str is
    # the same as this one on bytes.
    if name == STATE_ENTRY.encode():
        out.state = entry_json(Entry(STATE_ENTRY, 0, 0, b"", body))
    elif name.startswith(CONSUMER_PREFIX.encode()):
        entry_json(Entry(name.decode("utf-8", "replace"), 0, 0, b"", body))
        out.consumers += 1


def _count_py(blocks: Iterable[bytes]) -> ArchiveCount:
    out = ArchiveCount()
    for name, _ts, seq, hdr, payload in _raw_entries(blocks):
        if seq:
            if not out.messages:
                out.first_seq = seq
            out.last_seq = seq
            out.messages += 1
        else:
            _count_meta(out, name, hdr + payload)
    return out


def _count_c(blocks: Iterable[bytes], walk: Callable) -> ArchiveCount:
    """The accelerated count. The C walk runs over whole blocks in place; only an entry that straddles two blocks
    is copied, into a buffer of its own (``gather``), and the walk goes on in the next block after it.

    Offsets in errors are archive offsets: ``base`` is the archive offset of ``buf[0]``.
    """
    it = iter(blocks)
    out = ArchiveCount()
    parts: list = []
    have = 0
    while have < len(MAGIC):
        block = next(it, None)
        if block is None:
            break
        parts.append(block)
        have += len(block)
    buf: bytes | memoryview = b"".join(parts)
    if buf[: len(MAGIC)] != MAGIC:
        raise ArchiveError(f"natsarc: not a NATSARC1 archive (it starts with {buf[:8]!r})")
    spill: memoryview | None = None  # input that follows buf and was not walked yet (never empty)

    def following() -> memoryview | None:
        """The next bytes of input after buf, or None at its end."""
        nonlocal spill
        if spill is not None:
            nxt, spill = spill, None
            return nxt
        for block in it:
            if len(block):
                # a caller's bytearray may be refilled once we ask for the next block: only bytes are kept as is
                return memoryview(block if isinstance(block, bytes) else bytes(block))
        return None

    def gather(rest: memoryview, at: int, need: int, short_ok: bool = False) -> bytes:
        """``rest`` (from archive offset ``at``) extended to ``need`` bytes; what a last block has beyond, spills."""
        nonlocal spill
        parts = [rest]
        have = len(rest)
        while have < need:
            nxt = following()
            if nxt is None:
                if short_ok:
                    break
                raise _truncated(at + have)
            parts.append(nxt)
            have += len(nxt)
        if have > need:
            cut = len(parts[-1]) - (have - need)
            spill = parts[-1][cut:]
            parts[-1] = parts[-1][:cut]
        return b"".join(parts)

    pos = len(MAGIC)
    base = 0
    last = 0
    while True:
        try:
            pos, n, first, last, status, need = walk(buf, pos, last, base)
        except ValueError as e:
            raise ArchiveError(str(e)) from None
        if n:
            if not out.messages:
                out.first_seq = first
            out.messages += n
            out.last_seq = last
        if status == "more":
            rest = memoryview(buf)[pos:]
            base += pos
            pos = 0
            if not rest:
                nxt = following()
                if nxt is None:
                    raise ArchiveTruncated(
                        f"natsarc: the archive is truncated: it ends at byte {base} without its end marker"
                    )
                buf = nxt
            elif need:
                buf = gather(rest, base, need)
            else:  # a header cut by the block's end: it is at most _HEADER_MAX bytes long
                buf = gather(rest, base, len(rest) + _HEADER_MAX, short_ok=True)
                if len(buf) == len(rest):
                    raise _header_truncation(bytes(rest), base)
        elif status == "meta":
            p = pos
            name_len, p = _uvarint(buf, p, base)
            for _ in range(2):  # timestamp, sequence (0)
                _, p = _uvarint(buf, p, base)
            hsize, p = _uvarint(buf, p, base)
            psize, p = _uvarint(buf, p, base)
            size = p - pos + name_len + hsize + psize
            if pos + size > len(buf):
                base += pos
                p -= pos
                buf = gather(memoryview(buf)[pos:], base, size)
                pos = 0
            _count_meta(out, bytes(buf[p : p + name_len]), bytes(buf[p + name_len : pos + size]))
            pos += size
        else:  # "end": the walk checked that nothing follows in buf
            if following() is not None:
                raise ArchiveError(f"natsarc: data after the end marker at byte {base + pos}")
            return out


def _header_truncation(rest: bytes, base: int) -> ArchiveTruncated:
    """The error for a last entry whose header ``rest`` (the end of the input) cuts: the varint the end cuts."""
    p = 0
    for _ in range(5):
        _, p = _uvarint(rest, p, base)  # raises it
    return _truncated(base + len(rest))


# -- V1: the file-store tar ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TarMember:
    name: str
    size: int
    type: str  # "file", "dir", "symlink" or "other"


def _keep_v1(name: str) -> bool:
    """The small metadata files worth reading: stream config, consumer configs and states, error report."""
    return name in ("meta.inf", "errors.txt") or (
        name.startswith("obs/") and name.endswith(("/meta.inf", "/o.dat")) and name.count("/") == 2
    )


@dataclass
class V1Contents:
    members: list[TarMember] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # the kept members' contents

    @property
    def config(self) -> dict:
        """The stream config from ``meta.inf`` (the server adds ``Created``)."""
        return _loads(self.files.get("meta.inf"), "meta.inf")

    def consumer_names(self) -> list[str]:
        return sorted({m.name.split("/")[1] for m in self.members if m.name.startswith("obs/") and m.name.count("/")})

    def consumer_config(self, name: str) -> dict:
        return _loads(self.files.get(f"obs/{name}/meta.inf"), f"obs/{name}/meta.inf")

    def consumer_position(self, name: str) -> ConsumerPosition | None:
        raw = self.files.get(f"obs/{name}/o.dat")
        return decode_consumer_state(raw) if raw is not None else None


def _loads(raw: bytes | None, what: str) -> dict:
    if raw is None:
        return {}
    try:
        obj = objects.parse_json(raw, f"tar member {what}", len(raw))  # bounded: kept members are size-capped
    except IntegrityError:
        raise ArchiveError(f"tar member {what} is not JSON") from None
    return obj if isinstance(obj, dict) else {}


def read_v1_tar(fileobj: IO[bytes], keep: Callable[[str], bool] = _keep_v1, max_keep: int = 64 << 20) -> V1Contents:
    """List a V1 snapshot tar read as a stream (``tarfile`` mode ``r|``), keeping the contents ``keep`` selects."""
    out = V1Contents()
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tf:
            for m in tf:
                kind = "file" if m.isfile() else "dir" if m.isdir() else "symlink" if m.issym() else "other"
                out.members.append(TarMember(m.name, m.size, kind))
                if m.isfile() and keep(m.name) and m.size <= max_keep:
                    f = tf.extractfile(m)
                    if f is not None:
                        out.files[m.name] = f.read()
    except tarfile.ReadError as e:
        raise ArchiveError(f"the V1 snapshot is not a valid tar: {e}") from None
    except EOFError:
        raise ArchiveTruncated("the V1 snapshot tar is truncated") from None
    return out


def decode_consumer_state(raw: bytes) -> ConsumerPosition | None:
    """A consumer's position from its file-store ``o.dat`` (magic 22, version 1 or 2), or None if unreadable.

    Layout: magic, version, then uvarints ack floor (consumer, stream), delivered (consumer, stream) and the
    number of pending acks; with pending acks a varint base time and three varints each; then the number of
    redelivered messages.
    """
    if len(raw) < 2 or raw[0] != 22 or raw[1] not in (1, 2):
        return None
    pos = 2

    def uvarint() -> int:
        nonlocal pos
        value = shift = 0
        while pos < len(raw) and shift < 64:
            b = raw[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
        raise ValueError("bad varint")

    try:
        afc, afs, dc, ds, pending = (uvarint() for _ in range(5))
        if pending:
            uvarint()  # base time (a zig-zag varint: same byte length)
            for _ in range(pending * 3):
                uvarint()
        redelivered = uvarint() if pos < len(raw) else 0
    except ValueError:
        return None
    return ConsumerPosition(
        delivered_consumer_seq=dc,
        delivered_stream_seq=ds,
        ack_floor_consumer_seq=afc,
        ack_floor_stream_seq=afs,
        ack_pending=pending,
        redelivered=redelivered,
    )
