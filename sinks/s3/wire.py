"""Small conversions between Python values and S3 request / response fields (version ids, checksums, dates)."""

from __future__ import annotations

import base64
import datetime as dt


def _version(version_id: str | None) -> dict[str, str]:
    """VersionId for a follow-up call on the version just written. "null" (unversioned bucket) is left out: S3
    accepts it but moto answers 400, and without it the call addresses the same, current object anyway."""
    return {"VersionId": version_id} if version_id and version_id != "null" else {}


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)
