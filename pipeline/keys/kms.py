"""Cloud KMS key slots: the per-backup data key wrapped by AWS KMS or Google Cloud KMS.

The data key is always ours (a fresh random 256-bit key per backup, :func:`pipeline.keys.crypto.new_data_key`); KMS
only wraps it. So a backup needs ``Encrypt`` on the key and never ``GenerateDataKey`` or ``Decrypt``: a backup host can
hold encrypt-only rights and never read what it wrote.

- **AWS KMS** (slot type ``aws-kms``): ``Encrypt`` of the data key with the encryption context
  ``{"jsarchive:backup-id": <backup id>}``, ``Decrypt`` with the same context. The slot records the key ARN that
  KMS reports and its region. The context binds the slot to its backup: a slot copied to another backup does not
  decrypt.
- **Google Cloud KMS** (slot type ``gcp-kms``): ``Encrypt``/``Decrypt`` on a CryptoKey with the raw slot's
  associated data (``"jsarchive/v1/key-slot" 0x00 || backup id``, :func:`pipeline.keys.crypto.slot_aad`) as
  ``additional_authenticated_data``, and CRC32C checks of request and response as Google recommends.

boto3 and google-cloud-kms are imported lazily, inside the functions that need them (``pip install
'jsarchive[kms]'``), so a local-only install needs neither.

Hooks for tests and embedders: :data:`aws_client_factory` and :data:`gcp_client_factory` replace how the SDK
clients are made (e.g. a boto3 client with event hooks, or a fake ``KeyManagementServiceClient`` exposing
``encrypt``/``decrypt`` with the same request shapes: there is no Cloud KMS emulator).

Key material never reaches logs: while a KMS call runs, the SDK loggers that print request and response bodies at
DEBUG level (``botocore.endpoint``, ``botocore.parsers``, the Cloud KMS client and transports) drop their records
for that thread. Exception texts carry the service's error code and message, never parameters.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.base.errors import UsageError, setting
from pipeline.keys import crypto

AWS_SLOT = "aws-kms"
GCP_SLOT = "gcp-kms"
AWS_CONTEXT_KEY = "jsarchive:backup-id"
GCP_TIMEOUT = 30.0

_AWS_ARN = re.compile(r"arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(key|alias)/([A-Za-z0-9/_-]+)")
_AWS_KEY_ID = re.compile(
    r"mrk-[0-9a-f]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_AWS_ALIAS = re.compile(r"alias/[A-Za-z0-9/_-]+")
_GCP_KEY = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/keyRings/[^/\s]+/cryptoKeys/[^/\s]+")

# Hooks: ``aws_client_factory(region, config)`` and ``gcp_client_factory(config)`` return a client to use instead of
# the SDK's own. ``None``: boto3's ``kms`` client / ``google.cloud.kms_v1.KeyManagementServiceClient``.
aws_client_factory: Callable[[str | None, KmsConfig], Any] | None = None
gcp_client_factory: Callable[[KmsConfig], Any] | None = None


class KmsError(Exception):
    """A KMS call failed. ``kind`` says how: ``denied``, ``disabled``, ``not_found``, ``invalid`` (the slot does not
    decrypt under this key and backup: altered, or copied from another backup), ``incorrect_key`` (the slot belongs to
    another key), ``credentials``, ``unreachable``, ``unavailable`` (SDK not installed) or ``error``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -- configured keys ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsKey:
    """An AWS KMS key as configured: a key ARN, a key id, an alias name or an alias ARN."""

    spec: str
    region: str | None = None  # from an ARN
    key_id: str | None = None  # the bare key id (UUID or mrk-…) when the spec names the key itself
    alias: bool = False

    @classmethod
    def parse(cls, text: str) -> AwsKey:
        spec = text.strip()
        m = _AWS_ARN.fullmatch(spec)
        if m:
            region, _acct, kind, rest = m.groups()
            if kind == "key" and not _AWS_KEY_ID.fullmatch(rest):
                raise UsageError(f"{setting('kms-key')} {text!r}: the ARN does not end in key/<key id>")
            return cls(spec, region=region, key_id=rest if kind == "key" else None, alias=kind == "alias")
        if _AWS_KEY_ID.fullmatch(spec):
            return cls(spec, key_id=spec)
        if _AWS_ALIAS.fullmatch(spec):
            return cls(spec, alias=True)
        raise UsageError(
            f"{setting('kms-key')} {text!r} is not an AWS KMS key: give "
            "a key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), a key id, "
            "an alias (alias/NAME) or an alias ARN"
        )

    def describe(self) -> str:
        return f"{AWS_SLOT} key {self.spec}"

    def request_for(self, slot_key_arn: str | None, slot_region: str | None) -> tuple[str, str | None] | None:
        """``(KeyId, region)`` to ask KMS to decrypt a slot written under ``slot_key_arn``, or None if this key
        cannot be that one. Aliases cannot be resolved without ``kms:DescribeKey``, so they are always tried (KMS
        refuses a ciphertext of another key)."""
        if self.alias:
            return self.spec, self.region or slot_region
        if not slot_key_arn:
            return None
        m = _AWS_ARN.fullmatch(slot_key_arn)
        slot_id = m.group(4) if m and m.group(3) == "key" else slot_key_arn
        if self.key_id != slot_id:
            return None
        if self.region is None:  # a bare key id: the slot says where the key lives
            return slot_key_arn, slot_region
        if self.region == slot_region or slot_id.startswith("mrk-"):  # the key, or a replica of a multi-Region key
            return self.spec, self.region
        return None


