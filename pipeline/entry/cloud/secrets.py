"""The NATS secret: read from Secrets Manager or SSM Parameter Store, and parsed into connection fields.

The secret stays in memory (nothing is written to ``/tmp``), and no error message quotes it. boto3 is imported
only when a secret store is named.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pipeline.base.errors import ConnectionFailed, JsArchiveError
from pipeline.entry.cloud.errors import ConfigError

NEEDS_BOTO3 = "reading the NATS secret from AWS needs boto3: pip install 'jsarchive[lambda]' ({e})"


def parse_credentials(text: str, source: str) -> dict[str, str]:
    """NATS credentials from a secret's text, as :class:`~pipeline.jetstream.client.ConnectOptions` fields.

    Accepted: the text of a natscli credentials file (``-----BEGIN NATS USER JWT-----`` …), an nkey seed
    (``SU…``), or a JSON object with any of ``creds`` (credentials file text), ``nkey`` (seed), ``user`` +
    ``password``, ``token`` and ``url``. Error messages never quote the secret.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        return _parse_json_credentials(stripped, source)
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


def _parse_json_credentials(stripped: str, source: str) -> dict[str, str]:
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
        raise ConfigError(f"{source} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    out = {allowed[k]: str(v) for k, v in doc.items() if v not in (None, "")}
    if "creds_data" in out:
        out.update({k: v for k, v in parse_credentials(out.pop("creds_data"), source).items()})
    if "password" in out and "user" not in out:
        raise ConfigError(f"{source} has a password but no user")
    if not out:
        raise ConfigError(f"{source} is an empty JSON object")
    return out


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
