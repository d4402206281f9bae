"""botocore's exceptions as sink errors: which are worth another try, and what each means for the archive.

A :class:`~botocore.exceptions.ClientError` is matched against :data:`_CLIENT_ERRORS` by its error code and HTTP
status, in order, first match wins; every other botocore exception by its type in :data:`_OTHER_ERRORS`. The S3
error code travels on as ``_s3_code`` of the raised error so callers can tell e.g. NoSuchUpload apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions as bce
from urllib3.exceptions import ProtocolError

from sinks.base import (
    AccessDenied,
    ObjectArchived,
    ObjectExists,
    ObjectNotFound,
    SinkError,
    SinkOptions,
    TransientError,
)

TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "ConditionalRequestConflict",  # a concurrent conditional write is in progress: S3 asks to retry
        "500",
        "502",
        "503",
        "504",
    }
)
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccountProblem",
        "403",
    }
)
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "NoSuchVersion", "404"})
CREDENTIALS_HELP = (
    "boto3 looks for credentials in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, plus "
    "AWS_SESSION_TOKEN for temporary ones), then in the shared files ~/.aws/credentials and ~/.aws/config for the "
    "profile named by --profile or AWS_PROFILE (including SSO and credential_process), then web identity (IRSA on EKS: "
    "AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), the ECS/EKS container endpoint and the EC2 instance metadata "
    "service (IMDS)"
)
_CONNECTION_ERRORS = (bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError, ProtocolError)


class _NoSuchBucket(ObjectNotFound):
    """The bucket itself is missing (kept apart so that ``head`` does not mistake it for an absent key)."""


def transient(e: BaseException) -> bool:
    """Whether a botocore error is throttling, a 5xx, a timeout or a dropped connection: worth another try."""
    if isinstance(e, bce.ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in TRANSIENT_CODES or status in TRANSIENT_STATUS
    return isinstance(
        e,
        (
            bce.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError, SSLError
            bce.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
            bce.IncompleteReadError,
            bce.FlexibleChecksumError,  # a response body that does not match its checksum: fetch it again
            ProtocolError,
        ),
    )


@dataclass(frozen=True)
class _Refusal:
    """What the error mapping needs of one ClientError, and of the request it answered."""

    error: bce.ClientError
    code: str
    message: str
    status: int | None
    storage_class: str | None
    what: str
    url: str
    bucket: str

    @classmethod
    def of(cls, e: bce.ClientError, what: str, url: str, bucket: str) -> _Refusal:
        err = e.response.get("Error", {})
        return cls(
            error=e,
            code=str(err.get("Code", "")),
            message=err.get("Message") or "",
            status=e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            storage_class=err.get("StorageClass"),
            what=what,
            url=url,
            bucket=bucket,
        )

    @property
    def op(self) -> str:
        return self.error.operation_name

    @property
    def detail(self) -> str:
        if self.message and self.message != self.code:
            return f"{self.code}: {self.message}"
        return self.code or f"HTTP {self.status}"


def _archived(r: _Refusal) -> SinkError:
    return ObjectArchived(
        f"{r.what} is archived ({r.storage_class or 'cold storage'}) and cannot be read before it is thawed: run "
        f"`jsarchive thaw {r.url} ID` (ID: the backup) and retry once the restore has finished"
    )


def _no_bucket(r: _Refusal) -> SinkError:
    return _NoSuchBucket(f"bucket {r.bucket} does not exist ({r.op} {r.what})")


def _no_upload(r: _Refusal) -> SinkError:
    return SinkError(f"the multipart upload of {r.what} no longer exists (aborted, or removed by a lifecycle rule)")


def _not_found(r: _Refusal) -> SinkError:
    return ObjectNotFound(f"{r.what} does not exist")


def _exists(r: _Refusal) -> SinkError:
    return ObjectExists(f"{r.what} already exists; archive objects are never overwritten")


def _denied(r: _Refusal) -> SinkError:
    return AccessDenied(
        f"access denied: {r.op} on {r.what} ({r.detail}); check the IAM and bucket policies for the "
        "credentials in use (S3 also answers 403 for a missing object when s3:ListBucket is not granted)"
    )


def _failed(r: _Refusal) -> SinkError:
    kind = TransientError if transient(r.error) else SinkError
    return kind(f"{r.op} on {r.what} failed: {r.detail} (HTTP {r.status})")


# In order: S3 answers InvalidObjectState with a 403 and NoSuchBucket / NoSuchUpload with a 404, so codes go first.
_CLIENT_ERRORS: tuple[tuple[Callable[[_Refusal], bool], Callable[[_Refusal], SinkError]], ...] = (
    (lambda r: r.code == "InvalidObjectState", _archived),
    (lambda r: r.code == "NoSuchBucket", _no_bucket),
    (lambda r: r.code == "NoSuchUpload", _no_upload),
    (lambda r: r.code in NOT_FOUND_CODES or r.status == 404, _not_found),
    (lambda r: r.code == "PreconditionFailed" or r.status == 412, _exists),
    (lambda r: r.code in DENIED_CODES or r.status in (401, 403), _denied),
)


def _client_error(e: bce.ClientError, what: str, url: str, bucket: str) -> SinkError:
    refusal = _Refusal.of(e, what, url, bucket)
    build = next((b for matches, b in _CLIENT_ERRORS if matches(refusal)), _failed)
    mapped = build(refusal)
    mapped._s3_code = refusal.code  # type: ignore[attr-defined]
    return mapped


def _no_credentials(e: BaseException, what: str, options: SinkOptions) -> SinkError:
    return SinkError(f"no usable AWS credentials to access {what} ({e}). {CREDENTIALS_HELP}")


def _no_profile(e: BaseException, what: str, options: SinkOptions) -> SinkError:
    return SinkError(f"AWS profile {options.profile!r} is not defined (accessing {what}): {e}")


def _bad_checksum(e: BaseException, what: str, options: SinkOptions) -> SinkError:
    return TransientError(f"reading {what}: the data received does not match its stored checksum ({e})")


def _unreachable(e: BaseException, what: str, options: SinkOptions) -> SinkError:
    endpoint = options.endpoint_url or "the S3 endpoint"
    return TransientError(
        f"cannot reach {endpoint} for {what} after retrying for up to {options.retry_budget:g} s: {e}"
    )


# In order, first isinstance match wins.
_OTHER_ERRORS: tuple[tuple[Any, Callable[[BaseException, str, SinkOptions], SinkError]], ...] = (
    ((bce.NoCredentialsError, bce.PartialCredentialsError, bce.CredentialRetrievalError), _no_credentials),
    (bce.ProfileNotFound, _no_profile),
    (bce.FlexibleChecksumError, _bad_checksum),
    (_CONNECTION_ERRORS, _unreachable),
)


def to_sink_error(e: BaseException, what: str, *, url: str, bucket: str, options: SinkOptions) -> SinkError:
    """The :class:`~sinks.base.SinkError` that reports botocore's ``e``, raised while accessing ``what``."""
    if isinstance(e, bce.ClientError):
        return _client_error(e, what, url, bucket)
    for types, build in _OTHER_ERRORS:
        if isinstance(e, types):
            return build(e, what, options)
    return SinkError(f"S3 request for {what} failed: {e}")