@dataclass(frozen=True)
class GcpKey:
    """A Google Cloud KMS CryptoKey: ``projects/P/locations/L/keyRings/R/cryptoKeys/K``."""

    name: str

    @classmethod
    def parse(cls, text: str) -> GcpKey:
        name = text.strip()
        if name.startswith("//cloudkms.googleapis.com/"):
            name = name[len("//cloudkms.googleapis.com/") :]
        if not _GCP_KEY.fullmatch(name):
            raise UsageError(
                f"{setting('gcp-kms-key')} {text!r} is not a Cloud KMS CryptoKey: give "
                "projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY (not a key version)"
            )
        return cls(name)

    def describe(self) -> str:
        return f"{GCP_SLOT} key {self.name}"


@dataclass
class KmsConfig:
    """How to reach the KMS services. Credentials come from the SDKs' default chains (boto3: environment, profile,
    IMDS, IRSA; Google: Application Default Credentials)."""

    aws_endpoint: str | None = None  # None: boto3's default, which honours $AWS_ENDPOINT_URL_KMS / $AWS_ENDPOINT_URL
    aws_profile: str | None = None
    use_slots: bool = False  # unwrapping: also try every KMS slot's own key, named or not
    _clients: dict = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


# -- keeping payloads out of logs ---------------------------------------------------------------------------------

_SENSITIVE_LOGGERS = (
    "botocore.endpoint",  # "Making request … with params: {… 'body': … Plaintext …}"
    "botocore.parsers",  # "Response body: … Plaintext …"
    "google.cloud.kms_v1.services.key_management_service.client",
    "google.cloud.kms_v1.services.key_management_service.transports.grpc",
    "google.cloud.kms_v1.services.key_management_service.transports.rest",
)
_quiet = threading.local()
_filter_lock = threading.Lock()
_filter_installed = False


class _DuringKmsCall(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_quiet, "active", False)


@contextlib.contextmanager
def _no_payload_logs() -> Iterator[None]:
    global _filter_installed
    if not _filter_installed:
        with _filter_lock:
            if not _filter_installed:
                for name in _SENSITIVE_LOGGERS:
                    logging.getLogger(name).addFilter(_DuringKmsCall())
                _filter_installed = True
    before = getattr(_quiet, "active", False)
    _quiet.active = True
    try:
        yield
    finally:
        _quiet.active = before


# -- AWS ----------------------------------------------------------------------------------------------------------


def _aws_client(region: str | None, config: KmsConfig) -> Any:
    if aws_client_factory is not None:
        return aws_client_factory(region, config)
    key = ("aws", region)
    with config._lock:
        client = config._clients.get(key)
        if client is not None:
            return client
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import NoRegionError, ProfileNotFound
        except ImportError:
            raise KmsError("unavailable", "AWS KMS needs boto3: pip install 'jsarchive[kms]'") from None
        try:
            session = boto3.session.Session(profile_name=config.aws_profile)
            client = session.client(
                "kms",
                region_name=region,
                endpoint_url=config.aws_endpoint,
                config=Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=20),
            )
        except ProfileNotFound as e:
            raise UsageError(f"AWS profile: {e}") from None
        except NoRegionError:
            raise UsageError(
                "AWS KMS: no region for the key; give the key's ARN, or set AWS_REGION / the profile's region"
            ) from None
        config._clients[key] = client
        return client


