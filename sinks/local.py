"""A directory as an archive: the embedded default.

Every object is written to a temporary file under ``.incomplete/``, fsynced, and then hard-linked into place, which
is atomic and never replaces an existing file, so a reader sees either nothing or the whole object.

Whoever can write into the archive directory must not be able to turn jsarchive against files outside it (a
``.incomplete`` symlink made ``prune --confirm`` delete another directory's files). So below the root nothing is
reached by a path: every operation opens the root once and then each directory component with
``O_DIRECTORY | O_NOFOLLOW`` relative to its parent's descriptor, and the object itself with ``O_NOFOLLOW`` (or
``unlinkat`` / ``linkat`` / ``fstatat`` relative to that descriptor). A symlink swapped in at any moment can then
only make the open fail, never redirect it. A symlink, or anything but a regular file or a directory, where the
archive holds objects is refused with :class:`ArchiveTampered`; listings do not descend into symlinked directories.
The root path itself is resolved as given: choosing where the archive lives is the operator's business.

Objects are created ``0600`` and directories ``0700`` whatever the umask (restic's choice: backups are as
sensitive as the data). Committed objects stay ``0600`` rather than ``0400``: they are never rewritten (publishing
is a hard link that refuses to replace), and a read-only mode would not stop their owner anyway. Existing files and
directories keep the modes they have.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from sinks.base import (
    AccessDenied,
    Capabilities,
    IncompleteUpload,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    Retention,
    SinkError,
    Unsupported,
)
from sinks.parts import OrderedParts

INCOMPLETE_DIR = ".incomplete"
FILE_MODE = 0o600
DIR_MODE = 0o700

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted as an object must fail the type check, not hang waiting for a writer.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class ArchiveTampered(AccessDenied):
    """A symlink (or a device, FIFO, socket, a file where a directory belongs) inside a local archive.

    jsarchive never creates one, so someone changed the directory; the operation is refused before it touches
    anything. It is an :class:`AccessDenied`: permanent, never retried, and the pipeline reports it with exit 10
    (the archive may not be used this way), not as a store that could not be reached.
    """


def describe_mode(mode: int) -> str:
    """What a file of this ``st_mode`` is, for messages (a symbolic link, a directory, a FIFO, ...)."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a regular file"


_NO_RETENTION = "a local directory cannot enforce retention; use an S3 or GCS archive for locked backups"


