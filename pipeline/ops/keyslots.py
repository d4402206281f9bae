"""Key slots of existing backups: list them (:func:`list_slots`) and add new ones (:func:`add_slots`).

Manifests are never rewritten, so a slot added later is a separate immutable object,
``keyslots/<manifest id>/<sha256 of the object>`` (docs/format.md §7.5), holding the backup id, the manifest id and
the slot. Restore, inspect, cat and export try a manifest's own slots first, then the added ones. An added slot is
not authenticated by the manifest: a key unwrapped from it is only used once it has opened the manifest's sealed
body (:meth:`pipeline.keys.keyring.KeyRing.unwrap` with ``verify``), so a forged slot cannot make a restore produce
other data: it ends in an integrity error naming the slot.

Adding a slot needs a key that opens the backup (any slot), and it checks that key against the body before it wraps
it again, so a forged slot is never laundered into a genuine-looking one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.archive.repository import Repository
from pipeline.base.errors import JsArchiveError, UsageError, setting
from pipeline.format.manifest import Manifest
from pipeline.keys.keyring import KeyRing, KeySlot
from sinks import SinkOptions


@dataclass
class SlotInfo:
    """One key slot as ``key list`` shows it: its public fields only, never the wrapped key."""

    type: str
    source: str  # "manifest" or "added"
    object: str | None  # the keyslots/… object of an added slot
    recipient: str | None = None
    key_id: str | None = None
    region: str | None = None
    key_name: str | None = None
    key_version: str | None = None
    description: str = ""


@dataclass
class InvalidSlot:
    object: str
    problem: str


@dataclass
class SlotListing:
    manifest_id: str
    backup_id: str
    stream: str
    created: str
    encrypted: bool
    slots: list[SlotInfo]
    invalid: list[InvalidSlot]

    def to_json(self) -> dict:
        return asdict(self)


def _info(slot: KeySlot, source: str, obj: str | None) -> SlotInfo:
    return SlotInfo(source=source, object=obj, description=slot.describe(), **slot.public())


def list_slots(url: str, backup: str, *, sink: SinkOptions | None = None) -> SlotListing:
    """Every key slot of ``backup`` (id or unique prefix): the manifest's, then the added ones. No key needed."""
    repo = Repository.open(url, sink)
    m = repo.load_manifest(repo.resolve(backup))
    return _listing(repo, m)


def _listing(repo: Repository, m: Manifest) -> SlotListing:
    slots = [_info(s, "manifest", None) for s in m.key_slots]
    invalid = []
    for e in repo.extra_slot_objects(m) if m.encrypted else []:
        if e.slot is not None:
            slots.append(_info(e.slot, "added", e.key))
        else:
            invalid.append(InvalidSlot(e.key, e.problem or "invalid"))
    return SlotListing(m.id, m.backup_id, m.stream, m.created, m.encrypted, slots, invalid)


@dataclass
class AddSlotOptions:
    url: str
    unlock: KeyRing  # keys that open the backups (through any slot)
    new: KeyRing  # keys to add a slot for: age recipients, raw keys, KMS keys
    backups: list[str] = field(default_factory=list)  # ids or unique prefixes
    all: bool = False  # every backup in the archive (optionally only of ``streams``)
    streams: list[str] = field(default_factory=list)
    sink: SinkOptions = field(default_factory=SinkOptions)


@dataclass
class BackupSlots:
    manifest_id: str
    backup_id: str
    stream: str
    created: str
    added: list[SlotInfo] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # slots the backup already had for a new key
    skipped: str | None = None  # e.g. not encrypted
    error: dict | None = None  # {kind, exit_code, message}


@dataclass
class AddSlotsResult:
    backups: list[BackupSlots]

    @property
    def failed(self) -> list[BackupSlots]:
        return [b for b in self.backups if b.error]

    def to_json(self) -> dict:
        return {"backups": [asdict(b) for b in self.backups], "failed": len(self.failed)}


def add_slots(opts: AddSlotOptions) -> AddSlotsResult:
    """Add a slot for every key of ``opts.new`` to each chosen backup, unwrapping its data key with ``opts.unlock``.

    One named backup: errors are raised. With ``all``: each backup's error is recorded in its result and the others
    go on (``result.failed``). Slots the backup already has (same type and public key identifier) are not added
    again.
    """
    if not opts.new.can_write:
        raise UsageError(
            f"name the key to add a slot for: {setting('recipient')}/-R, "
            f"{setting('key-file')}, {setting('kms-key')} or {setting('gcp-kms-key')} "
            f"(the keys that open the backup are -i/{setting('identity')}, "
            f"{setting('unlock-key-file')}, {setting('unlock-kms-key')}, "
            f"{setting('unlock-gcp-kms-key')}, {setting('use-kms-slots')} or $JSARCHIVE_KEY)"
        )
    if opts.all == bool(opts.backups):
        raise UsageError(f"give either backup ids or {setting('all')}")
    if opts.streams and not opts.all:
        raise UsageError(f"{setting('stream')} selects backups for {setting('all')}; it does not go with backup ids")
    repo = Repository.open(opts.url, opts.sink)
    if not opts.all:
        return AddSlotsResult([_add_one(repo, repo.load_manifest(repo.resolve(b)), opts) for b in opts.backups])
    manifests = [repo.load_manifest(mid) for mid in repo.manifest_ids()]
    if opts.streams:
        manifests = [m for m in manifests if m.stream in opts.streams]
    manifests.sort(key=lambda m: (m.stream, m.created, m.id))
    out = []
    for m in manifests:
        try:
            out.append(_add_one(repo, m, opts))
        except JsArchiveError as e:
            b = BackupSlots(m.id, m.backup_id, m.stream, m.created)
            b.error = {"kind": e.kind, "exit_code": e.exit_code, "message": str(e)}
            out.append(b)
    return AddSlotsResult(out)


def _add_one(repo: Repository, m: Manifest, opts: AddSlotOptions) -> BackupSlots:
    res = BackupSlots(m.id, m.backup_id, m.stream, m.created)
    if not m.encrypted:
        if not opts.all:
            raise UsageError(
                f"backup {m.id[:12]} is not encrypted (made with {setting('no-encrypt')}): it has no key to share"
            )
        res.skipped = "not encrypted"
        return res
    existing = repo.key_slots(m)
    data_key = opts.unlock.unwrap(existing, m.backup_id, m.open_body)
    have = {s.identity(): s for s in existing}
    for slot in opts.new.wrap(data_key, m.backup_id):
        if slot.identity() in have:
            res.present.append(have[slot.identity()].describe())
            continue
        key = repo.write_extra_slot(m, slot)
        have[slot.identity()] = slot
        res.added.append(_info(slot, "added", key))
    return res
