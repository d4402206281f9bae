"""The HTTP side of the GCS JSON API: where requests go (GCS, an emulator or a custom endpoint) and the
``requests`` session that carries them, authorized by google-auth's Application Default Credentials."""

from __future__ import annotations

import os
import urllib.parse

import google.auth
import google.auth.exceptions
import requests
from google.auth.transport.requests import AuthorizedSession

from sinks.base import SinkError, SinkOptions
from sinks.gcs.errors import _ADC_HELP

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
SCOPES = (
    "https://www.googleapis.com/auth/devstorage.full_control",
    "https://www.googleapis.com/auth/devstorage.read_write",
)
EMULATOR_PROJECT = "jsarchive-emulator"
CONTENT_TYPE = "application/octet-stream"
# (connect, read) seconds for one HTTP request; the retry budget bounds how often a request is repeated.
TIMEOUT = (10.0, 120.0)


def resolve_endpoint(options: SinkOptions) -> tuple[str, bool]:
    """The endpoint's base URL, and whether requests there go without credentials.

    Where requests go is known without credentials: $STORAGE_EMULATOR_HOST, an explicit endpoint, or GCS.
    """
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    endpoint = (options.endpoint_url or emulator or DEFAULT_ENDPOINT).strip()
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    endpoint = endpoint.rstrip("/")
    # Emulators take no credentials (the google-cloud-storage convention); neither does a plain-http endpoint.
    anonymous = bool(emulator) or urllib.parse.urlsplit(endpoint).scheme == "http"
    return endpoint, anonymous


def connect(anonymous: bool, url: str) -> tuple[requests.Session, str | None]:
    """A new session for the archive at ``url``, and the Google Cloud project it works for."""
    session: requests.Session
    if anonymous:
        session = requests.Session()
        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT
    else:
        try:
            credentials, adc_project = google.auth.default(scopes=list(SCOPES))
        except google.auth.exceptions.DefaultCredentialsError as e:
            raise SinkError(f"no Google credentials for {url}: {str(e).rstrip('.')}. {_ADC_HELP}") from e
        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or adc_project
        session = AuthorizedSession(credentials)
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "jsarchive-gcs-sink"
    return session, project
