"""The read half of a backup: open it (the one sequence every reader uses), then its blocks, checked, in order.

Opening (:func:`open_manifest`): the data object exists with the manifest's size and is not in cold storage, one of
the keys opens it (the manifest's own slots and slots added later), the body opens and names an encoding this
version reads. Reading (:class:`BlockReader`): each block's stored SHA-256, its AEAD under this backup's key and
position, zstd, and the plaintext SHA-256, with ``prefetch`` blocks fetched ahead in a small thread pool, so
memory stays at ``prefetch`` blocks whatever the backup's size.

Trust (who made a backup, :mod:`pipeline.archive.trust`) and selection ("latest") come before this and are the
caller's; everything after it (restore, inspect, verify, export) reads through :class:`OpenedBackup`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pipeline.archive.repository import Repository, storage_error
from pipeline.base.errors import IntegrityError
from pipeline.format import payload, s2
from pipeline.format.compress import BlockCompressor, Compression
from pipeline.format.manifest import Manifest
from pipeline.keys import crypto
from pipeline.keys.keyring import KeyRing
from sinks import SinkError, SinkOptions

MAX_BLOCK_BYTES = 1 << 30  # the largest block a reader accepts (writers use 8 MiB, grown for streams over ~50 GiB)

F = TypeVar("F")


def _in_order(n: int, depth: int, submit: Callable[[int], F]) -> Iterator[F]:
    """Futures for items ``0..n-1`` in order, each submitted ``depth`` items before it is taken.

    The one prefetch loop: the synchronous and the asynchronous readers differ only in how a read is submitted. What
    was submitted and not taken is cancelled when the iterator is closed.
    """
    ahead: deque = deque()
    nxt = 0
    try:
        for index in range(n):
            while nxt < n and nxt < index + depth:
                ahead.append(submit(nxt))
                nxt += 1
            yield ahead.popleft()
    finally:
        for f in ahead:
            f.cancel()  # type: ignore[attr-defined]


class BlockReader:
    """Fetches, checks and decodes the blocks of one backup, in order, with ``prefetch`` blocks in flight."""

    def __init__(
        self, repo: Repository, manifest: Manifest, body: dict, data_key: bytes | None, prefetch: int, workers: int
    ) -> None:
        self.repo = repo
        self.m = manifest
        self.data_key = data_key
        self.plain = body["plain_blocks"]
        self.decoder = BlockCompressor(Compression.from_json(body["compression"]))
        self.prefetch = max(1, prefetch)
        self.workers = max(1, workers)
        if len(self.plain) != len(manifest.blocks):
            raise IntegrityError(f"manifest {manifest.id[:12]}: the block tables disagree")
        if sum(n for n, _ in self.plain) != int(body["snapshot"].get("bytes", -1)):
            raise IntegrityError(f"manifest {manifest.id[:12]}: block sizes do not add up to the snapshot size")
        # Every block is at most the backup's block size (the writer cuts there): memory stays at prefetch × that,
        # whatever lengths a planted manifest claims.
        size = (manifest.envelope.get("data") or {}).get("block_size")
        if type(size) is not int or not 0 < size <= MAX_BLOCK_BYTES or any(n > size for n, _ in self.plain):
            raise IntegrityError(
                f"manifest {manifest.id[:12]}: its block size ({size!r}) or a block's length is impossible "
                f"(at most {MAX_BLOCK_BYTES >> 20} MiB, and no block longer than the block size)"
            )

    def blocks(self) -> Iterator[bytes]:
        """Every block in order (a synchronous iterator, ``prefetch`` blocks read ahead in a thread pool)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="open") as pool:
            futures = _in_order(len(self.m.blocks), self.prefetch, lambda i: pool.submit(self.read_block, i))
            try:
                for fut in futures:
                    yield fut.result()
            finally:
                futures.close()

    async def chunks(self, chunk_size: int) -> AsyncIterator[bytes]:
        """Every block in order, cut into ``chunk_size`` views, without blocking the event loop."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="open")
        loop = asyncio.get_running_loop()
        futures = _in_order(len(self.m.blocks), self.prefetch, lambda i: loop.run_in_executor(pool, self.read_block, i))
        try:
            for fut in futures:
                block = await fut
                view = memoryview(block)
                for off in range(0, len(block), chunk_size):
                    yield view[off : off + chunk_size]
        finally:
            futures.close()
            pool.shutdown(wait=True, cancel_futures=True)

    def read_block(self, index: int) -> bytes:
        blk = self.m.blocks[index]
        span = f"{blk.offset}–{blk.offset + blk.length}"
        where = f"block {index} of backup {self.m.id[:12]} ({self.m.data_object} bytes {span})"
        try:
            stored = self.repo.sink.get_range(self.m.data_object, blk.offset, blk.length)
        except SinkError as e:
            raise storage_error(e, f"cannot read {where}") from None
        if len(stored) != blk.length:
            raise IntegrityError(f"{where}: the data object is truncated ({len(stored)} of {blk.length} bytes)")
        if crypto.sha256(stored).hex() != blk.sha256:
            raise IntegrityError(f"{where}: stored bytes do not match the manifest's SHA-256 (corrupted or altered)")
        if self.data_key is not None:
            last = index == len(self.m.blocks) - 1
            try:
                stored = crypto.open_sealed(self.data_key, stored, crypto.block_aad(self.m.backup_id, index, last))
            except crypto.OpenFailed:
                raise IntegrityError(f"{where}: does not authenticate with this backup's key") from None
        plain_len, plain_sha = self.plain[index]
        try:
            plain = self.decoder.decompress(stored, plain_len)
        except Exception as e:  # noqa: BLE001 - zstd raises its own error type
            raise IntegrityError(f"{where}: does not decompress ({e})") from None
        if len(plain) != plain_len or crypto.sha256(plain).hex() != plain_sha:
            raise IntegrityError(f"{where}: decoded bytes do not match the manifest's plaintext SHA-256")
        return plain


@dataclass
class OpenedBackup:
    """A backup whose key and body are open: what every reader of its blocks starts from."""

    repo: Repository
    manifest: Manifest
    body: dict
    data_key: bytes | None
    reader: BlockReader

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

    def blocks(self) -> Iterator[bytes]:
        """The plaintext as stored, block by block (verified, opened, decompressed), fetched ahead: the S2 stream,
        or the decoded archive (``inner_encoding``)."""
        return self.reader.blocks()

    def decoded(self, *, accelerated: bool | None = None) -> Iterator[bytes]:
        """The decoded snapshot (a NATSARC1 archive or a tar), one S2 block (or stored block) at a time."""
        if self.inner_encoding == payload.S2_STREAM:
            return s2.iter_decode(self.blocks(), accelerated=accelerated)
        return payload.decoded(self.blocks(), self.inner_encoding)


def unwrap_data_key(repo: Repository, m: Manifest, keys: KeyRing) -> bytes | None:
    """The backup's data key (None for a plaintext backup): from the manifest's own slots or slots added later
    (``keyslots/…``), each candidate checked against the body; KeyUnavailable if no key of ``keys`` opens it."""
    return keys.unwrap(repo.key_slots(m), m.backup_id, m.open_body) if m.encrypted else None


def open_manifest(
    repo: Repository,
    m: Manifest,
    keys: KeyRing,
    *,
    prefetch: int = 4,
    workers: int = 2,
    label: str = "",
) -> OpenedBackup:
    """Open backup ``m``: what a restore checks before it reads data (``label`` names the set it came from in
    errors). The data object exists with the manifest's size and is not cold; a key opens it; the body names an
    encoding this version reads; the block tables are sane."""
    repo.check_data(m, label)
    data_key = unwrap_data_key(repo, m, keys)
    body = m.open_body(data_key)
    payload.inner_encoding(body, m.snapshot_format, m.id)  # an encoding this version cannot read fails here
    return OpenedBackup(repo, m, body, data_key, BlockReader(repo, m, body, data_key, prefetch, workers))


def open_backup(
    url: str,
    backup: str,
    *,
    keys: KeyRing | None = None,
    sink: SinkOptions | None = None,
    prefetch: int = 4,
    workers: int = 2,
) -> OpenedBackup:
    """Resolve ``backup`` (manifest id, backup id or unique prefix) in the archive at ``url`` and open it."""
    repo = Repository.open(url, sink)
    return open_manifest(
        repo, repo.load_manifest(repo.resolve(backup)), keys or KeyRing(), prefetch=prefetch, workers=workers
    )
