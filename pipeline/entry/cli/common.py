"""What every command shares: natscli's connection flags, key flags, sizes, output, progress and error exits."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import click

from pipeline.base.display import redact_text, safe
from pipeline.base.errors import Interrupted, JsArchiveError, UsageError
from pipeline.base.progress import NoProgress, Progress
from pipeline.base.units import parse_duration, parse_size
from pipeline.entry import settings
from pipeline.entry.cli.progress import LogProgress, RichProgress, abort_live, live_console

if TYPE_CHECKING:  # imported where used: the root CLI loads this module, and `--version`/`--help` must not pay for
    # nats-py, asyncio (tenacity), pyrage and the key code
    from pipeline.jetstream.client import ConnectOptions
    from pipeline.jetstream.placement import RestoreTarget
    from pipeline.keys.keyring import KeyRing
    from sinks import Retention, SinkOptions


class SizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except UsageError as e:
            self.fail(str(e), param, ctx)


SIZE = SizeType()


class RateType(click.ParamType):
    """Bytes per second as a size (``10MiB``, ``512KiB``, plain bytes), ``/s`` optional; 0 is no limit."""

    name = "RATE"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        try:
            return parse_size(text[:-2] if text.lower().endswith("/s") else text)
        except UsageError:
            self.fail(f"{value!r} is not a rate (bytes per second, e.g. 10MiB, 512KiB, 0 for no limit)", param, ctx)


RATE = RateType()


class DurationType(click.ParamType):
    """natscli's durations: ``5s``, ``500ms``, ``1m30s``, ``1h``, or plain seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            return parse_duration(value)
        except UsageError as e:
            self.fail(str(e), param, ctx)


DURATION = DurationType()


def _connection_params(env: bool) -> list[Callable]:
    """natscli's connection flags; ``env``: read natscli's environment variables too (the subcommands do; the
    root group does not, so a flag before the subcommand is never mistaken for the environment)."""

    def var(name: str) -> dict:
        return {"envvar": name} if env else {}

    def shown(name: str) -> str:
        return f" [${name}]" if env else ""

    return [
        click.option(
            "-s",
            "--server",
            "server",
            **var("NATS_URL"),
            help="NATS server URL(s), comma separated" + shown("NATS_URL"),
        ),
        click.option("--user", **var("NATS_USER"), help="username or token" + shown("NATS_USER")),
        click.option("--password", **var("NATS_PASSWORD"), help="password" + shown("NATS_PASSWORD")),
        click.option("--token", **var("NATS_TOKEN"), help="token" + shown("NATS_TOKEN")),
        click.option("--creds", **var("NATS_CREDS"), help="user credentials file" + shown("NATS_CREDS")),
        click.option("--nkey", **var("NATS_NKEY"), help="user NKEY seed file" + shown("NATS_NKEY")),
        click.option("--jwt", "user_jwt", **var("NATS_JWT"), help="user JWT (with --seed)" + shown("NATS_JWT")),
        click.option(
            "--seed", "user_seed", **var("NATS_SEED"), help="user nkey seed (with --jwt)" + shown("NATS_SEED")
        ),
        click.option("--tlscert", **var("NATS_CERT"), help="TLS client certificate" + shown("NATS_CERT")),
        click.option("--tlskey", **var("NATS_KEY"), help="TLS client key" + shown("NATS_KEY")),
        click.option("--tlsca", **var("NATS_CA"), help="TLS CA certificate" + shown("NATS_CA")),
        click.option("--tlsfirst", is_flag=True, help="TLS handshake before the NATS protocol"),
        click.option("--js-domain", help="JetStream domain"),
        click.option("--js-api-prefix", help="JetStream API subject prefix"),
        click.option("--inbox-prefix", help="custom inbox prefix"),
        click.option("--connection-name", help="name of the NATS connection [jsarchive]"),
        click.option(
            "--context", "context_name", **var("NATS_CONTEXT"), help="natscli context to use" + shown("NATS_CONTEXT")
        ),
        click.option("--no-context", is_flag=True, help="use no natscli context (flags and environment only)"),
        click.option(
            "--timeout",
            "conn_timeout",
            type=DURATION,
            **var("NATS_TIMEOUT"),
            help="how long to wait for the server's responses, e.g. 5s, 500ms, 1m [10s]" + shown("NATS_TIMEOUT"),
        ),
        click.option("--trace", is_flag=True, help="print JetStream API requests and replies to stderr"),
    ]


