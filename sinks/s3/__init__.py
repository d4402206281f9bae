"""S3 and S3-compatible stores as an archive: boto3, multipart uploads with a SHA-256 checksum on every part.

``s3://bucket/prefix`` keeps every object under ``prefix/``. Credentials come from boto3's default chain (environment,
profile, SSO, web identity / IRSA, container endpoint, IMDS); ``SinkOptions`` picks the endpoint, region, profile and
SSE-KMS key. boto3's own retries are off and each call makes one attempt: throttling, 5xx and broken connections
leave as :class:`~sinks.base.TransientError` for :class:`sinks.retry.RetryingSink` to repeat (the writer repeats its
part uploads itself, under the same policy), and every other botocore error as another :class:`~sinks.base.SinkError`.

Importing this package imports boto3; :func:`sinks.open_sink` does so only when an ``s3://`` URL is opened.

* :mod:`sinks.s3.sink` -- :class:`S3Sink`: state, client, one-attempt calls, keys, HEAD;
* :mod:`sinks.s3.client` -- building the boto3 client (session, endpoint, timeouts);
* :mod:`sinks.s3.errors` -- botocore errors as sink errors, and which are transient;
* :mod:`sinks.s3.objects` -- PUT, GET, ranged GET, HEAD, list, delete, purge;
* :mod:`sinks.s3.multipart` -- :class:`S3ObjectWriter`, the multipart upload;
* :mod:`sinks.s3.incomplete` -- finding and aborting abandoned multipart uploads;
* :mod:`sinks.s3.retention` -- Object Lock retention and legal hold;
* :mod:`sinks.s3.cold` -- GLACIER / DEEP_ARCHIVE / Intelligent-Tiering archive objects and their thaw;
* :mod:`sinks.s3.wire` -- small field conversions (version ids, base64 digests, UTC dates).
"""

from __future__ import annotations

from sinks.s3.client import CONNECT_TIMEOUT, MAX_POOL_CONNECTIONS, READ_TIMEOUT
from sinks.s3.cold import COLD_ARCHIVE_STATUS, COLD_CLASSES, TIERS, restore_state
from sinks.s3.errors import CREDENTIALS_HELP, DENIED_CODES, TRANSIENT_CODES, TRANSIENT_STATUS, transient
from sinks.s3.multipart import MAX_PART, MAX_PARTS, MIN_PART, S3ObjectWriter
from sinks.s3.retention import LOCK_MODES
from sinks.s3.sink import S3Sink

__all__ = [
    "COLD_ARCHIVE_STATUS",
    "COLD_CLASSES",
    "CONNECT_TIMEOUT",
    "CREDENTIALS_HELP",
    "DENIED_CODES",
    "LOCK_MODES",
    "MAX_PART",
    "MAX_PARTS",
    "MAX_POOL_CONNECTIONS",
    "MIN_PART",
    "READ_TIMEOUT",
    "TIERS",
    "TRANSIENT_CODES",
    "TRANSIENT_STATUS",
    "S3ObjectWriter",
    "S3Sink",
    "restore_state",
    "transient",
]
