"""Listing backups from refs and manifest envelopes (no key needed), and showing one backup in full."""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import datetime as dt
from dataclasses import asdict, dataclass, field

from pipeline.archive.reader import unwrap_data_key
from pipeline.archive.repository import Ref, Repository, storage_error
from pipeline.archive.retention import parse_created
from pipeline.base.errors import JsArchiveError
from pipeline.format.manifest import Manifest
from pipeline.format.sets import parse_set
from pipeline.keys.keyring import KeyRing
from sinks import ObjectInfo, SinkError, SinkOptions

LIST_WORKERS = 8  # refs, manifests and HEADs read at once


@dataclass
class BackupEntry:
    manifest_id: str
    stream: str
    created: str
    messages: int = 0
    bytes: int = 0
    stored_bytes: int = 0
    snapshot_format: str = ""
    server_version: str = ""
    encrypted: bool = True
    key_slots: int = 0
    problem: str | None = None  # a ref whose manifest is missing or invalid, or a missing data object
    backup_id: str = ""
    origin: str | None = None  # the manifest's clear origin type: "natscli" (import), "pre-restore" (safety backup)
    # from a HEAD of the data object (None when it could not be read)
    storage_class: str | None = None
    lock_mode: str | None = None  # GOVERNANCE | COMPLIANCE | BUCKET (GCS retention policy) | "" (legal hold only)
    retain_until: str | None = None
    legal_hold: bool = False

    @property
    def ratio(self) -> float:
        return self.bytes / self.stored_bytes if self.stored_bytes else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["ratio"] = round(self.ratio, 3)
        return d


def _entry(repo: Repository, ref: Ref, head: bool) -> BackupEntry:
    try:
        m = repo.load_ref(ref)
    except JsArchiveError as e:
        return BackupEntry(
            manifest_id=ref.backup_id, stream=ref.stream, created=ref.time, problem=str(e), backup_id=ref.backup_id
        )
    s = m.summary
    entry = BackupEntry(
        manifest_id=m.id,
        stream=m.stream,
        created=m.created,
        messages=int(s.get("messages", 0)),
        bytes=int(s.get("bytes", 0)),
        stored_bytes=m.data_size,
        snapshot_format=m.snapshot_format,
        server_version=str(m.server.get("version", "")),
        encrypted=m.encrypted,
        key_slots=len(m.key_slots),
        backup_id=m.backup_id,
        origin=_origin_type(m.envelope.get("origin")),
    )
    if head:
        try:
            info = repo.sink.head(m.data_object)
        except SinkError:
            return entry  # not allowed to look (or a hiccup): the listing itself is still right
        if info is None:
            entry.problem = f"the data object {m.data_object} is missing"
        else:
            _apply_head(entry, info)
    return entry


def _origin_type(origin: object) -> str | None:
    kind = origin.get("type") if isinstance(origin, dict) else None
    return kind if isinstance(kind, str) else None


def _apply_head(entry: BackupEntry, info: ObjectInfo) -> None:
    entry.storage_class = info.storage_class
    if info.retention is not None:
        entry.lock_mode = info.retention.mode
        entry.retain_until = info.retention.until.isoformat() if info.retention.mode else None
        entry.legal_hold = info.retention.legal_hold


def list_backups(
    url: str, stream: str | None = None, sink: SinkOptions | None = None, *, head: bool = True
) -> list[BackupEntry]:
    """Every backup with a ref, newest ``created`` first; ``head`` also reads the data object's storage class and
    lock. A ref name's time is only what its writer said, so the order is the manifest's (a ref whose manifest
    cannot be read is placed by its name, the only time it has)."""
    repo = Repository.open(url, sink)
    refs = repo.refs(stream)
    with concurrent.futures.ThreadPoolExecutor(LIST_WORKERS, thread_name_prefix="ls") as pool:
        entries = list(pool.map(lambda r: _entry(repo, r, head), refs))
    entries.sort(key=lambda e: (_created_at(e), e.stream, e.manifest_id), reverse=True)
    return entries


def _created_at(e: BackupEntry) -> dt.datetime:
    try:
        return parse_created(e.created)  # also reads a ref name's basic ISO 8601 time (20261201T192045.123456Z)
    except (ValueError, OverflowError):
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)  # no time at all: last


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
