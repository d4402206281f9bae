"""S3 Object Lock: retention and legal hold as request headers, as reported by HEAD, and made sure of after a write."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from sinks.base import AccessDenied, Retention, SinkError
from sinks.s3.wire import _utc, _version

LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


def _check_retention(retention: Retention | None) -> None:
    if retention is not None and retention.mode not in LOCK_MODES:
        raise SinkError(f"unknown Object Lock mode {retention.mode!r} (expected GOVERNANCE or COMPLIANCE)")


def _lock_params(retention: Retention | None) -> dict[str, Any]:
    if retention is None:
        return {}
    params: dict[str, Any] = {"ObjectLockMode": retention.mode, "ObjectLockRetainUntilDate": _utc(retention.until)}
    if retention.legal_hold:
        params["ObjectLockLegalHoldStatus"] = "ON"
    return params


def _retention_met(head: dict[str, Any], want: Retention) -> tuple[bool, bool]:
    """Whether the object's reported lock satisfies ``want``: (mode and retain-until, legal hold).

    COMPLIANCE satisfies a GOVERNANCE request, and a later retain-until date an earlier one (a bucket default may be
    stricter than what was asked for). S3 keeps retain-until dates to the second or millisecond, hence the slack.
    """
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    strength = {"GOVERNANCE": 1, "COMPLIANCE": 2}
    time_ok = (
        mode in strength
        and until is not None
        and strength[mode] >= strength[want.mode]
        and _utc(until) >= _utc(want.until) - dt.timedelta(seconds=1)
    )
    hold_ok = not want.legal_hold or head.get("ObjectLockLegalHoldStatus") == "ON"
    return time_ok, hold_ok


def _retention_of(head: dict[str, Any]) -> Retention | None:
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    hold = head.get("ObjectLockLegalHoldStatus") == "ON"
    if mode and until is not None:
        return Retention(mode=mode, until=_utc(until), legal_hold=hold)
    if hold:
        # A legal hold without a retention period. Retention has no way to say "no mode, no date", so mode is ""
        # and the date is the epoch (already passed: nothing but the hold protects the object).
        return Retention(mode="", until=dt.datetime.fromtimestamp(0, dt.timezone.utc), legal_hold=True)
    return None


class ObjectLock:
    """The Object Lock side of :class:`~sinks.s3.sink.S3Sink`: a mixin, it works through the sink's ``client``,
    ``_call``, ``_key``, ``_what`` and ``_head``."""

    def retention_unsupported(self) -> str | None:
        """Why this bucket cannot lock objects, asked before a locked backup starts; None if it can (or if the
        credentials may not read the bucket's lock configuration: then the first locked upload will say)."""
        try:
            resp = self._call(self.url, lambda: self.client.get_object_lock_configuration(Bucket=self.bucket))
        except AccessDenied:
            return None
        except SinkError as e:
            if getattr(e, "_s3_code", "") == "ObjectLockConfigurationNotFoundError":
                return f"bucket {self.bucket} does not have Object Lock enabled"
            raise
        if (resp.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") != "Enabled":
            return f"bucket {self.bucket} does not have Object Lock enabled"
        return None

    def _confirm_retention(self, key: str, retention: Retention, version_id: str | None) -> dict[str, Any]:
        """HEAD the object; if it lacks the requested lock, apply it with PutObjectRetention / PutObjectLegalHold.

        Real S3 applies the Object Lock headers of PutObject and CreateMultipartUpload itself; this covers stores
        that drop them on one path (moto 5.x does on multipart uploads).
        """
        what = self._what(key)
        full = self._key(key)
        version = _version(version_id)
        head = self._head(key, **version)
        if head is None:
            raise SinkError(f"{what} vanished right after it was written")
        time_ok, hold_ok = _retention_met(head, retention)
        if time_ok and hold_ok:
            return head
        try:
            return self._apply_retention(key, retention, version, time_ok, hold_ok)
        except SinkError:
            # The object is complete but not protected as asked. Remove it rather than leave a finished-looking,
            # unlocked copy (best effort: if part of the lock did apply, the delete is refused and prune collects it).
            with contextlib.suppress(SinkError):
                self._call(what, lambda: self.client.delete_object(Bucket=self.bucket, Key=full, **version))
            raise

    def _apply_retention(
        self, key: str, retention: Retention, version: dict[str, str], time_ok: bool, hold_ok: bool
    ) -> dict[str, Any]:
        what = self._what(key)
        full = self._key(key)
        if not time_ok:
            lock = {"Mode": retention.mode, "RetainUntilDate": _utc(retention.until)}
            self._call(
                what,
                lambda: self.client.put_object_retention(Bucket=self.bucket, Key=full, Retention=lock, **version),
            )
        if not hold_ok:
            self._call(
                what,
                lambda: self.client.put_object_legal_hold(
                    Bucket=self.bucket, Key=full, LegalHold={"Status": "ON"}, **version
                ),
            )
        head = self._head(key, **version)
        if head is None or not all(_retention_met(head, retention)):
            raise SinkError(
                f"{what} was written, but the store does not report the requested Object Lock ({retention.mode} "
                f"until {_utc(retention.until).isoformat()}{', legal hold' if retention.legal_hold else ''}); "
                f"is Object Lock enabled on bucket {self.bucket}?"
            )
        return head
