"""The archive layout in a sink: where data, manifests and refs live; listing; resolving "latest" and short ids.

```
data/<backup-id>                          sealed blocks, back to back
manifests/<sha256>                        the manifest, named by the hash of its bytes (the commit point)
refs/<stream>/<UTC-time>-<backup-id>      content: the manifest's sha256 (for listing without reading data)
                                          UTC-time: YYYYmmddTHHMMSS.ffffffZ, so names sort by time
sets/<sha256>                             an account backup set, named by the hash of its bytes (format/sets.py)
runs/<run-id>/…                           small records of a sharded account run, sealed into a set later
keyslots/<manifest-id>/<sha256>           a key slot added after the backup, named by the hash of its bytes
```
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.archive.retention import parse_created
from pipeline.base.errors import (
    ColdStorage,
    ConnectionFailed,
    IntegrityError,
    JsArchiveError,
    NotFoundError,
    PermissionDenied,
    UsageError,
    setting,
)
from pipeline.format import manifest as mf
from pipeline.format import objects
from pipeline.keys.keyring import KeySlot
from sinks import (
    AccessDenied,
    ObjectArchived,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    Retention,
    Sink,
    SinkError,
    SinkOptions,
    open_sink,
)

DATA = "data/"
MANIFESTS = "manifests/"
REFS = "refs/"
SETS = "sets/"
RUNS = "runs/"
KEYSLOTS = "keyslots/"
KEYSLOT_FORMAT = "jsarchive.keyslot"
_REF_NAME = re.compile(r"(\d{8}T\d{6}\.\d{6}Z)-([0-9a-f]{32})")
_HEX = re.compile(r"[0-9a-f]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MIN_ID_PREFIX = 6
log = logging.getLogger("jsarchive")
LATEST_SCAN = 64  # refs read at most to find the newest usable backup of a stream (Repository.latest)


def storage_error(e: SinkError, doing: str) -> JsArchiveError:
    """The pipeline's error (and exit code) for a storage failure while ``doing`` something."""
    if isinstance(e, ObjectNotFound):
        return NotFoundError(f"{doing}: {e}")
    if isinstance(e, AccessDenied):
        return PermissionDenied(f"{doing}: {e}")
    if isinstance(e, ObjectArchived):
        return ColdStorage(f"{doing}: {e}")
    return ConnectionFailed(f"{doing}: {e}")


def _resolve_prefix(id_or_prefix: str, candidates: Callable[[], list[str]], what: str, shows: str, url: str) -> str:
    """A full 64-digit id from itself or from a unique prefix of at least MIN_ID_PREFIX hex digits."""
    ident = id_or_prefix.strip().lower()
    if not _HEX.fullmatch(ident or "x"):
        raise UsageError(f"{id_or_prefix!r} is not a {what} id (hex digits, as `{shows}` shows)")
    if len(ident) == 64:
        return ident  # a full id needs no listing; loading it says whether it exists
    if len(ident) < MIN_ID_PREFIX:
        raise UsageError(f"{what} id prefix {id_or_prefix!r} is too short: give at least {MIN_ID_PREFIX} digits")
    matches = [c for c in candidates() if c.startswith(ident)]
    if not matches:
        raise NotFoundError(f"no {what} with id {id_or_prefix} in {url}")
    if len(matches) > 1:
        raise UsageError(f"{what} id prefix {id_or_prefix} is ambiguous in {url}: give more digits")
    return matches[0]


def ref_time(created: dt.datetime) -> str:
    return created.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def rfc3339(ref_name_time: str) -> str:
    """A ref name's time (``20260102T030405.000006Z``) as RFC 3339 (``2026-01-02T03:04:05.000006Z``)."""
    t = ref_name_time
    return f"{t[0:4]}-{t[4:6]}-{t[6:8]}T{t[9:11]}:{t[11:13]}:{t[13:]}"


