"""Back up one stream: preflight, then the server's snapshot chunks fed into a
:class:`pipeline.archive.writer.BackupWriter`.

The NATS side only enqueues: a chunk is acked as soon as the writer has appended it to the current block (see
pipeline/archive/writer.py for the bounded stages, the memory budget and the commit order).

``store="decoded"`` keeps the decoded NATSARC1 archive instead of the S2 stream (pipeline/format/payload.py); it needs a
V2 snapshot, so servers before 2.15 are refused before anything is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import asdict, dataclass, field, replace

from pipeline.archive.repository import Repository, storage_error
from pipeline.archive.writer import BackupWriter, Committed, WriteSettings
from pipeline.base.display import redact_servers
from pipeline.base.errors import (
    JsArchiveError,
    KeyUnavailable,
    NotFoundError,
    ServerRefused,
    TransferFailed,
    UsageError,
    phrase,
    setting,
)
from pipeline.base.progress import NoProgress, Progress
from pipeline.base.transfer import TransferConfig, auto_snapshot_chunk, auto_snapshot_window
from pipeline.base.units import human_bytes
from pipeline.flows import delta
from pipeline.format import payload
from pipeline.format.blocks import choose_block_size
from pipeline.format.census import Census, Held
from pipeline.format.compress import Compression
from pipeline.format.manifest import is_chain_time
from pipeline.format.s2meter import DecodedLength
from pipeline.format.snapshot import V2
from pipeline.jetstream.client import (
    ConnectOptions,
    JetStream,
    ServerInfo,
    connect,
)
from pipeline.jetstream.livetail import Tail, read_tail
from pipeline.keys.keyring import KeyRing
from sinks import Retention, SinkError, SinkOptions, Unsupported, require


@dataclass
class BackupOptions:
    stream: str
    url: str
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    keys: KeyRing = field(default_factory=KeyRing)
    encrypt: bool = True
    compression: Compression = field(default_factory=Compression)
    consumers: bool = True
    check: bool = False
    transfer: TransferConfig = field(default_factory=TransferConfig)
    storage_class: str | None = None  # data object only; manifests and refs stay STANDARD
    retention: Retention | None = None  # Object Lock on data, manifest and ref
    sink: SinkOptions = field(default_factory=SinkOptions)
    store: str = "snapshot"  # "snapshot": the S2 stream as sent; "decoded": the NATSARC1 archive (V2 servers)
    origin: dict | None = None  # the manifest's clear "origin" (e.g. {"type": "pre-restore", ...}); None: a backup
    sign_key: object | None = (
        None  # Ed25519 private key (pipeline.archive.signing.load_private_key): signs the manifest
    )
    incremental: bool = False  # a delta after the stream's newest restore point when it can be (flows/delta.py)
    full_every: int | None = None  # with incremental: a full backup once a chain has this many restore points
    # with incremental: where the chain stands, from a caller that committed its newest point itself (stream follow:
    # BackupResult.next_start); None: found in the archive
    chain_hint: delta.ChainStart | None = None


@dataclass
class BackupResult:
    manifest_id: str
    backup_id: str
    stream: str
    created: str
    ref: str
    server_version: str
    snapshot_format: str
    messages: int
    bytes: int
    snapshot_bytes: int  # plaintext stored: the S2 stream, or the decoded archive with store="decoded"
    stored_bytes: int
    blocks: int
    block_size: int
    encrypted: bool
    key_slots: list[str]
    consumers: int
    seconds: float
    storage_class: str | None = None
    retain_until: str | None = None
    lock_mode: str | None = None
    inner_encoding: str = payload.S2_STREAM
    received_bytes: int = 0  # snapshot bytes the server sent (S2-framed)
    point: int | None = None  # V2: the sequence the backup is consistent as of (pipeline/jetstream/livetail.py)
    warnings: list[str] = field(default_factory=list)  # how the stream changed while it was backed up
    chain: dict | None = None  # incremental: the manifest's chain envelope (its parent None for a full backup)
    full_reason: str | None = None  # incremental: why this backup is a full one
    next_start: delta.ChainStart | None = field(default=None, repr=False)  # incremental: where the next one starts

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("next_start")  # the library's hand-over to the next capture, not part of the result
        return out

    @classmethod
    def from_commit(cls, c: Committed, stream: str, server_version: str, retention: Retention | None) -> BackupResult:
        return cls(
            manifest_id=c.manifest_id,
            backup_id=c.backup_id,
            stream=stream,
            created=c.created,
            ref=c.ref,
            server_version=server_version,
            snapshot_format=c.snapshot_format,
            messages=c.summary["messages"],
            bytes=c.summary["bytes"],
            snapshot_bytes=c.snapshot_bytes,
            stored_bytes=c.stored_bytes,
            blocks=c.blocks,
            block_size=c.block_size,
            encrypted=c.encrypted,
            key_slots=c.key_slots,
            consumers=c.summary["consumers"],
            seconds=c.seconds,
            storage_class=c.storage_class,
            retain_until=retention.until.isoformat() if retention else None,
            lock_mode=retention.mode if retention else None,
            inner_encoding=c.inner_encoding,
            received_bytes=c.received_bytes,
        )


def check_store(store: str, server: ServerInfo) -> str:
    """The inner encoding ``store`` writes, refused up front where the server cannot provide it."""
    encoding = payload.store_encoding(store)
    if encoding == payload.NATSARC and server.snapshot_format != V2:
        raise ServerRefused(
            f"{setting('store')} decoded keeps the decoded NATSARC1 "
            "archive, which only snapshot format V2 has (nats-server "
            f"2.15 or later); nats-server {server.version} sends V1 (a tar). Use {setting('store')} snapshot"
        )
    return encoding


def check_writable(repo: Repository, encrypt: bool, keys: KeyRing, retention: Retention | None) -> None:
    """What must hold before a backup starts writing: a key to encrypt to, and a store that can enforce the lock."""
    if encrypt and not keys.can_write:
        raise KeyUnavailable(
            "backups are encrypted and no key is configured. Create one with `jsarchive keygen -o backup.key` and "
            f"pass {setting('identity')} backup.key (or only its public "
            f"{setting('recipient')} age1… on hosts that must not read "
            f"backups), or use {setting('key-file')} / $JSARCHIVE_KEY / "
            f"{setting('kms-key')}; {setting('no-encrypt')} stores the backup in the clear"
        )
    if retention is not None:
        try:
            require(repo.sink, "retention_lock", what="enforce retention (Object Lock)")
        except Unsupported as e:
            raise UsageError(f"{e}; use an S3 or GCS archive for locked backups") from None
    if retention is not None:
        try:
            why = repo.sink.retention_unsupported()
        except SinkError as e:
            raise storage_error(e, f"cannot check whether {repo.url} can lock backups") from None
        if why:
            raise UsageError(
                f"{setting('lock-mode')} {retention.mode}: {why}, so "
                f"{repo.url} cannot lock backups; nothing was written "
                "(create the bucket with Object Lock, or with object "
                f"retention on GCS, or leave out {setting('lock-mode')})"
            )


def backup_stream(opts: BackupOptions, progress: Progress | None = None) -> BackupResult:
    """Back up ``opts.stream`` into the archive at ``opts.url``; raises :class:`JsArchiveError` on failure."""
    return asyncio.run(backup_stream_async(opts, progress))


async def backup_stream_async(opts: BackupOptions, progress: Progress | None = None) -> BackupResult:
    progress = progress or NoProgress()
    payload.store_encoding(opts.store)  # a bad value fails before any connection
    repo = Repository.open(opts.url, opts.sink)
    check_writable(repo, opts.encrypt, opts.keys, opts.retention)
    js = await connect(opts.connect)
    async with js:
        server = js.server_info()
        check_store(opts.store, server)
        # the round trip is measured beside the first request, so it costs none of its own
        info, rtt = await asyncio.gather(js.stream_info(opts.stream), js.rtt())
        if info is None:
            raise NotFoundError(
                f"stream {opts.stream!r} does not exist on the server "
                f"({redact_servers(opts.connect.resolved().servers)})"
            )
        config = info.get("config") or {}
        if config.get("storage") == "memory" and server.snapshot_format != V2:
            raise ServerRefused(
                f"stream {opts.stream!r} uses memory storage: backing it up needs nats-server 2.15 or later; "
                f"nats-server {server.version} snapshots only file-storage streams (snapshot format V1)"
            )

        async def api_level() -> int | None:
            try:
                return await js.api_level()
            except JsArchiveError:
                return None

        start: delta.ChainStart | None = None
        if opts.incremental:
            delta.check_server(server)
            start = await asyncio.to_thread(
                delta.chain_start, repo, opts.stream, info, opts.full_every, opts.chain_hint
            )
        consumers, server.api_level = await asyncio.gather(
            js.consumers(opts.stream) if opts.consumers else asyncio.sleep(0, []), api_level()
        )
        block_size = opts.transfer.block_size or choose_block_size(int((info.get("state") or {}).get("bytes", 0)))
        t = opts.transfer
        opts = replace(
            opts,
            transfer=replace(
                t,
                snapshot_chunk=auto_snapshot_chunk(rtt) if t.snapshot_chunk is None else t.snapshot_chunk,
                snapshot_window=auto_snapshot_window(rtt) if t.snapshot_window is None else t.snapshot_window,
            ),
        )
        if start is not None and start.parent is not None:
            return await _run_delta(opts, repo, js, server, info, consumers, block_size, start, progress)
        result = await _run(opts, repo, js, server, consumers, block_size, progress, rtt=rtt, start=start, info=info)
        return result


V1_ATTEMPTS = 3  # a V1 snapshot whose blocks lack messages its index claims is taken again, at most this often


async def _run(
    opts: BackupOptions,
    repo: Repository,
    js: JetStream,
    server: ServerInfo,
    consumers: list[dict],
    block_size: int,
    progress: Progress,
    rtt: float | None = None,
    start: delta.ChainStart | None = None,
    info: dict | None = None,
) -> BackupResult:
    v2 = server.snapshot_format == V2
    settings = _write_settings(opts, payload.store_encoding(opts.store), open_end=v2)
    warnings: list[str] = []
    for attempt in range(1, V1_ATTEMPTS + 1):
        w = BackupWriter(repo, opts.stream, opts.keys, opts.encrypt, settings, block_size)
        census = Census(server.snapshot_format)
        # The bar counts the stream's bytes, as natscli's does: the chunks' decoded length (read from their S2
        # headers) against the stream's size from the snapshot response. Compressed bytes cannot be scaled to the
        # stream's size while it runs: how well the rest will compress is not known until it has arrived.
        meter = DecodedLength()
        await w.start()

        async def on_chunk(
            chunk: bytes, w: BackupWriter = w, census: Census = census, meter: DecodedLength = meter
        ) -> None:
            await w.feed(chunk)
            await census.feed(chunk)
            progress.advance(meter.feed(chunk))

        try:
            try:
                snap = await js.snapshot(
                    opts.stream,
                    on_chunk,
                    no_consumers=not opts.consumers,
                    jsck=opts.check,
                    chunk_size=opts.transfer.snapshot_chunk,
                    window_size=opts.transfer.snapshot_window,
                    on_start=lambda resp: progress.start(
                        f"backup {opts.stream}", int((resp.get("state") or {}).get("bytes") or 0) or None
                    ),
                )
                held = await census.finish()
                tail: Tail | None = None
                if v2:
                    tail = await read_tail(js, opts.stream, int(snap.state.get("last_seq", 0) or 0), w.append)
                    _add_tail(held, tail)
                elif (short := held.shortfall) is not None:
                    why = f"the V1 snapshot of stream {opts.stream!r} is incomplete: its blocks hold {short}"
                    if attempt < V1_ATTEMPTS:
                        warnings.append(f"{why}; taken again (attempt {attempt + 1} of {V1_ATTEMPTS})")
                        await w.abort()
                        progress.abort("incomplete, taken again")
                        continue
                    raise TransferFailed(
                        f"{why}, in {V1_ATTEMPTS} attempts (the stream changed while each ran); nothing was stored. "
                        "Retry when the stream is quieter"
                    )
                await w.finish()
            except BaseException:
                progress.abort()
                raise
        except BaseException:
            census.abort()
            await w.abort()
            raise
        break
    warnings += _compare_announced(opts.stream, snap.state, held, tail)
    chain = None
    if start is not None and tail is not None:  # a full backup that starts a chain (--incremental)
        chain = delta.chain_envelope(
            start,
            stream_created=str((info or {}).get("created") or ""),
            first_seq=held.first_seq or tail.point + 1,
            last_seq=tail.point,
            captured=_captured(tail),
        )
        warnings.append(phrase(f"a full backup starts a chain of restore points: {start.why_full}"))
    c = await w.commit(
        server=_server_json(server),
        config=snap.config,
        state=snap.state,
        consumers=consumers,
        include_consumers=opts.consumers,
        snapshot={
            "jsck": opts.check,
            "chunk_size": opts.transfer.snapshot_chunk or None,
            "window_size": opts.transfer.snapshot_window or None,
            "rtt_ms": round(rtt * 1000, 2) if rtt is not None else None,
            "chunks": snap.chunks,
        },
        snapshot_format=w.snapshot_format or server.snapshot_format,
        origin=opts.origin,
        held=held.to_json(),
        point=tail.to_json() if tail is not None else None,
        sign_key=opts.sign_key,
        chain=chain,
    )
    result = BackupResult.from_commit(c, opts.stream, server.version, opts.retention)
    result.warnings = warnings
    result.point = tail.point if tail is not None else None
    result.chain = c.chain
    if start is not None and c.chain is not None:
        result.full_reason = phrase(start.why_full) if start.why_full else None
        result.next_start = delta.after(c.manifest_id, opts.stream, c.chain, start)
    progress.finish(f"{human_bytes(c.stored_bytes)} stored in {c.blocks} block(s)", what="stream")
    return result


def _server_json(server: ServerInfo) -> dict:
    """The manifest's ``server``: who took the backup."""
    return {"version": server.version, "name": server.name, "cluster": server.cluster, "api_level": server.api_level}


