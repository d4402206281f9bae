"""Checking each selected backup's stored data: the manifest's signatures, the data object's presence and size, and
every block's stored bytes against the manifest's SHA-256 (ranged reads, bounded memory); ``--deep`` hands the
blocks to :mod:`pipeline.archive.verify.deep` instead."""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading
import time
from collections.abc import Callable

from pipeline.archive import signing
from pipeline.archive.repository import Repository, storage_error
from pipeline.archive.verify.deep import _deep, _open
from pipeline.archive.verify.report import (
    FAILED,
    BackupCheck,
    LoadedManifest,
    VerifyOptions,
    _signature_problems,
)
from pipeline.base.errors import IntegrityError, JsArchiveError, NotFoundError
from pipeline.base.progress import Progress
from pipeline.format import manifest as mf
from sinks import SinkError

MAX_BLOCK_PROBLEMS = 5  # block failures listed per backup (the count covers all)


class _Meter:
    """Counts bytes read (thread-safe) and forwards them to the progress display."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self.total = 0

    def __call__(self, n: int) -> None:
        with self._lock:
            self.total += n
            self._progress.advance(n)


def _check_backups(
    repo: Repository,
    loaded: dict[str, LoadedManifest],
    targets: list[str],
    opts: VerifyOptions,
    io_pool: concurrent.futures.Executor,
    progress: Progress,
    meter: _Meter,
) -> list[BackupCheck]:
    """Check every backup of ``targets``, showing progress; the results by stream, each stream newest first."""
    total = sum(loaded[m].manifest.data_size for m in targets if loaded[m].manifest is not None)
    progress.start("verify" + (" --deep" if opts.deep else ""), total)
    try:
        # Keyless checks run several backups at once (their block reads share io_pool); deep checks one at a
        # time, each with its own prefetching reader, which keeps both CPUs busy decoding.
        outer = 1 if opts.deep else max(1, opts.workers)
        with concurrent.futures.ThreadPoolExecutor(outer, thread_name_prefix="verify") as pool:
            checks = list(pool.map(lambda mid: _check_backup(repo, loaded[mid], opts, io_pool, meter), targets))
        # by stream, newest first
        checks.sort(key=lambda b: (b.created or "", b.manifest_id), reverse=True)
        checks = sorted(checks, key=lambda b: b.stream or "")
    except BaseException:
        progress.abort()  # cut short (interrupted, store gone): never shown as complete
        raise
    progress.finish()
    return checks


def _check_backup(
    repo: Repository,
    x: LoadedManifest,
    opts: VerifyOptions,
    io_pool: concurrent.futures.Executor,
    meter: Callable[[int], None],
) -> BackupCheck:
    t0 = time.monotonic()
    check = BackupCheck(manifest_id=x.id, stream=x.stream)
    m = x.manifest
    if m is None:
        problem = x.problem
        if isinstance(problem, (NotFoundError, IntegrityError)):
            check.fail(str(problem))
        else:
            check.unverified(str(problem), getattr(problem, "exit_code", 1))
        return check
    check.stream, check.backup_id, check.created = m.stream, m.backup_id, m.created
    check.snapshot_format = m.snapshot_format
    check.blocks, check.stored_bytes = len(m.blocks), m.data_size
    try:
        status = signing.signature_status(repo, "manifest", m.id, opts.trust_keys)
        check.signature = status.describe()
        for problem in _signature_problems(status, opts.trust_keys, "the backup"):
            check.fail(problem)
        _check_stored(repo, m, check, opts, io_pool, meter)
    except JsArchiveError as e:  # what a check could not get past: storage errors mostly
        if isinstance(e, (IntegrityError, NotFoundError)):
            check.fail(str(e))
        else:
            check.unverified(str(e), e.exit_code)
    check.seconds = round(time.monotonic() - t0, 3)
    return check


def _check_stored(
    repo: Repository,
    m: mf.Manifest,
    check: BackupCheck,
    opts: VerifyOptions,
    io_pool: concurrent.futures.Executor,
    meter: Callable[[int], None],
) -> None:
    try:
        head = repo.sink.head(m.data_object)
    except SinkError as e:
        raise storage_error(e, f"cannot read the data object of backup {m.id[:12]}") from None
    if head is None:
        check.fail(f"the data object {m.data_object} is missing")
        return
    if head.size != m.data_size:
        check.fail(
            f"the data object {m.data_object} is {head.size} bytes, the manifest says {m.data_size}: it is truncated "
            "or was replaced"
        )
        return
    if head.archived:
        check.unverified(
            f"the data object is in cold storage ({head.storage_class}): its size is right, its blocks were not "
            f"read; thaw it first (jsarchive thaw {repo.url} {m.id[:12]})",
            11,
        )
        return
    if opts.deep:
        body, data_key = _open(repo, m, opts.keys, check)
        if body is not None:
            _deep(repo, m, body, data_key, check, opts, meter)
            return
        if check.status == FAILED:
            return
    _hash_blocks(repo, m, check, opts, io_pool, meter)


def _hash_blocks(
    repo: Repository,
    m: mf.Manifest,
    check: BackupCheck,
    opts: VerifyOptions,
    io_pool: concurrent.futures.Executor,
    meter: Callable[[int], None],
) -> None:
    piece = max(4096, opts.piece_size)

    def one(index: int) -> str | None:
        blk = m.blocks[index]
        h = hashlib.sha256()
        got = 0
        while got < blk.length:
            n = min(piece, blk.length - got)
            try:
                data = repo.sink.get_range(m.data_object, blk.offset + got, n)
            except SinkError as e:
                raise storage_error(e, f"cannot read block {index} of backup {m.id[:12]}") from None
            meter(len(data))
            h.update(data)
            got += len(data)
            if len(data) < n:
                return f"block {index}: the data object ends inside it ({got} of {blk.length} bytes)"
        if h.hexdigest() != blk.sha256:
            return (
                f"block {index} (bytes {blk.offset}–{blk.offset + blk.length}): stored bytes do not match the "
                "manifest's SHA-256 (corrupted or altered)"
            )
        return None

    bad = []
    futures = [io_pool.submit(one, i) for i in range(len(m.blocks))]
    try:
        for f in futures:
            problem = f.result()
            check.blocks_checked += 1
            if problem:
                bad.append(problem)
    finally:
        for f in futures:
            f.cancel()
    for problem in bad[:MAX_BLOCK_PROBLEMS]:
        check.fail(problem)
    if len(bad) > MAX_BLOCK_PROBLEMS:
        check.fail(f"… and {len(bad) - MAX_BLOCK_PROBLEMS} more damaged blocks ({len(bad)} of {len(m.blocks)})")
