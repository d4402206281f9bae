"""Reading a natscli stream or account backup directory, every file checked before import writes anything.

``backup.json`` keeps the stream's ``consumer_count`` even for ``nats stream backup --no-consumers``, so import
counts the consumers the snapshot itself holds (:func:`snapshot_consumers`) and records that, not the flag.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.base.errors import IntegrityError, NotFoundError, UsageError
from pipeline.format import natsarc, objects, s2
from pipeline.format.snapshot import V2, detect_snapshot_format
from pipeline.ops.natscli.checks import check_backup_config, check_backup_state
from pipeline.ops.natscli.layout import BACKUP_JSON, READ_SIZE, S2_MAGIC, SNAPPY_MAGIC, STREAM_DATA_NAMES
from sinks.local import describe_mode


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