def _write_settings(opts: BackupOptions, inner_encoding: str, *, open_end: bool) -> WriteSettings:
    return WriteSettings(
        compression=opts.compression,
        workers=opts.transfer.workers,
        buffer_blocks=opts.transfer.buffer_blocks,
        stall_budget=opts.transfer.stall_budget,
        storage_class=opts.storage_class,
        retention=opts.retention,
        inner_encoding=inner_encoding,
        open_end=open_end,
    )


def _captured(tail: Tail) -> str:
    """A capture's time, RFC 3339: the server's at the catch-up read's last look, else this host's now."""
    if is_chain_time(tail.server_time):
        return tail.server_time
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _run_delta(
    opts: BackupOptions,
    repo: Repository,
    js: JetStream,
    server: ServerInfo,
    info: dict,
    consumers: list[dict],
    block_size: int,
    start: delta.ChainStart,
    progress: Progress,
) -> BackupResult:
    """A delta (flows/delta.py): the head as the capture starts, then every message after the parent's point."""
    assert start.parent is not None
    state = dict(info.get("state") or {})
    # Decoded: a delta is a client-written archive; there is no server S2 stream to keep byte for byte.
    w = BackupWriter(
        repo, opts.stream, opts.keys, opts.encrypt, _write_settings(opts, payload.NATSARC, open_end=True), block_size
    )
    census = Census(V2)
    head = delta.delta_head(state, consumers if opts.consumers else [], time.time_ns())
    progress.start(f"backup {opts.stream} after sequence {start.parent.last_seq}", None)
    await w.start()
    try:
        await w.feed(head)
        await census.feed(head)
        held = await census.finish()
        tail = await read_tail(js, opts.stream, start.parent.last_seq, w.append)
        _add_tail(held, tail)
        await w.finish()
    except BaseException:
        progress.abort()
        census.abort()
        await w.abort()
        raise
    chain = delta.chain_envelope(
        start,
        stream_created=str(info.get("created") or ""),
        first_seq=start.parent.last_seq + 1,
        last_seq=tail.point,
        captured=_captured(tail),
    )
    state["consumer_count"] = len(delta.durables(consumers))
    c = await w.commit(
        server=_server_json(server),
        config=info.get("config") or {},
        state=state,
        consumers=consumers,
        include_consumers=opts.consumers,
        snapshot={"delta": True, "after_seq": start.parent.last_seq},
        snapshot_format=V2,
        origin=opts.origin,
        held=held.to_json(),
        point=tail.to_json(),
        sign_key=opts.sign_key,
        chain=chain,
        range_bytes=tail.bytes,
    )
    result = BackupResult.from_commit(c, opts.stream, server.version, opts.retention)
    result.point, result.chain = tail.point, c.chain
    result.next_start = delta.after(c.manifest_id, opts.stream, c.chain, start)
    if tail.gone:
        result.warnings.append(
            f"{tail.gone:,} sequence(s) after {start.parent.last_seq} were deleted before they "
            "were read: a restore keeps them deleted"
        )
    progress.finish(
        f"delta of {tail.messages:,} message(s) after sequence {start.parent.last_seq}: "
        f"{human_bytes(c.stored_bytes)} stored",
        what="stream",
    )
    return result


def _add_tail(held: Held, tail: Tail) -> None:
    if not tail.messages:
        return
    held.messages += tail.messages
    held.first_seq = held.first_seq or tail.first_seq
    held.last_seq = tail.last_seq


def _compare_announced(stream: str, state: dict, held: Held, tail: Tail | None) -> list[str]:
    """Say how what the archive holds differs from the state the server announced when the snapshot started."""
    announced = int(state.get("messages", 0) or 0)
    snap_n = held.messages - (tail.messages if tail else 0)
    notes = []
    if snap_n != announced:
        notes.append(
            f"stream {stream!r} changed while it was backed up: the snapshot held {snap_n:,} messages, the server "
            f"announced {announced:,} when it started"
        )
    if tail is not None and tail.messages:
        notes.append(
            f"{tail.messages:,} message(s) written while the snapshot ran were read and added: the backup is as of "
            f"sequence {tail.point}"
            + (f" ({tail.gone:,} later sequence(s) were already deleted when read)" if tail.gone else "")
        )
    return notes
