"""Look inside a backup without a NATS server: what it holds (:func:`inspect_backup`) and its messages
(:func:`iter_messages`).

Both read the backup the way a restore does (manifest → key slot → blocks fetched ahead, each checked against the
manifest, opened and decompressed, see :class:`pipeline.archive.reader.BlockReader`), then decode the snapshot stream in
process: S2 framing (:mod:`pipeline.format.s2`; nothing to undo for a backup stored decoded, see
:mod:`pipeline.format.payload`), then the NATSARC1 archive of a V2 backup or the tar of a V1 backup
(:mod:`pipeline.format.natsarc`). Nothing is written
anywhere and memory stays bounded by a few blocks.

V1 backups (nats-server <= 2.14) are listed (tar members, stream config, consumers) but their messages cannot be
read: that needs the file-store block format, which is not decoded here. Their counts come from the stream state
recorded when the backup was taken.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from pipeline.archive.chains import open_chain
from pipeline.archive.reader import open_backup
from pipeline.archive.repository import Repository
from pipeline.base.errors import UsageError
from pipeline.format import natsarc, s2
from pipeline.format.natsarc import ConsumerPosition, Message, TarMember
from pipeline.format.selection import MessageFilter, format_ns
from pipeline.format.snapshot import V1, V2
from pipeline.keys.keyring import KeyRing
from sinks import SinkOptions

__all__ = [
    "ConsumerSummary",
    "InspectResult",
    "Message",
    "SubjectStats",
    "inspect_backup",
    "iter_messages",
    "message_record",
]

# -- opening a backup ---------------------------------------------------------------------------------------------


# -- times, sequences, subjects -----------------------------------------------------------------------------------


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
    at: dt.datetime | None = None,
) -> InspectResult:
    """Read the whole backup ``backup`` (id or unique prefix) in the archive at ``url`` and summarize it; with
    ``at``, ``backup`` is a stream name and its newest backup created at or before ``at`` is read.

    Every block is fetched and checked, and every S2 checksum verified, so a clean result also means the data is
    intact. Raises :class:`IntegrityError` (or a subclass such as :class:`pipeline.format.s2.S2Error`) if it is not.
    """
    warnings: list[str] = []  # with ``at``: newer backups passed over, and why
    if at is not None:
        backup = Repository.open(url, sink).newest_at(backup, at, skipped=warnings).id
    opened = open_backup(url, backup, keys=keys, sink=sink, prefetch=prefetch, workers=workers)
    m, body = opened.manifest, opened.body
    blocks = _Counting(opened.decoded(accelerated=accelerated))
    first = blocks.peek()
    found = V2 if first.startswith(natsarc.MAGIC) else V1
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
    """The messages of a V2 backup that pass ``filter``, in sequence order, straight from the archive (of a restore
    point of a chain: the stream up to that point, read through its path).

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
    # A delta alone holds only its own range: its messages are read through its chain, base first.
    chain = open_chain(opened.repo, opened.manifest, keys or KeyRing(), named=True, prefetch=prefetch, workers=workers)
    reader = natsarc.ArchiveReader(chain.blocks() if chain else opened.decoded(accelerated=accelerated))
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
