"""Export: a backup as a natscli stream backup directory, an account set as a natscli account directory."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.archive.reader import OpenedBackup, open_manifest
from pipeline.archive.repository import Repository
from pipeline.base.errors import IntegrityError, NotFoundError, UsageError
from pipeline.base.progress import NoProgress, Progress
from pipeline.base.transfer import TransferConfig
from pipeline.format import payload
from pipeline.format.sets import parse_set
from pipeline.keys.keyring import KeyRing
from pipeline.ops.natscli.gojson import backup_json
from pipeline.ops.natscli.layout import BACKUP_JSON, READ_SIZE, STREAM_DATA
from pipeline.ops.natscli.target import prepare_target, publish_target
from sinks import SinkOptions


@dataclass
class ExportOptions:
    url: str
    backup: str  # a backup (manifest) id or an account set id, full or a unique prefix of >= 6 hex digits
    directory: str  # must not exist, or be empty
    at: dt.datetime | None = None  # given: ``backup`` is a stream name, and its newest backup at or before this
    keys: KeyRing = field(default_factory=KeyRing)
    transfer: TransferConfig = field(default_factory=TransferConfig)  # prefetch and workers of the read
    sink: SinkOptions = field(default_factory=SinkOptions)


@dataclass
class ExportedStream:
    stream: str
    manifest_id: str
    directory: str
    snapshot_format: str
    snapshot_bytes: int
    stream_tar_s2_sha256: str
    backup_json_sha256: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ExportResult:
    kind: str  # "stream" | "account"
    id: str  # the manifest id or the set id
    directory: str
    streams: list[ExportedStream]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "id": self.id,
            "directory": self.directory,
            "streams": [s.to_json() for s in self.streams],
            "seconds": self.seconds,
            "warnings": list(self.warnings),
        }


def natscli_warnings(stream: str, config: dict) -> list[str]:
    """What natscli will refuse about an exported stream, though the server would take it."""
    if str(config.get("storage", "file")) == "memory":
        # jsm.go checks the config before it sends anything (ErrMemoryStreamNotSupported); only a V2 backup can
        # hold a memory stream at all, and nats-server 2.15 restores it.
        return [
            f"stream {stream!r} uses memory storage: natscli refuses to restore it (jsm.go "
            "ErrMemoryStreamNotSupported); restore this backup with `jsarchive restore` instead"
        ]
    return []


def resolve_backup_or_set(repo: Repository, ident: str) -> tuple[str, str]:
    """("manifest" | "set", full id) for a full id or unique prefix among backups and sets together."""
    text = ident.strip().lower()
    if not re.fullmatch(r"[0-9a-f]+", text or "x"):
        raise UsageError(f"{ident!r} is not a backup or set id (hex digits, as `jsarchive ls` shows)")
    if len(text) < 6:
        raise UsageError(f"id prefix {ident!r} is too short: give at least 6 digits")
    # a backup by its manifest id or its backup id (Repository.backups_matching, as every other command)
    hits = [("manifest", m) for m in repo.backups_matching(text)]
    hits += [("set", s) for s in repo.list_sets() if s.startswith(text)]
    if not hits:
        raise NotFoundError(f"no backup or set with id {ident} in {repo.url}")
    if len(hits) > 1:
        raise UsageError(f"id prefix {ident} is ambiguous in {repo.url}: give more digits")
    return hits[0]


def export_backup(opts: ExportOptions, progress: Progress | None = None) -> ExportResult:
    return asyncio.run(export_backup_async(opts, progress))


async def export_backup_async(opts: ExportOptions, progress: Progress | None = None) -> ExportResult:
    """Write a natscli backup directory for one backup, or a natscli account directory for a set.

    Nothing appears at ``opts.directory`` unless every file was written and every block checked.
    """
    progress = progress or NoProgress()
    t0 = time.monotonic()
    repo = Repository.open(opts.url, opts.sink)
    skipped: list[str] = []  # newer backups --at passed over, and why
    if opts.at is not None:
        kind, ident = "manifest", repo.newest_at(opts.backup, opts.at, skipped=skipped).id
    else:
        kind, ident = resolve_backup_or_set(repo, opts.backup)
    if kind == "manifest":
        members = [("", repo.load_manifest(ident))]
    else:
        bset = parse_set(repo.load_set(ident), ident)
        members = []
        for e in bset.streams:
            try:
                members.append((e["stream"], repo.load_manifest(e["manifest_id"])))
            except NotFoundError:
                raise NotFoundError(
                    f"set {ident[:12]} lists stream {e['stream']!r} with backup {e['manifest_id'][:12]}, whose "
                    f"manifest is missing from {repo.url}"
                ) from None
    opened = []
    for sub, m in members:  # every key and body before any byte is written
        if sub and m.stream != sub:
            raise IntegrityError(f"set {ident[:12]} lists backup {m.id[:12]} as {sub!r}, but it is of {m.stream!r}")
        opened.append(
            (sub, open_manifest(repo, m, opts.keys, prefetch=opts.transfer.prefetch, workers=opts.transfer.workers))
        )
    warnings = skipped + [w for _, o in opened for w in natscli_warnings(o.manifest.stream, o.body.get("config") or {})]
    target, tmp = prepare_target(opts.directory)
    out: list[ExportedStream] = []
    try:
        for sub, backup in opened:
            where = tmp / sub if sub else tmp
            where.mkdir(exist_ok=True, mode=0o700)
            out.append(await _export_one(backup, where, target / sub if sub else target, progress))
        publish_target(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(
        kind="stream" if kind == "manifest" else "account",
        id=ident,
        directory=str(target),
        streams=out,
        seconds=round(time.monotonic() - t0, 3),
        warnings=warnings,
    )


async def _export_one(backup: OpenedBackup, where: Path, final: Path, progress: Progress) -> ExportedStream:
    m, body, reader, encoding = backup.manifest, backup.body, backup.reader, backup.inner_encoding
    digest = hashlib.sha256()
    total = 0
    progress.start(f"export {m.stream}", payload.server_stream_size((n for n, _ in reader.plain), encoding) or None)
    try:
        with open(where / STREAM_DATA, "wb") as f:

            def write(chunk: bytes | memoryview) -> None:
                nonlocal total
                f.write(chunk)
                digest.update(chunk)
                total += len(chunk)
                progress.advance(len(chunk))

            if encoding == payload.S2_STREAM:
                async for chunk in reader.chunks(READ_SIZE):  # the stored bytes are natscli's file
                    write(chunk)
            else:

                def reframe() -> None:  # blocks read ahead, re-framed and written as they come
                    for piece in payload.server_stream(reader.blocks(), encoding):
                        write(piece)

                await asyncio.to_thread(reframe)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        progress.abort()  # a failed export never shows a completed bar
        raise
    progress.finish()
    meta = backup_json(body.get("config") or {}, body.get("state") or {})
    # natscli writes backup.json only after a successful snapshot; here it goes last too.
    (where / BACKUP_JSON).write_bytes(meta)
    return ExportedStream(
        stream=m.stream,
        manifest_id=m.id,
        directory=str(final),
        snapshot_format=m.snapshot_format,
        snapshot_bytes=total,
        stream_tar_s2_sha256=digest.hexdigest(),
        backup_json_sha256=hashlib.sha256(meta).hexdigest(),
    )
