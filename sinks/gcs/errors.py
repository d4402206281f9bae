"""What went wrong talking to GCS: HTTP statuses, requests and google-auth errors as sink errors, and which of them
are worth another try."""

from __future__ import annotations

import google.auth.exceptions
import requests

from sinks.base import AccessDenied, ObjectExists, ObjectNotFound, SinkError, TransientError

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_ADC_HELP = (
    "Google credentials come from Application Default Credentials: run `gcloud auth application-default login`, "
    "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run where an attached service account "
    "or workload identity is available (GCE, GKE, Cloud Run, Cloud Functions); for an emulator set "
    "STORAGE_EMULATOR_HOST"
)


def _message(response: requests.Response) -> str:
    """The human part of an error response."""
    try:
        body = response.json()
        err = body.get("error", body) if isinstance(body, dict) else {}
        msg = err.get("message") if isinstance(err, dict) else None
        if msg:
            return str(msg)
    except ValueError:
        pass
    text = (response.text or "").strip()
    return text[:300] if text else (response.reason or f"HTTP {response.status_code}")


class _Corrupt(Exception):
    """Downloaded bytes do not match the checksum GCS sent with them (retried, then reported)."""


class _HTTPStatus(Exception):
    """A response with a status the caller did not expect (internal; translated before it leaves the sink)."""

    def __init__(self, response: requests.Response) -> None:
        self.status = response.status_code
        self.response = response
        self.message = _message(response)
        super().__init__(f"HTTP {self.status}: {self.message}")


def transient(e: BaseException) -> bool:
    """Worth retrying: throttling, server errors, broken connections and timeouts (raw or already translated).

    Only requests and google-auth raise here: the sink uses no google-cloud client library, so google.api_core's
    exceptions never occur."""
    if isinstance(e, TransientError):
        return True
    if isinstance(e, _HTTPStatus):
        return e.status in TRANSIENT_STATUS
    if isinstance(e, _Corrupt):
        return True
    if isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return True
    if isinstance(e, google.auth.exceptions.RefreshError):
        return bool(getattr(e, "retryable", False))
    return isinstance(e, google.auth.exceptions.TransportError)


def _status_error(e: _HTTPStatus, doing: str, target: str, retry_budget: float) -> SinkError:
    where = f"{doing} {target}"
    if e.status == 401:
        return AccessDenied(f"{where}: the credentials were rejected (401: {e.message}). {_ADC_HELP}")
    if e.status == 403:
        return AccessDenied(f"{where}: access denied (403: {e.message})")
    if e.status in (404, 410):
        return ObjectNotFound(f"{target} does not exist ({e.status}: {e.message})")
    if e.status == 412:
        return ObjectExists(f"{target} already exists; archive objects are never overwritten")
    if e.status in TRANSIENT_STATUS:
        return TransientError(f"{where}: GCS kept failing for {retry_budget:g} s (last: {e.status} {e.message})")
    return SinkError(f"{where}: GCS refused the request ({e.status}: {e.message})")


def to_sink_error(
    e: BaseException, doing: str, target: str, *, url: str, endpoint: str, retry_budget: float
) -> SinkError:
    """The :class:`~sinks.base.SinkError` that reports ``e``, raised while ``doing`` ``target`` in the archive at
    ``url`` (GCS at ``endpoint``); sink errors pass through unchanged."""
    if isinstance(e, SinkError):
        return e
    if isinstance(e, _HTTPStatus):
        return _status_error(e, doing, target, retry_budget)
    if isinstance(e, _Corrupt):
        return TransientError(f"{doing} {target}: {e}")
    if isinstance(e, google.auth.exceptions.DefaultCredentialsError):
        return SinkError(f"no Google credentials for {url}: {str(e).rstrip('.')}. {_ADC_HELP}")
    kind = TransientError if transient(e) else SinkError
    if isinstance(e, google.auth.exceptions.RefreshError):
        return kind(f"{doing} {target}: cannot obtain a Google access token: {e}. {_ADC_HELP}")
    if isinstance(e, google.auth.exceptions.GoogleAuthError):
        return kind(f"{doing} {target}: Google authentication failed: {e}")
    if isinstance(e, requests.RequestException):
        return kind(f"{doing} {target}: cannot reach GCS at {endpoint}: {type(e).__name__}: {e}")
    return SinkError(f"{doing} {target} failed: {type(e).__name__}: {e}")
