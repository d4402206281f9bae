"""The boto3 S3 client: session (profile, region), endpoint, timeouts, and one attempt per call."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.exceptions as bce
from botocore.config import Config

from sinks.base import SinkError, SinkOptions

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
MAX_POOL_CONNECTIONS = 64  # parallel part uploads and prefetching ranged GETs share one client


def make_client(options: SinkOptions, url: str) -> Any:
    """A new S3 client for the sink at ``url``; credentials are looked up by boto3 on its first request."""
    config = Config(
        # One attempt per call: sinks.retry does the retrying, bounded by options.retry_budget. (botocore's
        # "max_attempts" counts retries, not attempts, so it would allow a hidden second try.)
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=MAX_POOL_CONNECTIONS,
    )
    try:
        session = boto3.session.Session(profile_name=options.profile, region_name=options.region)
        # endpoint_url None lets boto3 apply $AWS_ENDPOINT_URL / $AWS_ENDPOINT_URL_S3 itself.
        return session.client("s3", endpoint_url=options.endpoint_url, config=config)
    except bce.ProfileNotFound:
        raise SinkError(
            f"AWS profile {options.profile!r} is not defined in ~/.aws/config or ~/.aws/credentials "
            "(or the files named by AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE)"
        ) from None
    except (bce.BotoCoreError, ValueError) as e:
        raise SinkError(f"cannot set up the S3 client for {url}: {e}") from e
