"""Import: natscli stream or account backup directories into the archive, as ordinary encrypted backups.

Each manifest records where it came from; an account directory also gets a set, so ``jsarchive account restore``
takes it as a whole.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.archive.repository import Repository, storage_error
from pipeline.archive.writer import BackupWriter, WriteSettings
from pipeline.base.errors import UsageError, setting
from pipeline.base.progress import NoProgress, Progress
from pipeline.base.transfer import TransferConfig
from pipeline.flows.backup import BackupResult, check_writable
from pipeline.format.blocks import choose_block_size
from pipeline.format.compress import Compression
from pipeline.format.sets import build_set, set_entry
from pipeline.keys.keyring import KeyRing
from pipeline.ops.natscli.layout import BACKUP_JSON, ORIGIN_TYPE, READ_SIZE
from pipeline.ops.natscli.reading import NatscliStream, read_backup_dir
from sinks import Retention, SinkError, SinkOptions


@dataclass
class ImportOptions:
    directory: str  # a natscli stream backup directory, or an account backup directory of them
    url: str
    keys: KeyRing = field(default_factory=KeyRing)
    encrypt: bool = True
    compression: Compression = field(default_factory=Compression)
    # Whether the natscli backup included consumers is read from the snapshot itself. None: take that; True or
    # False: also check it (the old --consumers/--no-consumers flags), refusing a directory that disagrees.
    consumers: bool | None = None
    transfer: TransferConfig = field(default_factory=TransferConfig)  # block size and workers of the write
    storage_class: str | None = None
    retention: Retention | None = None
    sink: SinkOptions = field(default_factory=SinkOptions)
    sign_key: object | None = None  # Ed25519 private key (pipeline.archive.signing): signs each manifest and the set


@dataclass
class ImportResult:
    kind: str  # "stream" | "account"
    directory: str
    set_id: str | None
    streams: list[BackupResult]
    seconds: float

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "directory": self.directory,
            "set_id": self.set_id,
            "streams": [s.to_json() for s in self.streams],
            "seconds": self.seconds,
        }


def import_directory(opts: ImportOptions, progress: Progress | None = None) -> ImportResult:
    """Bring a natscli stream or account backup directory into the archive (an account also gets a set)."""
    progress = progress or NoProgress()
    t0 = time.monotonic()
    kind, streams = read_backup_dir(opts.directory)  # every directory is checked before anything is written
    if opts.consumers is not None:
        for s in streams:
            _check_consumers_flag(s, opts.consumers)
    repo = Repository.open(opts.url, opts.sink)
    check_writable(repo, opts.encrypt, opts.keys, opts.retention)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    results = [_import_one(repo, s, opts, progress) for s in streams]
    set_id = None
    if kind == "account":
        entries = [set_entry(repo.load_manifest(r.manifest_id)) for r in results]
        raw = build_set(
            account={"name": None, "domain": None, "server": None},
            started=started,
            finished=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            entries=entries,
            skipped=[],
            warnings=[],
            options={
                "consumers": not any(s.no_consumers for s in streams),
                "check": False,
                "include": [],
                "exclude": [],
            },
            origin={"type": ORIGIN_TYPE, "directory": Path(opts.directory).name},
        )
        try:
            set_id = repo.write_set(raw, opts.retention)
        except SinkError as e:
            raise storage_error(
                e, f"the streams were imported but the set could not be written to {repo.url}"
            ) from None
    return ImportResult(
        kind=kind,
        directory=str(Path(opts.directory).expanduser().absolute()),
        set_id=set_id,
        streams=results,
        seconds=round(time.monotonic() - t0, 3),
    )


def _check_consumers_flag(src: NatscliStream, consumers: bool) -> None:
    """--consumers / --no-consumers, when given, must say what the snapshot says."""
    where = f"{src.data} (stream {src.name!r})"
    if not consumers and src.snapshot_consumers:
        raise UsageError(
            f"{setting('no-consumers')}, but {where} holds "
            f"{src.snapshot_consumers} consumer(s): the backup was made with "
            "consumers; leave the flag out (import reads this from the snapshot)"
        )
    if consumers and src.no_consumers:
        raise UsageError(
            f"{setting('consumers')}, but {where} holds no consumers "
            f"while {BACKUP_JSON} counts {src.declared_consumers}: "
            f"the backup was made with {setting('no-consumers')}; "
            "leave the flag out (import reads this from the snapshot)"
        )


def _import_one(repo: Repository, src: NatscliStream, opts: ImportOptions, progress: Progress) -> BackupResult:
    """The backup write path (pipeline.archive.writer) fed from a file instead of a snapshot: same blocks, manifest."""
    return asyncio.run(_import_one_async(repo, src, opts, progress))


async def _import_one_async(
    repo: Repository, src: NatscliStream, opts: ImportOptions, progress: Progress
) -> BackupResult:
    settings = WriteSettings(
        compression=opts.compression,
        workers=opts.transfer.workers,
        storage_class=opts.storage_class,
        retention=opts.retention,
        stall_budget=3600.0,  # reading a file: no server is waiting for acks
    )
    w = BackupWriter(
        repo, src.name, opts.keys, opts.encrypt, settings, opts.transfer.block_size or choose_block_size(src.size)
    )
    await w.start()
    progress.start(f"import {src.name}", src.size)
    try:
        try:
            with open(src.data, "rb") as f:
                while chunk := f.read(READ_SIZE):
                    await w.feed(chunk)
                    progress.advance(len(chunk))
            await w.finish()
        except BaseException:
            progress.abort()
            raise
        progress.finish()
    except OSError as e:
        await w.abort()
        raise UsageError(f"cannot read {src.data}: {e.strerror}") from None
    except BaseException:
        await w.abort()
        raise
    c = await w.commit(
        # The server that took the snapshot is not recorded by natscli; the snapshot format is read from the bytes.
        server={"version": "", "name": "", "cluster": None, "api_level": None},
        config=src.config,
        state=src.manifest_state(),
        consumers=[],
        include_consumers=not src.no_consumers,
        snapshot={"jsck": False, "chunk_size": None, "window_size": None, "chunks": 0},
        snapshot_format=src.snapshot_format,
        origin={
            "type": ORIGIN_TYPE,
            "directory": src.directory.name,
            "backup_json_sha256": src.backup_json_sha256,
            "snapshot_time": src.snapshot_time,
        },
        sign_key=opts.sign_key,
    )
    return BackupResult.from_commit(c, src.name, "", opts.retention)
