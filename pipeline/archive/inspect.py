"""Look inside a backup without a NATS server: what it holds (:func:`inspect_backup`) and its messages
(:func:`iter_messages`).

Both read the backup the way a restore does (manifest → key slot → blocks fetched ahead, each checked against the
manifest, opened and decompressed, see :class:`pipeline.flows.restore.BlockReader`), then decode the snapshot stream in
process: S2 framing (:mod:`pipeline.format.s2`; nothing to undo for a backup stored decoded, see
:mod:`pipeline.format.payload`), then the NATSARC1 archive of a V2 backup or the tar of a V1 backup
(:mod:`pipeline.format.natsarc`). Nothing is written
anywhere and memory stays bounded by a few blocks.

V1 backups (nats-server <= 2.14) are listed (tar members, stream config, consumers) but their messages cannot be
read: that needs the file-store block format, which is not decoded here. Their counts come from the stream state
recorded when the backup was taken.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import io
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from pipeline.archive.repository import Repository
from pipeline.base.errors import UsageError
from pipeline.flows.restore import BlockReader
from pipeline.format import natsarc, payload, s2
from pipeline.format.manifest import Manifest
from pipeline.format.natsarc import ConsumerPosition, Message, TarMember
from pipeline.format.snapshot import V1, V2
from pipeline.keys.keyring import KeyRing
from sinks import SinkOptions

__all__ = [
    "ConsumerSummary",
    "InspectResult",
    "Message",
    "MessageFilter",
    "OpenedBackup",
    "SubjectStats",
    "check_subject_filter",
    "decoded_blocks",
    "format_ns",
    "inspect_backup",
    "iter_messages",
    "message_record",
    "open_backup",
    "parse_seq_range",
    "parse_time",
    "snapshot_chunks",
    "subject_matches",
]

# -- opening a backup ---------------------------------------------------------------------------------------------


@dataclass
class OpenedBackup:
    """A backup whose manifest was checked and whose body was opened: ready to read its blocks."""

    repo: Repository
    manifest: Manifest
    body: dict
    reader: BlockReader
    prefetch: int = 4
    workers: int = 2

    @property
    def snapshot_format(self) -> str:
        return self.manifest.snapshot_format

    @property
    def inner_encoding(self) -> str:
        """What the blocks hold (pipeline/format/payload.py), from the body: no caller can forget to say."""
        return payload.inner_encoding(self.body, self.manifest.snapshot_format, self.manifest.id)

    @property
    def server_version(self) -> str:
        return str(self.manifest.server.get("version", "") or "")


def open_backup(
    url: str,
    backup: str,
    *,
    keys: KeyRing | None = None,
    sink: SinkOptions | None = None,
    prefetch: int = 4,
    workers: int = 2,
) -> OpenedBackup:
    """Resolve ``backup`` (manifest id or unique prefix) in the archive at ``url`` and open it.

    Checks what a restore checks before reading data: the manifest's hash, that the data object exists with the
    manifest's size and is not in cold storage, and (encrypted backups) that one of ``keys`` opens it.
    """
    repo = Repository.open(url, sink)
    m = repo.load_manifest(repo.resolve(backup))
    repo.check_data(m)
    keys = keys or KeyRing()
    data_key = keys.unwrap(repo.key_slots(m), m.backup_id, m.open_body) if m.encrypted else None
    body = m.open_body(data_key)
    payload.inner_encoding(body, m.snapshot_format, m.id)  # an encoding this version cannot read fails here
    reader = BlockReader(repo, m, body, data_key, prefetch, workers)
    return OpenedBackup(repo, m, body, reader, max(1, prefetch), max(1, workers))


def snapshot_chunks(opened: OpenedBackup) -> Iterator[bytes]:
    """The plaintext as stored, block by block (verified, opened, decompressed), fetched ahead: the S2 stream, or
    the decoded archive (``opened.inner_encoding``)."""
    n = len(opened.manifest.blocks)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=opened.workers, thread_name_prefix="inspect")
    ahead: collections.deque[concurrent.futures.Future] = collections.deque()
    try:
        nxt = 0
        for index in range(n):
            while nxt < n and nxt < index + opened.prefetch:
                ahead.append(pool.submit(opened.reader.read_block, nxt))
                nxt += 1
            yield ahead.popleft().result()
    finally:
        for f in ahead:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def decoded_blocks(opened: OpenedBackup, *, accelerated: bool | None = None) -> Iterator[bytes]:
    """The decoded snapshot (a NATSARC1 archive or a tar), one S2 block (or stored block) at a time."""
    if opened.inner_encoding == payload.S2_STREAM:
        return s2.iter_decode(snapshot_chunks(opened), accelerated=accelerated)
    return payload.decoded(snapshot_chunks(opened), opened.inner_encoding)


# -- times, sequences, subjects -----------------------------------------------------------------------------------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$",
    re.IGNORECASE,
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}


def format_ns(ns: int) -> str:
    """RFC 3339 UTC time with nanoseconds, e.g. ``2026-11-23T22:22:40.803875621Z``."""
    secs, frac = divmod(ns, 1_000_000_000)
    t = _EPOCH + dt.timedelta(seconds=secs)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def parse_time(text: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch from an ISO 8601 date or time, or a duration ago.

    ``2026-11-23``, ``2026-11-23T22:22:40Z``, ``2026-11-23 22:22:40.123456789+01:00`` (no zone: UTC), or a
    duration before now such as ``90s``, ``15m``, ``1h30m``, ``2d``, ``1w``.
    """
    s = text.strip()
    if s and _DURATION_PART.sub("", s) == "" and _DURATION_PART.match(s):
        ago = sum(int(float(v) * _UNIT_NS[u]) for v, u in _DURATION_PART.findall(s))
        if now_ns is None:
            now = dt.datetime.now(dt.timezone.utc) - _EPOCH
            now_ns = (now.days * 86_400 + now.seconds) * 1_000_000_000 + now.microseconds * 1_000
        return now_ns - ago
    m = _ISO.match(s)
    if not m:
        raise UsageError(
            f"{text!r} is not a time: give an ISO 8601 date/time (2026-11-23T22:00:00Z) or a duration ago (2h)"
        )
    year, month, day, hour, minute, sec, frac, zone = m.groups()
    try:
        t = dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(sec or 0))
    except ValueError as e:
        raise UsageError(f"{text!r} is not a valid time: {e}") from None
    offset = 0
    if zone and zone.upper() != "Z":
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + (int(digits[2:4]) * 60 if len(digits) > 2 else 0)
        if zone[0] == "-":
            offset = -offset
    delta = t.replace(tzinfo=dt.timezone.utc) - _EPOCH
    secs = delta.days * 86_400 + delta.seconds - offset
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def parse_seq_range(text: str) -> tuple[int | None, int | None]:
    """``A-B`` (inclusive), ``A-`` (from A), ``-B`` (up to B) or ``A`` (just A)."""
    m = re.fullmatch(r"\s*(\d*)\s*(-?)\s*(\d*)\s*", text or "")
    if not m or not (m.group(1) or m.group(3)) or (not m.group(2) and m.group(3)):
        raise UsageError(f"{text!r} is not a sequence range: use A-B, A-, -B or A")
    first = int(m.group(1)) if m.group(1) else None
    last = int(m.group(3)) if m.group(3) else (first if not m.group(2) else None)
    if first is not None and last is not None and first > last:
        raise UsageError(f"sequence range {text!r} is empty: {first} > {last}")
    return first, last


