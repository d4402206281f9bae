"""Scheduled runs in the cloud: the AWS Lambda handler, the Cloud Functions (2nd gen) handlers, the container entry.

One core, :func:`run_scheduled`, does an ``account-backup``, ``stream-backup``, ``prune`` or ``verify`` from
configuration in environment variables (docs/cloud.md lists them) plus a few fields of the triggering event, and
reports it the way unattended runs need: one JSON log line per stream, a run summary line, CloudWatch EMF metrics
when it runs in Lambda, and a Pushgateway push when ``$JSARCHIVE_METRICS_PUSH`` is set.

- :func:`lambda_handler`: EventBridge Scheduler → Lambda. NATS credentials come from Secrets Manager
  (``$JSARCHIVE_NATS_SECRET``) or SSM Parameter Store (``$JSARCHIVE_NATS_PARAMETER``) and stay in memory: nothing is
  written to ``/tmp`` (the pipeline streams without temporary files). The invocation's remaining time is a budget:
  a stream that cannot finish at the observed rate is not started but *deferred*, reported, and left to a later
  attempt of the same run (the sharded job path: ``jsarchive account backup URL --run RUN`` in a container job, or
  the handler again with ``{"run": RUN}``), which backs up what is still owed and seals the set.
- :func:`gcf_handler` (HTTP) and :func:`gcf_event_handler` (CloudEvent, e.g. Pub/Sub from Cloud Scheduler): the same
  through functions-framework; secrets arrive as ``$JSARCHIVE_NATS_CREDENTIALS`` (Secret Manager, injected by the
  platform) and the time limit is ``$JSARCHIVE_TIME_LIMIT``.
- :func:`main` (``python -m pipeline.entry.handlers``): the container image's entry. Under Lambda
  (``$AWS_LAMBDA_RUNTIME_API`` set) it starts the Lambda runtime client with :func:`lambda_handler`; anywhere else
  it is the ``jsarchive`` command line, which a Cloud Run job runs sharded by ``CLOUD_RUN_TASK_INDEX``.

Cloud SDKs (boto3 for Secrets Manager and SSM) are imported inside the functions that use them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from pipeline.base.errors import ConnectionFailed, JsArchiveError, UsageError
from pipeline.entry import metrics
from pipeline.jetstream.client import ConnectOptions
from pipeline.jetstream.placement import RestoreTarget

OPERATIONS = ("account-backup", "stream-backup", "prune", "verify", "drill")
DEFAULT_MARGIN = 30.0  # seconds kept free at the end of an invocation: sealing, the summary, the metrics
DEFAULT_ASSUMED_RATE = 20 * 1024 * 1024  # stream bytes/s per stream before any stream has been measured
DEFAULT_TIME_LIMIT = 3600.0  # Cloud Functions 2nd gen (HTTP): the platform's longest timeout
STREAM_OVERHEAD = 2.0  # seconds a stream costs beyond its bytes: snapshot request, manifest, ref, run record
ESTIMATE_SLACK = 1.5  # estimates are multiplied by this: a stream killed half-way costs more than one deferred
MIN_SAMPLE_SECONDS = 1.0  # streams shorter than this say more about the fixed overhead than about the rate
NEEDS_BOTO3 = "reading the NATS secret from AWS needs boto3: pip install 'jsarchive[lambda]' ({e})"
EVENT_FIELDS = ("operation", "run", "stream", "include", "exclude")  # what a trigger's payload may choose
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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


# -- configuration ---------------------------------------------------------------------------------------------


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    text = env.get(name)
    if text is None:
        return default
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"${name} is {text!r}; expected true or false")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"${name} is {text!r}, not an integer") from None


def _duration(env: Mapping[str, str], name: str) -> float | None:
    """natscli's meaning and format (a Go duration such as ``5s``, or seconds); None: the library's default."""
    from pipeline.base.units import parse_duration

    text = env.get(name)
    if text is None or not text.strip():
        return None
    try:
        return parse_duration(text)
    except JsArchiveError:
        raise ConfigError(f"${name} is {text!r}: give a duration such as 5s, 500ms or 1m30s") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"${name} is {text!r}, not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"${name} must not be negative ({text})")
    return value


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or not text.strip():
        return default
    from pipeline.base.units import parse_size

    try:
        value = parse_size(text)
    except UsageError:
        raise ConfigError(f"${name} is {text!r}, not a size (e.g. 20MiB)") from None
    if value <= 0:
        raise ConfigError(f"${name} must be more than 0")
    return value


def _list(value: object) -> list[str]:
    """Comma- or whitespace-separated text, or a JSON list from an event."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v for v in re.split(r"[\s,]+", str(value)) if v]


