"""Progress reporting as a tiny callback interface, so the library has no opinion on how it is shown."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, task: str, total: int | None) -> None:
        """A phase begins; ``total`` bytes if known."""

    def advance(self, nbytes: int) -> None: ...

    def finish(self) -> None: ...

    def log(self, message: str) -> None:
        """A line for people (shown above a bar, or as a log line without one)."""


class NoProgress:
    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def log(self, message: str) -> None:
        pass


class SharedProgress:
    """One stream's view of the account's progress: its bytes add to the account's bar, start/finish are not its."""

    def __init__(self, outer: Progress) -> None:
        self.outer = outer

    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        self.outer.advance(nbytes)

    def finish(self) -> None:
        pass

    def log(self, message: str) -> None:
        self.outer.log(message)
