"""Cold storage: which S3 objects must be restored before a GET, their restore state, and RestoreObject (thaw)."""

from __future__ import annotations

import re
from typing import Any

import botocore.exceptions as bce

from sinks.base import ObjectNotFound, SinkError

COLD_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})  # need RestoreObject before GET (GLACIER_IR does not)
COLD_ARCHIVE_STATUS = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})  # Intelligent-Tiering archive tiers
TIERS = ("Standard", "Bulk", "Expedited")

_RESTORE_ONGOING = re.compile(r'ongoing-request\s*=\s*"(true|false)"', re.IGNORECASE)


def restore_state(header: str | None) -> str | None:
    """The ``x-amz-restore`` header as a thaw state: None (never restored), "ongoing" or "available"."""
    if not header:
        return None
    m = _RESTORE_ONGOING.search(header)
    if m is None:
        return None
    return "ongoing" if m.group(1).lower() == "true" else "available"


class ColdStorage:
    """Thawing for :class:`~sinks.s3.sink.S3Sink`: a mixin, it works through the sink's ``client``, ``_call``,
    ``_key``, ``_what`` and ``head``."""

    def thaw(self, key: str, *, days: int, tier: str) -> str:
        if tier not in TIERS:
            raise SinkError(f"unknown restore tier {tier!r} (expected one of {', '.join(TIERS)})")
        if days < 1:
            raise SinkError(f"a thaw must keep the restored copy for at least 1 day (got {days})")
        full = self._key(key)
        what = self._what(key)
        info = self.head(key)
        if info is None:
            raise ObjectNotFound(f"{what} does not exist")
        if not info.archived:
            return "available"
        if info.thaw == "ongoing":
            return "ongoing"
        request: dict[str, Any] = {"GlacierJobParameters": {"Tier": tier}}
        if info.storage_class != "INTELLIGENT_TIERING":
            request["Days"] = days  # Intelligent-Tiering archive restores move the object back; they take no Days

        def once() -> str:
            try:
                resp = self.client.restore_object(Bucket=self.bucket, Key=full, RestoreRequest=request)
            except bce.ClientError as e:
                if e.response.get("Error", {}).get("Code") == "RestoreAlreadyInProgress":
                    return "ongoing"
                raise
            # 202 Accepted: a restore was started; 200 OK: a restored copy already exists (its expiry was extended)
            return "available" if resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 200 else "started"

        return self._call(what, once)