def check_subject_filter(pattern: str) -> list[str]:
    """The tokens of a subject filter, which may use ``*`` (one token) and ``>`` (one or more, last only)."""
    tokens = pattern.split(".")
    if not pattern or any(not t for t in tokens) or any(c.isspace() for c in pattern):
        raise UsageError(f"{pattern!r} is not a valid subject filter")
    if ">" in tokens[:-1]:
        raise UsageError(f"subject filter {pattern!r}: '>' may only be the last token")
    return tokens


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` one or more."""
    ptoks = pattern.split(".")
    stoks = subject.split(".")
    for i, p in enumerate(ptoks):
        if p == ">":
            return len(stoks) > i
        if i >= len(stoks) or (p != "*" and p != stoks[i]):
            return False
    return len(stoks) == len(ptoks)


@dataclass
class MessageFilter:
    """Which messages :func:`iter_messages` yields; every given condition must hold."""

    subjects: tuple[str, ...] = ()  # any of these NATS subject filters
    since: int | None = None  # ns since the epoch, inclusive
    until: int | None = None  # ns since the epoch, exclusive
    first_seq: int | None = None  # inclusive
    last_seq: int | None = None  # inclusive
    _cache: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.subjects = tuple(self.subjects)
        for p in self.subjects:
            check_subject_filter(p)

    def subject_ok(self, subject: str) -> bool:
        if not self.subjects:
            return True
        hit = self._cache.get(subject)
        if hit is None:
            hit = any(subject_matches(p, subject) for p in self.subjects)
            if len(self._cache) < 100_000:
                self._cache[subject] = hit
        return hit

    def matches(self, m: Message) -> bool:
        return (
            (self.first_seq is None or m.sequence >= self.first_seq)
            and (self.last_seq is None or m.sequence <= self.last_seq)
            and (self.since is None or m.timestamp >= self.since)
            and (self.until is None or m.timestamp < self.until)
            and self.subject_ok(m.subject)
        )


# -- inspect ------------------------------------------------------------------------------------------------------


@dataclass
class SubjectStats:
    subject: str
    messages: int
    bytes: int  # header + payload bytes


@dataclass
class ConsumerSummary:
    name: str
    durable: bool
    filter_subjects: list[str]
    deliver_policy: str | None
    ack_policy: str | None
    position: ConsumerPosition | None  # None: a V1 o.dat that could not be read
    config: dict


@dataclass
class InspectResult:
    """What a backup holds. With ``counted`` the message figures come from reading every message in it (V2);
    otherwise (V1) from the stream state the server reported when the backup was taken."""

    manifest_id: str
    backup_id: str
    stream: str
    created: str
    encrypted: bool
    server_version: str
    snapshot_format: str  # "V1" (tar) or "V2" (NATSARC1), as found in the decoded snapshot
    inner_encoding: str  # what the blocks hold: "s2-stream" or "natsarc" (pipeline/format/payload.py)
    snapshot_bytes: int  # plaintext as stored: the S2 stream, or the archive itself for "natsarc"
    decoded_bytes: int  # the tar or archive
    config: dict
    state: dict  # V2: the archive's state.json; V1: the snapshot response's state
    counted: bool
    messages: int
    message_bytes: int  # header + payload bytes of the messages (V2 only; 0 for V1)
    first_seq: int
    last_seq: int
    deleted: int  # gaps between first_seq and last_seq
    first_time: str | None
    last_time: str | None
    subjects: list[SubjectStats]
    consumers: list[ConsumerSummary]
    members: list[TarMember]  # V1: the files in the tar
    complete: bool  # V2: the archive's end marker was there
    warnings: list[str]

    def to_json(self) -> dict:
        return asdict(self)


def _consumer_summary(name: str, config: dict, position: ConsumerPosition | None) -> ConsumerSummary:
    filters = list(config.get("filter_subjects") or [])
    if config.get("filter_subject"):
        filters.insert(0, config["filter_subject"])
    return ConsumerSummary(
        name=name,
        durable=bool(config.get("durable_name")),
        filter_subjects=filters,
        deliver_policy=config.get("deliver_policy"),
        ack_policy=config.get("ack_policy"),
        position=position,
        config=config,
    )


def inspect_backup(
    url: str,
    backup: str,
    *,
    keys: KeyRing | None = None,
    sink: SinkOptions | None = None,
    accelerated: bool | None = None,
    prefetch: int = 4,
    workers: int = 2,
) -> InspectResult:
    """Read the whole backup ``backup`` (id or unique prefix) in the archive at ``url`` and summarize it.

    Every block is fetched and checked, and every S2 checksum verified, so a clean result also means the data is
    intact. Raises :class:`IntegrityError` (or a subclass such as :class:`pipeline.format.s2.S2Error`) if it is not.
    """
    opened = open_backup(url, backup, keys=keys, sink=sink, prefetch=prefetch, workers=workers)
    m, body = opened.manifest, opened.body
    blocks = _Counting(decoded_blocks(opened, accelerated=accelerated))
    first = blocks.peek()
    found = V2 if first.startswith(natsarc.MAGIC) else V1
    warnings: list[str] = []
    if not m.encrypted:
        warnings.append(f"backup {m.id[:12]} is not encrypted (it was made with --no-encrypt)")
    if found != m.snapshot_format:
        warnings.append(f"the manifest says snapshot format {m.snapshot_format}, the data is {found}")
    common = {
        "manifest_id": m.id,
        "backup_id": m.backup_id,
        "stream": m.stream,
        "created": m.created,
        "encrypted": m.encrypted,
        "server_version": opened.server_version,
        "snapshot_format": found,
        "inner_encoding": opened.inner_encoding,
        "snapshot_bytes": int(body["snapshot"].get("bytes") or 0),
    }
    if found == V2:
        return _inspect_v2(blocks, body, common, warnings)
    return _inspect_v1(blocks, body, common, warnings)


class _Counting:
    """An iterator of decoded blocks that counts their bytes and can look at the first one."""

    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self._head: bytes | None = None
        self.bytes = 0

    def peek(self) -> bytes:
        if self._head is None:
            self._head = next(self._it, b"")
        return self._head

    def __iter__(self) -> Iterator[bytes]:
        head = self.peek()
        if head:
            self.bytes += len(head)
            yield head
        for b in self._it:
            self.bytes += len(b)
            yield b


def _inspect_v2(blocks: _Counting, body: dict, common: dict, warnings: list[str]) -> InspectResult:
    reader = natsarc.ArchiveReader(blocks)
    counts: dict[str, list[int]] = {}
    n = nbytes = 0
    first_seq = last_seq = 0
    tmin: int | None = None
    tmax: int | None = None
    for msg in reader.messages():
        size = len(msg.header) + len(msg.data)
        c = counts.get(msg.subject)
        if c is None:
            counts[msg.subject] = [1, size]
        else:
            c[0] += 1
            c[1] += size
        n += 1
        nbytes += size
        if not first_seq:
            first_seq = msg.sequence
        last_seq = msg.sequence
        ts = msg.timestamp
        if tmin is None or ts < tmin:
            tmin = ts
        if tmax is None or ts > tmax:
            tmax = ts
    state = reader.state
    if "messages" in state and int(state["messages"]) != n:
        warnings.append(f"the archive's state.json says {state['messages']} messages, the archive holds {n}")
    if int(state.get("consumer_count", len(reader.consumers))) != len(reader.consumers):
        warnings.append(
            f"the archive's state.json says {state['consumer_count']} consumers, the archive holds "
            f"{len(reader.consumers)}"
        )
    for name, seq, size in reader.other:
        warnings.append(f"unknown archive entry {name!r} (sequence {seq}, {size} bytes)")
    consumers = [
        _consumer_summary(c.name, c.config, ConsumerPosition.from_v2_state(c.state))
        for c in sorted(reader.consumers, key=lambda c: c.name)
    ]
    return InspectResult(
        **common,
        decoded_bytes=blocks.bytes,
        config=body.get("config") or {},
        state=state,
        counted=True,
        messages=n,
        message_bytes=nbytes,
        first_seq=first_seq,
        last_seq=last_seq,
        deleted=(last_seq - first_seq + 1 - n) if n else 0,
        first_time=format_ns(tmin) if tmin is not None else None,
        last_time=format_ns(tmax) if tmax is not None else None,
        subjects=[SubjectStats(s, c[0], c[1]) for s, c in sorted(counts.items())],
        consumers=consumers,
        members=[],
        complete=reader.complete,
        warnings=warnings,
    )


def _inspect_v1(blocks: _Counting, body: dict, common: dict, warnings: list[str]) -> InspectResult:
    f = s2.BlockFile(iter(blocks))
    contents = natsarc.read_v1_tar(io.BufferedReader(f, buffer_size=1 << 20))
    while f.read(1 << 20):  # past the tar's end: still check every remaining block and checksum
        pass
    config = {k: v for k, v in contents.config.items() if k != "Created"} or body.get("config") or {}
    state = body.get("state") or {}
    consumers = []
    for name in contents.consumer_names():
        cfg = {k: v for k, v in contents.consumer_config(name).items() if k not in ("Created", "Name")}
        consumers.append(_consumer_summary(name, cfg, contents.consumer_position(name)))
    if "errors.txt" in contents.files:
        text = contents.files["errors.txt"].decode("utf-8", "replace").strip()
        warnings.append(f"the server reported errors while taking this snapshot: {text}")
    warnings.append(
        "V1 backup: its messages are in file-store blocks, which jsarchive does not decode; message counts and "
        "ranges are the stream state recorded when the backup was taken, per-subject counts are not available"
    )
    messages = int(state.get("messages", 0) or 0)
    return InspectResult(
        **common,
        decoded_bytes=blocks.bytes,
        config=config,
        state=state,
        counted=False,
        messages=messages,
        message_bytes=0,
        first_seq=int(state.get("first_seq", 0) or 0),
        last_seq=int(state.get("last_seq", 0) or 0),
        deleted=int(state.get("num_deleted", 0) or 0),
        first_time=_state_time(state.get("first_ts")) if messages else None,
        last_time=_state_time(state.get("last_ts")) if messages else None,
        subjects=[],
        consumers=consumers,
        members=contents.members,
        complete=True,
        warnings=warnings,
    )


def _state_time(value: object) -> str | None:
    return str(value) if value and not str(value).startswith("0001-01-01") else None


# -- messages -----------------------------------------------------------------------------------------------------


def iter_messages(
    url: str,
    backup: str,
    *,
    keys: KeyRing | None = None,
    filter: MessageFilter | None = None,
    sink: SinkOptions | None = None,
    accelerated: bool | None = None,
    prefetch: int = 4,
    workers: int = 2,
) -> Iterator[Message]:
    """The messages of a V2 backup that pass ``filter``, in sequence order, straight from the archive.

    Stops reading as soon as ``filter.last_seq`` is passed. A V1 backup raises :class:`UsageError` (its messages
    are in file-store blocks, which are not decoded). Corrupt data raises :class:`IntegrityError` when it is
    reached, so messages before it may already have been yielded.
    """
    flt = filter or MessageFilter()
    opened = open_backup(url, backup, keys=keys, sink=sink, prefetch=prefetch, workers=workers)
    if opened.snapshot_format != V2:
        version = opened.server_version or "?"
        raise UsageError(
            f"backup {opened.manifest.id[:12]} is in snapshot format {opened.snapshot_format} (nats-server "
            f"{version}): reading its messages needs a V2 backup, taken from nats-server 2.15 or later. V1 backups "
            "keep messages in file-store blocks, which jsarchive cannot decode; use `jsarchive inspect` to list "
            "what it holds, or restore it into a server"
        )
    reader = natsarc.ArchiveReader(decoded_blocks(opened, accelerated=accelerated))
    try:
        for msg in reader.messages():
            if flt.last_seq is not None and msg.sequence > flt.last_seq:
                return
            if flt.matches(msg):
                yield msg
    finally:
        reader.close()


def message_record(msg: Message) -> dict:
    """One line of ``cat --format jsonl``: the payload as UTF-8 text if it is valid UTF-8, else base64."""
    import base64

    rec: dict = {"subject": msg.subject, "sequence": msg.sequence, "time": format_ns(msg.timestamp)}
    hdrs = msg.headers
    rec["headers"] = hdrs.fields if hdrs is not None else None
    if hdrs is not None and hdrs.status:
        rec["status"] = hdrs.status
        if hdrs.description:
            rec["description"] = hdrs.description
    try:
        rec["payload"] = msg.data.decode("utf-8")
        rec["payload_base64"] = False
    except UnicodeDecodeError:
        rec["payload"] = base64.b64encode(msg.data).decode("ascii")
        rec["payload_base64"] = True
    return rec
