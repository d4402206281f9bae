"""The time budget of an invocation: whether a stream can still finish before the platform ends the run.

Lambda says how much time is left; elsewhere the limit is ``$JSARCHIVE_TIME_LIMIT`` from the start. A stream that
cannot finish at the observed rate is not started but deferred, for a later attempt of the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.entry.cloud import env as envvars

DEFAULT_MARGIN = 30.0  # seconds kept free at the end of an invocation: sealing, the summary, the metrics
DEFAULT_ASSUMED_RATE = 20 * 1024 * 1024  # stream bytes/s per stream before any stream has been measured
DEFAULT_TIME_LIMIT = 3600.0  # Cloud Functions 2nd gen (HTTP): the platform's longest timeout
STREAM_OVERHEAD = 2.0  # seconds a stream costs beyond its bytes: snapshot request, manifest, ref, run record
ESTIMATE_SLACK = 1.5  # estimates are multiplied by this: a stream killed half-way costs more than one deferred
MIN_SAMPLE_SECONDS = 1.0  # streams shorter than this say more about the fixed overhead than about the rate


@dataclass
class TimeBudget:
    """Whether a stream can still finish before the invocation ends, at the rate streams have shown so far.

    The estimate for a stream of B bytes is ``STREAM_OVERHEAD + ESTIMATE_SLACK × B / rate``, where ``rate`` is the
    stream bytes per second of the streams finished in this invocation that took at least a second (per stream, so
    parallel streams sharing the link are measured as they run), or ``assumed_rate`` before there is one.
    """

    remaining_ms: Callable[[], float]
    margin: float = DEFAULT_MARGIN
    assumed_rate: float = DEFAULT_ASSUMED_RATE
    _bytes: int = 0
    _seconds: float = 0.0

    def observe(self, nbytes: int, seconds: float) -> None:
        if seconds >= MIN_SAMPLE_SECONDS and nbytes > 0:
            self._bytes += nbytes
            self._seconds += seconds

    @property
    def rate(self) -> tuple[float, str]:
        if self._seconds > 0:
            return self._bytes / self._seconds, "observed"
        return float(self.assumed_rate), "assumed"

    def left(self) -> float:
        return self.remaining_ms() / 1000.0 - self.margin

    def estimate(self, nbytes: int) -> float:
        return STREAM_OVERHEAD + ESTIMATE_SLACK * nbytes / self.rate[0]

    def admit(self, stream: str, nbytes: int) -> str | None:
        """None if ``stream`` fits; else why it is deferred."""
        from pipeline.base.units import human_bytes

        need, left = self.estimate(nbytes), self.left()
        if need <= left:
            return None
        rate, how = self.rate
        return (
            f"deferred: {stream} ({human_bytes(nbytes)}) needs about {need:.0f} s at {human_bytes(rate)}/s "
            f"({how}), {max(left, 0.0):.0f} s are left before the {self.margin:g} s safety margin"
        )


def budget_for(env: Mapping[str, str], remaining_ms: Callable[[], float] | None) -> TimeBudget:
    """The invocation's budget: the platform's ``remaining_ms``, else ``$JSARCHIVE_TIME_LIMIT`` seconds from now,
    with the margin and assumed rate the environment sets."""
    if remaining_ms is None:
        limit = envvars.seconds(env, "JSARCHIVE_TIME_LIMIT", DEFAULT_TIME_LIMIT)
        deadline = time.monotonic() + limit
        remaining_ms = lambda: (deadline - time.monotonic()) * 1000.0  # noqa: E731
    return TimeBudget(
        remaining_ms,
        margin=envvars.seconds(env, "JSARCHIVE_SAFETY_MARGIN", DEFAULT_MARGIN),
        assumed_rate=envvars.size(env, "JSARCHIVE_ASSUMED_RATE", DEFAULT_ASSUMED_RATE),
    )
