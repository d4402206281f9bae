"""Key slots: the per-backup data key, wrapped for each configured key.

Slot types in format version 1:

- ``age``: the data key encrypted to one age X25519 recipient (pyrage). A host holding only recipients can write
  backups it can never read.
- ``raw``: the data key sealed with AES-256-GCM under a raw 256-bit key from a file or ``JSARCHIVE_KEY``; the slot
  names the key by a short fingerprint so the error for a missing key can say which one is needed.
- ``aws-kms`` / ``gcp-kms``: the data key encrypted by AWS KMS or Google Cloud KMS, bound to the backup id
  (:mod:`pipeline.keys.kms`). A host with only encrypt rights on the key writes backups it cannot read.

Slots live in the manifest's clear envelope; more can be added later as separate immutable objects
(``keyslots/<manifest id>/…``, see :meth:`pipeline.archive.repository.Repository.load_extra_slots`). An added slot is
not authenticated by the manifest, so :meth:`KeyRing.unwrap` checks each key it unwraps against the backup (``verify``)
before trusting it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyrage

from pipeline.base.errors import ConnectionFailed, IntegrityError, JsArchiveError, KeyUnavailable, UsageError, setting
from pipeline.keys import crypto, kms

KEY_ENV = "JSARCHIVE_KEY"


def fingerprint(raw_key: bytes) -> str:
    """A public name for a raw key: it reveals nothing usable about the key itself."""
    return hashlib.sha256(b"jsarchive/v1/key-id\x00" + raw_key).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


_SLOT_FIELDS = ("recipient", "key_id", "region", "key_name", "key_version")


@dataclass(frozen=True)
class KeySlot:
    type: str  # "age" | "raw" | "aws-kms" | "gcp-kms"
    wrapped: bytes
    recipient: str | None = None  # age: the age1… recipient
    key_id: str | None = None  # raw: the key's fingerprint; aws-kms: the key ARN
    region: str | None = None  # aws-kms: the key's region
    key_name: str | None = None  # gcp-kms: the CryptoKey resource name
    key_version: str | None = None  # gcp-kms: the CryptoKeyVersion that encrypted (informational)
    origin: str = field(default="manifest", compare=False)  # not stored: "manifest" or the keyslots/… object key

    def describe(self) -> str:
        if self.type == "age":
            what = f"age recipient {self.recipient}"
        elif self.type == "raw":
            what = f"raw key {self.key_id}"
        elif self.type == kms.AWS_SLOT:
            what = f"{kms.AWS_SLOT} key {self.key_id}"
        elif self.type == kms.GCP_SLOT:
            what = f"{kms.GCP_SLOT} key {self.key_name}"
        else:
            what = f"{self.type} slot"
        if self.origin != "manifest":
            what += f" (added slot {self.origin})"
        return what

    def identity(self) -> tuple[str, str | None]:
        """What the slot is for, without its secret part: two slots with the same identity open with the same key."""
        if self.type == "age":
            return self.type, self.recipient
        if self.type == kms.GCP_SLOT:
            return self.type, self.key_name
        return self.type, self.key_id

    def public(self) -> dict:
        """The slot's public fields (type and key identifiers): never the wrapped key."""
        obj: dict = {"type": self.type}
        for name in _SLOT_FIELDS:
            if getattr(self, name) is not None:
                obj[name] = getattr(self, name)
        return obj

    def to_json(self) -> dict:
        obj = self.public()
        obj["wrapped"] = _b64(self.wrapped)
        return obj

    @classmethod
    def from_json(cls, obj: dict, origin: str = "manifest") -> KeySlot:
        extra = {}
        for name in _SLOT_FIELDS:
            v = obj.get(name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"key slot {name}")
            extra[name] = v
        if not isinstance(obj["type"], str) or not isinstance(obj["wrapped"], str):
            raise ValueError("key slot")
        return cls(type=obj["type"], wrapped=_unb64(obj["wrapped"]), origin=origin, **extra)


