"""Listing backups from refs and manifest envelopes (no key needed), and showing one backup in full."""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass, field

from pipeline.archive.catalog import BackupEntry, backup_entries
from pipeline.archive.reader import unwrap_data_key
from pipeline.archive.repository import Repository, storage_error
from pipeline.base.errors import JsArchiveError
from pipeline.format.manifest import Manifest
from pipeline.format.sets import parse_set
from pipeline.keys.keyring import KeyRing
from sinks import ObjectInfo, SinkError, SinkOptions

__all__ = ["BackupDetails", "BackupEntry", "list_backups", "public_slot", "show_backup"]


def list_backups(
    url: str, stream: str | None = None, sink: SinkOptions | None = None, *, head: bool = True
) -> list[BackupEntry]:
    """Every backup with a ref, newest first (:func:`pipeline.archive.catalog.backup_entries`)."""
    return backup_entries(Repository.open(url, sink), stream, head=head)


# -- show -----------------------------------------------------------------------------------------------------------

_SECRET_SLOT_FIELDS = frozenset({"wrapped"})


def public_slot(slot: dict) -> dict:
    """A key slot without its wrapped secret: type, recipient / key id and whatever else it names publicly."""
    out = {k: v for k, v in slot.items() if k not in _SECRET_SLOT_FIELDS}
    wrapped = slot.get("wrapped")
    if isinstance(wrapped, str):
        try:
            out["wrapped_bytes"] = len(base64.b64decode(wrapped, validate=True))
        except (binascii.Error, ValueError):
            out["wrapped_bytes"] = None
    return out


@dataclass
class BackupDetails:
    """Everything a manifest says about one backup, the state of its objects, and its body if a key opened it."""

    manifest_id: str
    envelope: dict  # the clear envelope without the body; key slots without their wrapped keys
    data_object: dict | None  # HEAD of the data object: size, storage class, lock; None if missing
    refs: list[str] = field(default_factory=list)  # refs that name this backup
    sets: list[str] = field(default_factory=list)  # ids of sets that include it
    added_slots: list[dict] = field(default_factory=list)  # keyslots/… objects: public fields, or their problem
    body: dict | None = None  # the opened body (config, state, consumers, …) when a key was given
    body_note: str | None = None  # why there is no body

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def key_slots(self) -> list[dict]:
        return self.envelope.get("encryption", {}).get("key_slots", [])


def _object_json(info: ObjectInfo) -> dict:
    r = info.retention
    return {
        "size": info.size,
        "modified": info.modified.isoformat() if info.modified else None,
        "storage_class": info.storage_class,
        "lock_mode": r.mode if r else None,
        "retain_until": r.until.isoformat() if r and r.mode else None,
        "legal_hold": bool(r and r.legal_hold),
        "archived": info.archived,
        "thaw": info.thaw,
    }


def _can_open(keys: KeyRing) -> bool:
    """Whether any key that can open backups was given (age identities, raw keys, KMS keys or --use-kms-slots)."""
    kms = getattr(keys, "kms", None)
    return bool(
        keys.identities
        or keys.raw_keys
        or getattr(keys, "aws_kms_keys", None)
        or getattr(keys, "gcp_kms_keys", None)
        or getattr(kms, "use_slots", False)
    )


def show_backup(url: str, backup: str, keys: KeyRing | None = None, sink: SinkOptions | None = None) -> BackupDetails:
    """Backup ``backup`` (id or unique prefix) as its manifest describes it. The sealed body is opened only when
    ``keys`` holds a key (raises :class:`~pipeline.base.errors.KeyUnavailable` if none of them opens it)."""
    repo = Repository.open(url, sink)
    m: Manifest = repo.load_manifest(repo.resolve(backup))
    env = {k: v for k, v in m.envelope.items() if k != "body"}
    enc = dict(env.get("encryption") or {})
    enc["key_slots"] = [public_slot(s) for s in enc.get("key_slots") or [] if isinstance(s, dict)]
    env["encryption"] = enc
    try:
        info = repo.sink.head(m.data_object)
    except SinkError as e:
        raise storage_error(e, f"cannot read the data object of backup {m.id[:12]}") from None
    details = BackupDetails(m.id, env, _object_json(info) if info is not None else None)
    details.refs = [r.key for r in repo.refs(m.stream) if r.backup_id == m.backup_id]

    for sid in sorted(repo.list_sets()):
        try:
            bset = parse_set(repo.load_set(sid), sid)
        except JsArchiveError:
            continue  # `jsarchive verify` reports broken sets
        if any(e["manifest_id"] == m.id for e in bset.streams):
            details.sets.append(sid)
    for extra in repo.extra_slot_objects(m):  # slots added after the backup (`jsarchive key add`)
        entry = extra.slot.public() if extra.slot is not None else {"problem": extra.problem}
        details.added_slots.append({"object": extra.key, **entry})
    if not m.encrypted:
        details.body = m.open_body(None)
        details.body_note = "this backup is NOT encrypted: its body is stored in the clear"
    elif keys is not None and _can_open(keys):
        details.body = m.open_body(unwrap_data_key(repo, m, keys))
    else:
        details.body_note = (
            "the body (stream config and state, consumers, compression, plaintext block hashes, timings) is "
            "sealed; give a key (-i FILE, --key-file FILE, $JSARCHIVE_KEY or a KMS key) to show it"
        )
    return details
