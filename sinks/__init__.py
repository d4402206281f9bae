"""Object-store adapters behind one small interface.

A sink stores immutable objects under string keys. It knows nothing of NATS or of the archive format; the
pipeline reaches it only through :func:`open_sink` and the :class:`Sink` / :class:`ObjectWriter` protocols.
"""

from __future__ import annotations

from sinks.base import (
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectWriter,
    Retention,
    Sink,
    SinkError,
)

__all__ = [
    "ObjectExists",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectWriter",
    "Retention",
    "Sink",
    "SinkError",
    "open_sink",
]


def open_sink(url: str) -> Sink:
    """Return the sink for ``url``: ``file:///path``, a plain path, ``s3://bucket/prefix`` or ``gs://bucket/prefix``."""
    scheme, sep, _rest = url.partition("://")
    if not sep or scheme == "file":
        from sinks.local import LocalSink

        return LocalSink.from_url(url)
    if scheme in ("s3", "gs"):
        raise SinkError(f"{scheme}:// archives are not supported by this build yet; use a local directory")
    raise SinkError(f"unsupported archive URL scheme {scheme!r} in {url!r} (expected a path, file://, s3:// or gs://)")
