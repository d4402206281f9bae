"""Key slots: the per-backup data key, wrapped for each configured key.

Slot types in format version 1:

- ``age``: the data key encrypted to one age X25519 recipient (pyrage). A host holding only recipients can write
  backups it can never read.
- ``raw``: the data key sealed with AES-256-GCM under a raw 256-bit key from a file or ``JSARCHIVE_KEY``; the slot
  names the key by a short fingerprint so the error for a missing key can say which one is needed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pyrage

from pipeline import crypto
from pipeline.errors import KeyUnavailable, UsageError

KEY_ENV = "JSARCHIVE_KEY"


def fingerprint(raw_key: bytes) -> str:
    """A public name for a raw key: it reveals nothing usable about the key itself."""
    return hashlib.sha256(b"jsarchive/v1/key-id\x00" + raw_key).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(frozen=True)
class KeySlot:
    type: str  # "age" | "raw"
    wrapped: bytes
    recipient: str | None = None  # age
    key_id: str | None = None  # raw

    def describe(self) -> str:
        if self.type == "age":
            return f"age recipient {self.recipient}"
        if self.type == "raw":
            return f"raw key {self.key_id}"
        return f"{self.type} slot"

    def to_json(self) -> dict:
        obj: dict = {"type": self.type, "wrapped": _b64(self.wrapped)}
        if self.recipient is not None:
            obj["recipient"] = self.recipient
        if self.key_id is not None:
            obj["key_id"] = self.key_id
        return obj

    @classmethod
    def from_json(cls, obj: dict) -> KeySlot:
        return cls(
            type=str(obj["type"]),
            wrapped=_unb64(obj["wrapped"]),
            recipient=obj.get("recipient"),
            key_id=obj.get("key_id"),
        )


def _check_private(path: Path) -> None:
    """Refuse secret files that other users can read, as ssh does."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}` first"
        )


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def parse_raw_key(text: str, source: str) -> bytes:
    """A raw key is 32 bytes written as 64 hex digits or as base64."""
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != crypto.KEY_SIZE:
        raise UsageError(f"{source} does not hold a 256-bit key (64 hex digits or base64 of 32 bytes)")
    return key


@dataclass
class KeyRing:
    """The keys one invocation can use: recipients to write to, and identities / raw keys to open with."""

    recipients: list[str] = field(default_factory=list)
    identities: list[pyrage.x25519.Identity] = field(default_factory=list)
    raw_keys: list[bytes] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        *,
        recipients: list[str] = (),
        recipients_files: list[str] = (),
        identity_files: list[str] = (),
        key_files: list[str] = (),
        use_env: bool = True,
    ) -> KeyRing:
        ring = cls()
        for r in recipients:
            ring.add_recipient(r, source="--recipient")
        for f in recipients_files:
            for r in _read_lines(Path(f), "recipients file"):
                ring.add_recipient(r, source=f"recipients file {f}")
        for f in identity_files:
            path = Path(f)
            lines = _read_lines(path, "identity file")
            _check_private(path)
            if not lines:
                raise UsageError(f"identity file {f} holds no age identity")
            for line in lines:
                try:
                    ring.identities.append(pyrage.x25519.Identity.from_str(line))
                except pyrage.IdentityError:
                    raise UsageError(f"identity file {f} holds a line that is not an age X25519 identity") from None
        for f in key_files:
            path = Path(f)
            lines = _read_lines(path, "key file")
            _check_private(path)
            ring.raw_keys.append(parse_raw_key(lines[0] if lines else "", f"key file {f}"))
        env = os.environ.get(KEY_ENV) if use_env else None
        if env:
            ring.raw_keys.append(parse_raw_key(env, f"${KEY_ENV}"))
        return ring

    def add_recipient(self, text: str, source: str) -> None:
        try:
            pyrage.x25519.Recipient.from_str(text)
        except pyrage.RecipientError:
            raise UsageError(f"{source}: {text!r} is not an age X25519 recipient (age1…)") from None
        if text not in self.recipients:
            self.recipients.append(text)

    @property
    def can_write(self) -> bool:
        return bool(self.recipients or self.identities or self.raw_keys)

    def wrap(self, data_key: bytes, backup_id: str) -> list[KeySlot]:
        """One slot per key: explicit recipients, the public halves of identities, and raw keys."""
        recipients = list(self.recipients)
        for ident in self.identities:
            pub = str(ident.to_public())
            if pub not in recipients:
                recipients.append(pub)
        slots = [
            KeySlot("age", pyrage.encrypt(data_key, [pyrage.x25519.Recipient.from_str(r)]), recipient=r)
            for r in recipients
        ]
        for raw in self.raw_keys:
            sealed = crypto.seal(raw, data_key, crypto.slot_aad(backup_id))
            slots.append(KeySlot("raw", sealed, key_id=fingerprint(raw)))
        return slots

    def unwrap(self, slots: list[KeySlot], backup_id: str) -> bytes:
        """The data key from the first slot one of our keys opens; otherwise an error naming every slot."""
        raw_by_id = {fingerprint(k): k for k in self.raw_keys}
        tampered = []
        for slot in slots:
            if slot.type == "raw" and slot.key_id in raw_by_id:
                try:
                    key = crypto.open_sealed(raw_by_id[slot.key_id], slot.wrapped, crypto.slot_aad(backup_id))
                except crypto.OpenFailed:
                    tampered.append(slot.describe())
                    continue
                if len(key) == crypto.KEY_SIZE:
                    return key
            elif slot.type == "age" and self.identities:
                try:
                    key = pyrage.decrypt(slot.wrapped, self.identities)
                except pyrage.DecryptError:
                    continue
                if len(key) == crypto.KEY_SIZE:
                    return key
        if tampered:
            raise KeyUnavailable(f"the key slot for {', '.join(tampered)} does not open: it was altered")
        names = "; ".join(s.describe() for s in slots) or "none"
        have = []
        if self.identities:
            have.append(f"{len(self.identities)} age identit{'y' if len(self.identities) == 1 else 'ies'}")
        if self.raw_keys:
            have.append("raw key " + ", ".join(raw_by_id))
        given = " and ".join(have) if have else "no key (use --identity FILE, --key-file FILE or $JSARCHIVE_KEY)"
        raise KeyUnavailable(
            f"none of the configured keys opens this backup. It can be opened by: {names}. Given: {given}"
        )


def generate_identity() -> tuple[str, str]:
    """A new age X25519 identity: ``(secret identity line, public recipient)``."""
    ident = pyrage.x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def generate_raw_key() -> str:
    return crypto.new_data_key().hex()