def check_private(path: Path) -> None:
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
    """The keys one invocation can use: recipients to write to, identities / raw keys to open with, and KMS keys
    (both: wrapping needs Encrypt on them, unwrapping Decrypt)."""

    recipients: list[str] = field(default_factory=list)
    identities: list[pyrage.x25519.Identity] = field(default_factory=list)
    raw_keys: list[bytes] = field(default_factory=list)
    aws_kms_keys: list[kms.AwsKey] = field(default_factory=list)
    gcp_kms_keys: list[kms.GcpKey] = field(default_factory=list)
    kms_config: kms.KmsConfig = field(default_factory=kms.KmsConfig)

    @classmethod
    def load(
        cls,
        *,
        recipients: list[str] = (),
        recipients_files: list[str] = (),
        identity_files: list[str] = (),
        key_files: list[str] = (),
        use_env: bool = True,
        kms_keys: list[str] = (),
        gcp_kms_keys: list[str] = (),
        kms_endpoint: str | None = None,
        aws_profile: str | None = None,
        use_kms_slots: bool = False,
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
            check_private(path)
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
            check_private(path)
            ring.raw_keys.append(parse_raw_key(lines[0] if lines else "", f"key file {f}"))
        env = os.environ.get(KEY_ENV) if use_env else None
        if env:
            ring.raw_keys.append(parse_raw_key(env, f"${KEY_ENV}"))
        for k in kms_keys:
            key = kms.AwsKey.parse(k)
            if key not in ring.aws_kms_keys:
                ring.aws_kms_keys.append(key)
        for k in gcp_kms_keys:
            key = kms.GcpKey.parse(k)
            if key not in ring.gcp_kms_keys:
                ring.gcp_kms_keys.append(key)
        ring.kms_config = kms.KmsConfig(
            aws_endpoint=kms_endpoint or None, aws_profile=aws_profile, use_slots=use_kms_slots
        )
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
        return bool(self.recipients or self.identities or self.raw_keys or self.aws_kms_keys or self.gcp_kms_keys)

    def wrap(self, data_key: bytes, backup_id: str) -> list[KeySlot]:
        """One slot per key: explicit recipients, the public halves of identities, raw keys, then KMS keys."""
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
        for key in self.aws_kms_keys:
            try:
                blob, arn, region = kms.aws_wrap(key, data_key, backup_id, self.kms_config)
            except kms.KmsError as e:
                raise _wrap_error(key.describe(), e) from None
            if all(s.identity() != (kms.AWS_SLOT, arn) for s in slots):  # an alias and the ARN of one key
                slots.append(KeySlot(kms.AWS_SLOT, blob, key_id=arn, region=region))
        for key in self.gcp_kms_keys:
            try:
                blob, version = kms.gcp_wrap(key, data_key, backup_id, self.kms_config)
            except kms.KmsError as e:
                raise _wrap_error(key.describe(), e) from None
            slots.append(KeySlot(kms.GCP_SLOT, blob, key_name=key.name, key_version=version))
        return slots

    def _kms_requests(self, slot: KeySlot) -> list[tuple[str, str | None]]:
        """How to ask KMS to open ``slot``: ``(key, region)`` per configured key that may be the slot's; with
        ``kms_config.use_slots`` also the slot's own key."""
        out: list[tuple[str, str | None]] = []
        if slot.type == kms.AWS_SLOT:
            for key in self.aws_kms_keys:
                req = key.request_for(slot.key_id, slot.region)
                if req is not None and req not in out:
                    out.append(req)
            own = (slot.key_id, slot.region)
            if self.kms_config.use_slots and slot.key_id and own not in out:
                out.append(own)
        elif slot.type == kms.GCP_SLOT and slot.key_name:
            named = any(k.name == slot.key_name for k in self.gcp_kms_keys)
            if named or self.kms_config.use_slots:
                out.append((slot.key_name, None))
        return out

    def unwrap(self, slots: list[KeySlot], backup_id: str, verify: Callable[[bytes], object] | None = None) -> bytes:
        """The data key from a slot one of our keys opens; otherwise an error naming every slot.

        Local keys (age identities, raw keys) are tried first, then KMS. ``verify(key)`` (e.g. ``Manifest.open_body``)
        is called on every candidate key and must raise :class:`IntegrityError` for a key that does not open the
        backup: a slot added later as a separate object is not authenticated by the manifest, so a forged one
        yields a wrong key, which is then skipped; if no slot yields the right key, that is an integrity error.
        """
        tried = _Attempts(verify)
        candidates = itertools.chain(
            (c for slot in slots for c in self._open_locally(slot, backup_id, tried)),
            (c for slot in slots for c in self._open_with_kms(slot, backup_id, tried)),
        )
        for key, slot in candidates:
            if tried.accept(key, slot):
                return bytes(key)
        raise tried.failure(slots, self._given())

    def _open_locally(
        self, slot: KeySlot, backup_id: str, tried: _Attempts
    ) -> Iterator[tuple[bytes | bytearray, KeySlot]]:
        """The key an age identity or a raw key of ours opens ``slot`` to (nothing if none of ours is its key)."""
        if slot.type == "raw":
            raw = next((k for k in self.raw_keys if fingerprint(k) == slot.key_id), None)
            if raw is None:
                return
            try:
                yield crypto.open_sealed(raw, slot.wrapped, crypto.slot_aad(backup_id)), slot
            except crypto.OpenFailed:
                tried.tampered.append(slot.describe())
        elif slot.type == "age" and self.identities:
            try:
                key = pyrage.decrypt(slot.wrapped, self.identities)
            except pyrage.DecryptError:
                return
            yield key, slot

    def _open_with_kms(
        self, slot: KeySlot, backup_id: str, tried: _Attempts
    ) -> Iterator[tuple[bytes | bytearray, KeySlot]]:
        """The key each KMS request that may be ``slot``'s returns; refusals are recorded in ``tried``."""
        for key_ref, region in self._kms_requests(slot):
            try:
                if slot.type == kms.AWS_SLOT:
                    key = kms.aws_unwrap(key_ref, region, slot.wrapped, backup_id, self.kms_config)
                else:
                    key = kms.gcp_unwrap(key_ref, slot.wrapped, backup_id, self.kms_config)
            except kms.KmsError as e:
                tried.kms_refused(slot, key_ref, e)
                continue
            yield key, slot

    def _given(self) -> str:
        """The keys this ring holds, for an error that none of them opens a backup."""
        have = []
        if self.identities:
            have.append(f"{len(self.identities)} age identit{'y' if len(self.identities) == 1 else 'ies'}")
        if self.raw_keys:
            have.append("raw key " + ", ".join(dict.fromkeys(fingerprint(k) for k in self.raw_keys)))
        have += [k.describe() for k in self.aws_kms_keys] + [k.describe() for k in self.gcp_kms_keys]
        if self.kms_config.use_slots:
            have.append("--use-kms-slots")
        if self.recipients and not have:
            have.append(f"only age recipients ({len(self.recipients)}), which can write backups but not open them")
        if have:
            return ", ".join(have)
        return (
            f"no key (use {setting('identity')} FILE, {setting('key-file')} FILE, "
            f"$JSARCHIVE_KEY, {setting('kms-key')}, {setting('gcp-kms-key')} or "
            f"{setting('use-kms-slots')})"
        )


@dataclass
class _Attempts:
    """What trying the slots found: slots that were altered, keys that do not open the backup, KMS problems."""

    verify: Callable[[bytes], object] | None
    tampered: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def accept(self, key: bytes | bytearray, slot: KeySlot) -> bool:
        """Whether ``key`` is this backup's data key (the right size, and ``verify`` takes it)."""
        if len(key) != crypto.KEY_SIZE:
            self.wrong.append(slot.describe())
            return False
        if self.verify is not None:
            try:
                self.verify(bytes(key))
            except IntegrityError:
                self.wrong.append(slot.describe())
                return False
        return True

    def kms_refused(self, slot: KeySlot, key_ref: str, e: kms.KmsError) -> None:
        # "invalid" from the slot's own key means the ciphertext was altered; "incorrect_key" only that this
        # configured key is not the slot's, which is expected while trying every configured key
        if e.kind == "invalid" and (slot.type == kms.GCP_SLOT or key_ref == slot.key_id):
            self.tampered.append(f"{slot.describe()}: {e}")
        elif e.kind != "incorrect_key":
            via = f" via {key_ref}" if key_ref not in (slot.key_id, slot.key_name) else ""
            self.problems.append(f"{slot.describe()}{via}: {e}")

    def failure(self, slots: list[KeySlot], given: str) -> JsArchiveError:
        """The one error for "no slot opened": forged beats altered beats no key of ours."""
        if self.wrong:
            return IntegrityError(
                f"the key from {'; '.join(self.wrong)} does not open this backup: that slot (or the manifest) was "
                "forged or altered. Open the backup with another slot's key and check who can write to the archive"
            )
        if self.tampered:
            return KeyUnavailable(
                f"the key slot for {'; '.join(self.tampered)} does not open: it was altered"
                + (f". Other problems: {'; '.join(self.problems)}" if self.problems else "")
            )
        names = "; ".join(s.describe() for s in slots) or "none"
        why = f". KMS said: {'; '.join(self.problems)}" if self.problems else ""
        return KeyUnavailable(
            f"none of the configured keys opens this backup. It can be opened by: {names}. Given: {given}{why}"
        )


def _wrap_error(what: str, e: kms.KmsError) -> Exception:
    msg = f"cannot wrap the data key with {what}: {e}"
    if e.kind == "unreachable":
        return ConnectionFailed(msg)
    if e.kind == "unavailable":
        return UsageError(msg)
    return KeyUnavailable(msg)


def generate_identity() -> tuple[str, str]:
    """A new age X25519 identity: ``(secret identity line, public recipient)``."""
    ident = pyrage.x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def generate_raw_key() -> str:
    return crypto.new_data_key().hex()
