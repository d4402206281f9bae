"""natscli interoperability: export backups as natscli backup directories and import natscli directories.

natscli (``nats stream backup`` / ``nats account backup``, through jsm.go's ``SnapshotToDirectory``) writes, per
stream, a directory with:

- ``stream.tar.s2`` (newer jsm.go names it ``stream.arc.s2`` for a V2 snapshot; import reads either): the
  snapshot chunks as the server sent them, concatenated. jsarchive stores exactly these
  bytes (compressed and sealed block by block), so an export decrypts and decompresses them back, byte for byte.
  A backup stored decoded (``--store decoded``, pipeline/format/payload.py) holds the NATSARC1 archive instead: its
  export frames the archive as Snappy, which the server restores exactly as it would the original (natscli sends the
  file
  as it is), though it is not the same bytes and is about as large as the archive.
- ``backup.json``: ``json.MarshalIndent(map[string]any{"config": resp.Config, "state": resp.State}, "", "  ")``
  where ``resp`` is jsm.go's typed ``api.JSApiStreamSnapshotResponse``. The server's JSON is therefore decoded
  into jsm.go's ``StreamConfig`` / ``StreamState`` structs and encoded again: keys come out in **jsm.go's struct
  field order** (not the server's, which differs, e.g. ``max_msgs_per_subject`` before ``max_msgs``), jsm.go's
  ``omitempty`` rules decide what is left out (``compression: "none"`` and ``allow_msg_ttl: false`` are), fields
  jsm.go lacks are dropped, and Go's encoder escapes ``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\u003c`` etc.
  :func:`backup_json` reproduces that from the config and state a manifest holds (see :data:`GO_STRUCTS`).

An account backup directory is a directory of such stream directories, named after the streams.

Import reads either kind of directory into the archive as ordinary encrypted backups whose manifests record where
they came from; an account directory also gets a set, so ``jsarchive account restore`` takes it as a whole.
``backup.json`` keeps the stream's ``consumer_count`` even for ``nats stream backup --no-consumers``, so import
counts the consumers the snapshot itself holds (:func:`snapshot_consumers`) and records that, not the flag.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.archive.reader import OpenedBackup, open_manifest
from pipeline.archive.repository import Repository, storage_error
from pipeline.archive.writer import BackupWriter, WriteSettings
from pipeline.base.errors import ConflictError, IntegrityError, NotFoundError, UsageError, setting
from pipeline.base.progress import NoProgress, Progress
from pipeline.base.transfer import TransferConfig
from pipeline.flows.backup import BackupResult, check_writable
from pipeline.format import natsarc, objects, payload, s2
from pipeline.format.blocks import choose_block_size
from pipeline.format.compress import Compression
from pipeline.format.sets import build_set, parse_set, set_entry
from pipeline.format.snapshot import V2, detect_snapshot_format
from pipeline.keys.keyring import KeyRing
from sinks import Retention, SinkError, SinkOptions
from sinks.local import describe_mode

BACKUP_JSON = "backup.json"
STREAM_DATA = "stream.tar.s2"  # what export writes: every natscli release restores it, older ones only it
# Import accepts both: jsm.go's SnapshotToDirectory switched to stream.arc.s2 for V2 snapshots.
STREAM_DATA_NAMES = (STREAM_DATA, "stream.arc.s2")
S2_MAGIC = b"\xff\x06\x00\x00S2sTwO"
SNAPPY_MAGIC = b"\xff\x06\x00\x00sNaPpY"
READ_SIZE = 1024 * 1024
ORIGIN_TYPE = "natscli-import"

# -- Go's encoding/json as jsm.go applies it ---------------------------------------------------------------------
#
# jsm.go api.StreamConfig / StreamState and their nested structs (jsm.go v0.4.x, the version natscli 0.3 builds
# with), as (json key, omitempty, type). Types: "str", "int", "bool", "time" (time.Time, never omitted),
# "enum:<zero>" (an int-backed enum whose zero value encodes as <zero>, so omitempty drops exactly that value),
# "[]" (slice), "map" (Go sorts map keys), "*S" (pointer to struct S), "[]*S" / "[]S" (slice of structs), "S"
# (struct value: never omitted). ``allow_batched`` follows ``persist_mode`` as jsm.go added it for 2.14 servers.
GO_STRUCTS: dict[str, list[tuple[str, bool, str]]] = {
    "StreamConfig": [
        ("name", False, "str"),
        ("description", True, "str"),
        ("subjects", True, "[]"),
        ("retention", False, "enum:limits"),
        ("max_consumers", False, "int"),
        ("max_msgs_per_subject", False, "int"),
        ("max_msgs", False, "int"),
        ("max_bytes", False, "int"),
        ("max_age", False, "int"),
        ("max_msg_size", True, "int"),
        ("storage", False, "enum:file"),
        ("discard", False, "enum:old"),
        ("num_replicas", False, "int"),
        ("no_ack", True, "bool"),
        ("template_owner", True, "str"),
        ("duplicate_window", True, "int"),
        ("placement", True, "*Placement"),
        ("mirror", True, "*StreamSource"),
        ("sources", True, "[]*StreamSource"),
        ("compression", True, "enum:none"),
        ("subject_transform", True, "*SubjectTransformConfig"),
        ("republish", True, "*RePublish"),
        ("sealed", False, "bool"),
        ("deny_delete", False, "bool"),
        ("deny_purge", False, "bool"),
        ("allow_rollup_hdrs", False, "bool"),
        ("allow_direct", False, "bool"),
        ("mirror_direct", False, "bool"),
        ("discard_new_per_subject", True, "bool"),
        ("first_seq", True, "int"),
        ("metadata", True, "map"),
        ("allow_msg_ttl", True, "bool"),
        ("subject_delete_marker_ttl", True, "int"),
        ("consumer_limits", False, "StreamConsumerLimits"),
        ("allow_atomic", True, "bool"),
        ("allow_msg_counter", True, "bool"),
        ("allow_msg_schedules", True, "bool"),
        ("persist_mode", True, "enum:default"),
        ("allow_batched", True, "bool"),
    ],
    "StreamConsumerLimits": [("inactive_threshold", True, "int"), ("max_ack_pending", True, "int")],
    "Placement": [("cluster", True, "str"), ("tags", True, "[]"), ("preferred", True, "str")],
    "StreamSource": [
        ("name", False, "str"),
        ("opt_start_seq", True, "int"),
        ("opt_start_time", True, "*time"),
        ("filter_subject", True, "str"),
        ("external", True, "*ExternalStream"),
        ("subject_transforms", True, "[]SubjectTransformConfig"),
        ("consumer", True, "*StreamConsumerSource"),
    ],
    # Durable sourcing (nats-server 2.14): both fields omitempty.
    "StreamConsumerSource": [("name", True, "str"), ("deliver_subject", True, "str")],
    "ExternalStream": [("api", False, "str"), ("deliver", False, "str")],
    "SubjectTransformConfig": [("src", False, "str"), ("dest", False, "str")],
    "RePublish": [("src", True, "str"), ("dest", False, "str"), ("headers_only", True, "bool")],
    "StreamState": [
        ("messages", False, "int"),
        ("bytes", False, "int"),
        ("first_seq", False, "int"),
        ("first_ts", False, "time"),
        ("last_seq", False, "int"),
        ("last_ts", False, "time"),
        ("num_deleted", True, "int"),
        ("deleted", True, "[]"),
        ("num_subjects", True, "int"),
        ("subjects", True, "map"),
        ("lost", True, "*LostStreamData"),
        ("consumer_count", False, "int"),
    ],
    "LostStreamData": [("msgs", False, "[]"), ("bytes", False, "int")],
}
GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def _zero(typ: str) -> Any:
    if typ == "str":
        return ""
    if typ == "int":
        return 0
    if typ == "bool":
        return False
    if typ == "time":
        return GO_ZERO_TIME
    if typ.startswith("enum:"):
        return typ[5:]
    if typ in GO_STRUCTS:
        return _go_struct({}, typ)
    return None  # nil slice, map or pointer encodes as null


def _is_empty(value: Any, typ: str) -> bool:
    """Go's omitempty: false, 0, "", nil and empty slices/maps; an enum at its zero value; never a struct."""
    if value is None:
        return typ != "time" and typ not in GO_STRUCTS
    if typ.startswith("enum:"):
        return value in ("", typ[5:])
    if typ in GO_STRUCTS or typ == "time":
        return False
    if isinstance(value, bool):
        return value is False
    if isinstance(value, (int, str, list, dict)):
        return not value
    return False


