"""Retry policies as values: how long to keep trying, and which errors (or answers) are worth another try.

One idiom for every retry and every poll on the NATS side (sinks have the same in sinks/retry.py, which may not import
this package): a tenacity policy built from a budget (seconds or tries) and a typed predicate, never a string match on
a message and never a hand-written sleep loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def attempts(tries: int, is_transient: Callable[[BaseException], bool], *, pause: float) -> tenacity.AsyncRetrying:
    """As :func:`within`, with a number of tries for the budget."""
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_fixed(pause),
        stop=tenacity.stop_after_attempt(tries),
        reraise=True,
    )


def until(
    done: Callable[[Any], bool], *, pause: float, budget: float | None = None, tries: int | None = None
) -> tenacity.AsyncRetrying:
    """Poll: call a probe again, ``pause`` seconds apart, until its answer satisfies ``done`` or the budget is spent
    (``budget`` seconds since the first call, or ``tries`` calls; neither: no limit). The policy returns the last
    answer either way: whether one that is not done is a failure, and which, is the caller's to say. An error the
    probe raises is not retried."""
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_not_result(done),
        wait=tenacity.wait_fixed(pause),
        stop=_stop(budget, tries),
        retry_error_callback=_last_answer,
    )


def until_sync(done: Callable[[Any], bool], *, pause: float, budget: float | None = None) -> tenacity.Retrying:
    """:func:`until` for a blocking probe."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_not_result(done),
        wait=tenacity.wait_fixed(pause),
        stop=_stop(budget, None),
        retry_error_callback=_last_answer,
    )


def _stop(budget: float | None, tries: int | None) -> tenacity.stop.stop_base:
    stops = [tenacity.stop_after_delay(budget)] if budget is not None else []
    stops += [tenacity.stop_after_attempt(tries)] if tries is not None else []
    return tenacity.stop_any(*stops) if stops else tenacity.stop_never


def _last_answer(state: tenacity.RetryCallState) -> Any:
    assert state.outcome is not None  # called only after an attempt
    return state.outcome.result()
