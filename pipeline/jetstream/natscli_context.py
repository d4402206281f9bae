"""natscli contexts: the context files natscli reads (``~/.config/nats/context/<name>.json``), which of their fields
jsarchive honours, and the credentials a context's ``nsc://`` URL names (through ``nsc generate profile``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.base.errors import UsageError, setting

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


def check_context_fields(ctx: dict, name: str | None) -> None:
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


def nsc_profile(lookup: str, context: str) -> tuple[str, str | None]:
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
