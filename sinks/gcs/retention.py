"""GCS object retention and holds: a Retention as upload fields, as GCS reports it, and whether a bucket retains.

``GOVERNANCE`` is ``Unlocked`` retention, ``COMPLIANCE`` ``Locked``; ``legal_hold`` is a temporary hold; a bucket
retention policy's expiry is reported as mode ``BUCKET``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sinks.base import ObjectNotFound, Retention, SinkError
from sinks.gcs.times import _format_time, _parse_time


def _retention_fields(retention: Retention | None) -> dict[str, Any]:
    """Object resource fields for a retention request (the object retention API, plus a temporary hold)."""
    if retention is None:
        return {}
    mode = retention.mode.upper()
    if mode not in ("GOVERNANCE", "COMPLIANCE"):
        raise SinkError(f"unknown retention mode {retention.mode!r} (expected GOVERNANCE or COMPLIANCE)")
    fields: dict[str, Any] = {
        # GOVERNANCE = "Unlocked" (may be shortened or removed with storage.objects.overrideUnlockedRetention);
        # COMPLIANCE = "Locked" (can only be extended, by nobody shortened or removed).
        "retention": {
            "mode": "Locked" if mode == "COMPLIANCE" else "Unlocked",
            "retainUntilTime": _format_time(retention.until),
        },
    }
    if retention.legal_hold:
        fields["temporaryHold"] = True
    return fields


def _retention_of(resource: dict[str, Any]) -> Retention | None:
    """Retention as GCS reports it: object retention, else the bucket policy's expiry (mode ``BUCKET``)."""
    hold = bool(resource.get("temporaryHold"))
    r = resource.get("retention") or {}
    until = _parse_time(r.get("retainUntilTime"))
    if until is not None:
        mode = "COMPLIANCE" if str(r.get("mode", "")).lower() == "locked" else "GOVERNANCE"
        return Retention(mode=mode, until=until, legal_hold=hold)
    until = _parse_time(resource.get("retentionExpirationTime"))
    if until is not None:
        return Retention(mode="BUCKET", until=until, legal_hold=hold)
    if hold or resource.get("eventBasedHold"):
        # A hold without a retention time (as S3's legal hold alone): no mode, and a date that has passed.
        return Retention(mode="", until=dt.datetime.fromtimestamp(0, dt.timezone.utc), legal_hold=True)
    return None


class BucketRetention:
    """The per-bucket retention questions of :class:`~sinks.gcs.sink.GCSSink`: a mixin, it works through the sink's
    ``_request``, ``_guard``, ``endpoint``, ``bucket`` and ``url``."""

    def retention_unsupported(self) -> str | None:
        """Why this bucket cannot retain objects (object retention not enabled, and no bucket retention policy),
        asked before a locked backup starts; None if it can, or if the credentials may not read the bucket."""
        url = f"{self.endpoint}/storage/v1/b/{self.bucket}?fields=objectRetention,retentionPolicy"
        with self._guard("reading the bucket's retention settings of", self.url):
            r = self._request("GET", url, ok=(200, 401, 403, 404))
        if r.status_code == 404:
            raise ObjectNotFound(f"bucket {self.bucket} does not exist (archive {self.url})")
        if r.status_code != 200:
            return None
        doc = r.json() if r.content else {}
        if (doc.get("objectRetention") or {}).get("mode") == "Enabled" or doc.get("retentionPolicy"):
            return None
        return f"bucket {self.bucket} has neither object retention enabled nor a retention policy"

    def _retention_refused(self, target: str, message: str) -> str:
        return (
            f"GCS refused to write {target} with a retention lock (400: {message}). Per-object retention needs a "
            f"bucket created with object retention enabled (gcloud storage buckets create gs://{self.bucket} "
            "--enable-per-object-retention; terraform: enable_object_retention = true); a bucket with a locked "
            "retention policy protects every object without a per-object lock"
        )