@dataclass(frozen=True)
class ExtraSlot:
    """A ``keyslots/<manifest-id>/<sha256>`` object: ``slot`` if it is valid for its backup, else ``problem``."""

    key: str
    slot: KeySlot | None
    problem: str | None = None


def encode_extra_slot(manifest: mf.Manifest, slot: KeySlot) -> bytes:
    """The canonical bytes of an added key slot for ``manifest`` (docs/format.md §7.5)."""
    return mf.canonical(
        {
            "format": KEYSLOT_FORMAT,
            "version": 1,
            "backup_id": manifest.backup_id,
            "manifest_id": manifest.id,
            "slot": slot.to_json(),
        }
    )


def parse_extra_slot(raw: bytes, key: str, manifest: mf.Manifest) -> KeySlot:
    """The slot in an added key-slot object; ValueError if it is not a valid one for ``manifest``."""
    name = key.rsplit("/", 1)[-1]
    if len(raw) > objects.MAX_KEYSLOT:
        raise ValueError(f"larger than {objects.MAX_KEYSLOT // objects.KiB} KiB")
    if mf.manifest_id(raw) != name:
        raise ValueError("its bytes do not hash to its name (altered)")
    try:
        obj = objects.parse_json(raw, "it", objects.MAX_KEYSLOT)
    except IntegrityError as e:
        raise ValueError(str(e)[len("it ") :]) from None
    if not isinstance(obj, dict) or obj.get("format") != KEYSLOT_FORMAT or type(obj.get("version")) is not int:
        raise ValueError("not a jsarchive key slot")
    if obj["version"] != 1:
        raise ValueError(f"key slot format version {obj['version']}; this jsarchive reads version 1")
    if obj.get("backup_id") != manifest.backup_id or obj.get("manifest_id") != manifest.id:
        raise ValueError("it belongs to another backup")
    try:
        objects.keyslot_object(obj)
        return KeySlot.from_json(obj["slot"], origin=key)
    except objects.Invalid as e:
        raise ValueError(f"bad slot: {e}") from None
    except (KeyError, TypeError, ValueError):
        raise ValueError("bad or missing slot") from None


@dataclass(frozen=True)
class Ref:
    stream: str
    time: str  # YYYYmmddTHHMMSS.ffffffZ
    backup_id: str
    key: str


