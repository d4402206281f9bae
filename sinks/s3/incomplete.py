"""Multipart uploads left behind under the sink's prefix: finding them (with their last activity) and aborting them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sinks.base import IncompleteUpload, ObjectNotFound, SinkError
from sinks.s3.wire import _utc


class IncompleteUploads:
    """ListMultipartUploads / ListParts / AbortMultipartUpload for :class:`~sinks.s3.sink.S3Sink`: a mixin, it works
    through the sink's ``client``, ``_call``, ``_key``, ``_what`` and ``_page_size``."""

    def list_incomplete(self, older_than: dt.datetime | None = None) -> list[IncompleteUpload]:
        """Multipart uploads under the prefix that were started, and had their last part uploaded, before
        ``older_than`` (ListMultipartUploads, then ListParts for each candidate)."""
        base = f"{self.prefix}/" if self.prefix else ""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base, "MaxUploads": self._page_size}
        out = []
        while True:
            page = self._call(self.url, lambda kw=dict(kwargs): self.client.list_multipart_uploads(**kw))
            for up in page.get("Uploads") or []:
                started = _utc(up["Initiated"]) if up.get("Initiated") is not None else None
                if older_than is not None and started is not None and started >= older_than:
                    continue
                item = self._upload_activity(up["Key"][len(base) :], up["Key"], up["UploadId"], started)
                if item is None:
                    continue  # completed or aborted meanwhile
                if older_than is None or item.last_activity is None or item.last_activity < older_than:
                    out.append(item)
            if not page.get("IsTruncated"):
                return out
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")

    def _upload_activity(
        self, key: str, full: str, upload_id: str, started: dt.datetime | None
    ) -> IncompleteUpload | None:
        last, size = started, 0
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "UploadId": upload_id}
        while True:
            try:
                page = self._call(self._what(key), lambda kw=dict(kwargs): self.client.list_parts(**kw))
            except SinkError as e:
                if getattr(e, "_s3_code", None) == "NoSuchUpload" or isinstance(e, ObjectNotFound):
                    return None
                raise
            for part in page.get("Parts") or []:
                size += int(part.get("Size", 0))
                if part.get("LastModified") is not None:
                    t = _utc(part["LastModified"])
                    last = t if last is None or t > last else last
            if not page.get("IsTruncated"):
                return IncompleteUpload(key, upload_id, started, last, size)
            kwargs["PartNumberMarker"] = page.get("NextPartNumberMarker")

    def abort_incomplete(self, item: IncompleteUpload) -> None:
        full = self._key(item.key)
        try:
            self._call(
                self._what(item.key),
                lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=item.upload_id),
            )
        except SinkError as e:
            if getattr(e, "_s3_code", None) != "NoSuchUpload":
                raise