_AWS_KINDS = {
    "AccessDeniedException": "denied",
    "DisabledException": "disabled",
    "KMSInvalidStateException": "disabled",
    "NotFoundException": "not_found",
    "InvalidCiphertextException": "invalid",
    "IncorrectKeyException": "incorrect_key",
    "InvalidKeyUsageException": "error",
    "UnrecognizedClientException": "credentials",
    "InvalidSignatureException": "credentials",
    "ExpiredTokenException": "credentials",
    "KMSInternalException": "unreachable",
    "DependencyTimeoutException": "unreachable",
    "KeyUnavailableException": "unreachable",
    "ThrottlingException": "unreachable",
}


def _aws_error(e: Exception, op: str) -> KmsError:
    from botocore import exceptions as be

    if isinstance(e, be.ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", "")) or "error"
        msg = str(err.get("Message", "")).strip()
        kind = _AWS_KINDS.get(code, "error")
        if kind == "invalid":
            text = (
                f"KMS refused to decrypt the slot ({code}): it was altered, or copied from another backup (the "
                "encryption context binds it to its backup id)"
            )
        elif kind == "incorrect_key":
            text = f"the slot was encrypted under another key ({code})"
        elif kind == "disabled":
            text = f"the key cannot be used now ({code}: {msg or 'key disabled'}); enable it or use another slot"
        elif kind == "denied":
            text = f"kms:{op} is not allowed ({code}: {msg or 'access denied'})"
        else:
            text = f"{code}: {msg}" if msg else code
        return KmsError(kind, text)
    if isinstance(e, (be.NoCredentialsError, be.PartialCredentialsError, be.CredentialRetrievalError)):
        return KmsError("credentials", f"no usable AWS credentials ({e})")
    if isinstance(e, (be.EndpointConnectionError, be.ConnectTimeoutError, be.ReadTimeoutError)):
        return KmsError("unreachable", f"AWS KMS is unreachable ({e})")
    if isinstance(e, be.NoRegionError):
        return KmsError("error", "no AWS region for the key: give its ARN or set AWS_REGION")
    return KmsError("error", f"{type(e).__name__}: {e}")


def _aws_call(region: str | None, config: KmsConfig, op: str, **params: Any) -> dict:
    client = _aws_client(region, config)
    from botocore.exceptions import BotoCoreError, ClientError

    with _no_payload_logs():
        try:
            return getattr(client, "encrypt" if op == "Encrypt" else "decrypt")(**params)
        except (ClientError, BotoCoreError) as e:
            raise _aws_error(e, op) from None


def _arn_region(arn: str) -> str | None:
    m = _AWS_ARN.fullmatch(arn)
    return m.group(1) if m else None


def aws_wrap(key: AwsKey, data_key: bytes, backup_id: str, config: KmsConfig) -> tuple[bytes, str, str | None]:
    """``(CiphertextBlob, key ARN, region)``: ``data_key`` encrypted under ``key`` with the backup's context."""
    resp = _aws_call(
        key.region,
        config,
        "Encrypt",
        KeyId=key.spec,
        Plaintext=bytes(data_key),
        EncryptionContext={AWS_CONTEXT_KEY: backup_id},
    )
    arn = str(resp.get("KeyId") or key.spec)
    return bytes(resp["CiphertextBlob"]), arn, _arn_region(arn) or key.region


def aws_unwrap(key_id: str, region: str | None, wrapped: bytes, backup_id: str, config: KmsConfig) -> bytes:
    """The data key from an ``aws-kms`` slot, asking KMS (``KeyId`` = ``key_id`` in ``region``) to decrypt it."""
    resp = _aws_call(
        region,
        config,
        "Decrypt",
        KeyId=key_id,
        CiphertextBlob=bytes(wrapped),
        EncryptionContext={AWS_CONTEXT_KEY: backup_id},
    )
    return bytes(resp["Plaintext"])


# -- Google Cloud -------------------------------------------------------------------------------------------------


def _gcp_client(config: KmsConfig) -> Any:
    if gcp_client_factory is not None:
        return gcp_client_factory(config)
    with config._lock:
        client = config._clients.get("gcp")
        if client is not None:
            return client
        try:
            from google.cloud import kms_v1
        except ImportError:
            raise KmsError(
                "unavailable", "Google Cloud KMS needs google-cloud-kms: pip install 'jsarchive[kms]'"
            ) from None
        try:
            client = kms_v1.KeyManagementServiceClient()
        except Exception as e:  # google.auth.exceptions.DefaultCredentialsError and friends
            raise KmsError("credentials", f"no usable Google credentials ({type(e).__name__}: {e})") from None
        config._clients["gcp"] = client
        return client


def _crc32c(data: bytes) -> int:
    import google_crc32c

    return int(google_crc32c.value(bytes(data)))


def _gcp_error(e: Exception, op: str) -> KmsError:
    try:
        from google.api_core import exceptions as ge
        from google.auth import exceptions as gae
    except ImportError:
        return KmsError("error", f"{type(e).__name__}: {e}")
    msg = getattr(e, "message", None) or str(e)
    if isinstance(e, ge.PermissionDenied):
        return KmsError("denied", f"cloudkms {op.lower()} is not allowed ({msg})")
    if isinstance(e, (ge.Unauthenticated, gae.GoogleAuthError)):
        return KmsError("credentials", f"no usable Google credentials ({msg})")
    if isinstance(e, ge.NotFound):
        return KmsError("not_found", f"no such key ({msg})")
    if isinstance(e, ge.FailedPrecondition):
        return KmsError("disabled", f"the key cannot be used now ({msg}); enable its version or use another slot")
    if isinstance(e, ge.InvalidArgument) and op == "Decrypt":
        return KmsError(
            "invalid",
            f"Cloud KMS refused to decrypt the slot ({msg}): it was altered, copied from another backup (the "
            "additional authenticated data binds it to its backup id), or belongs to another key",
        )
    if isinstance(e, (ge.ServiceUnavailable, ge.DeadlineExceeded, ge.RetryError, ge.InternalServerError)):
        return KmsError("unreachable", f"Cloud KMS is unreachable ({msg})")
    return KmsError("error", f"{type(e).__name__}: {msg}")


def _gcp_call(config: KmsConfig, op: str, request: dict) -> Any:
    client = _gcp_client(config)
    with _no_payload_logs():
        try:
            method = client.encrypt if op == "Encrypt" else client.decrypt
            return method(request=request, timeout=GCP_TIMEOUT)
        except KmsError:
            raise
        except Exception as e:
            raise _gcp_error(e, op) from None


def gcp_wrap(key: GcpKey, data_key: bytes, backup_id: str, config: KmsConfig) -> tuple[bytes, str]:
    """``(ciphertext, CryptoKeyVersion name)``: ``data_key`` encrypted under ``key``, bound to the backup id."""
    aad = crypto.slot_aad(backup_id)
    plain = bytes(data_key)
    resp = _gcp_call(
        config,
        "Encrypt",
        {
            "name": key.name,
            "plaintext": plain,
            "additional_authenticated_data": aad,
            "plaintext_crc32c": _crc32c(plain),
            "additional_authenticated_data_crc32c": _crc32c(aad),
        },
    )
    ciphertext = bytes(resp.ciphertext)
    if not resp.verified_plaintext_crc32c or not resp.verified_additional_authenticated_data_crc32c:
        raise KmsError("error", "Cloud KMS did not confirm the request's checksums: it was corrupted in transit")
    if resp.ciphertext_crc32c != _crc32c(ciphertext):
        raise KmsError("error", "the ciphertext Cloud KMS returned fails its checksum: it was corrupted in transit")
    version = str(resp.name or "")
    if not version.startswith(key.name + "/cryptoKeyVersions/"):
        raise KmsError("error", f"Cloud KMS answered for {version or 'no key'}, not for {key.name}")
    return ciphertext, version


def gcp_unwrap(key_name: str, wrapped: bytes, backup_id: str, config: KmsConfig) -> bytes:
    """The data key from a ``gcp-kms`` slot."""
    aad = crypto.slot_aad(backup_id)
    wrapped = bytes(wrapped)
    resp = _gcp_call(
        config,
        "Decrypt",
        {
            "name": key_name,
            "ciphertext": wrapped,
            "additional_authenticated_data": aad,
            "ciphertext_crc32c": _crc32c(wrapped),
            "additional_authenticated_data_crc32c": _crc32c(aad),
        },
    )
    plain = bytes(resp.plaintext)
    if resp.plaintext_crc32c != _crc32c(plain):
        raise KmsError("error", "the plaintext Cloud KMS returned fails its checksum: it was corrupted in transit")
    return plain
