"""A lease in a NATS KV bucket: one holder at a time for a long-running job on a stream (``stream follow``).

The key is created only if absent (KV ``create``), renewed by an update at the revision the holder last wrote
(so a holder that lost the key cannot renew someone else's), and deleted at that revision on release. The bucket's
``max_age`` is the lease's time to live: a holder that dies without releasing stops renewing, and its key ages out
after at most that long. Buckets with a per-bucket age work on every server with KV (2.6+), unlike per-key TTLs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig

from pipeline.base.errors import ConflictError, JsArchiveError, ServerRefused
from pipeline.jetstream.client import JetStream

_KEY_SAFE = re.compile(r"[-_A-Za-z0-9]{1,200}")


class LeaseHeld(ConflictError):
    """Another holder has the lease (exit 6)."""


class LeaseLost(ConflictError):
    """The lease was taken over or expired while it was held (exit 6)."""


def lease_key(kind: str, stream: str) -> str:
    """``<kind>.<stream>``; a stream name KV keys cannot spell becomes a hash of it."""
    if _KEY_SAFE.fullmatch(stream):
        return f"{kind}.{stream}"
    return f"{kind}.sha256-{hashlib.sha256(stream.encode()).hexdigest()[:32]}"


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    def __init__(self, js: JetStream, bucket: str, key: str, ttl: float, holder: str | None = None) -> None:
        self.js = js
        self.bucket = bucket
        self.key = key
        self.ttl = ttl
        self.holder = holder or holder_id()
        self.revision: int | None = None
        self._kv = None

    async def _bucket(self):  # noqa: ANN202 - nats-py's KeyValue
        ctx = self.js.nc.jetstream(timeout=10)
        try:
            return await ctx.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            pass
        try:
            return await ctx.create_key_value(KeyValueConfig(bucket=self.bucket, history=1, ttl=self.ttl))
        except nats.js.errors.APIError as e:
            raise ServerRefused(f"cannot create the lease bucket {self.bucket!r}: {e.description or e}") from None

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder}).encode()

    async def acquire(self) -> None:
        """Take the lease, or :class:`LeaseHeld` naming who has it."""
        self._kv = await self._bucket()
        try:
            self.revision = await self._kv.create(self.key, self._value())
        except nats.js.errors.KeyWrongLastSequenceError:
            raise LeaseHeld(
                f"{self.key} is held by {await self._current_holder()} (lease in KV bucket {self.bucket!r}, "
                f"expires at most {self.ttl:g} s after its holder stops renewing it); not starting a second one"
            ) from None
        except (nats.errors.Error, nats.js.errors.Error) as e:
            raise JsArchiveError(f"cannot take the lease {self.key} in bucket {self.bucket!r}: {e}") from None

    async def _current_holder(self) -> str:
        try:
            entry = await self._kv.get(self.key)
            return str(json.loads(entry.value or b"{}").get("holder", "another process"))
        except Exception:  # noqa: BLE001 - only used to word the refusal
            return "another process"

    async def renew(self) -> None:
        """Write the lease again at the revision this holder wrote; :class:`LeaseLost` if it is not ours now."""
        assert self._kv is not None and self.revision is not None
        try:
            self.revision = await self._kv.update(self.key, self._value(), last=self.revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            raise LeaseLost(f"the lease {self.key} in bucket {self.bucket!r} was lost (expired or taken)") from None

    async def release(self) -> None:
        """Delete the lease if it is still this holder's; never anyone else's."""
        if self._kv is None or self.revision is None:
            return
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):  # expired or taken: nothing of ours
            await self._kv.delete(self.key, last=self.revision)
        self.revision = None
