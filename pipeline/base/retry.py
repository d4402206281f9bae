"""Retry policies as values: how long to keep trying, and which errors are worth another try.

One idiom for every retry on the NATS side (sinks have the same in sinks/retry.py, which may not import this
package): a tenacity policy built from a time budget and a typed predicate, never a string match on a message.
"""

from __future__ import annotations

from collections.abc import Callable

import tenacity


def within(
    budget: float, is_transient: Callable[[BaseException], bool], *, pause: float = 0.5
) -> tenacity.AsyncRetrying:
    """Retry while ``is_transient(error)`` and less than ``budget`` seconds have passed, ``pause`` seconds apart;
    then (or at once, for an error that is not transient) re-raise the last error."""
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_fixed(pause),
        stop=tenacity.stop_after_delay(budget),
        reraise=True,
    )
