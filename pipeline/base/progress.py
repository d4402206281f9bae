"""Progress reporting as a tiny callback interface, so the library has no opinion on how it is shown.

Bytes are the stream's bytes (what natscli counts), not the compressed bytes on the wire: a phase's total is the
stream's size, known before the first byte moves (the snapshot response's state, a backup's manifest). How the
front ends write them is shared here, so a bar on a terminal and a log line say the same things in the same
(IEC) units.
"""

from __future__ import annotations

from typing import Protocol

from pipeline.base.units import human_bytes


class Progress(Protocol):
    def start(self, task: str, total: int | None) -> None:
        """A phase begins; ``total`` bytes if known."""

    def advance(self, nbytes: int) -> None: ...

    def finish(self, summary: str = "", *, what: str = "") -> None:
        """The phase completed: its bar is filled and one closing line says what it moved, in how long and how fast,
        then ``summary`` (what was stored or read). ``what`` the bytes were, when it needs saying (``stream``: the
        stream's bytes, not the bytes on the wire)."""

    def abort(self, reason: str = "interrupted") -> None:
        """The phase stopped short: its bar stays where it got to and says ``reason``, never that it completed."""

    def log(self, message: str) -> None:
        """A line for people (shown above a bar, or as a log line without one)."""

    def part(self) -> Progress:
        """A progress of its own for one of the phases running at once inside this one (a stream of an account
        run): its own bar and closing line; its bytes count towards this one's as well."""


class NoProgress:
    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self, summary: str = "", *, what: str = "") -> None:
        pass

    def abort(self, reason: str = "interrupted") -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def part(self) -> Progress:
        return self


class SharedProgress:
    """A phase's view of an outer progress without a display of its own: its bytes add to the outer bar, its
    start/finish are not shown. For front ends whose progress has no :meth:`Progress.part` worth having."""

    def __init__(self, outer: Progress) -> None:
        self.outer = outer

    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        self.outer.advance(nbytes)

    def finish(self, summary: str = "", *, what: str = "") -> None:
        pass

    def abort(self, reason: str = "interrupted") -> None:
        pass

    def log(self, message: str) -> None:
        self.outer.log(message)

    def part(self) -> Progress:
        return SharedProgress(self)


# -- how every front end words it ------------------------------------------------------------------------------


def clock(seconds: float | None) -> str:
    """``0:01:23`` (what rich's time columns show), ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def rate(nbytes: float, seconds: float) -> str:
    return f"{human_bytes(nbytes / max(seconds, 1e-6))}/s"


def amount(done: float, total: int | None) -> str:
    """``12.3 MiB of 40.0 MiB (30.8%)``, or ``12.3 MiB`` without a total."""
    if not total:
        return human_bytes(done)
    return f"{human_bytes(done)} of {human_bytes(total)} ({100 * done / total:.1f}%)"


def eta(done: float, total: int | None, seconds: float) -> float | None:
    """Seconds left at the average rate so far (None before anything moved, or without a total)."""
    if not total or done <= 0 or seconds <= 0:
        return None
    return max(total - done, 0) * seconds / done


def running_line(task: str, done: float, total: int | None, seconds: float) -> str:
    """``backup ORDERS: 12.3 MiB of 40.0 MiB (30.8%), 6.1 MiB/s, eta 0:00:05``"""
    line = f"{task}: {amount(done, total)}, {rate(done, seconds)}"
    return line + (f", eta {clock(eta(done, total, seconds))}" if total else "")


def closing_line(task: str, done: float, seconds: float, summary: str = "", what: str = "") -> str:
    """``backup ORDERS: 813.0 MiB (stream) in 1.22 s, 666.4 MiB/s; 34.1 MiB stored in 5 blocks``

    natscli's closing line is the model ("Received … in … chunks … in 1.22s, 813 MiB uncompressed").
    """
    line = f"{task}: {human_bytes(done)}{f' ({what})' if what else ''} in {seconds:.2f} s, {rate(done, seconds)}"
    return line + (f"; {summary}" if summary else "")


def interrupted_line(task: str, done: float, total: int | None, seconds: float, reason: str = "interrupted") -> str:
    """``restore ORDERS: interrupted at 12.3 MiB of 40.0 MiB (30.8%) after 2.01 s``"""
    return f"{task}: {reason} at {amount(done, total)} after {seconds:.2f} s"


class ScaledAdvance:
    """``progress.advance`` for bytes that stand for others in a known ratio: the bytes sent to the server for
    the stream's bytes they carry (``factor`` = stream bytes / bytes to send), rounded without drift."""

    def __init__(self, progress: Progress, factor: float = 1.0) -> None:
        self.progress = progress
        self.factor = factor
        self._seen = 0
        self._counted = 0

    def __call__(self, nbytes: int) -> None:
        self._seen += nbytes
        now = int(self._seen * self.factor)
        self.progress.advance(now - self._counted)
        self._counted = now
