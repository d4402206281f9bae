"""The JetStream snapshot and restore wire protocol (see docs/operations.md and the protocol reference).

Only what jsarchive needs: connect with natscli's options, JetStream API requests with their errors mapped to
messages a person understands, stream/consumer info, and the two transfers:

- :meth:`JetStream.snapshot` subscribes to a fresh concrete inbox, flushes, requests the snapshot and hands every
  chunk to a caller's coroutine, acking the chunk as soon as that coroutine returns (the chunk is enqueued).
- :meth:`JetStream.restore` requests the restore and publishes chunks with several in flight, each with its own
  reply subject, then the empty EOF, and returns the server's final stream info.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client, RawCredentials

from pipeline.base.display import redact_servers, redact_text, safe
from pipeline.base.errors import (
    AuthFailed,
    ConflictError,
    ConnectionFailed,
    JsArchiveError,
    NotFoundError,
    ServerRefused,
    TransferFailed,
    UsageError,
    setting,
)
from pipeline.base.transfer import RESTORE_IN_FLIGHT, SNAPSHOT_CHUNK, SNAPSHOT_WINDOW, MiB
from pipeline.format.snapshot import format_for_version

API_TIMEOUT = 10.0
SNAPSHOT_IDLE_TIMEOUT = 10.0  # the server gives up after 5 s without acks; 10 s of silence means it is gone
RESTORE_INIT_TIMEOUT = 30.0  # clustered: the meta leader places the stream and the new leader answers
RESTORE_ACK_TIMEOUT = 30.0
RESTORE_EOF_TIMEOUT = 3600.0  # older servers do the whole restore after EOF
FIRST_CHUNK_GRACE = 2.0  # how long the first restore chunk may find no subscriber (well inside the 5 s watchdog)


def parse_version(text: str) -> tuple[int, int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)


# -- errors -----------------------------------------------------------------------------------------------------

# err_code → (exception class, message template). {desc} is the server's description, {stream} the stream.
_ERRORS: dict[int, tuple[type[JsArchiveError], str]] = {
    10059: (NotFoundError, "stream {stream!r} does not exist on the server"),
    10130: (
        ConflictError,
        "stream {stream!r} already exists on the target server; delete it first or pick another target",
    ),
    10005: (
        ServerRefused,
        f"the target cannot place stream {{stream!r}}: {{desc}}. Check "
        f"{setting('cluster')}, {setting('tag')} and {setting('replicas')} against the "
        "target's cluster names, server tags and number of servers",
    ),
    10056: (UsageError, "the stream name in the restore request does not match its config: {desc}"),
    10062: (TransferFailed, "the server could not restore stream {stream!r}: {desc}"),
    10064: (ServerRefused, "the server could not snapshot stream {stream!r}: {desc}"),
    10015: (UsageError, "the server rejected the snapshot inbox: {desc}"),
    10185: (ServerRefused, "the server's JetStream API level is too low for this request: {desc}"),
    10047: (ServerRefused, "the server has too little storage for stream {stream!r}: {desc}"),
    10023: (ServerRefused, "the account's JetStream limits do not allow stream {stream!r}: {desc}"),
    10039: (ServerRefused, "JetStream is not enabled for this account: {desc}"),
    10076: (ServerRefused, "JetStream is not enabled on the server: {desc}"),
    10008: (ServerRefused, "JetStream is temporarily unavailable (no meta leader?): {desc}"),
    10128: (UsageError, "stream name {stream!r} is not valid: {desc}"),
}


class ApiError(JsArchiveError):
    """A JetStream API error response that no specific mapping covered."""

    def __init__(self, message: str, code: int = 0, err_code: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code


JS_CLUSTER_NOT_AVAILABLE = 10008  # no meta leader (yet): an election after a server loss
PEER_REMOVE_IN_PROGRESS = 10202  # another membership change is still being applied


def err_code(e: BaseException) -> int:
    """The JetStream error code an error was made from (0 for errors that did not come from an API answer)."""
    return int(getattr(e, "err_code", 0) or 0)


def meta_unavailable(e: BaseException) -> bool:
    """The meta group cannot answer yet (no answer, or no leader): worth asking again during an election."""
    return isinstance(e, TransferFailed) or err_code(e) == JS_CLUSTER_NOT_AVAILABLE


def api_error(err: dict, stream: str = "") -> JsArchiveError:
    code = int(err.get("code", 0) or 0)
    err_code = int(err.get("err_code", 0) or 0)
    desc = str(err.get("description", "")).strip() or f"error {code}"
    if err_code == 10064 and "no impl" in desc:
        return ServerRefused(
            f"stream {stream!r} uses memory storage, which this server cannot snapshot: servers before "
            f"nats-server 2.15 only snapshot file-storage streams ({desc}, error 10064)"
        )
    if err_code == 10064 and "in progress" in desc:
        return ConflictError(
            f"another snapshot of stream {stream!r} is still running on the server; wait for it to end ({desc})"
        )
    cls, template = _ERRORS.get(err_code, (ServerRefused, "the server refused the request for {stream!r}: {desc}"))
    e = cls(template.format(stream=stream, desc=desc) + f" (error {err_code or code})")
    e.err_code = err_code  # type: ignore[attr-defined]
    return e


# -- connection options (natscli's flags and context files) -----------------------------------------------------

CONNECT_TIMEOUT_MIN = 2.0  # a TLS handshake to a distant server needs this much even when --timeout is short
CONNECT_TIMEOUT_MAX = 10.0  # a long --timeout is for slow API answers; a dead address should not stall as long


@dataclass
class ConnectOptions:
    servers: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_first: bool = False
    js_domain: str | None = None
    js_api_prefix: str | None = None
    inbox_prefix: str | None = None
    context: str | None = None
    # natscli's --timeout: how long to wait for responses (JetStream API requests). None: the library's defaults.
    timeout: float | None = None
    name: str = "jsarchive"
    no_context: bool = False  # natscli --no-context: ignore the selected context and $NATS_CONTEXT
    trace: bool = False  # print every JetStream API request and reply to stderr
    # Secrets handed over in memory (cloud runners read them from a secret store): the text of a credentials file
    # and an nkey seed. Never written to disk, never in repr.
    creds_data: str | None = field(default=None, repr=False)
    nkey_seed: str | None = field(default=None, repr=False)
    # natscli --jwt/--seed (context user_jwt/user_seed): a user JWT and its nkey seed, each the value or a file.
    user_jwt: str | None = field(default=None, repr=False)
    user_seed: str | None = field(default=None, repr=False)

    def resolved(self) -> ConnectOptions:
        """Fill unset fields from the natscli context (``--context``, ``$NATS_CONTEXT`` or the selected one)."""
        ctx = {} if self.no_context and not self.context else load_context(self.context)
        _check_context_fields(ctx, self.context)
        mapping = {
            "servers": "url",
            "user": "user",
            "password": "password",
            "token": "token",
            "creds": "creds",
            "nkey": "nkey",
            "tls_cert": "cert",
            "tls_key": "key",
            "tls_ca": "ca",
            "js_domain": "jetstream_domain",
            "js_api_prefix": "jetstream_api_prefix",
            "inbox_prefix": "inbox_prefix",
            "user_jwt": "user_jwt",
            "user_seed": "user_seed",
        }
        out = ConnectOptions(**self.__dict__)
        for attr, key in mapping.items():
            if getattr(out, attr) in (None, "") and ctx.get(key):
                setattr(out, attr, os.path.expanduser(str(ctx[key])) if attr in _PATHS else ctx[key])
        if not out.tls_first and ctx.get("tls_first"):
            out.tls_first = True
        lookup = str(ctx.get("nsc") or "").strip()
        has_creds = out.creds or out.creds_data or out.user_jwt
        if lookup and not (has_creds and out.servers):
            # natscli resolves the context's nsc URL with nsc itself; what the context or a flag sets wins.
            creds, services = _nsc_profile(lookup, self.context or "selected")
            if not has_creds:
                out.creds = creds
            if not out.servers and services:
                out.servers = services
        if not out.servers:
            out.servers = "nats://127.0.0.1:4222"
        return out

    @property
    def api_prefix(self) -> str:
        if self.js_api_prefix:
            return self.js_api_prefix.rstrip(".")
        if self.js_domain:
            return f"$JS.{self.js_domain}.API"
        return "$JS.API"


_PATHS = {"creds", "nkey", "tls_cert", "tls_key", "tls_ca"}

# natscli context fields: those jsarchive applies, those that change nothing about the connection it makes, and
# those it cannot honour (a refusal, never a connection made without them).
_CONTEXT_APPLIED = {
    "url", "user", "password", "token", "creds", "nkey", "cert", "key", "ca", "tls_first", "nsc",
    "jetstream_domain", "jetstream_api_prefix", "inbox_prefix", "user_jwt", "user_seed",
}  # fmt: skip
_CONTEXT_HARMLESS = {"name", "description", "color_scheme", "jetstream_event_prefix"}
_CONTEXT_UNSUPPORTED = {
    "socks_proxy": "a SOCKS proxy",
    "windows_cert_store": "the Windows certificate store",
    "windows_cert_match": "the Windows certificate store",
    "windows_cert_match_by": "the Windows certificate store",
    "windows_ca_certs_match": "the Windows certificate store",
}


def _check_context_fields(ctx: dict, name: str | None) -> None:
    which = f"NATS context {name!r}" if name else "the selected NATS context"
    for key, value in ctx.items():
        if key in _CONTEXT_APPLIED or key in _CONTEXT_HARMLESS or value in (None, "", False, [], {}):
            continue
        if key in _CONTEXT_UNSUPPORTED:
            raise UsageError(
                f"{which} sets {key!r}: jsarchive cannot connect through {_CONTEXT_UNSUPPORTED[key]}; "
                f"use a context without it (or {setting('no-context')} and flags)"
            )
        raise UsageError(
            f"{which} sets {key!r}, which jsarchive does not know: it may change how natscli connects, so "
            f"jsarchive will not connect without it (remove it, or use {setting('no-context')} and flags)"
        )


NSC_TIMEOUT = 30.0


def _nsc_profile(lookup: str, context: str) -> tuple[str, str | None]:
    """The credentials file and the operator's service URLs that ``nsc generate profile`` reports for ``lookup``
    (an ``nsc://operator/account/user`` URL), as natscli does for a context's ``nsc`` field."""
    import shutil
    import subprocess

    where = f"NATS context {context!r} names its credentials with nsc ({lookup})"
    exe = shutil.which("nsc")
    if exe is None:
        raise UsageError(f"{where}, but nsc is not installed (not on $PATH): install nsc, or set creds in the context")
    try:
        proc = subprocess.run(
            [exe, "generate", "profile", lookup],
            capture_output=True,
            text=True,
            timeout=NSC_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UsageError(f"{where}, and running nsc failed: {e}") from None
    if proc.returncode != 0:
        # stdout is never shown: it can carry JWTs.
        hint = (proc.stderr or "").strip().splitlines()
        raise UsageError(f"{where}, and nsc failed (exit {proc.returncode})" + (f": {hint[-1]}" if hint else ""))
    try:
        profile = json.loads(proc.stdout)
        creds = str(profile["user_creds"]) if profile.get("user_creds") else ""
        service = (profile.get("operator") or {}).get("service")
    except (ValueError, TypeError, AttributeError, KeyError):
        raise UsageError(f"{where}, and nsc answered with something that is not a profile") from None
    if not creds:
        raise UsageError(f"{where}, and nsc's profile names no user credentials")
    if isinstance(service, list):
        service = ",".join(str(s) for s in service if s)
    return creds, (str(service) if service else None)


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def load_context(name: str | None) -> dict:
    """A natscli context as a dict; {} if none is selected. An explicitly named context must exist."""
    base = _config_home() / "nats"
    explicit = bool(name)
    if not name:
        name = os.environ.get("NATS_CONTEXT")
        explicit = bool(name)
    if not name:
        try:
            name = (base / "context.txt").read_text().strip()
        except OSError:
            return {}
    if not name:
        return {}
    path = base / "context" / f"{name}.json"
    try:
        ctx = json.loads(path.read_text())
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"NATS context {name!r} does not exist ({path})") from None
        return {}
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read NATS context {name!r} ({path}): {e}") from None
    if not isinstance(ctx, dict):
        raise UsageError(f"NATS context {name!r} ({path}) is not a JSON object")
    return ctx


def _tls_context(opts: ConnectOptions) -> ssl.SSLContext | None:
    if not (opts.tls_ca or opts.tls_cert or opts.tls_key or (opts.servers or "").startswith("tls://")):
        return None
    if bool(opts.tls_cert) != bool(opts.tls_key):
        raise UsageError(f"{setting('tlscert')} and {setting('tlskey')} must be given together")
    try:
        ctx = ssl.create_default_context(cafile=opts.tls_ca) if opts.tls_ca else ssl.create_default_context()
        if opts.tls_cert and opts.tls_key:
            ctx.load_cert_chain(opts.tls_cert, opts.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(
            f"cannot load the TLS files ({setting('tlsca')}/{setting('tlscert')}/{setting('tlskey')}): {e}"
        ) from None
    return ctx


def _secret_value(value: str, what: str) -> str:
    """natscli's --jwt/--seed take the value; a file holding it is accepted too."""
    text = value.strip()
    try:
        # A JWT is longer than a file name may be: that is an OSError, and means it is no file.
        is_file = "\n" not in text and Path(os.path.expanduser(text)).is_file()
    except (OSError, ValueError):
        is_file = False
    if is_file:
        try:
            text = Path(os.path.expanduser(text)).read_text().strip()
        except OSError as e:
            raise UsageError(f"cannot read the {what} file {text}: {e}") from None
    if not text:
        raise UsageError(f"the {what} is empty")
    return text


def _jwt_credentials(opts: ConnectOptions) -> RawCredentials | None:
    """--jwt and --seed as the text of a credentials file, which nats-py signs the server's nonce with."""
    if not (opts.user_jwt or opts.user_seed):
        return None
    if not (opts.user_jwt and opts.user_seed):
        raise UsageError(
            f"{setting('jwt')} and {setting('seed')} ($NATS_JWT, $NATS_SEED, context user_jwt/user_seed) go together"
        )
    if opts.creds or opts.creds_data:
        raise UsageError(f"give {setting('creds')} or {setting('jwt')} with {setting('seed')}, not both")
    jwt = _secret_value(opts.user_jwt, "user JWT")
    seed = _secret_value(opts.user_seed, "user seed")
    if not seed.startswith("SU"):
        raise UsageError(f"{setting('seed')} is not a user nkey seed (it starts with SU)")
    try:
        import nkeys

        nkeys.from_seed(bytearray(seed.encode())).wipe()
    except Exception:
        raise UsageError(f"{setting('seed')} is not a valid nkey seed") from None
    return RawCredentials(
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


def _connect_timeout(opts: ConnectOptions) -> float:
    wait = opts.timeout if opts.timeout is not None else 5.0
    return min(max(wait, CONNECT_TIMEOUT_MIN), CONNECT_TIMEOUT_MAX)


_AUTH_WORDS = ("authorization violation", "authentication expired", "authentication revoked", "authentication timeout")


def _is_auth_error(e: BaseException) -> bool:
    if isinstance(e, nats.errors.AuthorizationError):
        return True
    text = str(e).lower()
    return any(w in text for w in _AUTH_WORDS)


async def connect(opts: ConnectOptions) -> JetStream:
    opts = opts.resolved()
    connect_timeout = _connect_timeout(opts)
    # nats-py 2.16 reports a refused CONNECT (-ERR 'Authorization Violation') only to the error callback and
    # then raises NoServersError: remember what the callback saw to tell a refusal from a dead server.
    seen: list[BaseException] = []

    async def on_error(e: Exception) -> None:
        if len(seen) < 16:
            seen.append(e)

    kwargs: dict[str, Any] = {
        "servers": [s.strip() for s in opts.servers.split(",") if s.strip()],
        "name": opts.name,
        "connect_timeout": connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": 3,
        "reconnect_time_wait": 0.5,
        # nats-py logs every failed attempt through the error callback; our error message says it once.
        "error_cb": on_error,
        "disconnected_cb": _quiet_noarg,
    }
    if opts.user:
        kwargs["user"] = opts.user
        kwargs["password"] = opts.password or ""
    if opts.token:
        kwargs["token"] = opts.token
    for path, what in ((opts.creds, "credentials file"), (opts.nkey, "nkey seed file")):
        if path and not Path(path).is_file():
            raise UsageError(f"{what} {path} does not exist")
    jwt_creds = _jwt_credentials(opts)
    if opts.creds:
        kwargs["user_credentials"] = opts.creds
    if opts.nkey:
        kwargs["nkeys_seed"] = opts.nkey
    if opts.creds_data:
        kwargs["user_credentials"] = RawCredentials(opts.creds_data)
    if jwt_creds is not None:
        kwargs["user_credentials"] = jwt_creds
    if opts.nkey_seed:
        kwargs["nkeys_seed_str"] = opts.nkey_seed.strip()
    tls = _tls_context(opts)
    if tls is not None:
        kwargs["tls"] = tls
        kwargs["tls_handshake_first"] = opts.tls_first
    if opts.inbox_prefix:
        kwargs["inbox_prefix"] = opts.inbox_prefix

    # The server list can carry passwords and tokens (nats://user:pw@host); the message goes to logs and metrics.
    where = redact_servers(opts.servers)
    attempts = len(kwargs["servers"]) * (kwargs["max_reconnect_attempts"] + 1)
    try:
        nc = await asyncio.wait_for(nats.connect(**kwargs), timeout=connect_timeout * attempts + 5)
    except (nats.errors.Error, OSError, asyncio.TimeoutError) as e:
        refusal = next((x for x in [e, *seen] if _is_auth_error(x)), None)
        if refusal is not None:
            raise AuthFailed(
                f"the NATS server at {where} refused the credentials ({_describe(refusal)}): check "
                f"{_credentials_used(opts)}"
            ) from None
        raise ConnectionFailed(f"cannot connect to NATS at {where}: {_describe(e)}") from None
    except ValueError as e:
        # nats-py checks the credentials' shape before it connects (a bad seed, an unreadable creds text).
        raise UsageError(f"the NATS credentials are not usable: {e}") from None
    js = JetStream(nc, opts.api_prefix)
    if opts.timeout is not None:
        js.api_timeout = opts.timeout
    js.trace = opts.trace
    return js


def _credentials_used(opts: ConnectOptions) -> str:
    used = [
        flag
        for flag, value in (
            (f"{setting('user')}/{setting('password')}", opts.user),
            (f"{setting('token')}", opts.token),
            (f"{setting('creds')}", opts.creds or opts.creds_data),
            (f"{setting('nkey')}", opts.nkey or opts.nkey_seed),
            (f"{setting('jwt')}/{setting('seed')}", opts.user_jwt),
        )
        if value
    ]
    what = " and ".join(used) if used else "the credentials (none were given: the server wants some)"
    return what + (f" (context {opts.context!r})" if opts.context else "")


async def _quiet_noarg() -> None:
    return None


def _describe(e: BaseException) -> str:
    text = redact_text(str(e).strip().strip("'\""))  # nats-py may name the URL it tried
    if _is_auth_error(e):
        return "authorization violation"
    if isinstance(e, nats.errors.NoServersError) or not text:
        return "no server answered (is it running, and is the address right?)"
    return text


TRACE_LIMIT = 2048


def _trace(direction: str, subject: str, body: bytes | str) -> None:
    """One line on stderr per API request or reply: credentials redacted, control characters escaped, cut short."""
    import sys

    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
    text = " ".join(text.split())
    if len(text) > TRACE_LIMIT:
        text = text[:TRACE_LIMIT] + f"… ({len(text)} characters)"
    print(f"jsarchive: trace: {direction} {safe(redact_text(subject))} {safe(redact_text(text))}", file=sys.stderr)


# -- the JetStream API ------------------------------------------------------------------------------------------


@dataclass
class SnapshotResult:
    config: dict
    state: dict
    chunks: int = 0
    bytes: int = 0


@dataclass
class ServerInfo:
    version: str
    name: str
    cluster: str | None
    jetstream: bool
    max_payload: int
    api_level: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    @property
    def snapshot_format(self) -> str:
        return format_for_version(self.version_tuple)


class JetStream:
    # natscli's --timeout: replaces API_TIMEOUT wherever a request waits the default (connect() sets it).
    api_timeout: float = API_TIMEOUT
    trace: bool = False  # --trace: each API request and reply on stderr

    def __init__(self, nc: Client, api_prefix: str = "$JS.API") -> None:
        self.nc = nc
        self.prefix = api_prefix

    async def close(self) -> None:
        # Closing a broken connection must not mask the real error.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.close(), timeout=5)

    async def __aenter__(self) -> JetStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def scatter(self, subject: str, window: float, enough: Callable[[list[dict]], bool]) -> list[dict]:
        """Publish one request to every server (``$SYS.REQ.SERVER.PING.*``) and collect the JSON answers until
        ``enough(answers)`` or ``window`` seconds have passed; answers that are not JSON are left out."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        answers: list[dict] = []
        try:
            await self.nc.publish(subject, b"{}", reply=inbox)
            deadline = time.monotonic() + window
            while time.monotonic() < deadline and not enough(answers):
                try:
                    msg = await sub.next_msg(timeout=max(0.05, deadline - time.monotonic()))
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    break
                with contextlib.suppress(ValueError):
                    doc = json.loads(msg.data)
                    if isinstance(doc, dict):
                        answers.append(doc)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return answers

    def server_info(self) -> ServerInfo:
        info = dict(self.nc._server_info or {})  # nats-py keeps INFO here; there is no public accessor
        return ServerInfo(
            version=str(info.get("version", "0.0.0")),
            name=str(info.get("server_name", "")),
            cluster=info.get("cluster"),
            jetstream=bool(info.get("jetstream")),
            max_payload=int(self.nc.max_payload or MiB),
        )

    async def request(self, subject: str, payload: bytes, timeout: float) -> dict:
        if timeout == API_TIMEOUT:
            timeout = self.api_timeout
        if self.trace:
            _trace(">>>", subject, payload)
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout)
            if self.trace:
                _trace("<<<", subject, msg.data)
        except nats.errors.NoRespondersError:
            if self.trace:
                _trace("<<<", subject, "(no responders)")
            raise ServerRefused(
                f"no JetStream responder for {subject}: JetStream is not enabled for this account, or the "
                f"{setting('js-domain')} / {setting('js-api-prefix')} is wrong"
            ) from None
        except nats.errors.TimeoutError:
            if self.trace:
                _trace("<<<", subject, f"(no answer within {timeout:g} s)")
            raise TransferFailed(f"no answer from the server within {timeout:g} s to {subject}") from None
        except nats.errors.ConnectionClosedError:
            raise ConnectionFailed("the connection to the NATS server was closed") from None
        try:
            return json.loads(msg.data) if msg.data else {}
        except json.JSONDecodeError:
            raise ServerRefused(f"the server answered {subject} with something that is not JSON") from None

    async def api(self, op: str, body: dict | None = None, *, stream: str = "", timeout: float = API_TIMEOUT) -> dict:
        payload = json.dumps(body).encode() if body is not None else b""
        resp = await self.request(f"{self.prefix}.{op}", payload, timeout)
        if "error" in resp:
            raise api_error(resp["error"], stream)
        return resp

    async def account_info(self) -> dict:
        return await self.api("INFO")

    async def rtt(self, timeout: float = 5.0) -> float | None:
        """The connection's round trip in seconds (one PING/PONG, sent beside other requests so it costs no
        round trip of its own); None if it could not be measured, which callers treat as loopback."""
        try:
            return float(await asyncio.wait_for(self.nc.rtt(), timeout))
        except (asyncio.TimeoutError, nats.errors.Error, OSError):
            return None

    async def api_level(self) -> int | None:
        info = await self.account_info()
        level = (info.get("api") or {}).get("level")
        return int(level) if level is not None else None

    async def stream_info(self, stream: str, *, timeout: float = API_TIMEOUT) -> dict | None:
        try:
            return await self.api(f"STREAM.INFO.{stream}", stream=stream, timeout=timeout)
        except NotFoundError:
            return None

    async def stream_names(self) -> list[str]:
        names: list[str] = []
        offset = 0
        while True:
            resp = await self.api("STREAM.NAMES", {"offset": offset})
            page = resp.get("streams") or []
            names.extend(page)
            offset += len(page)
            if not page or offset >= int(resp.get("total", 0)):
                return names

    async def consumers(self, stream: str) -> list[dict]:
        out: list[dict] = []
        offset = 0
        while True:
            resp = await self.api(f"CONSUMER.LIST.{stream}", {"offset": offset}, stream=stream)
            page = resp.get("consumers") or []
            out.extend(page)
            offset += len(page)
            if not page or offset >= int(resp.get("total", 0)):
                return out

    async def consumer_names(self, stream: str, *, timeout: float = API_TIMEOUT) -> list[str]:
        resp = await self.api(f"CONSUMER.NAMES.{stream}", {"offset": 0}, stream=stream, timeout=timeout)
        return list(resp.get("consumers") or [])

    async def delete_stream(self, stream: str, *, timeout: float = API_TIMEOUT) -> bool:
        """Delete ``stream``; True if it is gone afterwards (a delete can take effect without an answer)."""
        try:
            await self.api(f"STREAM.DELETE.{stream}", stream=stream, timeout=timeout)
            return True
        except NotFoundError:
            return True
        except TransferFailed:
            return stream not in await self.stream_names()

    async def create_stream(self, config: dict, *, timeout: float = API_TIMEOUT) -> dict:
        return await self.api(f"STREAM.CREATE.{config['name']}", config, stream=config["name"], timeout=timeout)

    async def update_stream(self, config: dict, *, timeout: float = API_TIMEOUT) -> dict:
        return await self.api(f"STREAM.UPDATE.{config['name']}", config, stream=config["name"], timeout=timeout)

    async def delete_until_gone(self, stream: str, deadline_s: float = 30.0) -> bool:
        """Delete ``stream`` and wait until STREAM.NAMES no longer lists it; False if it is still listed at the
        deadline. A stream with no replica left is deleted without an answer (G14): the name list is the proof."""
        deadline = time.monotonic() + deadline_s
        while True:
            with contextlib.suppress(JsArchiveError):
                await self.delete_stream(stream, timeout=5.0)
            with contextlib.suppress(JsArchiveError):
                if stream not in await self.stream_names():
                    return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.25)

    # -- snapshot ----------------------------------------------------------------------------------------------
    async def snapshot(
        self,
        stream: str,
        on_chunk: Callable[[bytes], Awaitable[None]],
        *,
        no_consumers: bool = False,
        jsck: bool = False,
        chunk_size: int | None = SNAPSHOT_CHUNK,
        window_size: int | None = SNAPSHOT_WINDOW,
        idle_timeout: float = SNAPSHOT_IDLE_TIMEOUT,
        on_start: Callable[[dict], None] | None = None,
    ) -> SnapshotResult:
        """Stream a snapshot of ``stream`` into ``on_chunk``; each chunk is acked once ``on_chunk`` returns.

        ``on_chunk`` must return promptly (enqueue, do not upload): the server aborts a snapshot whose chunks
        are not acked within 5 s.
        """
        inbox = self.nc.new_inbox()  # concrete, never a wildcard: that wedges snapshots on servers <= 2.12
        sub = await self.nc.subscribe(inbox, pending_msgs_limit=0, pending_bytes_limit=0)
        try:
            # The server waits at most 2 s for interest on the inbox: make sure ours has reached it.
            await self.nc.flush(timeout=max(1, int(API_TIMEOUT)))
            req: dict[str, Any] = {"deliver_subject": inbox, "no_consumers": no_consumers, "jsck": jsck}
            if chunk_size:
                req["chunk_size"] = int(chunk_size)
            if window_size:
                req["window_size"] = int(window_size)  # ignored by old servers; never send the API-level header
            # With jsck the server answers only after checking every message.
            resp = await self.api(
                f"STREAM.SNAPSHOT.{stream}", req, stream=stream, timeout=600.0 if jsck else API_TIMEOUT * 3
            )
            result = SnapshotResult(config=resp.get("config") or {}, state=resp.get("state") or {})
            if on_start is not None:
                on_start(resp)
            while True:
                try:
                    msg = await sub.next_msg(timeout=idle_timeout)
                except nats.errors.TimeoutError:
                    where = "lost the connection to the server" if not self.nc.is_connected else "no data"
                    raise TransferFailed(
                        f"snapshot of stream {stream!r} broke off: {where} for {idle_timeout:g} s after "
                        f"{result.bytes} bytes (server stopped or unreachable?)"
                    ) from None
                except nats.errors.ConnectionClosedError:
                    raise TransferFailed(
                        f"snapshot of stream {stream!r} broke off: the connection closed after {result.bytes} bytes"
                    ) from None
                if not msg.data:
                    status = (msg.headers or {}).get("Status", "")
                    if status in ("", "204"):
                        return result
                    desc = (msg.headers or {}).get("Description", "")
                    raise _snapshot_eof_error(stream, status, desc, result.bytes)
                await on_chunk(msg.data)
                result.chunks += 1
                result.bytes += len(msg.data)
                if msg.reply:
                    await self.nc.publish(msg.reply, b"")
        finally:
            await _unsubscribe(sub)

    # -- restore -----------------------------------------------------------------------------------------------
    async def restore(
        self,
        stream: str,
        request: dict,
        chunks: AsyncIterator[bytes],
        *,
        in_flight: int = RESTORE_IN_FLIGHT,
        on_sent: Callable[[int], None] | None = None,
        on_accepted: Callable[[], None] | None = None,
    ) -> dict:
        """Restore ``stream`` from the chunks; returns the server's final stream info (config, state).

        ``on_accepted`` is called once the server has accepted the request: from then on a failure may leave a
        partial stream behind, and the caller owns cleaning it up.
        """
        in_flight = max(1, int(in_flight))
        first_alone = not self._answers_locally()
        resp = await self.api(f"STREAM.RESTORE.{stream}", request, stream=stream, timeout=RESTORE_INIT_TIMEOUT)
        deliver = resp.get("deliver_subject")
        if not deliver:
            raise ServerRefused(f"the server accepted the restore of {stream!r} but named no subject to send to")
        if on_accepted is not None:
            on_accepted()
        loop = asyncio.get_running_loop()
        waiting: dict[str, asyncio.Future] = {}
        inbox = self.nc.new_inbox()

        async def on_ack(msg: Any) -> None:
            fut = waiting.pop(msg.subject.rpartition(".")[2], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

        sub = await self.nc.subscribe(f"{inbox}.*", cb=on_ack, pending_msgs_limit=0, pending_bytes_limit=0)
        pending: deque[tuple[int, asyncio.Future]] = deque()
        seq = 0

        async def settle(n: int, fut: asyncio.Future) -> None:
            try:
                msg = await asyncio.wait_for(fut, RESTORE_ACK_TIMEOUT)
            except asyncio.TimeoutError:
                raise TransferFailed(
                    f"restore of {stream!r}: the server did not acknowledge chunk {n} within {RESTORE_ACK_TIMEOUT:g} s"
                ) from None
            _check_restore_reply(stream, msg, f"chunk {n}")

        try:
            async for chunk in chunks:
                seq += 1
                if seq == 1 and first_alone:
                    _check_restore_reply(stream, await self._first_chunk(stream, deliver, chunk), "chunk 1")
                    if on_sent is not None:
                        on_sent(len(chunk))
                    continue
                fut = loop.create_future()
                waiting[str(seq)] = fut
                try:
                    await self.nc.publish(deliver, chunk, reply=f"{inbox}.{seq}")
                except nats.errors.ConnectionClosedError:
                    raise TransferFailed(f"restore of {stream!r}: the connection closed at chunk {seq}") from None
                pending.append((seq, fut))
                if on_sent is not None:
                    on_sent(len(chunk))
                while len(pending) >= in_flight:
                    await settle(*pending.popleft())
            while pending:
                await settle(*pending.popleft())
        except BaseException:
            # End the server's side now rather than leaving it to its 5 s stall watchdog, so the caller can
            # delete whatever it created (a 2.15 server keeps a partial stream) without racing it.
            with contextlib.suppress(Exception):  # the restore already failed; its cause is what matters
                await self.nc.request(deliver, b"", timeout=10.0)
            for _, fut in pending:
                fut.cancel()
            await _unsubscribe(sub)
            raise
        try:
            try:
                final = await self.nc.request(deliver, b"", timeout=RESTORE_EOF_TIMEOUT)
            except nats.errors.NoRespondersError:
                raise TransferFailed(_abandoned(stream)) from None
            except nats.errors.TimeoutError:
                raise TransferFailed(f"restore of {stream!r}: no final answer after the last chunk") from None
            info = _check_restore_reply(stream, final, "the end of the upload")
            if not info or info.get("type") != "io.nats.jetstream.api.v1.stream_create_response":
                raise TransferFailed(f"restore of {stream!r}: the server's final answer was not a stream info")
            return info
        finally:
            await _unsubscribe(sub)

    def _answers_locally(self) -> bool:
        """Whether the server we are connected to is the one that answers the restore request, alone: standalone
        (no cluster in its INFO), JetStream enabled, and no domain or API prefix that could route the request on.
        That server subscribes to the delivery subject before it answers, so a first chunk sent after the answer
        cannot miss it, and the first chunk need not wait alone for its ack (one round trip)."""
        info = self.nc._server_info or {}  # nats-py keeps INFO here; there is no public accessor
        return not info.get("cluster") and bool(info.get("jetstream")) and self.prefix == "$JS.API"

    async def _first_chunk(self, stream: str, deliver: str, chunk: bytes) -> Any:
        """Send the first chunk alone until the server takes it.

        In a cluster the stream leader answers the restore request as soon as it has subscribed to the delivery
        subject, but that interest can reach the server we are connected to after the answer does. A chunk sent in
        that gap finds no subscriber (503 no responders) and was received by nobody, so sending it again is safe;
        the rest is pipelined once the first one is in. (Seen with several restores at once into a 3-node cluster.)
        """
        deadline = asyncio.get_running_loop().time() + FIRST_CHUNK_GRACE
        while True:
            try:
                return await self.nc.request(deliver, chunk, timeout=RESTORE_ACK_TIMEOUT)
            except nats.errors.NoRespondersError:
                if asyncio.get_running_loop().time() >= deadline:
                    raise TransferFailed(_abandoned(stream)) from None
                await asyncio.sleep(0.05)
            except nats.errors.TimeoutError:
                raise TransferFailed(
                    f"restore of {stream!r}: the server did not acknowledge chunk 1 within {RESTORE_ACK_TIMEOUT:g} s"
                ) from None
            except nats.errors.ConnectionClosedError:
                raise TransferFailed(f"restore of {stream!r}: the connection closed at chunk 1") from None


async def _unsubscribe(sub: Any) -> None:
    with contextlib.suppress(Exception):  # the connection may already be gone
        await sub.unsubscribe()


def _abandoned(stream: str) -> str:
    return (
        f"restore of {stream!r} broke off: the server abandoned it (no chunk for 5 s, or it failed on an earlier chunk)"
    )


def _check_restore_reply(stream: str, msg: Any, what: str) -> dict:
    status = (msg.headers or {}).get("Status", "")
    if status == "503":
        raise TransferFailed(_abandoned(stream))
    if status and status not in ("200", "204"):
        raise TransferFailed(
            f"restore of {stream!r} failed at {what}: status {status} {msg.headers.get('Description', '')}"
        )
    if not msg.data:
        return {}
    text = msg.data.decode("utf-8", "replace")
    if text.startswith("-ERR"):
        raise TransferFailed(f"restore of {stream!r} failed at {what}: {text.strip()}")
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        raise TransferFailed(f"restore of {stream!r}: unexpected answer at {what}: {text[:200]!r}") from None
    if "error" in body:
        raise api_error(body["error"], stream)
    return body


def _snapshot_eof_error(stream: str, status: str, desc: str, nbytes: int) -> JsArchiveError:
    if status == "408" and "Flow" in desc:
        return TransferFailed(
            f"snapshot of stream {stream!r} was aborted by the server after {nbytes} bytes: chunks were not "
            "acknowledged within 5 s (408 No Flow Response). The archive could not keep up; raise the buffer "
            f"({setting('buffer-blocks')}) or check the archive's health"
        )
    if status == "408":
        return TransferFailed(
            f"snapshot of stream {stream!r} was aborted by the server after {nbytes} bytes: it saw no interest on "
            f"the delivery inbox (408 {desc})"
        )
    return TransferFailed(
        f"snapshot of stream {stream!r} failed on the server after {nbytes} bytes: {status} {desc}".strip()
    )
