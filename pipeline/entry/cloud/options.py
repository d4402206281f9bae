"""The library options a scheduled job needs, from the environment as the CLI builds them from its flags: the keys,
the archive's sink, Object Lock retention and a backup's options."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pipeline.entry import settings
from pipeline.entry.cloud import env as envvars
from pipeline.entry.cloud.errors import ConfigError


def key_ring(env: Mapping[str, str], *, write: bool) -> Any:
    """The KeyRing of ``$JSARCHIVE_RECIPIENTS`` and the KMS keys; ``write``: one that can encrypt, unless
    ``$JSARCHIVE_NO_ENCRYPT`` says to store backups in the clear."""
    from pipeline.keys.keyring import KeyRing

    ring = KeyRing.load(
        recipients=envvars.items(env.get("JSARCHIVE_RECIPIENTS")),
        kms_keys=envvars.items(env.get("JSARCHIVE_KMS_KEY")),
        gcp_kms_keys=envvars.items(env.get("JSARCHIVE_GCP_KMS_KEY")),
        kms_endpoint=env.get("AWS_ENDPOINT_URL_KMS") or None,
        use_kms_slots=envvars.flag(env, "JSARCHIVE_USE_KMS_SLOTS"),
    )
    if write and not ring.can_write and not envvars.flag(env, "JSARCHIVE_NO_ENCRYPT"):
        raise ConfigError(
            "no key to encrypt with: set $JSARCHIVE_RECIPIENTS (age1…) and/or $JSARCHIVE_KMS_KEY / "
            "$JSARCHIVE_GCP_KMS_KEY, or $JSARCHIVE_NO_ENCRYPT=true to store backups in the clear"
        )
    return ring


def sink(env: Mapping[str, str], url: str) -> Any:
    """The SinkOptions of the archive ``url`` (``$JSARCHIVE_URL``)."""
    if settings.is_process_local(url):
        raise ConfigError(f"$JSARCHIVE_URL is {url}: {settings.MEM_ONLY}")
    return settings.sink_options(
        url,
        endpoint=settings.s3_endpoint(env),
        sse_kms_key=env.get("JSARCHIVE_SSE_KMS_KEY") or None,
        limit_upload=envvars.size(env, "JSARCHIVE_LIMIT_UPLOAD", 0),  # bytes per second; unset: no limit
        limit_download=envvars.size(env, "JSARCHIVE_LIMIT_DOWNLOAD", 0),
    )


def retention(env: Mapping[str, str]) -> Any:
    """The Object Lock retention of what a backup writes (``$JSARCHIVE_LOCK_MODE`` + ``$JSARCHIVE_RETAIN_DAYS``)."""
    from sinks import Retention

    mode = (env.get("JSARCHIVE_LOCK_MODE") or "").strip().upper()
    days = envvars.integer(env, "JSARCHIVE_RETAIN_DAYS", 0)
    if not mode:
        if days:
            raise ConfigError("$JSARCHIVE_RETAIN_DAYS needs $JSARCHIVE_LOCK_MODE (GOVERNANCE or COMPLIANCE)")
        return None  # the bucket's default retention (the terraform modules set one) still applies
    if mode not in ("GOVERNANCE", "COMPLIANCE"):
        raise ConfigError(f"$JSARCHIVE_LOCK_MODE is {mode!r}; expected GOVERNANCE or COMPLIANCE")
    if days < 1:
        raise ConfigError("$JSARCHIVE_LOCK_MODE needs $JSARCHIVE_RETAIN_DAYS (at least 1)")
    return Retention(mode=mode, until=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days))


def backup_options(env: Mapping[str, str], stream: str, url: str, connect: Any) -> Any:
    """The BackupOptions of a scheduled backup (for an account backup, those of every stream: ``stream`` is
    filled in per stream), from the environment as the CLI builds them from its flags."""
    from pipeline.flows.backup import BackupOptions
    from pipeline.format.compress import Compression

    return BackupOptions(
        stream=stream,
        url=url,
        connect=connect,
        keys=key_ring(env, write=True),
        encrypt=not envvars.flag(env, "JSARCHIVE_NO_ENCRYPT"),
        compression=Compression.parse(env.get("JSARCHIVE_COMPRESSION") or "zstd:3"),
        consumers=envvars.flag(env, "JSARCHIVE_CONSUMERS", True),
        storage_class=(env.get("JSARCHIVE_STORAGE_CLASS") or "").upper() or None,
        retention=retention(env),
        sink=sink(env, url),
    )
