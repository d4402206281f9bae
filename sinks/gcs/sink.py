"""The GCS sink itself: bucket and prefix, endpoint and session, one-attempt requests, names, URLs and resources.

The object operations, resumable uploads and retention are mixins from the sibling modules; this class holds the
state they share.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import requests

from sinks.base import Capabilities, ObjectInfo, ObjectNotFound, SinkError, SinkOptions, TransientError
from sinks.gcs.client import DEFAULT_ENDPOINT, TIMEOUT, connect, resolve_endpoint
from sinks.gcs.errors import _HTTPStatus, _message, to_sink_error, transient
from sinks.gcs.objects import ObjectOperations
from sinks.gcs.resumable import ResumableUploads
from sinks.gcs.retention import BucketRetention, _retention_of
from sinks.gcs.times import _parse_time
from sinks.retry import RetryPolicy

T = TypeVar("T")


class GCSSink(ObjectOperations, ResumableUploads, BucketRetention):
    # Object retention or a bucket retention policy (checked per bucket: retention_unsupported). Every storage class
    # reads at once, purge removes the live generation only, and resumable sessions cannot be listed.
    capabilities = Capabilities(retention_lock=True)

    def __init__(self, bucket: str, prefix: str = "", options: SinkOptions | None = None) -> None:
        if not bucket or "/" in bucket:
            raise SinkError(f"invalid GCS bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.options = options or SinkOptions()
        self.policy = RetryPolicy.from_options(self.options)  # for the writer's chunks and clean-ups
        self.url = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        self.project: str | None = None
        self.endpoint, self.anonymous = resolve_endpoint(self.options)
        # Check for an existing object before create-only writes where preconditions may be ignored (see sinks.gcs).
        self.precheck_create = self.endpoint != DEFAULT_ENDPOINT
        self._session: requests.Session | None = None
        self._connect_lock = threading.Lock()
        self._bucket_seen = False

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> GCSSink:
        scheme, sep, rest = url.partition("://")
        if scheme != "gs" or not sep:
            raise SinkError(f"not a GCS archive URL: {url!r} (expected gs://bucket/prefix)")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise SinkError(f"archive URL {url!r} names no bucket")
        return cls(bucket, prefix, options)

    # -- connection ------------------------------------------------------------------------------------------------
    def _http(self) -> requests.Session:
        """The authorized session, created on first use (so opening a sink needs no credentials yet)."""
        with self._connect_lock:
            if self._session is None:
                self._session = self._connect()
            return self._session

    def _connect(self) -> requests.Session:
        session, self.project = connect(self.anonymous, self.url)
        return session

    # -- names and URLs --------------------------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or any(ord(c) < 32 for c in key):
            raise SinkError(f"invalid object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _target(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}"

    def _object_url(self, name: str, *, media: bool = False) -> str:
        quoted = urllib.parse.quote(name, safe="")
        if media:
            return f"{self.endpoint}/download/storage/v1/b/{self.bucket}/o/{quoted}?alt=media"
        return f"{self.endpoint}/storage/v1/b/{self.bucket}/o/{quoted}"

    def _upload_url(self, upload_type: str, if_absent: bool) -> str:
        query = {"uploadType": upload_type}
        if if_absent:
            query["ifGenerationMatch"] = "0"
        return f"{self.endpoint}/upload/storage/v1/b/{self.bucket}/o?{urllib.parse.urlencode(query)}"

    # -- requests, retries and errors ------------------------------------------------------------------------------
    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, TransientError)

    def _retry(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` under the sink's retry policy: for the writer and clean-ups, which no wrapper can repeat."""
        return self.policy.call(transient, fn, *args, **kwargs)

    def _request(self, method: str, url: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        """One JSON API call, one attempt; a status outside ``ok`` raises :class:`_HTTPStatus`."""
        kwargs.setdefault("timeout", TIMEOUT)
        response = self._http().request(method, url, **kwargs)
        if response.status_code not in ok:
            raise _HTTPStatus(response)
        return response

    def _translate(self, e: BaseException, doing: str, target: str) -> SinkError:
        return to_sink_error(
            e, doing, target, url=self.url, endpoint=self.endpoint, retry_budget=self.options.retry_budget
        )

    @contextlib.contextmanager
    def _guard(self, doing: str, target: str) -> Iterator[None]:
        try:
            yield
        except SinkError:
            raise
        except Exception as e:
            raise self._translate(e, doing, target) from e

    def _check_bucket(self, response: requests.Response | None = None) -> None:
        """After a 404: raise ObjectNotFound naming the bucket if the bucket itself is missing."""
        if response is not None and "specified bucket does not exist" in _message(response).lower():
            raise ObjectNotFound(f"bucket {self.bucket} does not exist (archive {self.url})")
        if self._bucket_seen:
            return
        url = f"{self.endpoint}/storage/v1/b/{self.bucket}?fields=name"
        r = self._request("GET", url, ok=(200, 401, 403, 404))
        if r.status_code == 404:
            raise ObjectNotFound(f"bucket {self.bucket} does not exist (archive {self.url})")
        if r.status_code == 200:  # 401/403: not allowed to look at the bucket, so assume it exists
            self._bucket_seen = True

    # -- object resources ------------------------------------------------------------------------------------------
    def _key_of(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    def _info(self, resource: dict[str, Any], key: str | None = None) -> ObjectInfo:
        return ObjectInfo(
            key=key if key is not None else self._key_of(resource["name"]),
            size=int(resource.get("size") or 0),
            modified=_parse_time(resource.get("timeCreated") or resource.get("updated")),
            storage_class=resource.get("storageClass"),
            metadata=dict(resource.get("metadata") or {}),
            retention=_retention_of(resource),
            archived=False,  # every GCS class, ARCHIVE included, is readable at once
            thaw=None,
        )

    def _get_resource(self, name: str) -> dict[str, Any] | None:
        r = self._request("GET", self._object_url(name), ok=(200, 404))
        if r.status_code == 404:
            self._check_bucket(r)
            return None
        return r.json()

    def _discard(self, name: str, generation: str | None) -> str | None:
        """Delete one generation of an object we just created by mistake; returns why it failed, if it did."""
        url = self._object_url(name) + (f"?ifGenerationMatch={generation}" if generation else "")
        try:
            self._retry(self._request, "DELETE", url, ok=(200, 204, 404, 412))
        except Exception as e:
            return str(self._translate(e, "delete", self._target(name)))
        return None
