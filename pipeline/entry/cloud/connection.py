"""Where and how a scheduled run reaches NATS: natscli's environment variables, then the secret (which wins)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.entry import settings
from pipeline.entry.cloud import env as envvars
from pipeline.entry.cloud.errors import ConfigError
from pipeline.entry.cloud.secrets import parse_credentials, read_secret_text
from pipeline.jetstream.client import ConnectOptions


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
        "timeout": envvars.duration(env, "NATS_TIMEOUT"),
    }
    user, password, token = settings.nats_user(env.get("NATS_USER") or None, env.get("NATS_PASSWORD") or None, None)
    fields.update(user=user, password=password, token=token)
    given = env.get("JSARCHIVE_NATS_CREDENTIALS")
    secret = (given, "$JSARCHIVE_NATS_CREDENTIALS") if given and given.strip() else read_secret_text(env)
    if secret is not None:
        fields.update(parse_credentials(*secret))
    if not fields.get("servers"):
        raise ConfigError("$NATS_URL is not set (nor a url in the NATS secret): the handler needs the servers")
    return ConnectOptions(**fields)
