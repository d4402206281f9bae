"""The cloud front's errors: a bad configuration, and library messages spelled as its environment variables."""

from __future__ import annotations

from pipeline.base.errors import JsArchiveError, UsageError

# How the settings a library message names (pipeline.base.errors.setting: CLI names without dashes) are spelled
# here: the environment variables docs/cloud.md lists. A setting with no variable says so instead of naming a flag
# nobody could pass to a function.
_ENV_SETTINGS: dict[str, str] = {
    "force": "$JSARCHIVE_FORCE=true",
    "no-encrypt": "$JSARCHIVE_NO_ENCRYPT=true",
    "compression": "$JSARCHIVE_COMPRESSION",
    "consumers": "$JSARCHIVE_CONSUMERS=true",
    "no-consumers": "$JSARCHIVE_CONSUMERS=false",
    "storage-class": "$JSARCHIVE_STORAGE_CLASS",
    "lock-mode": "$JSARCHIVE_LOCK_MODE",
    "retain-days": "$JSARCHIVE_RETAIN_DAYS",
    "include": "$JSARCHIVE_INCLUDE",
    "exclude": "$JSARCHIVE_EXCLUDE",
    "parallel": "$JSARCHIVE_PARALLEL",
    "run": "the event's run field",
    "recipient": "$JSARCHIVE_RECIPIENTS",
    "identity": "$JSARCHIVE_KEY",
    "key-file": "$JSARCHIVE_KEY",
    "kms-key": "$JSARCHIVE_KMS_KEY",
    "gcp-kms-key": "$JSARCHIVE_GCP_KMS_KEY",
    "use-kms-slots": "$JSARCHIVE_USE_KMS_SLOTS=true",
    "sse-kms-key": "$JSARCHIVE_SSE_KMS_KEY",
    "limit-upload": "$JSARCHIVE_LIMIT_UPLOAD",
    "limit-download": "$JSARCHIVE_LIMIT_DOWNLOAD",
    "deep": "$JSARCHIVE_VERIFY_DEEP=true",
    "cluster": "$JSARCHIVE_DRILL_CLUSTER",
    "tag": "$JSARCHIVE_DRILL_TAGS",
    "prefix": "$JSARCHIVE_DRILL_PREFIX",
    "creds": "$JSARCHIVE_NATS_SECRET / $JSARCHIVE_NATS_PARAMETER / $JSARCHIVE_NATS_CREDENTIALS",
    "js-domain": "$JSARCHIVE_JS_DOMAIN",
}


def env_spelling(name: str, value: str | None) -> str:
    """A setting named in an error message, as the cloud functions' environment spells it."""
    var = _ENV_SETTINGS.get(name)
    if var is None:
        return f"the command line's --{name}" + (f" {value}" if value is not None else "") + " (no variable for it)"
    if value is not None and not var.endswith(("=true", "=false")) and var.startswith("$"):
        return f"{var}={value}"
    return var


def phrased(e: JsArchiveError) -> JsArchiveError:
    """``e`` with its message spelled for this front end (once, where it is caught): what is logged, reported and
    raised to the platform names environment variables, not flags."""
    e.args = (e.phrased(env_spelling), *e.args[1:])
    return e


class ConfigError(UsageError):
    """The handler's configuration (environment variables, event, secret) is missing or wrong (exit code 2)."""

    kind = "config"