def _go_value(value: Any, typ: str) -> Any:
    if value is None:
        return _zero(typ)
    if typ in GO_STRUCTS and isinstance(value, dict):
        return _go_struct(value, typ)
    if typ.startswith("*") and typ[1:] in GO_STRUCTS and isinstance(value, dict):
        return _go_struct(value, typ[1:])
    if typ.startswith("[]") and typ[2:].lstrip("*") in GO_STRUCTS and isinstance(value, list):
        return [_go_value(v, typ[2:].lstrip("*")) for v in value]
    if typ == "map" and isinstance(value, dict):
        return {k: value[k] for k in sorted(value)}  # Go encodes map keys sorted
    if typ.startswith("enum:") and value == "":
        return typ[5:]
    return value


def _go_struct(obj: dict, struct: str) -> dict:
    """``obj`` as jsm.go would re-encode it: struct field order, omitempty, zero values for absent fields.

    Keys jsm.go does not know are kept (after the known ones, sorted) rather than dropped as natscli would: they
    are config a newer server sent, and a restore from the exported directory should not lose it.
    """
    out: dict = {}
    for key, omitempty, typ in GO_STRUCTS[struct]:
        value = obj.get(key)
        if omitempty and _is_empty(value, typ):
            continue
        out[key] = _go_value(value, typ)
    known = {k for k, _, _ in GO_STRUCTS[struct]}
    for key in sorted(k for k in obj if k not in known):
        out[key] = obj[key]
    return out


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def go_marshal_indent(obj: Any) -> bytes:
    """``json.MarshalIndent(obj, "", "  ")`` for already-ordered dicts: Go's layout and its HTML-safe escaping."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, separators=(",", ": "), allow_nan=False)
    # These characters occur only inside strings in JSON text, so replacing them everywhere is exact. Go writes
    # control characters as \b \f \n \r \t or \u00xx (lowercase), as Python does.
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    text = _LONE_SURROGATE.sub("\ufffd", text)  # Go replaces invalid UTF-8 with U+FFFD
    return text.encode("utf-8")


def backup_json(config: dict, state: dict) -> bytes:
    """The bytes natscli writes as ``backup.json`` for a snapshot whose response had ``config`` and ``state``."""
    return go_marshal_indent({"config": _go_struct(config, "StreamConfig"), "state": _go_struct(state, "StreamState")})


# -- export ------------------------------------------------------------------------------------------------------


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


def _resolve_any(repo: Repository, ident: str) -> tuple[str, str]:
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


def _prepare_target(directory: str) -> tuple[Path, Path]:
    """(final dir, temporary sibling): everything is written to the sibling and renamed into place at the end.

    The target is looked at without following it: a symlink there (to a directory elsewhere, or dangling) would
    otherwise send the export somewhere the operator did not name. Only a missing name or an empty directory will
    do; the final rename (:func:`_publish_target`) re-checks that, since the target may change meanwhile.
    """
    target = Path(directory).expanduser().absolute()
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise UsageError(f"cannot export to {target}: a parent of it is not a directory") from None
    except OSError as e:
        raise UsageError(f"cannot export to {target}: {e.strerror}") from None
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise ConflictError(
                f"{target} already exists and is {describe_mode(st.st_mode)}, not an empty directory; export writes "
                "a new directory (and never through a symbolic link)"
            )
        try:
            with os.scandir(target) as it:
                if next(it, None) is not None:
                    raise ConflictError(
                        f"{target} already exists and is not an empty directory; export writes a new one"
                    )
        except OSError as e:
            raise UsageError(f"cannot read {target}: {e.strerror}") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"cannot create {target}: a parent of it is not a directory") from None
    except OSError as e:
        raise UsageError(f"cannot create {target}: {e.strerror}") from None
    try:
        tmp = target.parent / f".{target.name}.partial-{os.urandom(4).hex()}"
        tmp.mkdir(mode=0o700)  # natscli creates backup directories 0700
    except OSError as e:
        raise UsageError(f"cannot create {target}: {e.strerror}") from None
    return target, tmp


def _publish_target(tmp: Path, target: Path) -> None:
    """Rename the finished export into place. rename(2) replaces an empty directory and nothing else: a symlink,
    a file or a non-empty directory put there while the export ran makes it fail, and is left as it is."""
    try:
        os.rename(tmp, target)
    except OSError as e:
        try:
            found = describe_mode(os.lstat(target).st_mode)
        except OSError:
            found = "something else"
        raise ConflictError(
            f"{target} changed while the export ran (it is now {found}: {e.strerror}); nothing was written there"
        ) from None


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
        kind, ident = _resolve_any(repo, opts.backup)
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
    target, tmp = _prepare_target(opts.directory)
    out: list[ExportedStream] = []
    try:
        for sub, backup in opened:
            where = tmp / sub if sub else tmp
            where.mkdir(exist_ok=True, mode=0o700)
            out.append(await _export_one(backup, where, target / sub if sub else target, progress))
        _publish_target(tmp, target)
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


# -- import ------------------------------------------------------------------------------------------------------


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


@dataclass
class NatscliStream:
    """One natscli stream backup directory, read and checked (the data file only at its start)."""

    directory: Path
    name: str
    config: dict
    state: dict
    data: Path
    size: int
    snapshot_format: str
    backup_json_sha256: str
    snapshot_time: str  # backup.json's modification time: natscli writes it when the snapshot ends
    snapshot_consumers: int = 0  # consumers the snapshot holds (what a restore of it creates)

    @property
    def declared_consumers(self) -> int:
        """backup.json's ``consumer_count``: the stream's consumers when natscli asked, included or not."""
        try:
            return int(self.state.get("consumer_count", 0) or 0)
        except (TypeError, ValueError):
            return 0

    @property
    def no_consumers(self) -> bool:
        """The backup was made without consumers (``--no-consumers``): the stream had some, the snapshot has none."""
        return self.snapshot_consumers == 0 and self.declared_consumers > 0

    def manifest_state(self) -> dict:
        """The state to record, so that a restore waits for exactly the consumers the snapshot brings.

        With no consumers at all, ``no_consumers`` says so and backup.json's state is kept as it is (a re-export
        gives natscli's file back). Fewer than backup.json counts, but some (a V1 snapshot leaves memory-storage
        consumers out), can only be said by the count itself.
        """
        if 0 < self.snapshot_consumers < self.declared_consumers:
            return {**self.state, "consumer_count": self.snapshot_consumers}
        return self.state


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(READ_SIZE):
            yield chunk


def snapshot_consumers(data: Path, snapshot_format: str) -> int:
    """How many consumers the snapshot in ``data`` (an S2 stream) holds, read as a stream.

    V2: the ``consumers/<name>`` entries between ``state.json`` and the first message, so only the start of the
    file is read. V1: the consumer directories ``obs/<name>/`` of the tar, which has to be read to its end (only
    the member list is kept).
    """
    chunks = _file_chunks(data)
    try:
        if snapshot_format == V2:
            reader = natsarc.ArchiveReader(s2.iter_decode(chunks))
            reader.close()
            return len(reader.consumers)
        contents = natsarc.read_v1_tar(s2.BlockFile(s2.iter_decode(chunks)), keep=lambda _name: False)
        return len(contents.consumer_names())
    except IntegrityError as e:  # S2Error or ArchiveError: bad bytes in a file to import are bad input
        raise UsageError(f"{data} does not hold a readable {snapshot_format} snapshot: {e}") from None
    except OSError as e:
        raise UsageError(f"cannot read {data}: {e.strerror}") from None
    finally:
        chunks.close()


def _data_file(path: Path) -> Path:
    """The directory's snapshot file under either of natscli's names (exactly one may be there)."""
    found = [path / n for n in STREAM_DATA_NAMES if (path / n).exists()]
    if not found:
        raise NotFoundError(f"{path} has {BACKUP_JSON} but no {' or '.join(STREAM_DATA_NAMES)}")
    if len(found) > 1:
        raise UsageError(
            f"{path} has both {found[0].name} and {found[1].name}: remove the one that does not belong to "
            f"{BACKUP_JSON} (natscli writes one)"
        )
    return found[0]


# What a stream name may not hold: nats-server's isValidName (whitespace, '.', '*', '>'), the path separators its
# stream create refuses, and control characters. The name becomes a path in the archive (refs/<name>/...).
_BAD_NAME_CHARS = re.compile(r"[\s.*>/\\\x00-\x1f\x7f]")
MAX_STREAM_NAME = 255  # nats-server's JSMaxNameLen
_ENUMS = {
    "retention": ("limits", "interest", "workqueue"),
    "discard": ("old", "new"),
    "storage": ("file", "memory"),
    "compression": ("none", "s2"),
}
_LIMITS = ("max_consumers", "max_msgs_per_subject", "max_msgs", "max_bytes", "max_msg_size")  # -1: unlimited
_NON_NEGATIVE = ("max_age", "duplicate_window", "subject_delete_marker_ttl", "first_seq")  # nanoseconds, a seq
_FLAGS = (
    "no_ack",
    "sealed",
    "deny_delete",
    "deny_purge",
    "allow_rollup_hdrs",
    "allow_direct",
    "mirror_direct",
    "discard_new_per_subject",
    "allow_msg_ttl",
    "allow_atomic",
    "allow_msg_counter",
    "allow_msg_schedules",
    "allow_batched",
)
_STATE_COUNTS = ("messages", "bytes", "first_seq", "last_seq", "num_deleted", "num_subjects", "consumer_count")


def _boolean(v: object, name: str) -> bool:
    if not isinstance(v, bool):
        raise objects.Invalid(f"{name} is not true or false")
    return v


def _strings(v: object, name: str) -> list:
    items = objects.array(v, name)
    for i, item in enumerate(items):
        objects.string(item, f"{name}[{i}]", nonempty=True)
    return items


def _source(v: object, name: str) -> None:
    src = objects.obj(v, name)
    objects.string(src.get("name"), f"{name}.name", nonempty=True)
    objects.optional(src, "filter_subject", objects.string, name)
    objects.optional(src, "opt_start_seq", objects.integer, name)
    if src.get("consumer") is not None:
        consumer = objects.obj(src["consumer"], f"{name}.consumer")
        for f in ("name", "deliver_subject"):
            objects.optional(consumer, f, objects.string, f"{name}.consumer")


def check_stream_name(name: object, what: str) -> str:
    """A stream name the server accepts and the archive can use as a path component."""
    name = objects.string(name, what, nonempty=True)
    if len(name) > MAX_STREAM_NAME:
        raise objects.Invalid(f"{what} is {len(name)} characters long; a stream name has at most {MAX_STREAM_NAME}")
    if bad := _BAD_NAME_CHARS.search(name):
        raise objects.Invalid(f"{what} {name!r} holds {bad.group()!r}, which no stream name may hold")
    return name


def check_backup_config(config: dict) -> None:
    """The config fields that import, the manifest summary and later restores read, strictly typed where present.
    Fields jsm.go does not know are left alone: a newer server's config is kept, not judged."""
    check_stream_name(config.get("name"), "config.name")
    for f in ("description", "template_owner", "persist_mode"):
        objects.optional(config, f, objects.string, "config")
    objects.optional(config, "subjects", _strings, "config")
    for f, allowed in _ENUMS.items():
        if config.get(f) is not None and config[f] not in allowed:
            raise objects.Invalid(f"config.{f} is {config[f]!r}, not one of {', '.join(allowed)}")
    if config.get("num_replicas") is not None:
        objects.integer(config["num_replicas"], "config.num_replicas", 1)
    for f in _LIMITS:
        objects.optional(config, f, lambda v, n: objects.integer(v, n, -1), "config")
    for f in _NON_NEGATIVE:
        objects.optional(config, f, objects.integer, "config")
    for f in _FLAGS:
        objects.optional(config, f, _boolean, "config")
    if config.get("placement") is not None:
        placement = objects.obj(config["placement"], "config.placement")
        for f in ("cluster", "preferred"):
            objects.optional(placement, f, objects.string, "config.placement")
        objects.optional(placement, "tags", _strings, "config.placement")
    objects.optional(config, "mirror", _source, "config")
    for i, src in enumerate(objects.array(config.get("sources") or [], "config.sources")):
        _source(src, f"config.sources[{i}]")
    if config.get("metadata") is not None:
        for k, v in objects.obj(config["metadata"], "config.metadata").items():
            objects.string(v, f"config.metadata[{k!r}]")
    for f in ("subject_transform", "republish", "consumer_limits"):
        objects.optional(config, f, objects.obj, "config")
    if config.get("consumer_limits") is not None:
        for f in ("inactive_threshold", "max_ack_pending"):
            objects.optional(config["consumer_limits"], f, objects.integer, "config.consumer_limits")