def _required(env: Mapping[str, str], name: str, why: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigError(f"${name} is not set: {why}")
    return value


def parse_credentials(text: str, source: str) -> dict[str, str]:
    """NATS credentials from a secret's text, as :class:`ConnectOptions` fields.

    Accepted: the text of a natscli credentials file (``-----BEGIN NATS USER JWT-----`` …), an nkey seed
    (``SU…``), or a JSON object with any of ``creds`` (credentials file text), ``nkey`` (seed), ``user`` +
    ``password``, ``token`` and ``url``. Error messages never quote the secret.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError:
            raise ConfigError(f"{source} starts like JSON but is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{source} is JSON but not an object")
        allowed = {"creds": "creds_data", "nkey": "nkey_seed", "user": "user", "password": "password"}
        allowed |= {"token": "token", "url": "servers"}
        unknown = sorted(set(doc) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{source} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
            )
        out = {allowed[k]: str(v) for k, v in doc.items() if v not in (None, "")}
        if "creds_data" in out:
            out.update({k: v for k, v in parse_credentials(out.pop("creds_data"), source).items()})
        if "password" in out and "user" not in out:
            raise ConfigError(f"{source} has a password but no user")
        if not out:
            raise ConfigError(f"{source} is an empty JSON object")
        return out
    if "BEGIN NATS USER JWT" in stripped:
        if "BEGIN USER NKEY SEED" not in stripped:
            raise ConfigError(f"{source} holds a user JWT without its nkey seed: store the whole credentials file")
        return {"creds_data": stripped + "\n"}
    if re.fullmatch(r"SU[A-Z2-7]{56}", stripped):
        return {"nkey_seed": stripped}
    raise ConfigError(
        f"{source} is neither a NATS credentials file, an nkey seed (SU…), nor a JSON object with "
        "creds/nkey/user/password/token/url"
    )


def _aws_client(service: str) -> Any:
    try:
        import boto3
        import botocore.exceptions as bce
    except ImportError as e:
        raise ConfigError(NEEDS_BOTO3.format(e=e)) from None
    try:
        # endpoint_url left to boto3: $AWS_ENDPOINT_URL / $AWS_ENDPOINT_URL_SECRETS_MANAGER apply (tests, VPC endpoints)
        return boto3.session.Session().client(service)
    except bce.NoRegionError:
        raise ConfigError(f"no AWS region for {service}: set $AWS_REGION") from None


def _aws_secret_error(e: Exception, what: str, var: str) -> JsArchiveError:
    import botocore.exceptions as bce

    if isinstance(e, bce.ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        message = str(e.response.get("Error", {}).get("Message", "")) or code
        if code in ("ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound"):
            return ConfigError(f"{what} named by ${var} does not exist ({code})")
        if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
            return ConfigError(f"{what} named by ${var} cannot be read with this role: {code}: {message}")
        if code in ("DecryptionFailure", "InvalidKeyId", "KMSAccessDeniedException"):
            return ConfigError(f"{what} named by ${var} cannot be decrypted: {code}: {message}")
        return ConfigError(f"reading {what} named by ${var} failed: {code}: {message}")
    if isinstance(e, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return ConfigError(f"no AWS credentials to read {what} named by ${var}")
    return ConnectionFailed(f"cannot read {what} named by ${var}: {e}")


def read_secret_text(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(text, where it came from) of the NATS secret, or None when none is configured."""
    sources = [n for n in ("JSARCHIVE_NATS_SECRET", "JSARCHIVE_NATS_PARAMETER") if (env.get(n) or "").strip()]
    if len(sources) > 1:
        raise ConfigError("set one of $JSARCHIVE_NATS_SECRET and $JSARCHIVE_NATS_PARAMETER, not both")
    if not sources:
        return None
    try:
        import botocore.exceptions as bce
    except ImportError as e:
        raise ConfigError(NEEDS_BOTO3.format(e=e)) from None
    var = sources[0]
    name = env[var].strip()
    if var == "JSARCHIVE_NATS_SECRET":
        what = f"Secrets Manager secret {name!r}"
        try:
            resp = _aws_client("secretsmanager").get_secret_value(SecretId=name)
        except (bce.BotoCoreError, bce.ClientError) as e:
            raise _aws_secret_error(e, what, var) from None
        text = resp.get("SecretString")
        if text is None:
            text = bytes(resp.get("SecretBinary") or b"").decode("utf-8", "replace")
        return text, what
    what = f"SSM parameter {name!r}"
    try:
        resp = _aws_client("ssm").get_parameter(Name=name, WithDecryption=True)
    except (bce.BotoCoreError, bce.ClientError) as e:
        raise _aws_secret_error(e, what, var) from None
    return str(resp["Parameter"]["Value"]), what


def connect_options(env: Mapping[str, str]) -> ConnectOptions:
    """Where and how to reach NATS: ``$NATS_URL`` and natscli's variables, then the secret (which wins)."""
    fields: dict[str, Any] = {
        "servers": env.get("NATS_URL") or None,
        "creds": env.get("NATS_CREDS") or None,  # a file in the image or a mounted secret volume
        "nkey": env.get("NATS_NKEY") or None,
        "tls_ca": env.get("NATS_CA") or None,
        "tls_cert": env.get("NATS_CERT") or None,
        "tls_key": env.get("NATS_KEY") or None,
        "js_domain": env.get("JSARCHIVE_JS_DOMAIN") or None,
        "timeout": _duration(env, "NATS_TIMEOUT"),
    }
    user = env.get("NATS_USER") or None
    if user and not env.get("NATS_PASSWORD"):
        fields["token"] = user  # natscli: a user without a password is a token
    else:
        fields["user"], fields["password"] = user, env.get("NATS_PASSWORD") or None
    given = env.get("JSARCHIVE_NATS_CREDENTIALS")
    secret = (given, "$JSARCHIVE_NATS_CREDENTIALS") if given and given.strip() else read_secret_text(env)
    if secret is not None:
        fields.update(parse_credentials(*secret))
    if not fields.get("servers"):
        raise ConfigError("$NATS_URL is not set (nor a url in the NATS secret): the handler needs the servers")
    return ConnectOptions(**fields)


@dataclass
class HandlerConfig:
    operation: str
    url: str
    run: str | None
    stream: str | None
    include: list[str]
    exclude: list[str]
    env: Mapping[str, str] = field(repr=False)

    @classmethod
    def load(cls, env: Mapping[str, str], event: Mapping[str, Any]) -> HandlerConfig:
        extra = sorted(k for k in event if k not in EVENT_FIELDS and not _is_trigger_field(k))
        if extra:
            raise ConfigError(
                f"the event has field(s) {', '.join(extra)} the handler does not take; "
                f"it takes {', '.join(EVENT_FIELDS)} (the rest comes from the environment)"
            )
        operation = str(event.get("operation") or env.get("JSARCHIVE_OPERATION") or "account-backup")
        if operation not in OPERATIONS:
            raise ConfigError(f"operation {operation!r} is not one of {', '.join(OPERATIONS)}")
        url = _required(env, "JSARCHIVE_URL", "the archive URL (s3://bucket/prefix, gs://bucket/prefix or a path)")
        stream = str(event.get("stream") or env.get("JSARCHIVE_STREAM") or "") or None
        if operation == "stream-backup" and not stream:
            raise ConfigError("stream-backup needs the stream: set $JSARCHIVE_STREAM or the event's stream field")
        include = _list(event.get("include") if "include" in event else env.get("JSARCHIVE_INCLUDE"))
        exclude = _list(event.get("exclude") if "exclude" in event else env.get("JSARCHIVE_EXCLUDE"))
        run = event.get("run")
        return cls(operation, url, _run_id(str(run)) if run else None, stream, include, exclude, env)


def _is_trigger_field(name: str) -> bool:
    # EventBridge rule events carry their envelope; the handler ignores it (and uses its id for the run).
    return name in ("version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail")


def _run_id(text: str) -> str:
    """A valid run id from a trigger-provided one (a scheduler's execution id or time may hold ':' and such)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:128]
    if not cleaned:
        raise ConfigError(f"run id {text!r} has no usable characters")
    return cleaned


def _default_run(event: Mapping[str, Any], request_id: str | None) -> str:
    """Stable across retries of one trigger: EventBridge's event id, else the invocation's request id.

    Lambda retries an asynchronous invocation with the same request id, so a retry resumes the run.
    """
    if event.get("id") and event.get("source"):
        return _run_id(f"sched-{event['id']}")
    if request_id:
        return _run_id(f"run-{request_id}")
    return _run_id(f"run-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}")


def key_ring(env: Mapping[str, str], *, write: bool) -> Any:
    from pipeline.keys.keyring import KeyRing

    ring = KeyRing.load(
        recipients=_list(env.get("JSARCHIVE_RECIPIENTS")),
        kms_keys=_list(env.get("JSARCHIVE_KMS_KEY")),
        gcp_kms_keys=_list(env.get("JSARCHIVE_GCP_KMS_KEY")),
        kms_endpoint=env.get("AWS_ENDPOINT_URL_KMS") or None,
        use_kms_slots=_flag(env, "JSARCHIVE_USE_KMS_SLOTS"),
    )
    if write and not ring.can_write and not _flag(env, "JSARCHIVE_NO_ENCRYPT"):
        raise ConfigError(
            "no key to encrypt with: set $JSARCHIVE_RECIPIENTS (age1…) and/or $JSARCHIVE_KMS_KEY / "
            "$JSARCHIVE_GCP_KMS_KEY, or $JSARCHIVE_NO_ENCRYPT=true to store backups in the clear"
        )
    return ring


def _sink(env: Mapping[str, str], url: str) -> Any:
    from sinks import SinkOptions

    if url.startswith("mem://"):
        # An in-memory archive ends with the invocation: a backup there would report success and be gone.
        raise ConfigError(f"$JSARCHIVE_URL is {url}: mem:// archives exist only inside one Python process")
    # The endpoint only from the S3-specific variable: boto3 applies $AWS_ENDPOINT_URL to every service by itself.
    return SinkOptions(
        endpoint_url=(env.get("AWS_ENDPOINT_URL_S3") or None) if url.startswith("s3://") else None,
        sse_kms_key=env.get("JSARCHIVE_SSE_KMS_KEY") or None,
        limit_upload=_size(env, "JSARCHIVE_LIMIT_UPLOAD", 0) or None,  # bytes per second; unset: no limit
        limit_download=_size(env, "JSARCHIVE_LIMIT_DOWNLOAD", 0) or None,
    )


def _retention(env: Mapping[str, str]) -> Any:
    from sinks import Retention

    mode = (env.get("JSARCHIVE_LOCK_MODE") or "").strip().upper()
    days = _int(env, "JSARCHIVE_RETAIN_DAYS", 0)
    if not mode:
        if days:
            raise ConfigError("$JSARCHIVE_RETAIN_DAYS needs $JSARCHIVE_LOCK_MODE (GOVERNANCE or COMPLIANCE)")
        return None  # the bucket's default retention (the terraform modules set one) still applies
    if mode not in ("GOVERNANCE", "COMPLIANCE"):
        raise ConfigError(f"$JSARCHIVE_LOCK_MODE is {mode!r}; expected GOVERNANCE or COMPLIANCE")
    if days < 1:
        raise ConfigError("$JSARCHIVE_LOCK_MODE needs $JSARCHIVE_RETAIN_DAYS (at least 1)")
    return Retention(mode=mode, until=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days))


def _backup_options(env: Mapping[str, str], stream: str, url: str, connect: Any) -> Any:
    """The BackupOptions of a scheduled backup (for an account backup, those of every stream: ``stream`` is
    filled in per stream), from the environment as the CLI builds them from its flags."""
    from pipeline.flows.backup import BackupOptions
    from pipeline.format.compress import Compression

    return BackupOptions(
        stream=stream,
        url=url,
        connect=connect,
        keys=key_ring(env, write=True),
        encrypt=not _flag(env, "JSARCHIVE_NO_ENCRYPT"),
        compression=Compression.parse(env.get("JSARCHIVE_COMPRESSION") or "zstd:3"),
        consumers=_flag(env, "JSARCHIVE_CONSUMERS", True),
        storage_class=(env.get("JSARCHIVE_STORAGE_CLASS") or "").upper() or None,
        retention=_retention(env),
        sink=_sink(env, url),
    )


# -- the time budget -------------------------------------------------------------------------------------------


@dataclass
class TimeBudget:
    """Whether a stream can still finish before the invocation ends, at the rate streams have shown so far.

    The estimate for a stream of B bytes is ``STREAM_OVERHEAD + ESTIMATE_SLACK × B / rate``, where ``rate`` is the
    stream bytes per second of the streams finished in this invocation that took at least a second (per stream, so
    parallel streams sharing the link are measured as they run), or ``assumed_rate`` before there is one.
    """

    remaining_ms: Callable[[], float]
    margin: float = DEFAULT_MARGIN
    assumed_rate: float = DEFAULT_ASSUMED_RATE
    _bytes: int = 0
    _seconds: float = 0.0

    def observe(self, nbytes: int, seconds: float) -> None:
        if seconds >= MIN_SAMPLE_SECONDS and nbytes > 0:
            self._bytes += nbytes
            self._seconds += seconds

    @property
    def rate(self) -> tuple[float, str]:
        if self._seconds > 0:
            return self._bytes / self._seconds, "observed"
        return float(self.assumed_rate), "assumed"

    def left(self) -> float:
        return self.remaining_ms() / 1000.0 - self.margin

    def estimate(self, nbytes: int) -> float:
        return STREAM_OVERHEAD + ESTIMATE_SLACK * nbytes / self.rate[0]

    def admit(self, stream: str, nbytes: int) -> str | None:
        """None if ``stream`` fits; else why it is deferred."""
        from pipeline.base.units import human_bytes

        need, left = self.estimate(nbytes), self.left()
        if need <= left:
            return None
        rate, how = self.rate
        return (
            f"deferred: {stream} ({human_bytes(nbytes)}) needs about {need:.0f} s at {human_bytes(rate)}/s "
            f"({how}), {max(left, 0.0):.0f} s are left before the {self.margin:g} s safety margin"
        )


# -- the runs --------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What :func:`run_scheduled` returns (as JSON) and reports."""

    report: metrics.RunReport
    result: dict


def _account_backup(cfg: HandlerConfig, budget: TimeBudget, emit: Callable[[dict], None], run: str) -> Outcome:
    from pipeline.archive.runs import StreamOutcome
    from pipeline.base.errors import AccountRunFailed
    from pipeline.jetstream.account import PlannedStream
    from pipeline.ops.account_backup import AccountBackupOptions, backup_account

    env = cfg.env
    opts = AccountBackupOptions(
        each=_backup_options(env, "", cfg.url, connect_options(env)),
        force=_flag(env, "JSARCHIVE_FORCE"),
        include=cfg.include,
        exclude=cfg.exclude,
        parallel=max(1, _int(env, "JSARCHIVE_PARALLEL", 2)),
        run=run,
    )
    started = time.time()

    def on_stream(o: StreamOutcome) -> None:
        if o.status == "backed_up":
            budget.observe(o.bytes, o.seconds)
        emit(metrics.stream_line(cfg.operation, cfg.url, o.to_json(), run=run))

    def admit(p: PlannedStream) -> str | None:
        return budget.admit(p.name, p.bytes)

    try:
        doc, error = backup_account(opts, on_stream=on_stream, admit=admit).to_json(), None
    except AccountRunFailed as e:
        # Reported like a success, with the failed streams; run_scheduled raises once the metrics are out.
        doc, error = e.result.to_json(), str(phrased(e))  # type: ignore[attr-defined]
    report = metrics.account_report(doc, ok=error is None, started=started, error=error)
    owed = sorted(set(doc.get("pending") or []) | set(doc.get("deferred") or []) | set(doc.get("failed") or []))
    result = {
        "ok": report.ok,
        "operation": cfg.operation,
        "archive": cfg.url,
        "run": run,
        "set_id": doc.get("set_id"),
        "sealed": doc.get("set_id") is not None,
        "streams": {"ok": report.streams_ok, "failed": report.streams_failed, "deferred": report.streams_deferred},
        "deferred": doc.get("deferred") or [],
        "failed": doc.get("failed") or [],
        "pending": doc.get("pending") or [],
        "bytes": report.bytes,
        "stored_bytes": report.stored_bytes,
        "seconds": round(report.seconds, 3),
        "warnings": doc.get("warnings") or [],
    }
    if owed:
        result["resume"] = {
            "event": {"operation": cfg.operation, "run": run},
            "command": f"jsarchive account backup {cfg.url} --run {run}",
            "why": "the run is not sealed yet: a later attempt with the same run id backs up what is owed "
            f"({', '.join(owed)}) and writes the set",
        }
        report.details["resume"] = result["resume"]["command"]
    return Outcome(report, result)


async def _stream_size(opts: ConnectOptions, stream: str) -> int:
    from pipeline.base.errors import NotFoundError
    from pipeline.jetstream.client import connect

    async with await connect(opts) as js:
        info = await js.stream_info(stream)
    if info is None:
        raise NotFoundError(f"stream {stream!r} does not exist on the server")
    return int((info.get("state") or {}).get("bytes", 0))


def _stream_backup(cfg: HandlerConfig, budget: TimeBudget, emit: Callable[[dict], None], run: str) -> Outcome:
    from pipeline.flows.backup import backup_stream

    env = cfg.env
    assert cfg.stream is not None
    connect = connect_options(env)
    started = time.time()
    size = asyncio.run(_stream_size(connect, cfg.stream))
    why = budget.admit(cfg.stream, size)
    if why:
        line = {"stream": cfg.stream, "status": "deferred", "bytes": 0, "message": why}
        emit(metrics.stream_line(cfg.operation, cfg.url, line, run=run))
        report = metrics.RunReport(
            cfg.operation, cfg.url, ok=False, started=started, seconds=time.time() - started, streams_deferred=1
        )
        report.error = why
        report.details["resume"] = f"jsarchive stream backup {cfg.stream} {cfg.url}"
        result = {
            "ok": False,
            "operation": cfg.operation,
            "archive": cfg.url,
            "stream": cfg.stream,
            "deferred": [cfg.stream],
            "message": why,
            "resume": {"command": report.details["resume"], "why": "run it where the time is not limited"},
        }
        return Outcome(report, result)
    res = backup_stream(_backup_options(env, cfg.stream, cfg.url, connect))
    line = {**res.to_json(), "status": "backed_up"}
    emit(metrics.stream_line(cfg.operation, cfg.url, line, run=run))
    report = metrics.RunReport(
        cfg.operation,
        cfg.url,
        ok=True,
        started=started,
        seconds=time.time() - started,
        bytes=res.bytes,
        stored_bytes=res.stored_bytes,
        streams_ok=1,
        details={"stream": res.stream, "manifest_id": res.manifest_id},
    )
    return Outcome(report, {"ok": True, "operation": cfg.operation, "archive": cfg.url, "backup": res.to_json()})


def _prune(cfg: HandlerConfig, emit: Callable[[dict], None]) -> Outcome:
    from pipeline.archive.retention import Duration, Policy
    from pipeline.ops.prune import DELETE, LOCKED, PruneOptions, prune

    env = cfg.env
    within = env.get("JSARCHIVE_KEEP_WITHIN") or None
    policy = Policy(
        last=_int(env, "JSARCHIVE_KEEP_LAST", 0),
        hourly=_int(env, "JSARCHIVE_KEEP_HOURLY", 0),
        daily=_int(env, "JSARCHIVE_KEEP_DAILY", 0),
        weekly=_int(env, "JSARCHIVE_KEEP_WEEKLY", 0),
        monthly=_int(env, "JSARCHIVE_KEEP_MONTHLY", 0),
        yearly=_int(env, "JSARCHIVE_KEEP_YEARLY", 0),
        within=Duration.parse(within) if within else None,
    )
    if policy.empty():
        raise ConfigError("prune needs a policy: set at least one $JSARCHIVE_KEEP_* variable")
    now = dt.datetime.now(dt.timezone.utc)
    grace = now - Duration.parse(env.get("JSARCHIVE_PRUNE_GRACE") or "24h").before(now)
    started = time.time()
    rep = prune(
        PruneOptions(
            url=cfg.url,
            policy=policy,
            stream=cfg.stream,
            confirm=_flag(env, "JSARCHIVE_PRUNE_CONFIRM"),
            grace=grace,
            prune_sets=_flag(env, "JSARCHIVE_PRUNE_SETS"),
            sink=_sink(env, cfg.url),
        )
    )
    for b in rep.backups:
        if b.action in (DELETE, LOCKED):
            emit(
                {
                    "severity": "ERROR" if b.error else "INFO",
                    "event": "jsarchive.prune",
                    "archive": cfg.url,
                    "stream": b.stream,
                    "manifest_id": b.manifest_id,
                    "created": b.created,
                    "action": b.action,
                    "deleted": b.deleted,
                    "stored_bytes": b.stored_bytes,
                    "message": b.error or "; ".join(b.warnings) or None,
                }
            )
    n, nbytes = rep.to_delete()
    doc = rep.to_json()
    report = metrics.RunReport(
        cfg.operation,
        cfg.url,
        ok=rep.ok,
        started=started,
        seconds=time.time() - started,
        streams_ok=len({b.stream for b in rep.backups}),
        error="; ".join(e["message"] for e in doc["errors"]) or None,
        details={"dry_run": rep.dry_run, "delete_backups": n, "delete_bytes": nbytes, "locked": len(rep.locked)},
    )
    result = {
        "ok": rep.ok,
        "operation": cfg.operation,
        "archive": cfg.url,
        "dry_run": rep.dry_run,
        "policy": rep.policy,
        "delete_backups": n,
        "delete_bytes": nbytes,
        "locked": len(rep.locked),
        "errors": doc["errors"],
        "warnings": rep.warnings,
    }
    return Outcome(report, result)


def _verify(cfg: HandlerConfig, emit: Callable[[dict], None]) -> Outcome:
    from pipeline.archive.verify import FAILED, OK, VerifyOptions, verify_archive

    env = cfg.env
    what = (env.get("JSARCHIVE_VERIFY") or "latest").strip().lower()
    if what not in ("latest", "all"):
        raise ConfigError(f"$JSARCHIVE_VERIFY is {what!r}; expected latest or all")
    deep = _flag(env, "JSARCHIVE_VERIFY_DEEP")
    started = time.time()
    rep = verify_archive(
        VerifyOptions(
            url=cfg.url,
            latest=what == "latest",
            all=what == "all",
            stream=cfg.stream,
            deep=deep,
            keys=key_ring(env, write=False),
            sink=_sink(env, cfg.url),
        )
    )
    for b in rep.backups:
        emit(
            {
                "severity": "INFO" if b.status == OK else "ERROR",
                "event": "jsarchive.verify",
                "archive": cfg.url,
                "stream": b.stream,
                "manifest_id": b.manifest_id,
                "status": b.status,
                "deep": b.deep,
                "stored_bytes": b.stored_bytes,
                "message": "; ".join(b.problems) or None,
            }
        )
    doc = rep.to_json()
    report = metrics.RunReport(
        cfg.operation,
        cfg.url,
        ok=rep.ok,
        started=started,
        seconds=time.time() - started,
        stored_bytes=rep.bytes_read,
        streams_ok=sum(1 for b in rep.backups if b.status == OK),
        streams_failed=sum(1 for b in rep.backups if b.status == FAILED) + doc["unverified"],
        details={"deep": deep, "selection": rep.selection, "exit_code": rep.exit_code},
    )
    result = {
        "ok": rep.ok,
        "operation": cfg.operation,
        "archive": cfg.url,
        "exit_code": rep.exit_code,
        "checked": len(rep.backups),
        "failed": doc["failed"],
        "unverified": doc["unverified"],
        "bytes_read": rep.bytes_read,
        "warnings": rep.warnings,
    }
    return Outcome(report, result)


def _drill(cfg: HandlerConfig, emit: Callable[[dict], None]) -> Outcome:
    """A recovery drill (pipeline/ops/drill.py) into the cluster ``$NATS_URL`` reaches: the evidence goes to drills/."""
    from pipeline.ops.drill import DrillFailed, DrillOptions, run_drill

    env = cfg.env
    cluster = env.get("JSARCHIVE_DRILL_CLUSTER") or None
    tags = _list(env.get("JSARCHIVE_DRILL_TAGS"))
    if not (cluster or tags):
        raise ConfigError("drill needs a target: set $JSARCHIVE_DRILL_CLUSTER or $JSARCHIVE_DRILL_TAGS")
    started = time.time()
    from pipeline.archive.trust import TrustPolicy

    keys = key_ring(env, write=False)
    opts = DrillOptions(
        url=cfg.url,
        set_id=env.get("JSARCHIVE_DRILL_SET") or None,
        connect=connect_options(env),
        keys=keys,
        # as the CLI: with a key configured, an unencrypted (possibly planted) backup is refused
        trust=TrustPolicy.of(keys, allow_unencrypted=env.get("JSARCHIVE_ALLOW_UNENCRYPTED", "") not in ("", "0")),
        target=RestoreTarget(cluster, tuple(tags)),
        prefix=env.get("JSARCHIVE_DRILL_PREFIX") or "DRILL_",
        include=cfg.include,
        exclude=cfg.exclude,
        sign_key=env.get("JSARCHIVE_DRILL_SIGN_KEY_FILE") or None,
        sink=_sink(env, cfg.url),
    )
    try:
        res = run_drill(opts)
        error = None
    except DrillFailed as e:
        res, error = e.result, str(phrased(e))
    rep = res.report
    for st in rep["streams"]:
        emit(
            {
                "severity": "INFO" if st["ok"] else "ERROR",
                "event": "jsarchive.drill",
                "archive": cfg.url,
                "stream": st["stream"],
                "drill_stream": st["drill_stream"],
                "manifest_id": st["manifest_id"],
                "ok": st["ok"],
                "rpo_s": st["rpo_s"],
                "restore_s": st["restore_s"],
                "message": "; ".join(st["problems"]) or None,
            }
        )
    report = metrics.RunReport(
        cfg.operation,
        cfg.url,
        ok=res.passed,
        started=started,
        seconds=time.time() - started,
        streams_ok=sum(1 for st in rep["streams"] if st["ok"]),
        streams_failed=sum(1 for st in rep["streams"] if not st["ok"]),
        error=error,
        details={"rto_s": rep["rto_s"], "rpo_s": rep["rpo_s"], "report": res.report_key},
    )
    result = {
        "ok": res.passed,
        "operation": cfg.operation,
        "archive": cfg.url,
        "report_key": res.report_key,
        "rto_s": rep["rto_s"],
        "rpo_s": rep["rpo_s"],
        "failed": [st["stream"] for st in rep["streams"] if not st["ok"]],
    }
    return Outcome(report, result)


def run_scheduled(
    event: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    *,
    remaining_ms: Callable[[], float] | None = None,
    request_id: str | None = None,
    emf: bool = False,
    out: TextIO | None = None,
) -> dict:
    """Run the configured operation once; log, emit metrics, push them; return the result as JSON.

    Raises the run's error (:class:`ConfigError`, a connection failure, failed streams as
    :class:`~pipeline.base.errors.AccountRunFailed`, …) after reporting it, so the platform counts a failed invocation
    and retries it. Deferred streams are not an error: the result says which and how the run is finished.
    """
    env = os.environ if env is None else env
    event = dict(event or {})
    emit: Callable[[dict], None] = lambda obj: metrics.write_line(obj, out)  # noqa: E731
    started = time.time()
    archive = (env.get("JSARCHIVE_URL") or "").strip()
    operation = str(event.get("operation") or env.get("JSARCHIVE_OPERATION") or "account-backup")
    try:
        cfg = HandlerConfig.load(env, event)
        if remaining_ms is None:
            limit = _float(env, "JSARCHIVE_TIME_LIMIT", DEFAULT_TIME_LIMIT)
            deadline = time.monotonic() + limit
            remaining_ms = lambda: (deadline - time.monotonic()) * 1000.0  # noqa: E731
        budget = TimeBudget(
            remaining_ms,
            margin=_float(env, "JSARCHIVE_SAFETY_MARGIN", DEFAULT_MARGIN),
            assumed_rate=_size(env, "JSARCHIVE_ASSUMED_RATE", DEFAULT_ASSUMED_RATE),
        )
        run = cfg.run or _default_run(event, request_id)
        if cfg.operation == "account-backup":
            outcome = _account_backup(cfg, budget, emit, run)
        elif cfg.operation == "stream-backup":
            outcome = _stream_backup(cfg, budget, emit, run)
        elif cfg.operation == "prune":
            outcome = _prune(cfg, emit)
        elif cfg.operation == "drill":
            outcome = _drill(cfg, emit)
        else:
            outcome = _verify(cfg, emit)
    except JsArchiveError as e:
        _report(metrics.failure_report(operation, archive, started, phrased(e)), env, emf, emit)
        raise
    if cfg.operation.endswith("backup"):
        outcome.report.run = outcome.report.run or run
    _report(outcome.report, env, emf, emit)
    failed = outcome.result.get("failed")
    if cfg.operation == "account-backup" and failed:
        from pipeline.base.errors import AccountRunFailed

        raise AccountRunFailed(
            f"backup of {len(failed)} stream(s) failed: {', '.join(failed)}; the run {run} stays open: a retry "
            "with the same run id backs up what is owed",
            outcome.result,
            1,
        )
    if cfg.operation in ("prune", "verify", "drill") and not outcome.result["ok"]:
        err = JsArchiveError(f"{cfg.operation} of {cfg.url} found problems: {json.dumps(outcome.result)[:2000]}")
        err.exit_code = int(outcome.result.get("exit_code") or 1)
        raise err
    return outcome.result


def _report(report: metrics.RunReport, env: Mapping[str, str], emf: bool, emit: Callable[[dict], None]) -> None:
    emit(metrics.summary_line(report))
    if emf:
        emit(metrics.emf_document(report, env.get("JSARCHIVE_METRICS_NAMESPACE") or metrics.EMF_NAMESPACE))
    url = (env.get("JSARCHIVE_METRICS_PUSH") or "").strip()
    if url:
        try:
            metrics.push(url, report)
        except metrics.MetricsPushFailed as e:
            emit({"severity": "WARNING", "event": "jsarchive.metrics_push", "message": str(e)})


# -- AWS Lambda ----------------------------------------------------------------------------------------------------


def lambda_handler(event: Mapping[str, Any] | None, context: Any) -> dict:
    """AWS Lambda entry (EventBridge Scheduler → this). ``context``: the runtime's, for the remaining time."""
    return run_scheduled(
        event if isinstance(event, Mapping) else {},
        os.environ,
        remaining_ms=context.get_remaining_time_in_millis,
        request_id=getattr(context, "aws_request_id", None),
        emf=True,
    )


# -- Google Cloud Functions (2nd gen) through functions-framework ---------------------------------------------------


def _gcf_response(fn: Callable[[], dict]) -> tuple[str, int, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    try:
        return json.dumps(fn(), default=str), 200, headers
    except JsArchiveError as e:
        # 500: Cloud Scheduler counts the attempt as failed and retries per its policy, resuming the same run.
        body = {"ok": False, "error": {"kind": e.kind, "exit_code": e.exit_code, "message": str(e)}}
        if getattr(e, "result", None) is not None:
            body["result"] = e.result  # type: ignore[attr-defined]
        return json.dumps(body, default=str), 500, headers


def gcf_handler(request: Any) -> tuple[str, int, dict[str, str]]:
    """Cloud Functions HTTP entry (Cloud Scheduler HTTP target with an OIDC token). The JSON body is the event."""
    event = request.get_json(silent=True) or {}
    execution = request.headers.get("Function-Execution-Id") or request.headers.get("X-Cloud-Trace-Context")
    return _gcf_response(lambda: run_scheduled(event, os.environ, request_id=execution))


def gcf_event_handler(cloud_event: Any) -> None:
    """Cloud Functions CloudEvent entry (a Pub/Sub message from Cloud Scheduler; its data is the event as JSON)."""
    data = cloud_event.data or {}
    raw = (data.get("message") or {}).get("data") if isinstance(data, dict) else None
    try:
        event = json.loads(base64.b64decode(raw)) if raw else {}
    except (ValueError, TypeError):
        raise ConfigError("the Pub/Sub message data is not base64-encoded JSON") from None
    if not isinstance(event, dict):
        raise ConfigError("the Pub/Sub message data is JSON but not an object")
    run_scheduled(event, os.environ, request_id=cloud_event["id"])


if "functions_framework" in sys.modules:
    # Under functions-framework (which imports this module): register the signature types. Elsewhere (Lambda, the
    # CLI) it is neither imported nor needed; the framework's default type, http, fits gcf_handler anyway.
    import functions_framework as _ff

    gcf_handler = _ff.http(gcf_handler)
    gcf_event_handler = _ff.cloud_event(gcf_event_handler)


# -- the container image's entry -----------------------------------------------------------------------------------

LAMBDA_HANDLER = "pipeline.entry.handlers.lambda_handler"


def main(argv: list[str] | None = None) -> None:
    """Lambda runtime client under Lambda, else the ``jsarchive`` CLI (a Cloud Run job's task, a shell, …)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        # Lambda passes the image's CMD (or the function's image_config command) as arguments: a handler path.
        handler = args[0] if args and "." in args[0] and not args[0].startswith("-") else LAMBDA_HANDLER
        os.execv(sys.executable, [sys.executable, "-m", "awslambdaric", handler])
    from pipeline.entry.cli import main as cli

    cli(args=args, prog_name="jsarchive")


if __name__ == "__main__":
    main()
