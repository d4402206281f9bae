"""The manifest: the commit point of a backup, named by the SHA-256 of its exact bytes.

A manifest is canonical JSON (see docs/format.md) with a clear envelope that an auditor can check without keys
(identity, sizes, the stored block table, key slots) and a body sealed with the backup's data key (stream config
and state, consumers, snapshot parameters, plaintext hashes, timings). The body's associated data is a digest of
the canonical envelope, so no clear field can be changed without the body failing to open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.base.errors import IntegrityError, KeyUnavailable
from pipeline.format import objects
from pipeline.keys import crypto
from pipeline.keys.keyring import KeySlot

FORMAT = "jsarchive.manifest"
VERSION = 1
SCHEME_AES = "aes-256-gcm"
SCHEME_NONE = "none"


def canonical(obj: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, ASCII only: the bytes every reader can reproduce."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def manifest_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class StoredBlock:
    """Where a block lives in the data object and the SHA-256 of its stored (sealed) bytes."""

    offset: int
    length: int
    sha256: str


@dataclass
class Manifest:
    id: str
    raw: bytes
    envelope: dict
    blocks: list[StoredBlock]
    key_slots: list[KeySlot] = field(default_factory=list)

    # clear envelope fields ------------------------------------------------------------------------------------
    @property
    def backup_id(self) -> str:
        return self.envelope["backup_id"]

    @property
    def stream(self) -> str:
        return self.envelope["stream"]

    @property
    def created(self) -> str:
        return self.envelope["created"]

    @property
    def data_object(self) -> str:
        return self.envelope["data"]["key"]

    @property
    def data_size(self) -> int:
        return self.envelope["data"]["size"]

    @property
    def encrypted(self) -> bool:
        return self.envelope["encryption"]["scheme"] != SCHEME_NONE

    @property
    def summary(self) -> dict:
        return self.envelope.get("summary", {})

    @property
    def server(self) -> dict:
        return self.envelope.get("server", {})

    @property
    def snapshot_format(self) -> str:
        return self.envelope["snapshot_format"]

    @property
    def chain(self) -> dict | None:
        """The clear ``chain`` envelope of a restore point written by an incremental backup (checked by
        :func:`parse`), or None: a backup without it is the base of a chain of its own."""
        return self.envelope.get("chain")

    def open_body(self, data_key: bytes | None) -> dict:
        """The body as a dict; ``data_key`` must be the unwrapped key for encrypted manifests."""
        body = self.envelope["body"]
        if not self.encrypted:
            return body
        if data_key is None:
            raise KeyUnavailable(f"manifest {self.id[:12]} is encrypted and no data key was given")
        try:
            sealed = base64.b64decode(body, validate=True)
            plain = crypto.open_sealed(data_key, sealed, _body_aad(self.envelope))
        except (binascii.Error, ValueError, crypto.OpenFailed):
            raise IntegrityError(
                f"manifest {self.id[:12]}: the sealed body does not open with the unwrapped data key; "
                "the manifest's clear fields or its body were altered"
            ) from None
        return json.loads(plain)


def _body_aad(envelope: dict) -> bytes:
    clear = {k: v for k, v in envelope.items() if k != "body"}
    return crypto.body_aad(envelope["backup_id"], hashlib.sha256(canonical(clear)).digest())


def build(envelope: dict, body: dict, data_key: bytes | None) -> bytes:
    """Canonical manifest bytes. ``envelope`` must not hold ``body``; it gains the sealed (or clear) body."""
    env = dict(envelope)
    env["format"] = FORMAT
    env["version"] = VERSION
    if data_key is None:
        env["body"] = body
    else:
        env["body"] = base64.b64encode(crypto.seal(data_key, canonical(body), _body_aad(env))).decode("ascii")
    return canonical(env)


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
MAX_SEQ = (1 << 64) - 1
MAX_CHAIN_TEXT = 64  # "captured" and "stream_created" are RFC 3339 times; nothing longer is read


def is_chain_time(text: str) -> bool:
    """Whether ``text`` is a time a ``chain`` envelope may hold (what :func:`parse` accepts)."""
    return len(text) <= MAX_CHAIN_TEXT and _RFC3339.fullmatch(text) is not None


def _chain_envelope(env: dict) -> None:
    """The ``chain`` envelope (docs/design/incremental.md): bounded, strictly typed, and consistent with the
    backup it is in, so that planning, prune and verify can trust its shape without a key."""
    ch = objects.obj(env["chain"], "chain")
    unknown = set(ch) - {"id", "parent", "first_seq", "last_seq", "captured", "stream_created"}
    if unknown:
        raise objects.Invalid(f"chain has unknown fields {sorted(unknown)}")
    objects.hex_id(ch.get("id"), "chain.id", 32)
    if ch.get("parent") is None:
        if ch["id"] != env["backup_id"]:
            raise objects.Invalid("chain.id of a base (no parent) is not its own backup_id")
    else:
        objects.hex_id(ch["parent"], "chain.parent")
    for f in ("first_seq", "last_seq"):
        if objects.integer(ch.get(f), f"chain.{f}") > MAX_SEQ:
            raise objects.Invalid(f"chain.{f} is above 2^64-1")
    if ch.get("parent") is not None and not (1 <= ch["first_seq"] <= ch["last_seq"] + 1):
        raise objects.Invalid(f"chain range {ch['first_seq']}-{ch['last_seq']} is not a range of sequences")
    for f in ("captured", "stream_created"):
        text = objects.string(ch.get(f), f"chain.{f}", nonempty=True)
        if not is_chain_time(text):
            raise objects.Invalid(f"chain.{f} is not an RFC 3339 time")


def _fail(mid: str, why: str) -> IntegrityError:
    return IntegrityError(f"manifest {mid[:12]} (manifests/{mid}) is not a valid jsarchive manifest: {why}")


def parse(raw: bytes, expected_id: str) -> Manifest:
    """Parse and validate manifest bytes that were stored under ``manifests/<expected_id>``.

    Every reader gets here (pipeline.format.objects checks size, depth and types), so a planted manifest of any shape
    ends in an IntegrityError, never in a traceback or unbounded memory.
    """
    if len(raw) > objects.MAX_MANIFEST:
        raise _fail(expected_id, f"larger than {objects.MAX_MANIFEST // objects.MiB} MiB")
    actual = manifest_id(raw)
    if actual != expected_id:
        raise IntegrityError(
            f"manifest {expected_id[:12]} was altered: its bytes hash to {actual[:12]}, not to its name"
        )
    env = objects.parse_json(raw, f"manifest {expected_id[:12]} (manifests/{expected_id})", objects.MAX_MANIFEST)
    if not isinstance(env, dict) or env.get("format") != FORMAT:
        raise _fail(expected_id, "wrong or missing format field")
    if type(env.get("version")) is not int or env["version"] != VERSION:
        raise _fail(expected_id, f"format version {env.get('version')!r}; this jsarchive reads version {VERSION}")
    try:
        objects.manifest_envelope(env)
        if "chain" in env:
            _chain_envelope(env)
        blocks = [StoredBlock(o, n, h) for o, n, h in env["blocks"]]
        expected_offset = 0
        for b in blocks:
            if b.offset != expected_offset:
                raise ValueError("block table")
            expected_offset += b.length
        if expected_offset != env["data"]["size"] or not blocks:
            raise ValueError("block sizes")
        enc = env["encryption"]
        slots = [KeySlot.from_json(s) for s in enc.get("key_slots", [])]
        if enc["scheme"] == SCHEME_AES and not slots:
            raise ValueError("no key slots")
        if enc["scheme"] not in (SCHEME_AES, SCHEME_NONE):
            raise ValueError(f"encryption scheme {enc['scheme']}")
        if enc["scheme"] == SCHEME_AES and not isinstance(env["body"], str):
            raise ValueError("body: an encrypted manifest's body is a string")
        if enc["scheme"] == SCHEME_NONE:
            objects.clear_body(env["body"], len(blocks))
    except objects.Invalid as e:
        raise _fail(expected_id, str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise _fail(expected_id, f"bad or missing {e}") from None
    return Manifest(id=expected_id, raw=raw, envelope=env, blocks=blocks, key_slots=slots)
