"""Object-store adapters behind one small interface.

A sink stores immutable objects under string keys. It knows nothing of NATS or of the archive format; the
pipeline reaches it only through :func:`open_sink` and the :class:`Sink` / :class:`ObjectWriter` protocols, and asks
what a store can do through :class:`Capabilities` and :func:`require`. :func:`open_sink` returns the adapter inside
:class:`~sinks.retry.RetryingSink`, and inside :class:`~sinks.limits.LimitedSink` too when
:class:`SinkOptions` sets a bandwidth limit.
"""

from __future__ import annotations

from sinks.base import (
    AccessDenied,
    Capabilities,
    ObjectArchived,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectWriter,
    Retention,
    Sink,
    SinkError,
    SinkOptions,
    SinkWrapper,
    TransientError,
    Unsupported,
    require,
)
from sinks.retry import RetryingSink, RetryPolicy

__all__ = [
    "AccessDenied",
    "Capabilities",
    "ObjectArchived",
    "ObjectExists",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectWriter",
    "Retention",
    "RetryPolicy",
    "RetryingSink",
    "Sink",
    "SinkError",
    "SinkOptions",
    "SinkWrapper",
    "TransientError",
    "Unsupported",
    "open_sink",
    "require",
]


def open_sink(url: str, options: SinkOptions | None = None) -> Sink:
    """Return the sink for ``url``: ``file:///path``, a plain path, ``s3://bucket/prefix`` or ``gs://bucket/prefix``.

    Cloud SDKs are imported only here, when such a URL is opened, so a local-only install needs none of them.
    """
    options = options or SinkOptions()
    sink = _adapter(url, options)
    if options.limit_upload or options.limit_download:
        # Inside the retries: an attempt that is tried again sends its bytes again.
        from sinks.limits import limited

        sink = limited(sink, options)
    return RetryingSink(sink, RetryPolicy.from_options(options))


def _adapter(url: str, options: SinkOptions) -> Sink:
    scheme, sep, _rest = url.partition("://")
    if not sep or scheme == "file":
        from sinks.local import LocalSink

        return LocalSink.from_url(url)
    if scheme == "s3":
        try:
            from sinks.s3 import S3Sink
        except ImportError as e:
            raise SinkError(f"s3:// archives need boto3: pip install 'jsarchive[s3]' ({e})") from None
        return S3Sink.from_url(url, options)
    if scheme == "mem":  # this process's memory, one store per name (tests; see sinks/memory.py)
        from sinks.memory import MemorySink

        return MemorySink.from_url(url)
    if scheme == "gs":
        try:
            from sinks.gcs import GCSSink
        except ImportError as e:
            raise SinkError(
                f"gs:// archives need google-auth and requests: pip install 'jsarchive[gcs]' ({e})"
            ) from None
        return GCSSink.from_url(url, options)
    raise SinkError(f"unsupported archive URL scheme {scheme!r} in {url!r} (expected a path, file://, s3:// or gs://)")