class LocalSink:
    # A directory cannot enforce Object Lock and keeps no versions; its temporary files are its unfinished uploads.
    capabilities = Capabilities(incomplete_uploads=True)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)

    @classmethod
    def from_url(cls, url: str) -> LocalSink:
        path = url[len("file://") :] if url.startswith("file://") else url
        if not path:
            raise SinkError(f"archive URL {url!r} names no directory")
        return cls(path)

    def is_transient(self, error: BaseException) -> bool:
        return False  # a full disk or a refused path does not fix itself between attempts

    def retention_unsupported(self) -> str | None:
        return _NO_RETENTION

    # -- keys and descriptors ----------------------------------------------------------------------------------
    def _parts(self, key: str) -> list[str]:
        parts = key.split("/")
        if not key or "\x00" in key or any(p in ("", ".", "..") for p in parts) or parts[0] == INCOMPLETE_DIR:
            raise SinkError(f"invalid object key {key!r}")
        return parts

    def _tampered(self, rel: str, what: str, expected: str) -> ArchiveTampered:
        return ArchiveTampered(
            f"{self.url}/{rel} is {what} where the archive keeps {expected}: refusing to use it (jsarchive never "
            "creates one; something else changed the archive directory)"
        )

    def _refusal(self, parent: int, name: str, rel: str, err: OSError, expected: str) -> SinkError:
        """The error for an ``open`` of ``name`` (under ``parent``) that failed with ``err``: what stands there
        instead of ``expected`` ("a directory" or "a regular file"), if that is why."""
        try:
            found = describe_mode(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            found = None
        if found is not None and found != expected:
            return self._tampered(rel, found, expected)
        if err.errno == errno.ENOSPC:
            return SinkError(f"no space left on the device of {self.url} (at {rel})")
        return SinkError(f"cannot open {self.url}/{rel}: {err.strerror}")

    def _root_fd(self, *, create: bool) -> int | None:
        """The root directory, opened; None if it does not exist and ``create`` is false."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # the root may be a symlink: the operator chose it
        try:
            return os.open(self.root, flags)
        except FileNotFoundError:
            if not create:
                return None
        except NotADirectoryError:
            raise SinkError(f"archive {self.url} is not a directory") from None
        except OSError as e:
            raise SinkError(f"cannot open archive directory {self.url}: {e.strerror}") from e
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            created = False
            try:
                os.mkdir(self.root, DIR_MODE)
                created = True
            except FileExistsError:
                pass  # another writer created it meanwhile
            fd = os.open(self.root, flags)
            if created:
                os.fchmod(fd, DIR_MODE)  # the umask may have taken bits away
            return fd
        except OSError as e:
            raise SinkError(f"cannot create archive directory {self.url}: {e.strerror}") from e

    def _child_dir(self, parent: int, name: str, rel: str, *, create: bool) -> int | None:
        """``name`` under ``parent`` as a directory, never through a symlink; None if missing and not ``create``."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as e:
            raise self._refusal(parent, name, rel, e, "a directory") from None
        created = False
        try:
            os.mkdir(name, DIR_MODE, dir_fd=parent)
            created = True
        except FileExistsError:
            pass
        except OSError as e:
            raise self._refusal(parent, name, rel, e, "a directory") from None
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)  # what was created may have been swapped meanwhile
        except OSError as e:
            raise self._refusal(parent, name, rel, e, "a directory") from None
        if created:
            os.fchmod(fd, DIR_MODE)  # the umask may have taken bits away
        return fd

    def _dir_fd(self, dirs: list[str], *, create: bool) -> int | None:
        """The directory ``root/dirs…``, opened component by component; None if a component is missing."""
        fd = self._root_fd(create=create)
        rel = ""
        for name in dirs:
            if fd is None:
                return None
            rel = f"{rel}/{name}" if rel else name
            try:
                child = self._child_dir(fd, name, rel, create=create)
            finally:
                os.close(fd)
            fd = child
        return fd

    def _open_object(self, key: str) -> int:
        """A read descriptor for the regular file ``key``; :class:`ObjectNotFound` if it does not exist."""
        parts = self._parts(key)
        parent = self._dir_fd(parts[:-1], create=False)
        if parent is None:
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        try:
            try:
                fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                raise ObjectNotFound(f"{self.url}/{key} does not exist") from None
            except OSError as e:
                raise self._refusal(parent, parts[-1], key, e, "a regular file") from None
        finally:
            os.close(parent)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise self._tampered(key, describe_mode(mode), "a regular file")
        return fd

    def _new_temp(self) -> tuple[int, str, int]:
        """(``.incomplete`` descriptor, file name, write descriptor) of a fresh temporary file, mode 0600."""
        inc = self._dir_fd([INCOMPLETE_DIR], create=True)
        assert inc is not None
        name = uuid.uuid4().hex
        try:
            fd = os.open(name, _NEW_FLAGS, FILE_MODE, dir_fd=inc)
        except OSError as e:
            os.close(inc)
            if e.errno == errno.ENOSPC:
                raise SinkError(f"no space left on the device of {self.url}") from None
            raise SinkError(f"cannot create a temporary file in {self.url}/{INCOMPLETE_DIR}: {e.strerror}") from e
        os.fchmod(fd, FILE_MODE)  # whatever the umask
        return inc, name, fd

    def _publish(self, inc: int, tmp: str, key: str, *, if_absent: bool) -> ObjectInfo:
        """Move a finished temporary file into place; with ``if_absent`` never replace an existing object."""
        parts = self._parts(key)
        try:
            parent = self._dir_fd(parts[:-1], create=True)
        except SinkError:
            _unlink_quietly(tmp, inc)
            raise
        assert parent is not None
        try:
            try:
                if if_absent:
                    os.link(tmp, parts[-1], src_dir_fd=inc, dst_dir_fd=parent, follow_symlinks=False)
                    os.unlink(tmp, dir_fd=inc)
                else:
                    self._check_replaceable(parent, parts[-1], key)
                    os.replace(tmp, parts[-1], src_dir_fd=inc, dst_dir_fd=parent)
            except FileExistsError:
                _unlink_quietly(tmp, inc)
                self._check_replaceable(parent, parts[-1], key)
                raise ObjectExists(f"{self.url}/{key} already exists; archive objects are never overwritten") from None
            except SinkError:
                _unlink_quietly(tmp, inc)
                raise
            except OSError as e:
                _unlink_quietly(tmp, inc)
                if e.errno == errno.ENOSPC:
                    raise SinkError(f"no space left storing {self.url}/{key}") from None
                raise SinkError(f"cannot store {self.url}/{key}: {e.strerror}") from e
            try:
                os.fsync(parent)
                st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except OSError as e:
                raise SinkError(f"cannot store {self.url}/{key}: {e.strerror}") from e
        finally:
            os.close(parent)
        return self._info_of(key, st)

    def _check_replaceable(self, parent: int, name: str, key: str) -> None:
        """Refuse when ``name`` is there and is not a regular file (a symlink is replaced, never followed, by
        ``rename``; but it is still a sign that someone changed the archive)."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return  # gone, or unreadable: the rename that follows reports what matters
        if not stat.S_ISREG(st.st_mode):
            raise self._tampered(key, describe_mode(st.st_mode), "a regular file")

    @staticmethod
    def _info_of(key: str, st: os.stat_result) -> ObjectInfo:
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
            raise Unsupported(_NO_RETENTION)
        if self.head(key) is not None:
            raise ObjectExists(f"{self.url}/{key} already exists; archive objects are never overwritten")
        inc, name, fd = self._new_temp()
        return LocalObjectWriter(self, key, inc, name, fd)

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> ObjectInfo:
        if retention is not None:
            raise Unsupported(_NO_RETENTION)
        self._parts(key)  # a bad key fails before a temporary file exists
        inc, name, fd = self._new_temp()
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError as e:
                _unlink_quietly(name, inc)
                raise _write_error(self.url, key, e) from e
            finally:
                os.close(fd)
            return self._publish(inc, name, key, if_absent=if_absent)
        finally:
            os.close(inc)

    def get(self, key: str) -> bytes:
        fd = self._open_object(key)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as e:
            raise SinkError(f"cannot read {self.url}/{key}: {e.strerror}") from e
        finally:
            os.close(fd)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        fd = self._open_object(key)
        try:
            out = bytearray()
            while len(out) < length:
                chunk = os.pread(fd, length - len(out), start + len(out))
                if not chunk:
                    break  # past the end: what there is, as S3 and GCS return
                out += chunk
            return bytes(out)
        except OSError as e:
            raise SinkError(f"cannot read {self.url}/{key}: {e.strerror}") from e
        finally:
            os.close(fd)

    def head(self, key: str) -> ObjectInfo | None:
        parts = self._parts(key)
        parent = self._dir_fd(parts[:-1], create=False)
        if parent is None:
            return None
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise SinkError(f"cannot read {self.url}/{key}: {e.strerror}") from e
        finally:
            os.close(parent)
        if not stat.S_ISREG(st.st_mode):
            raise self._tampered(key, describe_mode(st.st_mode), "a regular file")
        return self._info_of(key, st)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order (as S3 and GCS list them)."""
        # Walk only the directory the prefix names, so listing one stream's refs does not scan the data.
        base_dir, _, _ = prefix.rpartition("/")
        dirs = base_dir.split("/") if base_dir else []
        if "\x00" in prefix or any(p in ("", ".", "..") for p in dirs) or (dirs and dirs[0] == INCOMPLETE_DIR):
            raise SinkError(f"invalid listing prefix {prefix!r}")
        fd = self._dir_fd(dirs, create=False)
        if fd is None:
            return
        yield from self._walk(fd, base_dir, prefix)

    def _walk(self, fd: int, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under the open directory ``fd`` (``rel`` from the root); closes ``fd``."""
        try:
            try:
                names = os.listdir(fd)
            except OSError as e:
                raise SinkError(f"cannot list {self.url}/{rel}: {e.strerror}") from e
            entries = []
            for name in names:
                if not rel and name == INCOMPLETE_DIR:
                    continue
                key = f"{rel}/{name}" if rel else name
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted meanwhile
                except OSError as e:
                    raise SinkError(f"cannot list {self.url}/{key}: {e.strerror}") from e
                is_dir = stat.S_ISDIR(st.st_mode)
                wanted = key.startswith(prefix) or (is_dir and prefix.startswith(key + "/"))
                if not wanted:
                    continue
                if not is_dir and not stat.S_ISREG(st.st_mode):
                    raise self._tampered(key, describe_mode(st.st_mode), "regular files and directories")
                # Sorting directories as "name/" makes the walk yield keys in plain lexicographic order.
                entries.append((name + "/" if is_dir else name, name, key, st))
            for _sort, name, key, st in sorted(entries):
                if not stat.S_ISDIR(st.st_mode):
                    yield self._info_of(key, st)
                    continue
                child = self._child_dir(fd, name, key, create=False)
                if child is not None:
                    yield from self._walk(child, key, prefix)
        finally:
            os.close(fd)

    def thaw(self, key: str, *, days: int, tier: str) -> str:
        if self.head(key) is None:
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        return "available"  # a directory has no cold storage

    def delete(self, key: str) -> None:
        """Remove ``key``: only a regular file reached without following any symlink, so never anything outside."""
        parts = self._parts(key)
        parent = self._dir_fd(parts[:-1], create=False)
        if parent is None:
            return
        try:
            self._unlink_object(parent, parts[-1], key)
        finally:
            os.close(parent)

    def _unlink_object(self, parent: int, name: str, key: str) -> None:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise self._tampered(key, describe_mode(st.st_mode), "a regular file")
            # unlinkat never follows the last component: a file swapped for a symlink meanwhile removes the link.
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SinkError(f"cannot delete {self.url}/{key}: {e.strerror}") from e

    def purge(self, key: str) -> None:
        self.delete(key)  # a directory keeps no versions

    def list_incomplete(self, older_than: dt.datetime | None = None) -> list[IncompleteUpload]:
        """Temporary files under ``.incomplete/`` last written before ``older_than``: uploads of a writer that
        died before completing or aborting (a live writer keeps its file's modification time fresh)."""
        inc = self._dir_fd([INCOMPLETE_DIR], create=False)
        if inc is None:
            return []
        out = []
        try:
            try:
                names = os.listdir(inc)
            except OSError as e:
                raise SinkError(f"cannot list {self.url}/{INCOMPLETE_DIR}: {e.strerror}") from e
            for name in names:
                try:
                    st = os.stat(name, dir_fd=inc, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # completed or aborted meanwhile
                except OSError as e:
                    raise SinkError(f"cannot list {self.url}/{INCOMPLETE_DIR}/{name}: {e.strerror}") from e
                if stat.S_ISLNK(st.st_mode):
                    raise self._tampered(f"{INCOMPLETE_DIR}/{name}", "a symbolic link", "temporary files")
                if not stat.S_ISREG(st.st_mode):
                    continue  # not one of ours, and never opened
                modified = dt.datetime.fromtimestamp(st.st_mtime, tz=dt.timezone.utc)
                if older_than is None or modified < older_than:
                    out.append(IncompleteUpload("", name, modified, modified, st.st_size))
        finally:
            os.close(inc)
        return sorted(out, key=lambda u: u.upload_id)

    def abort_incomplete(self, item: IncompleteUpload) -> None:
        name = item.upload_id
        if not name or "/" in name or "\x00" in name or name in (".", ".."):
            raise SinkError(f"invalid temporary file name {name!r}")
        inc = self._dir_fd([INCOMPLETE_DIR], create=False)
        if inc is None:
            return
        try:
            self._unlink_object(inc, name, f"{INCOMPLETE_DIR}/{name}")
        finally:
            os.close(inc)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _write_error(url: str, key: str, e: OSError) -> SinkError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return SinkError(f"no space left writing {url}/{key}")
    if e.errno == errno.EFBIG:
        return SinkError(f"cannot write {url}/{key}: the file size limit was reached")
    return SinkError(f"cannot write {url}/{key}: {e.strerror}")


def _unlink_quietly(name: str, dir_fd: int) -> None:
    with contextlib.suppress(OSError):  # the original failure is the one to report; prune collects what is left
        os.unlink(name, dir_fd=dir_fd)


class LocalObjectWriter:
    """Appends parts in number order; parts that arrive early wait in memory (bounded by the caller's concurrency)."""

    def __init__(self, sink: LocalSink, key: str, inc: int, tmp: str, fd: int) -> None:
        self._sink = sink
        self._key = key
        self._inc = inc  # .incomplete/, opened without following symlinks
        self._tmp = tmp
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self._parts = OrderedParts(key)
        self._done = False

    def write_part(self, number: int, data: bytes, sha256: bytes) -> None:
        with self._lock:
            if self._done or self._fd is None:
                raise SinkError(f"upload of {self._key} is already finished")
            self._parts.add(number, data, sha256)
            try:
                while (part := self._parts.take()) is not None:
                    _write_all(self._fd, part.data)
            except OSError as e:
                raise _write_error(self._sink.url, self._key, e) from e

    def complete(self) -> ObjectInfo:
        with self._lock:
            if self._done or self._fd is None:
                raise SinkError(f"upload of {self._key} is already finished")
            self._parts.check_complete()
            self._done = True
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)  # delayed allocation may report a full disk only here
            except OSError as e:
                _unlink_quietly(self._tmp, self._inc)
                self._close_dir()
                raise _write_error(self._sink.url, self._key, e) from e
            finally:
                os.close(fd)
        try:
            return self._sink._publish(self._inc, self._tmp, self._key, if_absent=True)
        finally:
            self._close_dir()

    def abort(self) -> None:
        with self._lock:
            self._done = True
            self._parts.clear()
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
                _unlink_quietly(self._tmp, self._inc)
            self._close_dir()

    def _close_dir(self) -> None:
        inc, self._inc = self._inc, -1
        if inc >= 0:
            os.close(inc)
