"""The one retry policy the sinks share: jittered exponential backoff on transient errors, bounded in time."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")


def retrying(budget: float, is_transient: Callable[[BaseException], bool]) -> tenacity.Retrying:
    """Retry while ``is_transient(error)`` and less than ``budget`` seconds have passed; then re-raise the error."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
        stop=tenacity.stop_after_delay(budget),
        reraise=True,
    )


def call(budget: float, is_transient: Callable[[BaseException], bool], fn: Callable[..., T], *args, **kwargs) -> T:
    return retrying(budget, is_transient)(fn, *args, **kwargs)
