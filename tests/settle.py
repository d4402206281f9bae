"""The one way tests wait for a server to settle: poll a probe until a condition holds, under a deadline.

Clustered servers need a moment after a restore, an election or a peer change (gotchas G7, G12 in the cluster
reference): a test polls for the state it expects rather than sleeping. After the deadline the last value comes back
(``eventually``) so the caller's assertion shows what the server said, or :func:`until` raises naming it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

EVERY = 0.2  # seconds between probes


def eventually(probe: Callable[[], T], done: Callable[[T], bool], deadline_s: float = 20.0, every: float = EVERY) -> T:
    """``probe()`` once ``done`` holds for it; after ``deadline_s``, the last value."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(every)


def until(probe: Callable[[], T], done: Callable[[T], bool], what: str, deadline_s: float = 20.0) -> T:
    """As :func:`eventually`, but an AssertionError naming ``what`` and the last value if it never holds."""
    value = eventually(probe, done, deadline_s)
    assert done(value), f"{what}: not so after {deadline_s:g} s; last seen: {value!r}"
    return value


async def eventually_async(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    deadline_s: float = 20.0,
    every: float = EVERY,
    transient: tuple[type[BaseException], ...] = (),
) -> T | None:
    """``await probe()`` once ``done`` holds for it; errors of a ``transient`` type count as not yet (a stream with
    no leader answers with no responders or a timeout). After the deadline, the last value (None if every probe
    failed)."""
    deadline = time.monotonic() + deadline_s
    value: T | None = None
    while True:
        try:
            value = await probe()
            if done(value):
                return value
        except transient:
            pass
        if time.monotonic() >= deadline:
            return value
        await asyncio.sleep(every)
