"""Connecting to NATS as natscli does: its flags and context fields (:class:`ConnectOptions`), TLS, the kinds of
credentials, and a failed connection told apart as refused credentials or an unreachable server."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client, RawCredentials

from pipeline.base.display import redact_servers, redact_text
from pipeline.base.errors import AuthFailed, ConnectionFailed, UsageError, setting
from pipeline.jetstream.natscli_context import check_context_fields, load_context, nsc_profile

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
        check_context_fields(ctx, self.context)
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
        if lookup:
            _fill_from_nsc(out, lookup, self.context or "selected")
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


def _fill_from_nsc(out: ConnectOptions, lookup: str, context: str) -> None:
    """The credentials and servers of a context's ``nsc`` URL, where neither a flag nor the context set them."""
    has_creds = out.creds or out.creds_data or out.user_jwt
    if has_creds and out.servers:
        return
    # natscli resolves the context's nsc URL with nsc itself; what the context or a flag sets wins.
    creds, services = nsc_profile(lookup, context)
    if not has_creds:
        out.creds = creds
    if not out.servers and services:
        out.servers = services


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


def _auth_kwargs(opts: ConnectOptions) -> dict[str, Any]:
    """The credentials as nats-py takes them. Files are checked to exist first, then --jwt/--seed, as the error a
    person sees first depends on it; a later kind of credentials replaces an earlier one in the same argument."""
    kwargs: dict[str, Any] = {}
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
    return kwargs


def _connect_kwargs(
    opts: ConnectOptions, connect_timeout: float, on_error: Callable[[Exception], Awaitable[None]]
) -> dict[str, Any]:
    """Everything ``nats.connect`` is called with."""
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
    kwargs.update(_auth_kwargs(opts))
    tls = _tls_context(opts)
    if tls is not None:
        kwargs["tls"] = tls
        kwargs["tls_handshake_first"] = opts.tls_first
    if opts.inbox_prefix:
        kwargs["inbox_prefix"] = opts.inbox_prefix
    return kwargs


async def open_connection(opts: ConnectOptions) -> Client:
    """The NATS connection ``opts`` describes (already :meth:`ConnectOptions.resolved`): refused credentials are an
    :class:`AuthFailed`, a server that cannot be reached a :class:`ConnectionFailed`."""
    connect_timeout = _connect_timeout(opts)
    # nats-py 2.16 reports a refused CONNECT (-ERR 'Authorization Violation') only to the error callback and
    # then raises NoServersError: remember what the callback saw to tell a refusal from a dead server.
    seen: list[BaseException] = []

    async def on_error(e: Exception) -> None:
        if len(seen) < 16:
            seen.append(e)

    kwargs = _connect_kwargs(opts, connect_timeout, on_error)
    # The server list can carry passwords and tokens (nats://user:pw@host); the message goes to logs and metrics.
    where = redact_servers(opts.servers)
    attempts = len(kwargs["servers"]) * (kwargs["max_reconnect_attempts"] + 1)
    try:
        return await asyncio.wait_for(nats.connect(**kwargs), timeout=connect_timeout * attempts + 5)
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
