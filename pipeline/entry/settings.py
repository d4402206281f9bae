"""The settings both front ends build the same way: the CLI (from flags and their variables) and the cloud entry
points (from environment variables alone) turn them into the same library options through these functions.

Kept free of click and of any cloud SDK: the CLI's ``--version`` and a Lambda cold start both import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sinks import SinkOptions

# The AWS SDKs' order: the service-specific variable wins over the one for every service.
S3_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
MEM_ONLY = "mem:// archives exist only inside one Python process"


def s3_endpoint(env: Mapping[str, str]) -> str | None:
    """The S3 endpoint the environment names (``$AWS_ENDPOINT_URL_S3``, else ``$AWS_ENDPOINT_URL``), or None."""
    for name in S3_ENDPOINT_VARS:
        value = (env.get(name) or "").strip()
        if value:
            return value
    return None


def is_process_local(url: str) -> bool:
    """Whether ``url`` is an archive that ends with this process (mem://): a backup there would report success
    and be gone, so neither front end accepts one."""
    return url.startswith("mem://")


def nats_user(user: str | None, password: str | None, token: str | None) -> tuple[str | None, str | None, str | None]:
    """(user, password, token) as natscli reads them: a user without a password (and no token) is a token."""
    if user and not password and not token:
        return None, password, user
    return user, password, token


def sink_options(
    url: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    sse_kms_key: str | None = None,
    limit_upload: int | None = None,
    limit_download: int | None = None,
) -> SinkOptions:
    """The archive's SinkOptions; ``endpoint`` only ever applies to s3:// archives (gs:// has its own emulator
    variable, and a path none), and a rate of 0 is no limit."""
    from sinks import SinkOptions

    return SinkOptions(
        endpoint_url=endpoint if url.startswith("s3://") else None,
        region=region,
        profile=profile,
        sse_kms_key=sse_kms_key,
        limit_upload=limit_upload or None,
        limit_download=limit_download or None,
    )
