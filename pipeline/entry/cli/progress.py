"""The command line's progress displays: a rich bar per phase on a terminal, log lines elsewhere.

Both say the same things in the same IEC units (their wording is pipeline.base.progress's): the stream's bytes
against its size, rate, time left, and one closing line with the throughput. A phase that stops short is shown
where it stopped and says so; its bar is never filled.
"""

from __future__ import annotations

import time
from typing import Any

import click

from pipeline.base.display import safe
from pipeline.base.progress import (
    Progress,
    clock,
    closing_line,
    interrupted_line,
    running_line,
)
from pipeline.base.units import human_bytes

# The bar being drawn: every line for people is printed through its console meanwhile, above the bar, so a
# result line never lands in the middle of the bar's line (stdout and stderr are the same terminal then).
_live: list[RichProgress] = []


def live_console() -> Any | None:
    return _live[-1].console if _live else None


def abort_live(reason: str = "interrupted") -> None:
    """Stop the bar being drawn, every phase still open marked ``reason``: before an error is printed, so that
    neither a half-done bar nor a hidden cursor is left behind."""
    for root in list(_live):
        for node in reversed(list(root._open)):
            node.abort(reason)
        root._hide()


class LogProgress:
    """Log lines on stderr: for schedulers, pipes and --no-progress.

    ``HH:MM:SS <task>: started (40.0 MiB)``, every ``every`` seconds
    ``HH:MM:SS <task>: 12.3 MiB of 40.0 MiB (30.8%), 6.1 MiB/s, eta 0:00:05``, and at the end
    ``HH:MM:SS <task>: 40.0 MiB (stream) in 6.52 s, 6.1 MiB/s; …`` or ``HH:MM:SS <task>: interrupted at … after … s``.
    """

    def __init__(self, every: float = 5.0, parent: LogProgress | None = None) -> None:
        self.every = every
        self.parent = parent
        self.task = ""
        self.total: int | None = None
        self.done = 0
        self.t0 = self.last = 0.0
        self.running = False

    def start(self, task: str, total: int | None) -> None:
        self.task, self.total, self.done, self.running = task, total, 0, True
        self.t0 = self.last = time.monotonic()
        self.log(f"{task}: started" + (f" ({human_bytes(total)})" if total else ""))

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.parent is not None:
            self.parent.advance(nbytes)
        now = time.monotonic()
        if self.running and now - self.last >= self.every:
            self.last = now
            self.log(running_line(self.task, self.done, self.total, now - self.t0))

    def finish(self, summary: str = "", *, what: str = "") -> None:
        if self.running:
            self.running = False
            moved = self.total or self.done
            if self.parent is not None and moved > self.done:  # the account's count says the stream's bytes too
                self.parent.advance(moved - self.done)
            self.log(closing_line(self.task, moved, time.monotonic() - self.t0, summary, what))

    def abort(self, reason: str = "interrupted") -> None:
        if self.running:
            self.running = False
            self.log(interrupted_line(self.task, self.done, self.total, time.monotonic() - self.t0, reason))

    def log(self, message: str) -> None:
        click.echo(safe(f"{time.strftime('%H:%M:%S')} {message}"), err=True)

    def part(self) -> Progress:
        return LogProgress(self.every, parent=self)


