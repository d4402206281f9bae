"""Back up one stream: snapshot → block cutter → (zstd → seal → sha256 → write_part) in threads → manifest → ref.

Data flows one way. The NATS side only enqueues: a chunk is acked as soon as it is appended to the current block,
and a full block waits for a slot among ``workers + buffer_blocks`` before the next chunk is taken. Peak memory is
therefore about (workers + buffer_blocks) × block size, whatever the stream's size; if no slot frees up within
``stall_budget`` seconds the backup fails with a clear message instead of letting the server time out.

The manifest is written only after the data object is complete, and the ref only after the manifest; any failure
before that aborts the upload, so an archive never holds a manifest for a backup that did not finish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import os
import time
from dataclasses import asdict, dataclass, field

from pipeline import __version__, crypto
from pipeline import manifest as mf
from pipeline.blocks import BlockCutter, choose_block_size
from pipeline.compress import BlockCompressor, Compression
from pipeline.errors import (
    JsArchiveError,
    KeyUnavailable,
    NotFoundError,
    ServerRefused,
    TransferFailed,
    UsageError,
)
from pipeline.jetstream import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_WINDOW_SIZE,
    V2,
    ConnectOptions,
    JetStream,
    ServerInfo,
    connect,
    detect_snapshot_format,
)
from pipeline.keys import KeyRing
from pipeline.progress import NoProgress, Progress
from pipeline.repository import Repository, ref_time, storage_error
from sinks import Retention, SinkError, SinkOptions

FORMAT_PROBE_BYTES = 64 * 1024


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
    chunk_size: int | None = DEFAULT_CHUNK_SIZE
    window_size: int | None = DEFAULT_WINDOW_SIZE
    block_size: int | None = None  # None: 8 MiB, grown so no backup needs more than 10,000 blocks
    workers: int = 2
    buffer_blocks: int = 2
    stall_budget: float = 4.0
    storage_class: str | None = None  # data object only; manifests and refs stay STANDARD
    retention: Retention | None = None  # Object Lock on data, manifest and ref
    sink: SinkOptions = field(default_factory=SinkOptions)


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
    snapshot_bytes: int
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

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class _Block:
    index: int
    stored_len: int
    stored_sha: bytes
    plain_len: int
    plain_sha: bytes


def check_writable(repo: Repository, encrypt: bool, keys: KeyRing, retention: Retention | None) -> None:
    """What must hold before a backup starts writing: a key to encrypt to, and a store that can enforce the lock."""
    if encrypt and not keys.can_write:
        raise KeyUnavailable(
            "backups are encrypted and no key is configured. Create one with `jsarchive keygen -o backup.key` and "
            "pass --identity backup.key (or only its public --recipient age1… on hosts that must not read "
            "backups), or use --key-file / $JSARCHIVE_KEY / --kms-key; --no-encrypt stores the backup in the clear"
        )
    if retention is not None and not getattr(repo.sink, "supports_retention", False):
        raise UsageError(
            f"{repo.url} cannot enforce retention (Object Lock); use an S3 or GCS archive for locked backups"
        )


def backup_stream(opts: BackupOptions, progress: Progress | None = None) -> BackupResult:
    """Back up ``opts.stream`` into the archive at ``opts.url``; raises :class:`JsArchiveError` on failure."""
    return asyncio.run(backup_stream_async(opts, progress))


async def backup_stream_async(opts: BackupOptions, progress: Progress | None = None) -> BackupResult:
    progress = progress or NoProgress()
    repo = Repository.open(opts.url, opts.sink)
    check_writable(repo, opts.encrypt, opts.keys, opts.retention)
    js = await connect(opts.connect)
    async with js:
        server = js.server_info()
        info = await js.stream_info(opts.stream)
        if info is None:
            raise NotFoundError(
                f"stream {opts.stream!r} does not exist on the server ({opts.connect.resolved().servers})"
            )
        config = info.get("config") or {}
        if config.get("storage") == "memory" and server.snapshot_format != V2:
            raise ServerRefused(
                f"stream {opts.stream!r} uses memory storage: backing it up needs nats-server 2.15 or later; "
                f"nats-server {server.version} snapshots only file-storage streams (snapshot format V1)"
            )
        consumers = await js.consumers(opts.stream) if opts.consumers else []
        try:
            server.api_level = await js.api_level()
        except JsArchiveError:
            server.api_level = None
        block_size = opts.block_size or choose_block_size(int((info.get("state") or {}).get("bytes", 0)))
        return await _run(opts, repo, js, server, consumers, block_size, progress)


async def _run(
    opts: BackupOptions,
    repo: Repository,
    js: JetStream,
    server: ServerInfo,
    consumers: list[dict],
    block_size: int,
    progress: Progress,
) -> BackupResult:
    started = time.monotonic()
    created = dt.datetime.now(dt.timezone.utc)
    backup_id = os.urandom(16).hex()
    data_key = crypto.new_data_key() if opts.encrypt else None
    # Wrap first: a KMS or recipient problem fails before anything is written (no orphaned data object).
    slots_ = await asyncio.to_thread(opts.keys.wrap, data_key, backup_id) if data_key is not None else []
    compressor = BlockCompressor(opts.compression)
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, opts.workers), thread_name_prefix="seal")
    slots = asyncio.Semaphore(max(1, opts.workers) + max(0, opts.buffer_blocks))
    tasks: list[asyncio.Future] = []
    cutter = BlockCutter(block_size)
    probe = bytearray()
    snapshot_format: str | None = None
    failure: list[BaseException] = []

    try:
        writer = await asyncio.to_thread(
            repo.sink.open_writer,
            repo.data_key(backup_id),
            part_size=block_size,
            metadata={"jsarchive-stream": opts.stream, "jsarchive-backup-id": backup_id},
            storage_class=opts.storage_class,
            retention=opts.retention,
        )
    except SinkError as e:
        raise storage_error(e, f"cannot start writing the backup to {repo.url}") from None

    def seal_and_store(index: int, block: bytes, last: bool) -> _Block:
        stored = compressor.compress(block)
        if data_key is not None:
            stored = crypto.seal(data_key, stored, crypto.block_aad(backup_id, index, last))
        stored_sha = crypto.sha256(stored)
        writer.write_part(index + 1, stored, stored_sha)
        return _Block(index, len(stored), stored_sha, len(block), crypto.sha256(block))

    def on_done(fut: asyncio.Future) -> None:
        slots.release()
        if not fut.cancelled() and fut.exception() is not None and not failure:
            failure.append(fut.exception())

    async def submit(index: int, block: bytes, last: bool) -> None:
        if failure:
            raise failure[0]
        try:
            await asyncio.wait_for(slots.acquire(), timeout=opts.stall_budget)
        except asyncio.TimeoutError:
            raise TransferFailed(
                f"the archive at {repo.url} accepted no data for {opts.stall_budget:g} s; stopping before the "
                "server aborts the snapshot (its limit is 5 s without acks)"
            ) from None
        fut = loop.run_in_executor(pool, seal_and_store, index, block, last)
        fut.add_done_callback(on_done)
        tasks.append(fut)

    async def on_chunk(chunk: bytes) -> None:
        nonlocal snapshot_format
        if snapshot_format is None:
            probe.extend(chunk[: FORMAT_PROBE_BYTES - len(probe)])
            snapshot_format = detect_snapshot_format(bytes(probe))
        for index, block, last in cutter.feed(chunk):
            await submit(index, block, last)
        progress.advance(len(chunk))

    def on_start(resp: dict) -> None:
        progress.start(f"backup {opts.stream}", None)

    try:
        try:
            snap = await js.snapshot(
                opts.stream,
                on_chunk,
                no_consumers=not opts.consumers,
                jsck=opts.check,
                chunk_size=opts.chunk_size,
                window_size=opts.window_size,
                on_start=on_start,
            )
            await submit(*cutter.finish())
            results = await asyncio.gather(*tasks)
        finally:
            progress.finish()
        if failure:
            raise failure[0]
        blocks = sorted(results, key=lambda b: b.index)
        info = await asyncio.to_thread(writer.complete)
    except BaseException as e:
        for t in tasks:
            t.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(SinkError):  # the original failure is what the user needs to see
            await asyncio.to_thread(writer.abort)
        if isinstance(e, SinkError):
            raise storage_error(e, f"writing the backup to {repo.url} failed") from None
        raise
    pool.shutdown(wait=False)

    fmt = snapshot_format or server.snapshot_format
    state = snap.state
    stored_total = sum(b.stored_len for b in blocks)
    if info.size != stored_total:
        with contextlib.suppress(SinkError):
            await asyncio.to_thread(repo.sink.delete, repo.data_key(backup_id))
        raise TransferFailed(f"the archive stored {info.size} bytes for the data object, expected {stored_total}")
    offsets = []
    off = 0
    for b in blocks:
        offsets.append([off, b.stored_len, b.stored_sha.hex()])
        off += b.stored_len
    seconds = time.monotonic() - started
    envelope = {
        "backup_id": backup_id,
        "stream": opts.stream,
        "created": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "tool": {"name": "jsarchive", "version": __version__},
        "server": {
            "version": server.version,
            "name": server.name,
            "cluster": server.cluster,
            "api_level": server.api_level,
        },
        "snapshot_format": fmt,
        "data": {"key": repo.data_key(backup_id), "size": stored_total, "block_size": block_size},
        "blocks": offsets,
        "summary": {
            "messages": int(state.get("messages", 0)),
            "bytes": int(state.get("bytes", 0)),
            "first_seq": int(state.get("first_seq", 0)),
            "last_seq": int(state.get("last_seq", 0)),
            "consumers": 0 if not opts.consumers else int(state.get("consumer_count", 0)),
            "snapshot_bytes": snap.bytes,
            "storage": str(snap.config.get("storage", "file")),
            "replicas": int(snap.config.get("num_replicas", 1) or 1),
        },
        "encryption": {
            "scheme": mf.SCHEME_AES if data_key is not None else mf.SCHEME_NONE,
            "key_slots": [s.to_json() for s in slots_],
        },
    }
    body = {
        "config": snap.config,
        "state": state,
        "consumers": consumers,
        "snapshot": {
            "format": fmt,
            "inner_encoding": "s2-stream",
            "no_consumers": not opts.consumers,
            "jsck": opts.check,
            "chunk_size": opts.chunk_size,
            "window_size": opts.window_size,
            "chunks": snap.chunks,
            "bytes": snap.bytes,
        },
        "compression": opts.compression.to_json(),
        "plain_blocks": [[b.plain_len, b.plain_sha.hex()] for b in blocks],
        "timings": {"started": envelope["created"], "seconds": round(seconds, 3)},
    }
    raw = mf.build(envelope, body, data_key)
    try:
        mid = await asyncio.to_thread(repo.write_manifest, raw, opts.retention)
        ref = await asyncio.to_thread(repo.write_ref, opts.stream, ref_time(created), backup_id, mid, opts.retention)
    except SinkError as e:
        raise storage_error(
            e,
            f"the data was stored but the manifest or ref could not be written to {repo.url}; the backup is not "
            f"usable and `jsarchive prune` collects data/{backup_id}",
        ) from None
    return BackupResult(
        manifest_id=mid,
        backup_id=backup_id,
        stream=opts.stream,
        created=envelope["created"],
        ref=ref,
        server_version=server.version,
        snapshot_format=fmt,
        messages=envelope["summary"]["messages"],
        bytes=envelope["summary"]["bytes"],
        snapshot_bytes=snap.bytes,
        stored_bytes=stored_total,
        blocks=len(blocks),
        block_size=block_size,
        encrypted=data_key is not None,
        key_slots=[s.describe() for s in slots_],
        consumers=envelope["summary"]["consumers"],
        seconds=round(seconds, 3),
        storage_class=info.storage_class,
        retain_until=opts.retention.until.isoformat() if opts.retention else None,
        lock_mode=opts.retention.mode if opts.retention else None,
    )
