"""Bandwidth limits as a layer around a sink (restic's --limit-upload / --limit-download).

:class:`LimitedSink` charges every byte written (multipart parts, small puts) to an upload :class:`TokenBucket`
and every byte read (whole and ranged reads) to a download one. :func:`sinks.open_sink` puts it between the adapter
and :class:`~sinks.retry.RetryingSink`, so a retried attempt, which sends its bytes again, is charged again.

The buckets are shared per process (:func:`shared_bucket`): an account backup opens one sink per stream and runs
several streams at once, and the limit is for the whole run, not for each of them.

Bytes are charged per call, never split: a call larger than the bucket's burst borrows ahead and the calls after
it wait until the debt is paid, so over any stretch of time no more than ``burst + rate × seconds`` bytes pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sinks.base import (
    ObjectInfo,
    ObjectWriter,
    Retention,
    Sink,
    SinkOptions,
    SinkWrapper,
)


class TokenBucket:
    """``rate`` bytes per second, with up to ``burst`` bytes (default: one second's worth) available at once.

    Thread-safe. :meth:`take` reserves under a lock and sleeps outside it, so threads queue up in the order they
    asked and none of them holds the others back while it waits.
    """

    def __init__(
        self,
        rate: int,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"a rate limit must be positive, not {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst)  # a run starts with a full bucket, as restic's does
        self._stamp = clock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst})"

    def take(self, n: int) -> float:
        """Charge ``n`` bytes; returns the seconds waited for them."""
        if n <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


_SHARED: dict[tuple[str, int], TokenBucket] = {}
_SHARED_LOCK = threading.Lock()


def shared_bucket(direction: str, rate: int) -> TokenBucket:
    """The process's bucket for ``direction`` ("upload" | "download") at ``rate`` bytes per second."""
    with _SHARED_LOCK:
        bucket = _SHARED.get((direction, rate))
        if bucket is None:
            bucket = _SHARED[(direction, rate)] = TokenBucket(rate)
        return bucket


def limited(sink: Sink, options: SinkOptions) -> Sink:
    """``sink`` inside a :class:`LimitedSink` if ``options`` sets a limit; ``sink`` itself otherwise."""
    up, down = options.limit_upload, options.limit_download
    if not up and not down:
        return sink
    return LimitedSink(
        sink,
        upload=shared_bucket("upload", up) if up else None,
        download=shared_bucket("download", down) if down else None,
    )


class LimitedWriter:
    """An :class:`~sinks.base.ObjectWriter` whose parts are charged to the upload bucket before they are sent."""

    def __init__(self, inner: ObjectWriter, bucket: TokenBucket) -> None:
        self.inner = inner
        self.bucket = bucket

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def write_part(self, number: int, data: bytes, sha256: bytes) -> None:
        self.bucket.take(len(data))
        self.inner.write_part(number, data, sha256)

    def complete(self) -> ObjectInfo:
        return self.inner.complete()

    def abort(self) -> None:
        self.inner.abort()


class LimitedSink(SinkWrapper):
    """A :class:`~sinks.base.Sink` that holds each transfer of ``inner`` to its bucket's rate (None: no limit).

    Metadata calls (head, list, delete, thaw, ...) are not charged: their bodies are small and restic leaves them
    out too. Attributes that are not part of the protocol are read from ``inner``, as with RetryingSink.
    """

    def __init__(self, inner: Sink, *, upload: TokenBucket | None = None, download: TokenBucket | None = None) -> None:
        super().__init__(inner)
        self.upload = upload
        self.download = download

    def __repr__(self) -> str:
        return f"LimitedSink({self.inner!r}, upload={self.upload!r}, download={self.download!r})"

    # -- transfers: charged ------------------------------------------------------------------------------------
    def open_writer(
        self,
        key: str,
        *,
        part_size: int,
        metadata: dict[str, str] | None = None,
        storage_class: str | None = None,
        retention: Retention | None = None,
    ) -> ObjectWriter:
        writer = self.inner.open_writer(
            key, part_size=part_size, metadata=metadata, storage_class=storage_class, retention=retention
        )
        return LimitedWriter(writer, self.upload) if self.upload is not None else writer

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> ObjectInfo:
        if self.upload is not None:
            self.upload.take(len(data))
        return self.inner.put(key, data, if_absent=if_absent, retention=retention)

    def get(self, key: str) -> bytes:
        # The size is known only once the bytes are here: the wait comes after, and holds back the next read.
        data = self.inner.get(key)
        if self.download is not None:
            self.download.take(len(data))
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = self.inner.get_range(key, start, length)
        if self.download is not None:
            self.download.take(len(data))
        return data
