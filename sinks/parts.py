"""Numbered parts that arrive in any order, handed on in number order: the one reorder buffer every writer uses."""

from __future__ import annotations

from typing import NamedTuple

from sinks.base import SinkError


class Part(NamedTuple):
    number: int
    data: bytes
    sha256: bytes


class OrderedParts:
    """Parts numbered from 1, accepted in any order; :meth:`take` yields them strictly in number order.

    Parts that arrive before their predecessors wait here, so memory is bounded by the caller's parts in flight
    (the writer may hold callers back further). Not locked: the writer's own lock guards it, because what the writer
    does with a run of parts (append to a file, cut an S3 part, fill an upload buffer) must happen under that lock.
    """

    def __init__(self, what: str) -> None:
        self._what = what  # the object, for messages
        self._early: dict[int, Part] = {}
        self.next = 1  # the number :meth:`take` hands on next

    def add(self, number: int, data: bytes, sha256: bytes) -> None:
        """Accept part ``number``; a number below 1 or one seen before is refused."""
        if number < 1:
            raise SinkError(f"part numbers start at 1 (got {number}) for {self._what}")
        if number < self.next or number in self._early:
            raise SinkError(f"part {number} of {self._what} written twice")
        self._early[number] = Part(number, data, sha256)

    def ready(self) -> bool:
        """Whether :meth:`take` has a part to hand on."""
        return self.next in self._early

    def take(self) -> Part | None:
        """The next part in order, or None if it has not arrived yet."""
        part = self._early.pop(self.next, None)
        if part is not None:
            self.next += 1
        return part

    def taken(self, number: int) -> bool:
        """Whether part ``number`` has been handed on already."""
        return number < self.next

    def waiting(self) -> list[int]:
        """The numbers of parts that wait for a predecessor."""
        return sorted(self._early)

    def check_complete(self) -> None:
        """Refuse to complete while a part waits for a predecessor that was never written."""
        if self._early:
            raise SinkError(f"cannot complete {self._what}: part {self.next} was never written")

    def clear(self) -> None:
        """Drop every waiting part (an abort or a failure): the memory is freed at once."""
        self._early.clear()
