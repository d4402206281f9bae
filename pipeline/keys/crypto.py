"""AEAD sealing of blocks and manifest bodies with AES-256-GCM.

Sealed bytes are ``nonce (12) || ciphertext || tag (16)``. The associated data binds each block to its backup, its
position and whether it is the last one, so blocks cannot be reordered, spliced between backups or dropped from the
end without the open failing. Random nonces are safe here: every backup has its own fresh data key and a backup
has at most a few thousand blocks.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
OVERHEAD = NONCE_SIZE + TAG_SIZE

_BLOCK_DOMAIN = b"jsarchive/v1/block\x00"
_BODY_DOMAIN = b"jsarchive/v1/manifest-body\x00"
_SLOT_DOMAIN = b"jsarchive/v1/key-slot\x00"


class OpenFailed(Exception):
    """Authentication failed: wrong key, or the sealed bytes or their context were altered."""


def new_data_key() -> bytes:
    return os.urandom(KEY_SIZE)


def block_aad(backup_id: str, index: int, last: bool) -> bytes:
    return _BLOCK_DOMAIN + bytes.fromhex(backup_id) + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


def body_aad(backup_id: str, envelope_digest: bytes) -> bytes:
    return _BODY_DOMAIN + bytes.fromhex(backup_id) + envelope_digest


def slot_aad(backup_id: str) -> bytes:
    return _SLOT_DOMAIN + bytes.fromhex(backup_id)


def seal(key: bytes, plaintext: bytes | bytearray | memoryview, aad: bytes) -> bytearray:
    """``nonce || ciphertext || tag``, encrypted straight into one buffer (no concatenation copy)."""
    out = bytearray(NONCE_SIZE + len(plaintext) + TAG_SIZE)
    nonce = os.urandom(NONCE_SIZE)
    out[:NONCE_SIZE] = nonce
    AESGCM(key).encrypt_into(nonce, plaintext, aad, memoryview(out)[NONCE_SIZE:])
    return out


def open_sealed(key: bytes, sealed: bytes | bytearray | memoryview, aad: bytes) -> bytearray:
    if len(sealed) < OVERHEAD:
        raise OpenFailed("sealed data is shorter than nonce and tag")
    view = memoryview(sealed)
    out = bytearray(len(sealed) - OVERHEAD)
    try:
        AESGCM(key).decrypt_into(view[:NONCE_SIZE], view[NONCE_SIZE:], aad, out)
    except InvalidTag:
        raise OpenFailed("authentication failed") from None
    return out


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
