"""Retrying as a layer around a sink (restic's RetryBackend): one policy value, one typed transient predicate.

Adapters make one attempt per call and raise :class:`~sinks.base.TransientError` for what may succeed on another
try; :class:`RetryingSink` repeats such calls with jittered exponential backoff inside the policy's budget.
:func:`sinks.open_sink` puts every adapter inside one. Other layers (rate limits, dry runs, fault injection) can
wrap a sink the same way, since each of them is a :class:`~sinks.base.Sink` again.

The steps of a multipart upload are the exception: which bytes a retried chunk must carry depends on the writer's
state (S3 joins parts cut by any thread, a GCS resumable upload first asks where to resume), so writers repeat
their own network steps under the same :class:`RetryPolicy` value, handed to them by their sink.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from sinks.base import (
    IncompleteUpload,
    ObjectExists,
    ObjectInfo,
    ObjectWriter,
    Retention,
    Sink,
    SinkError,
    SinkOptions,
    SinkWrapper,
)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient errors with jittered exponential backoff until ``budget`` seconds have passed."""

    # The pipeline relies on one call staying under ~4 s (SinkOptions.retry_budget): a slow store must never stall
    # the NATS side into its 5 s timeout.
    budget: float = SinkOptions.retry_budget
    multiplier: float = 0.05
    max_wait: float = 1.0

    @classmethod
    def from_options(cls, options: SinkOptions) -> RetryPolicy:
        return cls(budget=options.retry_budget)

    def retrying(self, is_transient: Callable[[BaseException], bool]) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_random_exponential(multiplier=self.multiplier, max=self.max_wait),
            stop=tenacity.stop_after_delay(self.budget),
            reraise=True,
        )

    def call(self, is_transient: Callable[[BaseException], bool], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, repeated while it raises what ``is_transient`` accepts and budget is left."""
        return self.retrying(is_transient)(fn, *args, **kwargs)


class RetryingSink(SinkWrapper):
    """A :class:`~sinks.base.Sink` that delegates every call to ``inner`` under ``policy``.

    Attributes that are not part of the protocol (``bucket``, ``root``, ``client`` ...) are read from ``inner``.
    """

    def __init__(self, inner: Sink, policy: RetryPolicy) -> None:
        super().__init__(inner)
        self.policy = policy

    def __repr__(self) -> str:
        return f"RetryingSink({self.inner!r}, {self.policy!r})"

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.policy.call(self.inner.is_transient, fn, *args, **kwargs)

    # -- Sink ------------------------------------------------------------------------------------------------------
    def open_writer(
        self,
        key: str,
        *,
        part_size: int,
        metadata: dict[str, str] | None = None,
        storage_class: str | None = None,
        retention: Retention | None = None,
    ) -> ObjectWriter:
        # Starting an upload is not idempotent either: an attempt whose answer was lost leaves an unfinished upload
        # behind, which list_incomplete finds (and a lifecycle rule or GCS's one-week expiry removes).
        return self._call(
            self.inner.open_writer,
            key,
            part_size=part_size,
            metadata=metadata,
            storage_class=storage_class,
            retention=retention,
        )

    def put(self, key: str, data: bytes, *, if_absent: bool = True, retention: Retention | None = None) -> ObjectInfo:
        failed_before = False

        def once() -> ObjectInfo:
            nonlocal failed_before
            try:
                return self.inner.put(key, data, if_absent=if_absent, retention=retention)
            except ObjectExists:
                # A create-only write retried after an attempt that reached the store but lost its answer meets its
                # own object: that is success, not a conflict, if the object holds exactly our bytes.
                if not failed_before or (info := self._ours(key, data, retention)) is None:
                    raise
                return info
            except BaseException as e:
                failed_before = failed_before or self.inner.is_transient(e)
                raise

        return self._call(once)

    def _ours(self, key: str, data: bytes, retention: Retention | None) -> ObjectInfo | None:
        # The size first: an object planted under the key is never read whole, whatever its size.
        info = self.inner.head(key)
        if info is None or info.size != len(data):
            return None
        if data and self.inner.get_range(key, 0, len(data)) != data:
            return None
        if retention is not None and info.retention is None:
            raise SinkError(
                f"{self.url}/{key} was stored by an attempt whose answer was lost, but the store reports no "
                "retention on it"
            )
        return info

    def get(self, key: str) -> bytes:
        return self._call(self.inner.get, key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._call(self.inner.get_range, key, start, length)

    def head(self, key: str) -> ObjectInfo | None:
        return self._call(self.inner.head, key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """The inner listing, fetched item by item under the policy. A transient failure restarts the listing and
        skips what was already yielded (listings are in key order), so every item gets the whole budget and the
        caller's own time between items never counts against it."""
        last: str | None = None
        items: Iterator[ObjectInfo] | None = None

        def next_item() -> ObjectInfo | None:
            nonlocal items
            if items is None:
                items = iter(self.inner.list(prefix))
            try:
                for info in items:
                    if last is None or info.key > last:
                        return info
                return None
            except BaseException:
                items = None
                raise

        while (info := self._call(next_item)) is not None:
            last = info.key
            yield info

    def delete(self, key: str) -> None:
        self._call(self.inner.delete, key)

    def thaw(self, key: str, *, days: int, tier: str) -> str:
        return self._call(self.inner.thaw, key, days=days, tier=tier)

    def purge(self, key: str) -> None:
        self._call(self.inner.purge, key)

    def list_incomplete(self, older_than: dt.datetime | None = None) -> list[IncompleteUpload]:
        return self._call(self.inner.list_incomplete, older_than)

    def abort_incomplete(self, item: IncompleteUpload) -> None:
        self._call(self.inner.abort_incomplete, item)

    def retention_unsupported(self) -> str | None:
        return self._call(self.inner.retention_unsupported)
