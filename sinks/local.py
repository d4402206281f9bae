"""A directory as an archive: the embedded default.

Every object is written to a temporary file under ``.incomplete/``, fsynced, and then hard-linked into place, which
is atomic and never replaces an existing file, so a reader sees either nothing or the whole object.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from sinks.base import IncompleteUpload, ObjectExists, ObjectInfo, ObjectNotFound, Retention, SinkError

INCOMPLETE_DIR = ".incomplete"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalSink:
    supports_retention = False  # a directory cannot enforce Object Lock

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)

    @classmethod
    def from_url(cls, url: str) -> LocalSink:
        path = url[len("file://") :] if url.startswith("file://") else url
        if not path:
            raise SinkError(f"archive URL {url!r} names no directory")
        return cls(path)

    # -- paths -------------------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or parts[0] == INCOMPLETE_DIR:
            raise SinkError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def _tmp_path(self) -> Path:
        tmp_dir = self.root / INCOMPLETE_DIR
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"cannot create archive directory {self.root}: {e.strerror}") from e
        return tmp_dir / uuid.uuid4().hex

    def _publish(self, tmp: Path, key: str, *, if_absent: bool) -> None:
        """Move a finished temporary file into place; with ``if_absent`` never replace an existing object."""
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            if if_absent:
                os.link(tmp, final)
                os.unlink(tmp)
            else:
                os.replace(tmp, final)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            raise ObjectExists(f"{self.url}/{key} already exists; archive objects are never overwritten") from None
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise SinkError(f"cannot store {self.url}/{key}: {e.strerror}") from e
        _fsync_dir(final.parent)

    def _info(self, key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(
            key=key,
            size=st.st_size,
            modified=dt.datetime.fromtimestamp(st.st_mtime, tz=dt.timezone.utc),
            storage_class="LOCAL",
        )

    # -- Sink --------------------------------------------------------------------------------------------------
    def open_writer(
        self,
        key: str,
        *,
        part_size: int,
        metadata: dict[str, str] | None = None,
        storage_class: str | None = None,
        retention: Retention | None = None,
    ) -> LocalObjectWriter:
        if retention is not None:
            raise SinkError("a local directory cannot enforce retention; use an S3 or GCS archive for locked backups")
        if self._path(key).exists():
            raise ObjectExists(f"{self.url}/{key} already exists; archive objects are never overwritten")
        return LocalObjectWriter(self, key, self._tmp_path())

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> ObjectInfo:
        if retention is not None:
            raise SinkError("a local directory cannot enforce retention; use an S3 or GCS archive for locked backups")
        tmp = self._tmp_path()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise SinkError(f"cannot write {self.url}/{key}: {e.strerror}") from e
        self._publish(tmp, key, if_absent=if_absent)
        return self._info(key, self._path(key))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.url}/{key} does not exist") from None
        except OSError as e:
            raise SinkError(f"cannot read {self.url}/{key}: {e.strerror}") from e

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(start)
                return f.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.url}/{key} does not exist") from None
        except OSError as e:
            raise SinkError(f"cannot read {self.url}/{key}: {e.strerror}") from e

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            return self._info(key, path)
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix names, so listing one stream's refs does not scan the data.
        base_dir, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*base_dir.split("/")) if base_dir else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if d != INCOMPLETE_DIR)
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in sorted(filenames):
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    yield self._info(key, Path(dirpath) / name)

    def thaw(self, key: str, *, days: int, tier: str) -> str:
        if self.head(key) is None:
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        return "available"  # a directory has no cold storage

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SinkError(f"cannot delete {self.url}/{key}: {e.strerror}") from e

    def purge(self, key: str) -> None:
        self.delete(key)  # a directory keeps no versions

    def list_incomplete(self, older_than: dt.datetime | None = None) -> list[IncompleteUpload]:
        """Temporary files under ``.incomplete/`` last written before ``older_than``: uploads of a writer that
        died before completing or aborting (a live writer keeps its file's modification time fresh)."""
        out = []
        try:
            entries = list(os.scandir(self.root / INCOMPLETE_DIR))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise SinkError(f"cannot list {self.url}/{INCOMPLETE_DIR}: {e.strerror}") from e
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # completed or aborted meanwhile
            modified = dt.datetime.fromtimestamp(st.st_mtime, tz=dt.timezone.utc)
            if older_than is None or modified < older_than:
                out.append(IncompleteUpload("", entry.name, modified, modified, st.st_size))
        return sorted(out, key=lambda u: u.upload_id)

    def abort_incomplete(self, item: IncompleteUpload) -> None:
        name = item.upload_id
        if not name or "/" in name or name in (".", ".."):
            raise SinkError(f"invalid temporary file name {name!r}")
        try:
            (self.root / INCOMPLETE_DIR / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SinkError(f"cannot delete {self.url}/{INCOMPLETE_DIR}/{name}: {e.strerror}") from e


class LocalObjectWriter:
    """Appends parts in number order; parts that arrive early wait in memory (bounded by the caller's concurrency)."""

    def __init__(self, sink: LocalSink, key: str, tmp: Path) -> None:
        self._sink = sink
        self._key = key
        self._tmp = tmp
        self._lock = threading.Lock()
        self._file = open(tmp, "wb")  # noqa: SIM115 - closed in complete/abort
        self._next = 1
        self._early: dict[int, bytes] = {}
        self._done = False

    def write_part(self, number: int, data: bytes, sha256: bytes) -> None:
        with self._lock:
            if self._done:
                raise SinkError(f"upload of {self._key} is already finished")
            if number < self._next or number in self._early:
                raise SinkError(f"part {number} of {self._key} written twice")
            self._early[number] = data
            try:
                while self._next in self._early:
                    self._file.write(self._early.pop(self._next))
                    self._next += 1
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise SinkError(f"no space left writing {self._sink.url}/{self._key}") from e
                raise SinkError(f"cannot write {self._sink.url}/{self._key}: {e.strerror}") from e

    def complete(self) -> ObjectInfo:
        with self._lock:
            if self._done:
                raise SinkError(f"upload of {self._key} is already finished")
            if self._early:
                missing = self._next
                raise SinkError(f"cannot complete {self._key}: part {missing} was never written")
            self._done = True
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
        self._sink._publish(self._tmp, self._key, if_absent=True)
        return self._sink._info(self._key, self._sink._path(self._key))

    def abort(self) -> None:
        with self._lock:
            self._done = True
            self._early.clear()
            if not self._file.closed:
                self._file.close()
            self._tmp.unlink(missing_ok=True)