class Repository:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        # What readers skipped and the user should hear of (invalid added key slots); also logged once each.
        self.warnings: list[str] = []

    @classmethod
    def open(cls, url: str, options: SinkOptions | None = None) -> Repository:
        try:
            return cls(open_sink(url, options))
        except SinkError as e:
            raise UsageError(str(e)) from None

    @property
    def url(self) -> str:
        return self.sink.url

    # -- keys --------------------------------------------------------------------------------------------------
    @staticmethod
    def data_object(backup_id: str) -> str:
        return f"{DATA}{backup_id}"

    @staticmethod
    def manifest_key(manifest_id: str) -> str:
        return f"{MANIFESTS}{manifest_id}"

    @staticmethod
    def ref_key(stream: str, time: str, backup_id: str) -> str:
        return f"{REFS}{stream}/{time}-{backup_id}"

    @staticmethod
    def set_key(set_id: str) -> str:
        return f"{SETS}{set_id}"

    @staticmethod
    def keyslot_prefix(manifest_id: str) -> str:
        return f"{KEYSLOTS}{manifest_id}/"

    # -- writing -----------------------------------------------------------------------------------------------
    def write_manifest(self, raw: bytes, retention: Retention | None = None) -> str:
        mid = mf.manifest_id(raw)
        self.sink.put(self.manifest_key(mid), raw, if_absent=True, retention=retention)
        return mid

    def write_ref(
        self, stream: str, time: str, backup_id: str, manifest_id: str, retention: Retention | None = None
    ) -> str:
        key = self.ref_key(stream, time, backup_id)
        self.sink.put(key, manifest_id.encode("ascii") + b"\n", if_absent=True, retention=retention)
        return key

    def write_set(self, raw: bytes, retention: Retention | None = None) -> str:
        """Store set bytes under their SHA-256. Writing the same bytes again is a no-op (same name, same content)."""
        sid = mf.manifest_id(raw)
        # Content-addressed: if the name exists it already holds exactly these bytes.
        self.put_small(self.set_key(sid), raw, retention)
        return sid

    def put_small(self, key: str, raw: bytes, retention: Retention | None = None) -> bool:
        """Create a small immutable object; False if ``key`` already exists (it is never replaced)."""
        try:
            self.sink.put(key, raw, if_absent=True, retention=retention)
        except ObjectExists:
            return False
        return True

    def write_extra_slot(self, manifest: mf.Manifest, slot: KeySlot, retention: Retention | None = None) -> str:
        """Store ``slot`` for ``manifest`` as ``keyslots/<manifest id>/<sha256 of the object>``; its key."""
        raw = encode_extra_slot(manifest, slot)
        key = self.keyslot_prefix(manifest.id) + mf.manifest_id(raw)
        try:
            self.put_small(key, raw, retention)
        except SinkError as e:
            raise storage_error(e, f"cannot write the key slot {key} to {self.url}") from None
        return key

    # -- reading -----------------------------------------------------------------------------------------------
    def extra_slot_objects(self, manifest: mf.Manifest) -> list[ExtraSlot]:
        """Every object under ``keyslots/<manifest id>/``, parsed; invalid ones carry the reason."""
        out = []
        for key in self.object_names(self.keyslot_prefix(manifest.id)):
            try:
                raw = self.get_small(key, objects.MAX_KEYSLOT)
            except objects.TooLarge:
                out.append(ExtraSlot(key, None, f"larger than {objects.MAX_KEYSLOT // objects.KiB} KiB: not read"))
                continue
            if raw is None:
                continue
            try:
                out.append(ExtraSlot(key, parse_extra_slot(raw, key, manifest)))
            except ValueError as e:
                out.append(ExtraSlot(key, None, str(e)))
        return out

    def load_extra_slots(self, manifest: mf.Manifest) -> list[KeySlot]:
        """The valid key slots added to ``manifest`` after the backup (``keyslots/``), to try after its own.

        They are not authenticated by the manifest: unwrap them with a ``verify`` check (see ``KeyRing.unwrap``).
        Invalid objects are skipped with a warning (logged, and kept in :attr:`warnings`; ``jsarchive key list``
        shows them too). Credentials that may read a backup by id but not list the archive get the manifest's slots
        only, as before added slots existed.
        """
        if not manifest.encrypted:
            return []
        try:
            found = self.extra_slot_objects(manifest)
        except PermissionDenied:
            return []
        for e in found:
            if e.slot is None:
                self._warn(f"added key slot {e.key} in {self.url} is skipped: {e.problem}")
        return [e.slot for e in found if e.slot is not None]

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("warning: %s", message)

    def key_slots(self, manifest: mf.Manifest) -> list[KeySlot]:
        """Every slot that may open ``manifest``: its own, then the ones added later (:meth:`load_extra_slots`)."""
        return list(manifest.key_slots) + self.load_extra_slots(manifest)

    def object_names(self, prefix: str) -> list[str]:
        """The name (object key) of every object under ``prefix``, sorted."""
        try:
            return sorted(i.key for i in self.sink.list(prefix))
        except SinkError as e:
            raise storage_error(e, f"cannot list {self.url}") from None

    def get_small(self, key: str, limit: int = objects.MAX_SMALL) -> bytes | None:
        """A small object's bytes, or None if it does not exist. At most ``limit + 1`` bytes are read: a larger
        object is an IntegrityError naming it (pipeline.format.objects)."""
        try:
            return objects.read_capped(self.sink, key, limit)
        except ObjectNotFound:
            return None
        except SinkError as e:
            raise storage_error(e, f"cannot read {key} from {self.url}") from None

    def list_sets(self) -> list[str]:
        """The ids of every set in the archive (unordered: order by their content, e.g. ``finished``)."""
        return [k[len(SETS) :] for k in self.object_names(SETS) if _HEX64.fullmatch(k[len(SETS) :])]

    def load_set(self, set_id: str) -> bytes:
        """The bytes of set ``set_id``, checked against their name (parse them with pipeline.ops.account_backup)."""
        raw = self.get_small(self.set_key(set_id), objects.MAX_SET)
        if raw is None:
            raise NotFoundError(f"no set {set_id[:12]} in {self.url}")
        actual = mf.manifest_id(raw)
        if actual != set_id:
            raise IntegrityError(f"set {set_id[:12]} was altered: its bytes hash to {actual[:12]}, not to its name")
        return raw

    def resolve_set(self, id_or_prefix: str) -> str:
        """A full set id from a full id or a unique prefix of at least six hex digits."""
        return _resolve_prefix(id_or_prefix, self.list_sets, "set", "jsarchive account ls", self.url)

    def refs(self, stream: str | None = None) -> list[Ref]:
        """Refs newest name first, for one stream or all. Names are not authenticated: the time in one is only what
        its writer said (see :meth:`latest` for what decides which backup is the newest)."""
        prefix = f"{REFS}{stream}/" if stream else REFS
        out = []
        try:
            for info in self.sink.list(prefix):
                rest = info.key[len(REFS) :]
                name, _, leaf = rest.rpartition("/")
                m = _REF_NAME.fullmatch(leaf)
                if name and m:
                    out.append(Ref(stream=name, time=m.group(1), backup_id=m.group(2), key=info.key))
        except SinkError as e:
            raise storage_error(e, f"cannot list {self.url}") from None
        out.sort(key=lambda r: (r.time, r.backup_id), reverse=True)
        return out

    def ref_target(self, ref: Ref) -> str:
        try:
            raw = objects.read_capped(self.sink, ref.key, objects.MAX_REF)
        except SinkError as e:
            raise storage_error(e, f"cannot read {ref.key} in {self.url}") from None
        try:
            return objects.ref_target(raw)
        except objects.Invalid:
            raise IntegrityError(f"ref {ref.key} in {self.url} does not hold a manifest id") from None

    def load_ref(self, ref: Ref) -> mf.Manifest:
        """The manifest a ref points to, which must be the backup the ref names."""
        m = self.load_manifest(self.ref_target(ref))
        if m.backup_id != ref.backup_id or m.stream != ref.stream:
            raise IntegrityError(f"ref {ref.key} in {self.url} points to a manifest of another backup ({m.id[:12]})")
        return m

    def load_manifest(self, manifest_id: str) -> mf.Manifest:
        try:
            raw = objects.read_capped(self.sink, self.manifest_key(manifest_id), objects.MAX_MANIFEST)
        except ObjectNotFound:
            raise NotFoundError(f"backup {manifest_id[:12]} has no manifest in {self.url}") from None
        except SinkError as e:
            raise storage_error(e, f"cannot read manifest {manifest_id[:12]} from {self.url}") from None
        return mf.parse(raw, manifest_id)

    def check_data(self, m: mf.Manifest, context: str = "") -> ObjectInfo:
        """The backup's data object, checked before any of it is read: present, readable (not cold), right size."""
        where = f"{context}: " if context else ""
        try:
            head = self.sink.head(m.data_object)
        except SinkError as e:
            raise storage_error(e, f"{where}cannot read the data object of backup {m.id[:12]}") from None
        if head is None:
            raise NotFoundError(
                f"{where}the data object {m.data_object} of backup {m.id[:12]} ({m.stream}) is missing from {self.url}"
            )
        if head.archived:
            state = (
                "is being thawed; try again when that has finished"
                if head.thaw == "ongoing"
                else f"must be thawed first: jsarchive thaw {self.url} {m.id[:12]} [--tier Standard|Bulk|Expedited] "
                "[--days N] [--wait]"
            )
            raise ColdStorage(
                f"{where}backup {m.id[:12]} keeps its data in cold storage ({head.storage_class}): "
                f"{self.url}/{m.data_object} {state}"
            )
        if head.size != m.data_size:
            raise IntegrityError(
                f"{where}the data object {m.data_object} of backup {m.id[:12]} is {head.size} bytes, the manifest says "
                f"{m.data_size}: it is truncated or was replaced"
            )
        return head

    def manifest_ids(self) -> list[str]:
        try:
            return [i.key[len(MANIFESTS) :] for i in self.sink.list(MANIFESTS)]
        except SinkError as e:
            raise storage_error(e, f"cannot list {self.url}") from None

    def resolve(self, id_or_prefix: str) -> str:
        """The manifest id of one backup, named by its manifest id (64 hex digits), its backup id (32: what
        ``stream backup --json`` and ref names show) or a unique prefix of either, of at least MIN_ID_PREFIX digits.

        A full manifest id is returned without any listing (loading it says whether it exists). A prefix that
        matches one backup by both of its ids is that backup; one that matches two backups is a UsageError.
        """
        ident = id_or_prefix.strip().lower()
        if not _HEX.fullmatch(ident or "x"):
            raise UsageError(
                f"{id_or_prefix!r} is not a backup id (hex digits: the manifest id or backup id `jsarchive ls` shows)"
            )
        if len(ident) == 64:
            return ident
        if len(ident) < MIN_ID_PREFIX:
            raise UsageError(f"backup id prefix {id_or_prefix!r} is too short: give at least {MIN_ID_PREFIX} digits")
        found = self.backups_matching(ident)
        if not found:
            raise NotFoundError(
                f"no backup with id {id_or_prefix} in {self.url} (neither a manifest id nor a backup id)"
            )
        if len(found) > 1:
            named = ", ".join(mid[:12] for mid in sorted(found))
            raise UsageError(
                f"backup id prefix {id_or_prefix} is ambiguous in {self.url}: it matches {len(found)} backups "
                f"({named}); give more digits"
            )
        return found[0]

    def backups_matching(self, prefix: str) -> list[str]:
        """Manifest ids of the backups whose manifest id or backup id starts with ``prefix`` (lower-case hex).

        Backup ids are in ref names, so the refs are listed once; only a ref whose name matches is opened. A ref is
        not authenticated, so its manifest must be of the backup its name says (:meth:`load_ref`): a planted ref
        cannot make a backup id name another backup. A matching ref that is broken is passed over when something
        else matches, and is the error when nothing does.
        """
        found = {mid for mid in self.manifest_ids() if _HEX64.fullmatch(mid) and mid.startswith(prefix)}
        if len(prefix) > 32:  # longer than any backup id
            return sorted(found)
        broken: list[JsArchiveError] = []
        by_ref: set[str] = set()
        for ref in self.refs():
            if ref.backup_id.startswith(prefix):
                try:
                    by_ref.add(self.load_ref(ref).id)
                except (IntegrityError, NotFoundError) as e:
                    broken.append(e)
        if not found and not by_ref and broken:
            raise broken[0]
        return sorted(found | by_ref)

    def latest(
        self,
        stream: str,
        eligible: Callable[[mf.Manifest], str | None] | None = None,
        skipped: list[str] | None = None,
        refs: list[Ref] | None = None,
    ) -> mf.Manifest:
        """The manifest of the newest backup of ``stream``, by the manifest's own ``created``.

        Ref names are not authenticated, so they only say where to look: refs are read newest name first, and a ref
        whose name is not its manifest's ``created`` (or that is broken) is skipped. The writer names every ref
        after ``created``, so among the refs that agree, name order is ``created`` order and the first one that
        agrees is the newest backup: normally one manifest is read, as before. ``eligible(m)`` returns why a backup
        may not be used (a :class:`pipeline.archive.trust.TrustPolicy`), and then the next one is taken. What was
        skipped, and why, is appended to ``skipped``. At most LATEST_SCAN refs are read, so a flood of planted refs
        costs a bounded number of reads and ends in an IntegrityError instead of a restore of something older.
        """
        return self.newest_at(stream, None, eligible, skipped, refs)

    def newest_at(
        self,
        stream: str,
        at: dt.datetime | None,
        eligible: Callable[[mf.Manifest], str | None] | None = None,
        skipped: list[str] | None = None,
        refs: list[Ref] | None = None,
    ) -> mf.Manifest:
        """The newest backup of ``stream`` created at or before ``at`` (an aware datetime; None: :meth:`latest`).

        The same reads and rules as :meth:`latest`, from the first ref named at or before ``at``: a ref only agrees
        with its manifest when its name is the manifest's ``created``, so the backup found was created at or before
        ``at`` whatever the names say, and a refused or broken one is passed over (and named in ``skipped``). None
        at or before ``at``: NotFoundError naming when the oldest backup is from.
        """
        refs = self.refs(stream) if refs is None else refs  # ``refs``: this stream's, newest first, listed once
        if not refs:
            raise NotFoundError(f"no backups of stream {stream!r} in {self.url}")
        cut = ref_time(at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)) if at is not None else None
        if cut is not None:
            older = [r for r in refs if r.time <= cut]  # names are fixed-width UTC, so text order is time order
            if not older:
                raise NotFoundError(
                    f"no backup of stream {stream!r} in {self.url} was created at or before {rfc3339(cut)} "
                    f"({setting('at')}): the oldest is from {rfc3339(refs[-1].time)}",
                    subject=stream,
                )
            refs = older
        notes: list[str] = []
        try:
            for ref in refs[:LATEST_SCAN]:
                try:
                    m = self.load_ref(ref)
                except (IntegrityError, NotFoundError) as e:
                    notes.append(f"ref {ref.key} skipped: {e}")
                    continue
                why = ref_disagreement(ref, m)
                if why:
                    notes.append(f"ref {ref.key} skipped: {why} (`jsarchive verify` flags it)")
                    continue
                why = eligible(m) if eligible else None
                if why:
                    notes.append(f"skipped backup created {m.created}: {why}")
                    continue
                return m
        finally:
            if skipped is not None:
                skipped.extend(notes)
        scanned = min(len(refs), LATEST_SCAN)
        more = f" (of {len(refs)}; give {setting('backup')} ID for an older one)" if len(refs) > LATEST_SCAN else ""
        when = f" created at or before {rfc3339(cut)}" if cut is not None else ""
        raise IntegrityError(
            f"no backup of stream {stream!r}{when} in {self.url} can be used (the newest {scanned} refs{more} were "
            f"read); the newest: {notes[0]}" + (f" (and {len(notes) - 1} more skipped)" if len(notes) > 1 else "")
        )

    def backup_for(
        self,
        stream: str,
        backup: str | None = None,
        at: dt.datetime | None = None,
        eligible: Callable[[mf.Manifest], str | None] | None = None,
        skipped: list[str] | None = None,
    ) -> mf.Manifest:
        """The backup a command names for ``stream``: ``backup`` (an id or prefix, :meth:`resolve`), else the newest
        created at or before ``at`` (:meth:`newest_at`), else the newest (:meth:`latest`). Both given: UsageError.
        ``eligible`` and ``skipped`` apply to the newest only: a backup named by its id is checked by the caller."""
        if backup and at is not None:
            raise UsageError(f"give {setting('backup')} ID or {setting('at')} TIME, not both")
        if backup:
            return self.load_manifest(self.resolve(backup))
        return self.newest_at(stream, at, eligible, skipped)


def ref_disagreement(ref: Ref, m: mf.Manifest) -> str | None:
    """Why the time in a ref's name is not its manifest's ``created`` (None when they agree). The writer names a
    ref after ``created``, so a disagreement means the ref was made by something else."""
    try:
        created = ref_time(parse_created(m.created))
    except (ValueError, OverflowError):
        return f"its manifest's created time {m.created!r} is not a time"
    if created != ref.time:
        return f"its name says {ref.time} but its manifest {m.id[:12]} was created {created}"
    return None
