"""The sink interface: small objects, multipart writers, ranged reads, listing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol


class SinkError(Exception):
    """A storage operation failed; the message says which object and why."""


class ObjectExists(SinkError):
    """A create-only write found the key already present."""


class ObjectNotFound(SinkError):
    """The key does not exist."""


@dataclass(frozen=True)
class Retention:
    """Object Lock / bucket-lock retention to apply to new objects."""

    mode: str  # GOVERNANCE | COMPLIANCE
    until: dt.datetime
    legal_hold: bool = False


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: dt.datetime | None = None
    storage_class: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class ObjectWriter(Protocol):
    """One large object written as numbered parts (1-based) that are concatenated in number order."""

    def write_part(self, number: int, data: bytes, sha256: bytes) -> None:
        """Store part ``number``. Thread-safe; parts may arrive in any order."""

    def complete(self) -> ObjectInfo:
        """Make the object visible under its key. Every part from 1 to the highest number must have been written."""

    def abort(self) -> None:
        """Discard everything written; the key stays absent. Safe to call more than once."""


class Sink(Protocol):
    url: str

    def open_writer(
        self,
        key: str,
        *,
        part_size: int,
        metadata: dict[str, str] | None = None,
        storage_class: str | None = None,
        retention: Retention | None = None,
    ) -> ObjectWriter: ...

    def put(self, key: str, data: bytes, *, if_absent: bool = True) -> ObjectInfo: ...

    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, start: int, length: int) -> bytes: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...