class RichProgress:
    """A progress bar on a terminal (stderr, so stdout stays clean for results).

    One row per phase: the account run's, and one per stream running in it (:meth:`part`); a finished stream's
    row gives way to its closing line, printed above the rows still running.
    """

    def __init__(self, parent: RichProgress | None = None) -> None:
        self.parent = parent
        self.task = ""
        self.total: int | None = None
        self.done = 0
        self.t0 = 0.0
        self._id: Any = None
        if parent is not None:
            self.console, self._bar, self._root = parent.console, parent._bar, parent._root
            return
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RP

        self._root = self
        self._shown = False
        self._open: list[RichProgress] = []  # phases started and not yet finished or aborted
        self.console = Console(stderr=True)
        self._bar = RP(
            TextColumn("{task.description}"),
            BarColumn(),
            _bytes_column(),
            _rate_column(),
            _time_column(),
            console=self.console,
            transient=False,
        )

    def _show(self) -> None:
        root = self._root
        if not root._shown:
            root._shown = True
            self._bar.start()
            _live.append(root)

    def _hide(self) -> None:
        root = self._root
        if root._shown:
            root._shown = False
            self._bar.stop()
            if root in _live:
                _live.remove(root)

    def start(self, task: str, total: int | None) -> None:
        from rich.markup import escape

        self._show()
        self.task, self.total, self.done, self.t0 = task, total, 0, time.monotonic()
        # The description column reads rich markup, and task names carry stream names.
        self._id = self._bar.add_task(escape(safe(task)), total=total)
        self._root._open.append(self)

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self._id is not None:
            if self.total and self.done > self.total:
                # the snapshot decodes to more than the stream's state said (a V1 snapshot's blocks keep deleted
                # messages' space): the total grows rather than the bar running past its end
                self.total = self.done
                self._bar.update(self._id, total=self.total)
            self._bar.advance(self._id, nbytes)
        if self.parent is not None:
            self.parent.advance(nbytes)

    def finish(self, summary: str = "", *, what: str = "") -> None:
        if self._id is None:
            return
        task_id, self._id = self._id, None
        moved = self.total or self.done
        if self.parent is not None and moved > self.done:  # the account's count says the stream's bytes too
            self.parent.advance(moved - self.done)
        self._bar.update(task_id, total=moved, completed=moved)  # completed: every byte of the stream
        self._bar.stop_task(task_id)
        self._close(task_id, closing_line(self.task, moved, time.monotonic() - self.t0, summary, what))

    def abort(self, reason: str = "interrupted") -> None:
        if self._id is None:
            return
        from rich.markup import escape

        task_id, self._id = self._id, None
        self._bar.stop_task(task_id)
        self._bar.update(task_id, description=escape(safe(f"{self.task}: {reason}")))
        self._close(task_id, interrupted_line(self.task, self.done, self.total, time.monotonic() - self.t0, reason))

    def _close(self, task_id: Any, line: str) -> None:
        if self in self._root._open:
            self._root._open.remove(self)
        if self.parent is not None:
            self._bar.remove_task(task_id)  # a stream of an account run: its line replaces its row
            self.log(line)
        else:
            self._hide()  # the final frame stays on the screen, the closing line under it
            self.log(line)

    def log(self, message: str) -> None:
        from rich.text import Text

        self.console.print(Text(safe(message)))

    def part(self) -> Progress:
        return RichProgress(parent=self)


def _bytes_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class BytesColumn(ProgressColumn):
        """``12.3 MiB / 40.0 MiB``: the stream's bytes against its size, in the units of every other line."""

        def render(self, task: Any) -> Text:
            done = human_bytes(task.completed)
            return Text(f"{done} / {human_bytes(task.total)}" if task.total else done, style="progress.download")

    return BytesColumn()


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            # the recent rate while it runs; once it ended, the average, as the closing line says it
            ended = task.finished or task.stop_time is not None
            speed = task.completed / task.elapsed if ended and task.elapsed else task.speed
            return Text(f"{human_bytes(speed)}/s" if speed is not None else "?/s", style="progress.data.speed")

    return RateColumn()


def _time_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class TimeColumn(ProgressColumn):
        """Elapsed, and while a phase with a known total runs, the time left at the recent rate."""

        def render(self, task: Any) -> Text:
            text = clock(task.elapsed or 0.0)
            if task.total and not task.finished and task.stop_time is None:
                text += f" eta {clock(task.time_remaining)}"
            return Text(text, style="progress.remaining")

    return TimeColumn()