CONNECTION_PARAMS = (
    "server", "user", "password", "token", "creds", "nkey", "user_jwt", "user_seed", "tlscert", "tlskey", "tlsca",
    "tlsfirst", "js_domain", "js_api_prefix", "inbox_prefix", "connection_name", "context_name", "no_context",
    "conn_timeout", "trace",
)  # fmt: skip
_ROOT_KEY = "jsarchive.connection"


def connection_options(f: Callable) -> Callable:
    """natscli's connection flags and environment variables."""
    for o in reversed(_connection_params(env=True)):
        f = o(f)
    return f


def root_connection_options(f: Callable) -> Callable:
    """The connection flags on the root group (natscli has them global): kept for :func:`connect_options`."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {k: kwargs.pop(k) for k in CONNECTION_PARAMS if k in kwargs}
        click.get_current_context().meta[_ROOT_KEY] = given
        return f(*args, **kwargs)

    for o in reversed(_connection_params(env=False)):
        wrapper = o(wrapper)
    return wrapper


def _merged_connection(kw: dict) -> dict:
    """The subcommand's connection values, a flag given before the subcommand filling in for one not given after
    it (a flag after the subcommand wins; the environment counts for less than either flag)."""
    from click.core import ParameterSource

    values = {k: kw.pop(k, None) for k in CONNECTION_PARAMS}
    ctx = click.get_current_context(silent=True)
    root = ctx.meta.get(_ROOT_KEY, {}) if ctx is not None else {}
    for k, v in root.items():
        if v in (None, False):
            continue
        if ctx is not None and ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE:
            continue
        values[k] = v
    return values


def connect_options(kw: dict) -> ConnectOptions:
    from pipeline.jetstream.client import ConnectOptions

    v = _merged_connection(kw)
    user, password, token = settings.nats_user(v["user"], v["password"], v["token"])
    return ConnectOptions(
        servers=v["server"],
        user=user,
        password=password,
        token=token,
        creds=v["creds"],
        nkey=v["nkey"],
        user_jwt=v["user_jwt"],
        user_seed=v["user_seed"],
        tls_cert=v["tlscert"],
        tls_key=v["tlskey"],
        tls_ca=v["tlsca"],
        tls_first=bool(v["tlsfirst"]),
        js_domain=v["js_domain"],
        js_api_prefix=v["js_api_prefix"],
        inbox_prefix=v["inbox_prefix"],
        context=v["context_name"],
        no_context=bool(v["no_context"]),
        timeout=v["conn_timeout"],
        name=v["connection_name"] or "jsarchive",
        trace=bool(v["trace"]),
    )


def kms_key_options(write: bool, prefix: str = "") -> list[Callable]:
    """--kms-key / --gcp-kms-key (and, for reading, --use-kms-slots); ``prefix`` names the unlock keys of add-slot."""
    verb = "wraps the data key (needs kms:Encrypt / cryptoKeyEncrypter)" if write else "opens backups (needs Decrypt)"
    env = not prefix
    opts = [
        click.option(
            f"--{prefix}kms-key",
            f"{prefix.replace('-', '_')}kms_keys",
            multiple=True,
            metavar="ARN|ALIAS|ID",
            envvar="JSARCHIVE_KMS_KEY" if env else None,
            help=("unlock: " if prefix else "")
            + f"AWS KMS key that {verb} (repeatable)"
            + (" [$JSARCHIVE_KMS_KEY]" if env else ""),
        ),
        click.option(
            f"--{prefix}gcp-kms-key",
            f"{prefix.replace('-', '_')}gcp_kms_keys",
            multiple=True,
            metavar="projects/…/cryptoKeys/K",
            envvar="JSARCHIVE_GCP_KMS_KEY" if env else None,
            help=("unlock: " if prefix else "")
            + f"Google Cloud KMS key that {verb} (repeatable)"
            + (" [$JSARCHIVE_GCP_KMS_KEY]" if env else ""),
        ),
    ]
    if not write:
        opts.append(
            click.option(
                "--use-kms-slots",
                is_flag=True,
                envvar="JSARCHIVE_USE_KMS_SLOTS",
                help="also ask KMS to open every aws-kms/gcp-kms slot with the key the slot names, with this "
                "host's credentials [$JSARCHIVE_USE_KMS_SLOTS]",
            )
        )
    return opts


def kms_endpoint_option(f: Callable) -> Callable:
    return click.option(
        "--kms-endpoint",
        envvar="AWS_ENDPOINT_URL_KMS",
        metavar="URL",
        help="AWS KMS endpoint URL (KMS-compatible services, tests) [$AWS_ENDPOINT_URL_KMS]",
    )(f)


def key_options(write: bool) -> Callable:
    def deco(f: Callable) -> Callable:
        opts = [
            click.option(
                "--identity",
                "-i",
                "identity_files",
                multiple=True,
                metavar="FILE",
                help="age identity file (opens backups; also writes to its public key)",
            ),
            click.option(
                "--key-file",
                "key_files",
                multiple=True,
                metavar="FILE",
                help="raw 256-bit key file (64 hex digits); $JSARCHIVE_KEY is used too",
            ),
            *kms_key_options(write),
            kms_endpoint_option,
        ]
        if write:
            opts = [
                click.option(
                    "--recipient",
                    "-r",
                    "recipients",
                    multiple=True,
                    metavar="AGE1…",
                    help="age recipient that can open the backup (repeatable)",
                ),
                click.option(
                    "--recipients-file",
                    "-R",
                    "recipients_files",
                    multiple=True,
                    metavar="FILE",
                    help="file of age recipients, one a line",
                ),
                *opts,
            ]
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def key_ring(kw: dict) -> KeyRing:
    from pipeline.keys.keyring import KeyRing

    return KeyRing.load(
        recipients=list(kw.pop("recipients", ())),
        recipients_files=list(kw.pop("recipients_files", ())),
        identity_files=list(kw.pop("identity_files", ())),
        key_files=list(kw.pop("key_files", ())),
        kms_keys=list(kw.pop("kms_keys", ())),
        gcp_kms_keys=list(kw.pop("gcp_kms_keys", ())),
        kms_endpoint=kw.pop("kms_endpoint", None),
        aws_profile=kw.get("profile"),  # --profile applies to the archive and to KMS; sink_options pops it
        use_kms_slots=bool(kw.pop("use_kms_slots", False)),
    )


def archive_options(f: Callable) -> Callable:
    """How to reach the archive's object store; credentials come from the SDKs' default chains."""
    opts = [
        click.option(
            "--s3-endpoint",
            envvar=list(settings.S3_ENDPOINT_VARS),  # the first one set, as the AWS SDKs read them
            help="S3-compatible endpoint URL [$AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL]",
        ),
        click.option("--region", help="object store region [SDK default]"),
        click.option("--profile", envvar="AWS_PROFILE", help="AWS profile [$AWS_PROFILE]"),
        click.option(
            "--limit-upload",
            type=RATE,
            envvar="JSARCHIVE_LIMIT_UPLOAD",
            help="at most this many bytes per second written to the archive, e.g. 10MiB [$JSARCHIVE_LIMIT_UPLOAD]",
        ),
        click.option(
            "--limit-download",
            type=RATE,
            envvar="JSARCHIVE_LIMIT_DOWNLOAD",
            help="at most this many bytes per second read from the archive, e.g. 10MiB [$JSARCHIVE_LIMIT_DOWNLOAD]",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def sink_options(kw: dict, sse_kms_key: str | None = None, *, url: str) -> SinkOptions:
    """Archive options for ``url``; --s3-endpoint ($AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL) only ever applies to
    s3:// archives."""
    if settings.is_process_local(url):
        raise UsageError(f"{url}: {settings.MEM_ONLY} (the test suite's)")
    return settings.sink_options(
        url,
        endpoint=kw.pop("s3_endpoint", None),
        region=kw.pop("region", None),
        profile=kw.pop("profile", None),
        sse_kms_key=sse_kms_key,
        limit_upload=kw.pop("limit_upload", None),
        limit_download=kw.pop("limit_download", None),
    )


