"""The write half of a backup: snapshot bytes → sealed blocks in one data object → manifest → ref.

Both `stream backup` (bytes from a live snapshot) and `import` (bytes from a natscli ``stream.tar.s2``) feed a
:class:`BackupWriter`, so every backup has the same blocks, the same manifest and the same commit order.

What the blocks hold is the writer's ``inner_encoding`` (see pipeline/format/payload.py): the snapshot stream as the
server sent it (the default), or its decoded NATSARC1 archive (``--store decoded``, decoded as it arrives).

Data flows one way: :meth:`BackupWriter.feed` appends to the current block and returns at once unless all
``workers + buffer_blocks`` block slots are busy; a full block goes to a thread pool that compresses it (one zstd
frame), seals it (AES-256-GCM), hashes it and writes it as part *n* of the data object. Peak memory is therefore
about (workers + buffer_blocks) × block size, whatever the stream's size. If no slot frees up within
``stall_budget`` seconds, feeding fails with a clear message instead of letting a NATS server time out.

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
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline import __version__
from pipeline.archive import signing
from pipeline.archive.repository import Repository, ref_time, storage_error
from pipeline.base.errors import TransferFailed
from pipeline.format import manifest as mf
from pipeline.format import payload
from pipeline.format.blocks import BlockCutter
from pipeline.format.compress import BlockCompressor, Compression
from pipeline.format.snapshot import V2, detect_snapshot_format
from pipeline.keys import crypto
from pipeline.keys.keyring import KeyRing
from sinks import ObjectInfo, Retention, SinkError

FORMAT_PROBE_BYTES = 64 * 1024


@dataclass(frozen=True)
class WriteSettings:
    """How blocks are made and stored; shared by backups and imports."""

    compression: Compression = Compression()
    workers: int = 2
    buffer_blocks: int = 2
    stall_budget: float = 4.0
    storage_class: str | None = None  # data object only; manifests and refs stay STANDARD
    retention: Retention | None = None  # Object Lock on data, manifest and ref
    inner_encoding: str = payload.S2_STREAM  # what the blocks hold: payload.S2_STREAM or payload.NATSARC
    open_end: bool = False  # V2: keep the archive open for entries appended after the snapshot (livetail)


@dataclass
class StoredBlock:
    index: int
    stored_len: int
    stored_sha: bytes
    plain_len: int
    plain_sha: bytes


@dataclass
class Committed:
    """What :meth:`BackupWriter.commit` wrote."""

    manifest_id: str
    backup_id: str
    ref: str
    created: str
    snapshot_format: str
    inner_encoding: str
    snapshot_bytes: int  # plaintext bytes stored (the decoded archive for payload.NATSARC)
    received_bytes: int  # snapshot bytes fed (as the server sent them)
    stored_bytes: int
    blocks: int
    block_size: int
    encrypted: bool
    key_slots: list[str]
    summary: dict
    seconds: float
    storage_class: str | None
    chain: dict | None = None  # the manifest's chain envelope (a restore point of a chain)


class BackupWriter:
    def __init__(
        self, repo: Repository, stream: str, keys: KeyRing, encrypt: bool, settings: WriteSettings, block_size: int
    ) -> None:
        self.repo = repo
        self.stream = stream
        self.keys = keys
        self.settings = settings
        self.block_size = block_size
        self.backup_id = os.urandom(16).hex()
        self.created = dt.datetime.now(dt.timezone.utc)
        self.data_key = crypto.new_data_key() if encrypt else None
        self.bytes = 0  # plaintext bytes cut into blocks
        self._form = payload.StoredForm(settings.inner_encoding, open_end=settings.open_end)
        self._started = time.monotonic()
        self._compressor = BlockCompressor(settings.compression)
        self._cutter = BlockCutter(block_size)
        self._probe = bytearray()
        self._format: str | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(max(1, settings.workers) + max(0, settings.buffer_blocks))
        self._tasks: list[asyncio.Future] = []
        self._failure: list[BaseException] = []
        self._writer = None
        self._key_slots: list = []
        self._blocks: list[StoredBlock] = []
        self._info: ObjectInfo | None = None

    @property
    def snapshot_format(self) -> str | None:
        """V1 or V2 as read from the first bytes (None until enough arrived)."""
        return self._format

    async def start(self) -> None:
        # Wrap first: a KMS or recipient problem fails before anything is written (no orphaned data object).
        if self.data_key is not None:
            self._key_slots = await asyncio.to_thread(self.keys.wrap, self.data_key, self.backup_id)
        try:
            self._writer = await asyncio.to_thread(
                self.repo.sink.open_writer,
                self.repo.data_object(self.backup_id),
                part_size=self.block_size,
                metadata={"jsarchive-stream": self.stream, "jsarchive-backup-id": self.backup_id},
                storage_class=self.settings.storage_class,
                retention=self.settings.retention,
            )
        except SinkError as e:
            raise storage_error(e, f"cannot start writing the backup to {self.repo.url}") from None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, self.settings.workers), thread_name_prefix="seal"
        )

    def _seal_and_store(self, index: int, block: bytearray, last: bool) -> StoredBlock:
        plain_len, plain_sha = len(block), crypto.sha256(block)
        stored = self._compressor.compress(block)
        if self.data_key is not None:
            stored = crypto.seal(self.data_key, stored, crypto.block_aad(self.backup_id, index, last))
        if stored is not block:  # the plaintext buffer is free again (an uncompressed clear block is written as is)
            self._cutter.recycle(block)
        stored_sha = crypto.sha256(stored)
        # This runs in a worker thread: what it raises reaches the user, so it must be the pipeline's own error.
        try:
            self._writer.write_part(index + 1, stored, stored_sha)
        except SinkError as e:
            raise storage_error(e, f"writing block {index} of the backup to {self.repo.url} failed") from None
        except OSError as e:
            raise TransferFailed(
                f"writing block {index} of the backup to {self.repo.url} failed: {e.strerror or e}"
            ) from None
        return StoredBlock(index, len(stored), stored_sha, plain_len, plain_sha)

    def _on_done(self, fut: asyncio.Future) -> None:
        self._slots.release()
        if not fut.cancelled() and fut.exception() is not None and not self._failure:
            self._failure.append(fut.exception())

    async def _submit(self, index: int, block: bytes, last: bool) -> None:
        if self._failure:
            raise self._failure[0]
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.settings.stall_budget)
        except asyncio.TimeoutError:
            raise TransferFailed(
                f"the archive at {self.repo.url} accepted no data for {self.settings.stall_budget:g} s; stopping "
                "before the server aborts the snapshot (its limit is 5 s without acks)"
            ) from None
        fut = asyncio.get_running_loop().run_in_executor(self._pool, self._seal_and_store, index, block, last)
        fut.add_done_callback(self._on_done)
        self._tasks.append(fut)

    @property
    def received_bytes(self) -> int:
        """Snapshot bytes fed so far, as the server sent them."""
        return self._form.received

    async def feed(self, chunk: bytes) -> None:
        if self._format is None:
            if self._form.encoding == payload.NATSARC:
                self._format = V2  # StoredForm fails the backup if the decoded bytes are not a NATSARC1 archive
            else:
                self._probe.extend(chunk[: FORMAT_PROBE_BYTES - len(self._probe)])
                self._format = detect_snapshot_format(bytes(self._probe))
        await self._cut(self._form.feed(chunk))

    async def append(self, entries: bytes) -> None:
        """NATSARC1 entries to store after the snapshot's messages (``open_end`` only, see livetail)."""
        await self._cut(self._form.append(entries))

    async def _cut(self, pieces: Iterator[payload.Bytes]) -> None:
        for piece in pieces:
            self.bytes += len(piece)
            for index, block, last in self._cutter.feed(piece):
                await self._submit(index, block, last)

    async def finish(self) -> None:
        """Seal the last block and complete the data object."""
        await self._cut(self._form.finish())
        await self._submit(*self._cutter.finish())
        results = await asyncio.gather(*self._tasks)
        if self._failure:
            raise self._failure[0]
        self._blocks = sorted(results, key=lambda b: b.index)
        try:
            self._info = await asyncio.to_thread(self._writer.complete)
        except SinkError as e:
            raise storage_error(e, f"writing the backup to {self.repo.url} failed") from None
        except OSError as e:
            raise TransferFailed(f"writing the backup to {self.repo.url} failed: {e.strerror or e}") from None
        self._pool.shutdown(wait=False)
        stored_total = sum(b.stored_len for b in self._blocks)
        if self._info.size != stored_total:
            with contextlib.suppress(SinkError):
                await asyncio.to_thread(self.repo.sink.delete, self.repo.data_object(self.backup_id))
            raise TransferFailed(
                f"the archive stored {self._info.size} bytes for the data object, expected {stored_total}"
            )

    async def abort(self) -> None:
        """Discard everything written; safe to call after any failure."""
        for t in self._tasks:
            t.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._writer is not None:
            with contextlib.suppress(SinkError):  # the original failure is what the user needs to see
                await asyncio.to_thread(self._writer.abort)

    async def commit(
        self,
        *,
        server: dict,
        config: dict,
        state: dict,
        consumers: list[dict],
        include_consumers: bool,
        snapshot: dict,
        snapshot_format: str,
        origin: dict | None = None,
        held: dict | None = None,
        point: dict | None = None,
        sign_key: object | None = None,
        chain: dict | None = None,
        range_bytes: int | None = None,
    ) -> Committed:
        """Write the manifest (the commit point), its signature with ``sign_key`` (pipeline/archive/signing.py), then
        the ref.

        ``held``: what the archive was counted to hold (pipeline/format/census.py); the summary and every later
        comparison use it instead of the state the server sampled when the snapshot started. ``point``: the
        sequence the archive is consistent as of, and what was appended after the snapshot
        (pipeline/jetstream/livetail.py). ``chain``: the clear envelope of a restore point of a chain (a delta, or
        the base an incremental backup starts; docs/design/incremental.md); its ``id`` None means this backup's.
        ``range_bytes``: a delta's captured headers and payloads, its summary's size.
        """
        offsets, off = [], 0
        for b in self._blocks:
            offsets.append([off, b.stored_len, b.stored_sha.hex()])
            off += b.stored_len
        created = self.created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        seconds = round(time.monotonic() - self._started, 3)
        counted = held or state
        summary = {
            "messages": int(counted.get("messages", 0) or 0),
            # a delta's size is what it captured (``range_bytes``), not the whole stream's
            "bytes": range_bytes if range_bytes is not None else int(state.get("bytes", 0) or 0),
            "first_seq": int(counted.get("first_seq", 0) or 0),
            "last_seq": int(counted.get("last_seq", 0) or 0),
            "consumers": int(state.get("consumer_count", 0) or 0) if include_consumers else 0,
            "snapshot_bytes": self.bytes,
            "storage": str(config.get("storage", "file")),
            "replicas": int(config.get("num_replicas", 1) or 1),
        }
        envelope = {
            "backup_id": self.backup_id,
            "stream": self.stream,
            "created": created,
            "tool": {"name": "jsarchive", "version": __version__},
            "server": server,
            "snapshot_format": snapshot_format,
            "data": {"key": self.repo.data_object(self.backup_id), "size": off, "block_size": self.block_size},
            "blocks": offsets,
            "summary": summary,
            "encryption": {
                "scheme": mf.SCHEME_AES if self.data_key is not None else mf.SCHEME_NONE,
                "key_slots": [s.to_json() for s in self._key_slots],
            },
        }
        if origin is not None:
            envelope["origin"] = origin
        if chain is not None:
            envelope["chain"] = {**chain, "id": chain.get("id") or self.backup_id}
        body = {
            "config": config,
            "state": state,
            "consumers": consumers,
            "snapshot": {
                "format": snapshot_format,
                "inner_encoding": self._form.encoding,
                "no_consumers": not include_consumers,
                **snapshot,
                "bytes": self.bytes,
                # decoded: what the server sent is not what is stored, so keep its size too
                **({"received_bytes": self.received_bytes} if self._form.encoding != payload.S2_STREAM else {}),
            },
            "compression": self.settings.compression.to_json(),
            "plain_blocks": [[b.plain_len, b.plain_sha.hex()] for b in self._blocks],
            "timings": {"started": created, "seconds": seconds},
        }
        if held is not None:
            body["held"] = held
        if point is not None:
            body["point"] = point
        raw = mf.build(envelope, body, self.data_key)
        retention = self.settings.retention
        try:
            mid = await asyncio.to_thread(self.repo.write_manifest, raw, retention)
            if sign_key is not None:
                # before the ref: a reader that demands signatures never finds a ref to an unsigned backup

                await asyncio.to_thread(signing.sign, self.repo, "manifest", mid, sign_key, retention)
            ref = await asyncio.to_thread(
                self.repo.write_ref, self.stream, ref_time(self.created), self.backup_id, mid, retention
            )
        except SinkError as e:
            raise storage_error(
                e,
                f"the data was stored but the manifest or ref could not be written to {self.repo.url}; the backup "
                f"is not usable and `jsarchive prune` collects data/{self.backup_id}",
            ) from None
        return Committed(
            manifest_id=mid,
            backup_id=self.backup_id,
            ref=ref,
            created=created,
            snapshot_format=snapshot_format,
            inner_encoding=self._form.encoding,
            snapshot_bytes=self.bytes,
            received_bytes=self.received_bytes,
            stored_bytes=off,
            blocks=len(self._blocks),
            block_size=self.block_size,
            encrypted=self.data_key is not None,
            key_slots=[s.describe() for s in self._key_slots],
            summary=summary,
            seconds=seconds,
            storage_class=self._info.storage_class if self._info else None,
            chain=envelope.get("chain"),
        )
