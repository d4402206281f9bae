"""Replacing a live stream with a backup, in an order that cannot lose it.

Every path that deletes a live stream to restore over it (``account restore --on-exists replace``, ``dr recover``)
goes through :func:`replace_stream`, which does, before anything is deleted:

1. **Deep verification** of the replacing backup: every block's stored hash, AEAD, decompression and plaintext
   hash, and a parse of the snapshot to its end (what ``jsarchive verify --deep`` does). A backup that fails is
   an :class:`IntegrityError` (exit 4) and the live stream is untouched.
2. **A server preflight** (pipeline/jetstream/preflight.py): a throwaway placeholder stream placed and sized like the
   restore is created on the target and deleted again; a refusal is a :class:`ServerRefused` (exit 8) and the live
   stream is untouched. The live stream still holds its own resources while the placeholder asks for the
   restore's, so a target that can only fit one of them is refused too: the safe answer.
3. **A safety backup** of the live stream into the same archive: an ordinary backup whose manifest's clear
   ``origin`` says ``pre-restore`` (``jsarchive ls`` shows it). Skipped with ``safety_backup=False``
   (``--no-safety-backup``), or when the live stream cannot be snapshotted at all (every replica lost: then there
   is nothing left to save, and the result says so).

Only then is the stream deleted and the backup restored. If the restore still fails, the error names the safety
backup and the command that brings the old stream back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field

from pipeline.archive.reader import open_manifest
from pipeline.archive.repository import Repository
from pipeline.archive.verify import FAILED, VerifyOptions, verify_archive
from pipeline.base.errors import (
    ColdStorage,
    ConflictError,
    ConnectionFailed,
    IntegrityError,
    JsArchiveError,
    KeyUnavailable,
    NotFoundError,
    PermissionDenied,
    TransferFailed,
    UsageError,
    setting,
)
from pipeline.base.progress import NoProgress, Progress
from pipeline.flows.backup import BackupOptions, backup_stream_async
from pipeline.flows.restore import RestoreOptions, RestoreResult, restore_stream_async
from pipeline.jetstream.client import ConnectOptions, JetStream, connect
from pipeline.jetstream.preflight import preflight_target
from pipeline.keys.keyring import KeyRing
from sinks import SinkOptions

PRE_RESTORE = "pre-restore"


@dataclass
class ReplaceOutcome:
    restored: RestoreResult
    safety_backup: str | None  # manifest id of the pre-restore backup, None when none was taken
    notes: list[str] = field(default_factory=list)


async def verify_deep(url: str, manifest_id: str, keys: KeyRing, sink: SinkOptions, stream: str) -> None:
    """Verify ``manifest_id`` end to end (as ``verify --deep``) or raise without touching anything."""
    report = await asyncio.to_thread(
        verify_archive, VerifyOptions(url=url, backup=manifest_id, deep=True, keys=keys, sink=sink)
    )
    problems = [p for b in report.backups for p in b.problems]
    if report.ok and report.backups and all(b.deep for b in report.backups):
        return
    why = "; ".join(problems) or "it could not be verified to the end"
    message = (
        f"backup {manifest_id[:12]} did not pass deep verification, so live stream {stream!r} was not touched: {why}"
    )
    codes = sorted({b.exit_code for b in report.backups if b.exit_code} - {IntegrityError.exit_code})
    if codes and not any(b.status == FAILED for b in report.backups):
        # unverified, not corrupt: no key, cold storage, access refused — say that, with its own exit code
        cls = next((c for c in _ERROR_CLASSES if c.exit_code == codes[0]), JsArchiveError)
        raise cls(message)
    raise IntegrityError(message)


_ERROR_CLASSES = (KeyUnavailable, PermissionDenied, ColdStorage, ConnectionFailed, NotFoundError, TransferFailed)


async def safety_backup(
    url: str,
    stream: str,
    connect_opts: ConnectOptions,
    keys: KeyRing,
    sink: SinkOptions,
    replacing: str,
    *,
    encrypt: bool = True,
    sign_key: object | None = None,
) -> str:
    """An ordinary backup of the live stream, marked pre-restore (and signed with ``sign_key``); its manifest id."""
    if encrypt and not keys.can_write:
        raise UsageError(
            f"a safety backup of live stream {stream!r} is taken before it is replaced, and no key is configured "
            f"to encrypt it: pass {setting('identity')}/{setting('recipient')} (or "
            f"{setting('key-file')}), or {setting('no-safety-backup')} to go without"
        )
    res = await backup_stream_async(
        BackupOptions(
            stream=stream,
            url=url,
            connect=connect_opts,
            keys=keys,
            encrypt=encrypt,
            sink=sink,
            origin={"type": PRE_RESTORE, "replaced_by": replacing},
            sign_key=sign_key,
        )
    )
    return res.manifest_id


async def replace_stream(
    restore: RestoreOptions,
    *,
    take_safety_backup: bool = True,
    progress: Progress | None = None,
    live_snapshot_possible: bool = True,
    no_backup_reason: str | None = None,
    sign_key: object | None = None,
) -> ReplaceOutcome:
    """Verify, preflight, save, delete, restore: ``restore.stream`` is live on the target and is replaced by
    ``restore.backup`` (a manifest id). See the module docstring for what is proven before the delete."""
    progress = progress or NoProgress()
    if not restore.backup:
        raise UsageError("replace_stream needs the manifest id of the replacing backup")
    repo = Repository.open(restore.url, restore.sink)
    m = repo.load_manifest(repo.resolve(restore.backup))
    await verify_deep(restore.url, m.id, restore.keys, restore.sink, restore.stream)
    body = open_manifest(repo, m, restore.keys).body
    config = restore.target.apply(body["config"])
    notes: list[str] = []
    async with await connect(restore.connect) as js:
        await preflight_target(js, restore.stream, config, body.get("state") or {}, live=True)
        # the stream that was checked and saved is the one deleted: a stream re-created meanwhile is not ours to delete
        checked = _created(await _info_or_none(js, restore.stream, live_snapshot_possible))
        saved: str | None = None
        if take_safety_backup and live_snapshot_possible:
            progress.log(f"replace {restore.stream}: safety backup of the live stream")
            # an archive kept in the clear (--no-encrypt) gets a safety backup in the clear, as its backups are
            saved = await safety_backup(
                restore.url,
                restore.stream,
                restore.connect,
                restore.keys,
                restore.sink,
                m.id,
                encrypt=m.encrypted or restore.keys.can_write,
                sign_key=sign_key,  # so a --trust-key restore can bring it back
            )
            notes.append(f"live stream {restore.stream!r} saved first as backup {saved[:12]} (pre-restore)")
        elif not live_snapshot_possible:
            notes.append(f"no safety backup of {restore.stream!r}: {no_backup_reason or 'it cannot be snapshotted'}")
        else:
            notes.append(f"no safety backup of {restore.stream!r} (--no-safety-backup)")
        now = _created(await _info_or_none(js, restore.stream, live_snapshot_possible))
        if now != checked:
            raise ConflictError(
                f"stream {restore.stream!r} was re-created (created {now}, was {checked}) while it was being saved "
                "for its replacement; nothing was deleted" + _bring_back(restore, saved)
            )
        if not await js.delete_until_gone(restore.stream):
            raise TransferFailed(
                f"live stream {restore.stream!r} could not be deleted to be replaced" + _bring_back(restore, saved)
            )
    try:
        # preflighted above, before the delete: once more now would prove nothing new
        result = await restore_stream_async(dataclasses.replace(restore, preflight=False), progress)
    except JsArchiveError as e:
        raise type(e)(f"{e.template}{_bring_back(restore, saved)}") from None
    return ReplaceOutcome(result, saved, notes)


async def _info_or_none(js: JetStream, stream: str, answers: bool) -> dict | None:
    """STREAM.INFO of a stream that answers; a lost one (``answers`` False: no replica left) is not asked."""
    return await js.stream_info(stream) if answers else None


def _created(info: dict | None) -> str | None:
    return str(info.get("created")) if info else None


def _bring_back(restore: RestoreOptions, saved: str | None) -> str:
    if saved is None:
        return ""
    return (
        f"; the replaced stream was saved first as backup {saved[:12]}: bring it back with "
        f"`jsarchive stream restore {restore.url} {restore.stream} --backup {saved[:12]}` (plus your key and "
        "connection flags)"
    )