def check_backup_state(state: dict) -> None:
    """The state fields recorded in the manifest (its summary counts) and compared after a restore."""
    for f in _STATE_COUNTS:
        objects.optional(state, f, objects.integer, "state")
    for f in ("first_ts", "last_ts"):
        objects.optional(state, f, objects.string, "state")
    for i, seq in enumerate(objects.array(state.get("deleted") or [], "state.deleted")):
        objects.integer(seq, f"state.deleted[{i}]")
    if state.get("subjects") is not None:
        for k, v in objects.obj(state["subjects"], "state.subjects").items():
            objects.integer(v, f"state.subjects[{k!r}]")
    objects.optional(state, "lost", objects.obj, "state")


def _read_regular(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """At most ``limit + 1`` bytes of the regular file ``path``. O_NONBLOCK: a FIFO planted there is refused
    instead of blocking the import until something writes to it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path} is {describe_mode(st.st_mode)}, not a file: not a natscli backup")
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, READ_SIZE))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def read_backup_json(meta: Path) -> tuple[dict, dict, bytes, os.stat_result]:
    """(config, state, raw bytes, stat) of a ``backup.json``, checked whole before anything is written: a regular
    file of at most ``objects.MAX_BACKUP_JSON`` (16 MiB), bounded nesting, strict JSON (no NaN, no duplicate
    fields), and every field the import and a later restore read of the right type. A missing file is a
    :class:`NotFoundError` (exit 3); every other problem a :class:`UsageError` (exit 2), as for the rest of an
    import's input: it is a file the operator handed in, not an archive object.
    """
    try:
        raw, st = _read_regular(meta, objects.MAX_BACKUP_JSON)
    except FileNotFoundError:
        raise NotFoundError(
            f"{meta.parent} has no {BACKUP_JSON}: it is not a natscli stream backup directory"
        ) from None
    except OSError as e:
        raise UsageError(f"cannot read {meta}: {e.strerror}") from None
    try:
        doc = objects.parse_json(raw, str(meta), objects.MAX_BACKUP_JSON)
    except objects.TooLarge as e:
        raise UsageError(f"{e}: not a natscli backup") from None
    except IntegrityError as e:
        raise UsageError(f"{BACKUP_JSON} is not valid JSON: {e}; not a natscli backup") from None
    config = doc.get("config") if isinstance(doc, dict) else None
    state = doc.get("state") if isinstance(doc, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("name"), str) or not config["name"]:
        raise UsageError(f"{meta} has no config with a stream name: not a natscli backup")
    if state is not None and not isinstance(state, dict):
        raise UsageError(f"{meta} has a state that is not an object: not a natscli backup")
    try:
        check_backup_config(config)
        check_backup_state(state or {})
    except objects.Invalid as e:
        raise UsageError(f"{meta} is not a usable natscli backup: {e}") from None
    return config, state or {}, raw, st


def read_stream_dir(path: Path) -> NatscliStream:
    """Parse and check a natscli stream backup directory; a clear error for anything that is not one."""
    meta = path / BACKUP_JSON
    config, state, raw, meta_st = read_backup_json(meta)
    data = _data_file(path)
    try:
        head, data_st = _read_regular(data, 64 * 1024 - 1)
    except OSError as e:
        raise UsageError(f"cannot read {data}: {e.strerror}") from None
    size = data_st.st_size
    if not (head.startswith(S2_MAGIC) or head.startswith(SNAPPY_MAGIC)):
        raise UsageError(f"{data} is not an S2 stream (it does not start with the S2 stream identifier)")
    fmt = detect_snapshot_format(head)
    if fmt is None:
        raise UsageError(f"{data} holds no snapshot data after its S2 header (truncated?)")
    mtime = dt.datetime.fromtimestamp(meta_st.st_mtime, tz=dt.timezone.utc)
    return NatscliStream(
        directory=path,
        name=config["name"],
        config=config,
        state=state,
        data=data,
        size=size,
        snapshot_format=fmt,
        backup_json_sha256=hashlib.sha256(raw).hexdigest(),
        snapshot_time=mtime.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        snapshot_consumers=snapshot_consumers(data, fmt),
    )


def read_backup_dir(directory: str) -> tuple[str, list[NatscliStream]]:
    """("stream", [one]) for a stream directory, ("account", [...]) for a directory of stream directories."""
    root = Path(directory).expanduser().absolute()
    if not root.is_dir():
        raise NotFoundError(f"{root} is not a directory")
    if (root / BACKUP_JSON).exists():
        return "stream", [read_stream_dir(root)]
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    subdirs = [p for p in entries if p.is_dir() and (p / BACKUP_JSON).exists()]
    if not subdirs:
        raise NotFoundError(
            f"{root} has no {BACKUP_JSON} (not a natscli stream backup) and no stream directories holding one "
            "(not a natscli account backup)"
        )
    # natscli's account restore takes every entry as a stream directory; say which ones are not.
    strays = [p.name for p in entries if p not in subdirs]
    if strays:
        raise UsageError(
            f"{root} looks like a natscli account backup, but {', '.join(strays)} "
            f"{'is not a stream directory' if len(strays) == 1 else 'are not stream directories'} with {BACKUP_JSON}"
        )
    streams = [read_stream_dir(p) for p in subdirs]
    for s in streams:
        # natscli names each directory after its stream; one that disagrees was renamed or its backup.json
        # swapped, and two directories could then carry the same stream.
        if s.name != s.directory.name:
            raise UsageError(
                f"{s.directory} holds a {BACKUP_JSON} of stream {s.name!r}: in a natscli account backup each "
                "stream directory is named after its stream"
            )
    return "account", streams


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
