"""`--at TIME`: the newest backup (or set) created at or before a time, for restore, drill, export and inspect."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

import click

from pipeline.base.errors import UsageError, setting

F = TypeVar("F", bound=Callable[..., object])

TIME_FORMS = "RFC 3339, e.g. 2026-11-23T22:00:00Z, or a duration ago: 90m, 2h, 3d"


def at_option(what: str = "backup") -> Callable[[F], F]:
    """The ``--at TIME`` option; ``what`` is what it picks (``"backup"``, ``"set"``)."""
    verb = "finished" if what == "set" else "created"
    return click.option("--at", "at", metavar="TIME", help=f"the newest {what} {verb} at or before TIME ({TIME_FORMS})")


def parse_at(text: str | None) -> dt.datetime | None:
    """``--at``'s value as an aware UTC datetime (None when not given); a bad one is a UsageError naming it."""
    if text is None:
        return None
    from pipeline.format.selection import parse_datetime  # deferred: a command without --at need not load it

    try:
        return parse_datetime(text)
    except UsageError as e:
        raise UsageError(f"{setting('at')}: {e.template}") from None


def exclusive(at: str | None, other: object, other_name: str) -> None:
    """``--at`` and another way of naming the backup or set together: exit 2. ``other_name`` is a message fragment,
    its settings as :func:`setting` references (``f"{setting('backup')} ID"``)."""
    if at is not None and other:
        raise UsageError(f"give {other_name} or {setting('at')} TIME, not both")