def storage_options(f: Callable) -> Callable:
    """Backup-only: where and how long the stored objects live."""
    opts = [
        click.option(
            "--storage-class",
            help="storage class of the data object (S3: STANDARD, STANDARD_IA, "
            "INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE; GCS: STANDARD, NEARLINE, COLDLINE, "
            "ARCHIVE); manifests and refs stay STANDARD",
        ),
        click.option(
            "--lock-mode",
            type=click.Choice(["GOVERNANCE", "COMPLIANCE"], case_sensitive=False),
            help="Object Lock mode for data, manifest and ref",
        ),
        click.option("--retain-until", metavar="DATE", help="lock until this UTC date or time (ISO 8601)"),
        click.option("--retain-days", type=click.IntRange(1, 36500), help="lock for this many days"),
        click.option("--legal-hold", is_flag=True, help="also place a legal hold (needs --lock-mode)"),
        click.option("--sse-kms-key", help="S3 server-side encryption with this KMS key"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def retention(kw: dict) -> Retention | None:
    import datetime as dt

    mode, until, days, hold = kw.pop("lock_mode"), kw.pop("retain_until"), kw.pop("retain_days"), kw.pop("legal_hold")
    if not mode:
        if until or days or hold:
            raise UsageError("--retain-until, --retain-days and --legal-hold need --lock-mode GOVERNANCE|COMPLIANCE")
        return None
    if bool(until) == bool(days):
        raise UsageError("--lock-mode needs exactly one of --retain-until DATE or --retain-days N")
    now = dt.datetime.now(dt.timezone.utc)
    if days:
        when = now + dt.timedelta(days=days)
    else:
        try:
            when = dt.datetime.fromisoformat(until.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--retain-until {until!r} is not an ISO 8601 date or time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        if when <= now:
            raise UsageError(f"--retain-until {until} is in the past")
    from sinks import Retention

    return Retention(mode=mode.upper(), until=when, legal_hold=hold)


def output_options(f: Callable) -> Callable:
    f = click.option("--json", "as_json", is_flag=True, help="print the result as JSON")(f)
    f = click.option("--no-progress", is_flag=True, help="no progress bar (log lines instead)")(f)
    return f


def emit_json(obj: Any) -> None:
    # ensure_ascii (the default) writes every control character, DEL and C1 included, as a \u escape.
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def echo(text: object = "", *, err: bool = False) -> None:
    """Print one line for a person. Every human-readable line goes through here: names from archives and servers
    may hold control characters, and messages may echo URLs with credentials (pipeline.base.display). While a
    progress bar is drawn the line is printed above it, never into it."""
    console = live_console()
    if console is not None:
        from rich.text import Text

        console.print(Text(safe(text)))
        return
    click.echo(safe(text), err=err)


def push_warning(message: str) -> None:
    """A failed --metrics-push: a warning, never the run's failure (the message may echo the Pushgateway URL)."""
    echo(f"jsarchive: warning: {message}", err=True)


def cell(text: object, style: str | None = None) -> Any:
    """A rich table cell that shows ``text`` as is: escaped like :func:`echo`, never read as rich markup."""
    from rich.text import Text

    return Text(safe(text), style=style or "")


def make_progress(no_progress: bool, as_json: bool) -> Progress:
    if as_json and no_progress:
        return NoProgress()
    if no_progress or not sys.stderr.isatty() or not sys.stdout.isatty():
        return LogProgress()
    return RichProgress()


def handle_errors(f: Callable) -> Callable:
    """Turn library errors into one line on stderr (or a JSON error object) and the documented exit code."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json", False)
        try:
            return f(*args, **kwargs)
        except KeyboardInterrupt:
            err: JsArchiveError = Interrupted("interrupted")
        except JsArchiveError as e:
            err = e
        error_exit(err, as_json)

    return wrapper


def error_document(err: JsArchiveError) -> dict:
    """The ``error`` object of a failed command's JSON output, its message without credentials."""
    doc = err.to_json()  # kind, exit_code, message (settings spelled as flags), subject and settings if any
    doc["message"] = redact_text(doc["message"])
    return doc


def error_exit(err: JsArchiveError, as_json: bool, document: dict | None = None) -> NoReturn:
    """Print the error (after ``document``, or a JSON error object, with --json) and exit with its code."""
    abort_live()
    if as_json:
        emit_json(document if document is not None else {"ok": False, "error": error_document(err)})
    echo(f"jsarchive: error: {err}", err=True)
    sys.exit(err.exit_code)


# -- signing and trust (pipeline/archive/signing.py, pipeline/archive/trust.py)
# ------------------------------------------------------


def sign_key_option(f: Callable) -> Callable:
    """--sign-key: sign what this command writes (manifests, sets)."""
    return click.option(
        "--sign-key",
        "sign_key_file",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        envvar="JSARCHIVE_SIGN_KEY",
        help="Ed25519 private key (PEM, openssl genpkey -algorithm ed25519): sign each manifest and set written "
        "[$JSARCHIVE_SIGN_KEY]",
    )(f)


def sign_key(kw: dict) -> Any:
    """The loaded --sign-key (an Ed25519 private key), or None; a bad file is a usage error before any work."""
    from pipeline.archive.signing import load_private_key

    path = kw.pop("sign_key_file", None)
    return load_private_key(path) if path else None


def trust_key_option(f: Callable) -> Callable:
    """--trust-key: backups and sets must carry a valid signature by one of these keys."""
    return click.option(
        "--trust-key",
        "trust_key_files",
        multiple=True,
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="Ed25519 public key (PEM) whose signature every backup and set must carry (repeatable: any one will do)",
    )(f)


def trust_options(f: Callable) -> Callable:
    """--trust-key and --allow-unencrypted: what a backup must prove before it is restored."""
    f = click.option(
        "--allow-unencrypted",
        is_flag=True,
        help="accept unencrypted backups although a key is configured (refused otherwise: anyone who can "
        "write to the archive can plant one)",
    )(f)
    return trust_key_option(f)


def trusted_keys(kw: dict) -> list:
    """The --trust-key public keys, loaded."""
    from pipeline.archive.signing import load_public_key

    return [load_public_key(p) for p in kw.pop("trust_key_files", ())]


def trust_policy(kw: dict, keys: KeyRing) -> Any:
    """The TrustPolicy of this invocation: its --trust-key keys, --allow-unencrypted, and whether a key is
    configured (``keys``: call :func:`key_ring` first)."""
    from pipeline.archive.trust import TrustPolicy

    trusted = trusted_keys(kw)
    return TrustPolicy.of(keys, trusted, allow_unencrypted=bool(kw.pop("allow_unencrypted", False)))


def signer_fingerprint(key: Any) -> str:
    """The fingerprint a --sign-key's signatures are stored under (signatures/<id>/<fingerprint>)."""
    from pipeline.archive.signing import fingerprint, raw_public

    return fingerprint(raw_public(key))


def restore_target(kw: dict) -> RestoreTarget:
    """--cluster, --tag and --replicas (taken out of ``kw``) as the one value every restoring command passes on."""
    from pipeline.jetstream.placement import RestoreTarget

    return RestoreTarget(kw.pop("cluster"), tuple(kw.pop("tags")), kw.pop("replicas"))
