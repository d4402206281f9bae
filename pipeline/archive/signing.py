"""Signed backups: Ed25519 signatures over manifest and set ids, each one a create-only object of its own.

``signatures/<object id>/<key fingerprint>`` (docs/format.md §16) holds one signer's signature over the id of a
manifest or a set. The id is the SHA-256 of the object's bytes, so a signature covers every byte of it (the clear
envelope of a plaintext manifest included) while manifests and sets stay content-addressed and are never rewritten.
A reader that trusts a public key fetches ``signatures/<id>/<that key's fingerprint>`` directly: no listing needed.

The private key is an unencrypted PEM Ed25519 key (``openssl genpkey -algorithm ed25519``), the same kind drill
reports are signed with; the public half (``openssl pkey -in KEY -pubout``) is what ``--trust-key`` takes.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.archive.repository import Repository, storage_error
from pipeline.base.errors import IntegrityError, PermissionDenied, UsageError
from pipeline.format import manifest as mf
from pipeline.format import objects
from pipeline.keys.keyring import check_private
from sinks import Retention, SinkError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURES = "signatures/"
SIGNATURE_FORMAT = "jsarchive.signature"
SIGNATURE_VERSION = 1
ALGORITHM = "ed25519"
KINDS = ("manifest", "set")
_DOMAIN = b"jsarchive/v1/signature\x00"


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from an unencrypted PEM file that only its owner can read."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"signing key {path} does not exist")
    check_private(p)
    try:
        key = load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise UsageError(f"signing key {path} is not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"signing key {path} is not an Ed25519 key (openssl genpkey -algorithm ed25519)")
    return key


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(public_raw: bytes) -> str:
    """The name of a signing key: hex SHA-256 of its 32 raw public-key bytes (computable with openssl alone)."""
    return hashlib.sha256(public_raw).hexdigest()


@dataclass(frozen=True)
class TrustedKey:
    """A public key given with ``--trust-key``."""

    source: str
    public_raw: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_raw)

    @property
    def short(self) -> str:
        return self.fingerprint[:16]


def load_public_key(path: str | Path) -> TrustedKey:
    """An Ed25519 public key from a PEM file (``openssl pkey -in KEY -pubout``); a private key is refused, since
    a file meant to be handed out must not hold the secret."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"trusted key {path} does not exist")
    data = p.read_bytes()
    if b"PRIVATE KEY" in data:
        raise UsageError(f"trusted key {path} holds a private key: give its public half (openssl pkey -pubout)")
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise UsageError(f"trusted key {path} is not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"trusted key {path} is not an Ed25519 public key")
    return TrustedKey(str(path), raw_public(key))


def signed_message(kind: str, object_id: str) -> bytes:
    """What is signed: a domain tag, the kind and the id, so a signature is never valid for anything else."""
    return _DOMAIN + kind.encode("ascii") + b"\x00" + object_id.encode("ascii")


def signature_key(object_id: str, fp: str) -> str:
    return f"{SIGNATURES}{object_id}/{fp}"


def encode_signature(kind: str, object_id: str, key: Ed25519PrivateKey) -> bytes:
    """The canonical bytes of ``key``'s signature over manifest or set ``object_id`` (docs/format.md §16)."""
    return mf.canonical(
        {
            "format": SIGNATURE_FORMAT,
            "version": SIGNATURE_VERSION,
            "kind": kind,
            "id": object_id,
            "algorithm": ALGORITHM,
            "public_key": base64.b64encode(raw_public(key)).decode("ascii"),
            "signature": base64.b64encode(key.sign(signed_message(kind, object_id))).decode("ascii"),
        }
    )


def parse_signature(raw: bytes, key: str, kind: str, object_id: str) -> bytes:
    """The signer's raw public key if ``raw`` (stored under ``key``) is a valid signature over ``object_id``;
    ValueError with the reason otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        obj = objects.parse_json(raw, key, objects.MAX_SIGNATURE)  # archive bytes: bounded before they are parsed
    except IntegrityError:
        raise ValueError("not JSON, or too large or deep for a signature") from None
    if not isinstance(obj, dict) or obj.get("format") != SIGNATURE_FORMAT:
        raise ValueError("not a jsarchive signature")
    if obj.get("version") != SIGNATURE_VERSION or obj.get("algorithm") != ALGORITHM:
        raise ValueError(f"version {obj.get('version')!r} / algorithm {obj.get('algorithm')!r} is not one this reads")
    if obj.get("kind") != kind or obj.get("id") != object_id:
        raise ValueError(f"it signs {obj.get('kind')} {str(obj.get('id'))[:12]}, not {kind} {object_id[:12]}")
    try:
        pub = base64.b64decode(obj["public_key"], validate=True)
        sig = base64.b64decode(obj["signature"], validate=True)
        verifier = Ed25519PublicKey.from_public_bytes(pub)
    except (KeyError, TypeError, ValueError):
        raise ValueError("bad or missing public_key or signature") from None
    if key.rsplit("/", 1)[-1] != fingerprint(pub):
        raise ValueError("its name is not the fingerprint of the key inside it")
    try:
        verifier.verify(sig, signed_message(kind, object_id))
    except InvalidSignature:
        raise ValueError("the signature does not verify (altered or forged)") from None
    return pub


def sign(
    repo: Repository, kind: str, object_id: str, key: Ed25519PrivateKey, retention: Retention | None = None
) -> str:
    """Store ``key``'s signature over ``object_id``; its object key. Ed25519 is deterministic, so signing the same
    id again with the same key finds the same bytes already there (create-only, never replaced)."""
    where = signature_key(object_id, fingerprint(raw_public(key)))
    try:
        repo.put_small(where, encode_signature(kind, object_id, key), retention)
    except SinkError as e:
        raise storage_error(e, f"{kind} {object_id[:12]} was written but its signature {where} could not be") from None
    return where


@dataclass
class SignatureStatus:
    """Who signed an object: trusted signers, other valid signers, and objects under its prefix that are invalid."""

    kind: str
    object_id: str
    trusted: list[str] = field(default_factory=list)  # fingerprints
    others: list[str] = field(default_factory=list)  # valid signatures by keys not trusted here
    invalid: list[str] = field(default_factory=list)  # "<key>: <why>"
    listed: bool = True  # False: the prefix could not be listed (only trusted keys were looked up)

    def describe(self) -> str:
        parts = []
        if self.trusted:
            parts.append("signed by trusted key " + ", ".join(f[:16] for f in self.trusted))
        if self.others:
            parts.append("signed by untrusted key " + ", ".join(f[:16] for f in self.others))
        if self.invalid:
            parts.append(f"{len(self.invalid)} invalid signature object(s)")
        return "; ".join(parts) or "unsigned"

    def to_json(self) -> dict:
        return {"trusted": self.trusted, "others": self.others, "invalid": self.invalid, "text": self.describe()}


def signature_status(
    repo: Repository, kind: str, object_id: str, trusted: list[TrustedKey], *, listing: bool = True
) -> SignatureStatus:
    """Check the signatures on ``object_id``. Trusted keys are looked up by name; with ``listing`` every other
    object under ``signatures/<id>/`` is read too (for reports), and a listing refused by the store is not fatal."""
    status = SignatureStatus(kind, object_id)
    prefix = f"{SIGNATURES}{object_id}/"
    keys = {signature_key(object_id, t.fingerprint) for t in trusted}
    if listing:
        try:
            keys |= set(repo.object_names(prefix))
        except PermissionDenied:
            status.listed = False
    wanted = {t.fingerprint for t in trusted}
    for key in sorted(keys):
        try:
            raw = repo.get_small(key, limit=objects.MAX_SIGNATURE)
        except IntegrityError as e:  # over the limit: never read whole
            status.invalid.append(f"{key}: {e}")
            continue
        if raw is None:
            continue
        try:
            pub = parse_signature(raw, key, kind, object_id)
        except ValueError as e:
            status.invalid.append(f"{key}: {e}")
            continue
        fp = fingerprint(pub)
        (status.trusted if fp in wanted else status.others).append(fp)
    return status


def require_trusted(repo: Repository, kind: str, object_id: str, trusted: list[TrustedKey], what: str) -> str:
    """The fingerprint of a trusted key that signed ``object_id``; otherwise an IntegrityError naming the
    signatures that are missing."""
    status = signature_status(repo, kind, object_id, trusted, listing=False)
    if status.trusted:
        return status.trusted[0]
    missing = ", ".join(f"{signature_key(object_id, t.fingerprint)} ({t.source})" for t in trusted)
    bad = f"; invalid: {'; '.join(status.invalid)}" if status.invalid else ""
    raise IntegrityError(f"{what} is not signed by a trusted key: no valid {missing} in {repo.url}{bad}")
