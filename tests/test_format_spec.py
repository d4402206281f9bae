"""An independent reader of archive format v1, written from docs/format.md alone.

It imports nothing from pipeline.format.manifest, .crypto, .keys, .repository or .restore: only hashlib, json, base64,
cryptography's AESGCM, zstandard, pyrage and google_crc32c. The real tool writes backups of a real nats-server
stream; this reader finds, audits, opens and decodes them, and must agree byte for byte with what the manifest
promises. Both payloads of §10 are read: the S2 stream as sent, and the decoded NATSARC1 archive (``--store
decoded``), which the reader parses and re-frames itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import pyrage
import pytest
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.base.transfer import TransferConfig
from pipeline.flows.backup import BackupOptions, BackupResult, backup_stream
from pipeline.jetstream.client import ConnectOptions
from pipeline.keys.keyring import KeyRing
from tests.streams import fill_stream

# -- the reader: constants from the spec ---------------------------------------------------------------------------

FORMAT = "jsarchive.manifest"
VERSION = 1
S2_STREAM_IDENTIFIER = b"\xff\x06\x00\x00S2sTwO"
SNAPPY_STREAM_IDENTIFIER = b"\xff\x06\x00\x00sNaPpY"
INNER_ENCODINGS = ("s2-stream", "natsarc")
NATSARC_MAGIC = b"NATSARC1"
REF_LEAF = re.compile(r"\A([0-9]{8}T[0-9]{6}\.[0-9]{6}Z)-([0-9a-f]{32})\Z")
HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
HEX32 = re.compile(r"\A[0-9a-f]{32}\Z")
CREATED = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
NONCE, TAG = 12, 16


class FormatError(Exception):
    """The archive does not conform to format v1 (or was altered)."""


def canonical(obj: object) -> bytes:
    """Spec §3.1."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def aad_block(backup_id: str, index: int, last: bool) -> bytes:
    return b"jsarchive/v1/block\x00" + bytes.fromhex(backup_id) + index.to_bytes(8, "big") + bytes([1 if last else 0])


def aad_body(backup_id: str, envelope_digest: bytes) -> bytes:
    return b"jsarchive/v1/manifest-body\x00" + bytes.fromhex(backup_id) + envelope_digest


def aad_slot(backup_id: str) -> bytes:
    return b"jsarchive/v1/key-slot\x00" + bytes.fromhex(backup_id)


def raw_key_fingerprint(raw: bytes) -> str:
    return hashlib.sha256(b"jsarchive/v1/key-id\x00" + raw).hexdigest()[:16]


def open_sealed(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Spec §7.1: nonce (12) || ciphertext || tag (16)."""
    if len(sealed) < NONCE + TAG:
        raise FormatError("sealed data shorter than nonce and tag")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE], sealed[NONCE:], aad)
    except InvalidTag:
        raise FormatError("AES-GCM authentication failed") from None


# -- the reader: repository and manifest ---------------------------------------------------------------------------


@dataclass
class Ref:
    stream: str
    time: str
    backup_id: str
    manifest_id: str


def list_refs(root: Path) -> list[Ref]:
    """Spec §1 and §11.1: every valid ref, newest first by (time, backup_id)."""
    out = []
    refs = root / "refs"
    for path in refs.rglob("*"):
        if not path.is_file():
            continue
        rest = path.relative_to(refs).as_posix()
        stream, _, leaf = rest.rpartition("/")
        m = REF_LEAF.match(leaf)
        if not stream or not m:
            continue
        target = path.read_bytes().decode("ascii").strip()
        if not HEX64.match(target):
            raise FormatError(f"ref {rest} does not hold a manifest id")
        out.append(Ref(stream, m.group(1), m.group(2), target))
    out.sort(key=lambda r: (r.time, r.backup_id), reverse=True)
    return out


def load_manifest(root: Path, manifest_id: str) -> tuple[bytes, dict]:
    """Spec §3.2, §4, §6 (the parts that need no key)."""
    raw = (root / "manifests" / manifest_id).read_bytes()
    if sha256_hex(raw) != manifest_id:
        raise FormatError("manifest bytes do not hash to the manifest id")
    env = json.loads(raw)
    if not isinstance(env, dict) or env.get("format") != FORMAT or env.get("version") != VERSION:
        raise FormatError("not a format v1 manifest")
    if canonical(env) != raw:
        raise FormatError("manifest is not canonical JSON")
    if not isinstance(env.get("backup_id"), str) or not HEX32.match(env["backup_id"]):
        raise FormatError("bad backup_id")
    for name in ("stream", "created", "snapshot_format"):
        if not isinstance(env.get(name), str):
            raise FormatError(f"{name} is not a string")
    if "body" not in env:
        raise FormatError("no body")
    blocks = env["blocks"]
    if not blocks:
        raise FormatError("empty block table")
    offset = 0
    for entry in blocks:
        o, n, h = entry
        if type(o) is not int or type(n) is not int or o != offset or n < 0 or not HEX64.match(h):
            raise FormatError("block table is not contiguous or malformed")
        offset += n
    if offset != env["data"]["size"]:
        raise FormatError("block lengths do not add up to data.size")
    scheme = env["encryption"]["scheme"]
    if scheme not in ("aes-256-gcm", "none"):
        raise FormatError(f"unknown scheme {scheme}")
    if scheme == "aes-256-gcm" and not env["encryption"]["key_slots"]:
        raise FormatError("encrypted without key slots")
    return raw, env


def audit(root: Path, env: dict) -> list[bytes]:
    """Spec §11.2: every stored byte checked against the manifest, without a key. Returns the stored blocks."""
    data_path = root / env["data"]["key"]
    data = data_path.read_bytes()
    if len(data) != env["data"]["size"]:
        raise FormatError("data object size differs from data.size")
    stored = []
    for offset, length, digest in env["blocks"]:
        block = data[offset : offset + length]
        if len(block) != length or sha256_hex(block) != digest:
            raise FormatError(f"stored block at {offset} does not match its SHA-256")
        stored.append(block)
    return stored


def read_identity_file(path: Path) -> list[pyrage.x25519.Identity]:
    """Spec §7.4: one identity per line; blank lines and # comments ignored."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(pyrage.x25519.Identity.from_str(line))
    return out


def unwrap_age(env: dict, identities: list[pyrage.x25519.Identity]) -> bytes:
    for slot in env["encryption"]["key_slots"]:
        if slot["type"] != "age":
            continue
        try:
            key = pyrage.decrypt(base64.b64decode(slot["wrapped"], validate=True), identities)
        except pyrage.DecryptError:
            continue
        if len(key) == 32:
            return key
    raise FormatError("no age slot opens with these identities")


def unwrap_raw(env: dict, raw_key: bytes) -> bytes:
    kid = raw_key_fingerprint(raw_key)
    for slot in env["encryption"]["key_slots"]:
        if slot["type"] == "raw" and slot["key_id"] == kid:
            key = open_sealed(raw_key, base64.b64decode(slot["wrapped"], validate=True), aad_slot(env["backup_id"]))
            if len(key) == 32:
                return key
    raise FormatError("no raw slot for this key")


def envelope_digest(env: dict) -> bytes:
    """Spec §7.3: SHA-256 of the canonical manifest object without "body"."""
    return hashlib.sha256(canonical({k: v for k, v in env.items() if k != "body"})).digest()


def open_body(env: dict, data_key: bytes | None) -> dict:
    if env["encryption"]["scheme"] == "none":
        return env["body"]
    sealed = base64.b64decode(env["body"], validate=True)
    return json.loads(open_sealed(data_key, sealed, aad_body(env["backup_id"], envelope_digest(env))))


def decode_blocks(env: dict, body: dict, stored: list[bytes], data_key: bytes | None) -> bytes:
    """Spec §6, §7.2, §9: open, decompress and check every block; return the payload."""
    return b"".join(plain_blocks(env, body, stored, data_key))


def plain_blocks(env: dict, body: dict, stored: list[bytes], data_key: bytes | None) -> list[bytes]:
    """Spec §6, §7.2, §9, §11.3 step 3: every block opened, decompressed and checked, in order."""
    encoding = body["snapshot"].get("inner_encoding", "s2-stream")
    if encoding not in INNER_ENCODINGS or (encoding == "natsarc" and env["snapshot_format"] != "V2"):
        raise FormatError(f"inner encoding {encoding!r} with snapshot format {env['snapshot_format']}")
    plain_table = body["plain_blocks"]
    if len(plain_table) != len(stored):
        raise FormatError("block tables disagree")
    algorithm = body["compression"]["algorithm"]
    n = len(stored)
    out = []
    for i, block in enumerate(stored):
        frame = block if data_key is None else open_sealed(data_key, block, aad_block(env["backup_id"], i, i == n - 1))
        plain_len, plain_sha = plain_table[i]
        if algorithm == "zstd":
            params = zstandard.get_frame_parameters(frame)
            if params.content_size != plain_len or params.has_checksum:
                raise FormatError(f"block {i}: zstd frame header does not carry the plaintext size")
            d = zstandard.ZstdDecompressor().decompressobj()
            plain = d.decompress(frame)
            if not d.eof or d.unused_data:
                raise FormatError(f"block {i} is not exactly one zstd frame")
        elif algorithm == "none":
            plain = frame
        else:
            raise FormatError(f"unknown compression {algorithm}")
        if len(plain) != plain_len or sha256_hex(plain) != plain_sha:
            raise FormatError(f"block {i}: plaintext does not match plain_blocks")
        if i < n - 1 and plain_len != env["data"]["block_size"]:
            raise FormatError(f"block {i}: only the last block may be shorter than data.block_size")
        out.append(plain)
    return out


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """Spec §10.2: 7 bits per byte, least significant group first, high bit set on all but the last byte."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise FormatError("truncated or overlong uvarint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def parse_natsarc(payload: bytes) -> list[tuple[str, int, int, bytes, bytes]]:
    """Spec §10.2: ``(name, timestamp, sequence, header, payload)`` of every entry before the end marker."""
    if not payload.startswith(NATSARC_MAGIC):
        raise FormatError("the payload does not start with NATSARC1")
    pos = len(NATSARC_MAGIC)
    entries = []
    last_seq = 0
    while True:
        start = pos
        name_len, pos = read_uvarint(payload, pos)
        zigzag, pos = read_uvarint(payload, pos)
        seq, pos = read_uvarint(payload, pos)
        hsize, pos = read_uvarint(payload, pos)
        psize, pos = read_uvarint(payload, pos)
        if name_len == 0:
            if (zigzag, seq, hsize, psize) != (0, 0, 0, 0) or payload[start:] != b"\x00" * 5:
                raise FormatError("the end marker is not five zero bytes at the end of the payload")
            return entries
        end = pos + name_len + hsize + psize
        if end > len(payload):
            raise FormatError("an entry runs past the end of the payload")
        if seq and seq <= last_seq:
            raise FormatError(f"message sequence {seq} does not increase")
        last_seq = seq or last_seq
        name = payload[pos : pos + name_len].decode("utf-8")
        header = payload[pos + name_len : pos + name_len + hsize]
        entries.append((name, (zigzag >> 1) ^ -(zigzag & 1), seq, header, payload[pos + name_len + hsize : end]))
        pos = end


def masked_crc(data: bytes) -> int:
    """Spec §10.2: the framing format's masked CRC-32C."""
    c = google_crc32c.value(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def snappy_frame(blocks: list[bytes]) -> bytes:
    """Spec §10.2 re-framing: each plaintext block cut into 64 KiB pieces, each an uncompressed chunk."""
    out = bytearray(SNAPPY_STREAM_IDENTIFIER)
    for block in blocks:
        for off in range(0, len(block), 65536):
            piece = block[off : off + 65536]
            out += b"\x01" + (len(piece) + 4).to_bytes(3, "little") + masked_crc(piece).to_bytes(4, "little") + piece
    return bytes(out)


def first_s2_literal(stream: bytes) -> bytes:
    """The first bytes of the decoded S2 stream, read from the chunk after the stream identifier (no decoder)."""
    pos = len(S2_STREAM_IDENTIFIER)
    ctype = stream[pos]
    clen = int.from_bytes(stream[pos + 1 : pos + 4], "little")
    chunk = stream[pos + 4 : pos + 4 + clen]
    if ctype == 0x01:  # uncompressed: CRC-32C (4), data
        return chunk[4:]
    assert ctype == 0x00, f"unexpected S2 chunk type {ctype:#x}"
    blk = chunk[4:]
    i = 0
    while blk[i] & 0x80:  # uvarint decoded length
        i += 1
    i += 1
    tag = blk[i]
    assert tag & 0x03 == 0, "a compressed S2 block must start with a literal"
    n = tag >> 2
    i += 1
    if n >= 60:
        extra = n - 59
        n = int.from_bytes(blk[i : i + extra], "little")
        i += extra
    return blk[i : i + n + 1]


# -- helpers for the tests -----------------------------------------------------------------------------------------


def _backup(url: str, archive: Path, **opts: object) -> BackupResult:
    return backup_stream(
        BackupOptions(
            stream="ORDERS",
            url=str(archive),
            connect=ConnectOptions(servers=url),
            transfer=TransferConfig(block_size=64 * 1024),
            **opts,
        )
    )


def _find_only(archive: Path, res: BackupResult) -> tuple[Ref, bytes, dict]:
    refs = list_refs(archive)
    assert len(refs) == 1
    ref = refs[0]
    assert (ref.stream, ref.backup_id, ref.manifest_id) == ("ORDERS", res.backup_id, res.manifest_id)
    ref_path = archive / "refs" / "ORDERS" / f"{ref.time}-{ref.backup_id}"
    assert ref_path.read_bytes() == res.manifest_id.encode("ascii") + b"\n"
    raw, env = load_manifest(archive, ref.manifest_id)
    return ref, raw, env


def _check_envelope(ref: Ref, raw: bytes, env: dict, res: BackupResult) -> None:
    assert env["backup_id"] == res.backup_id and env["stream"] == "ORDERS"
    assert CREATED.match(env["created"]), env["created"]
    # ref time = created in UTC, microseconds included
    assert ref.time == env["created"][:26].replace("-", "").replace(":", "") + "Z"
    assert env["data"]["key"] == f"data/{res.backup_id}"
    assert env["data"]["block_size"] == 64 * 1024
    assert env["snapshot_format"] == "V2"  # the fixture server is 2.15.x
    assert env["tool"]["name"] == "jsarchive"
    assert isinstance(env["server"]["version"], str) and env["server"]["version"].startswith("2.15.")
    assert len(env["blocks"]) == res.blocks > 1
    # the clear envelope holds no floats (so a reader in any language can re-encode it)
    clear = {k: v for k, v in env.items() if k != "body"}
    floats: list[float] = []

    def walk(v: object) -> None:
        if isinstance(v, float):
            floats.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(clear)
    assert floats == []
    # members are stored in sorted order at every level (json.loads keeps the stored order)
    for obj in (env, env["data"], env["summary"], env["server"], env["encryption"], *env["encryption"]["key_slots"]):
        assert list(obj) == sorted(obj)
    # §7.3 shortcut: canonical(clear) is the stored bytes with the body member cut out
    body_member = b'"body":' + canonical(env["body"]) + b","
    assert raw.count(body_member) == 1
    assert raw.replace(body_member, b"") == canonical(clear)


def _check_plaintext(env: dict, body: dict, plain: bytes, encoding: str = "s2-stream") -> None:
    assert len(plain) == env["summary"]["snapshot_bytes"] == body["snapshot"]["bytes"]
    assert sum(n for n, _ in body["plain_blocks"]) == len(plain)
    assert body["snapshot"]["format"] == env["snapshot_format"] == "V2"
    assert body["snapshot"]["inner_encoding"] == encoding
    if encoding == "s2-stream":
        assert plain.startswith(S2_STREAM_IDENTIFIER)
        assert first_s2_literal(plain).startswith(b"NATSARC1")
        assert "received_bytes" not in body["snapshot"]
    else:
        entries = parse_natsarc(plain)
        assert entries[0][0] == "state.json" and entries[0][2] == 0
        state = json.loads(entries[0][3] + entries[0][4])
        messages = [e for e in entries if e[2]]
        assert len(messages) == state["messages"] == 2997 and messages[-1][2] == 3000
        assert sorted(e[0] for e in entries if e[0].startswith("consumers/")) == [
            "consumers/billing",
            "consumers/eu-audit",
        ]
        assert 0 < body["snapshot"]["received_bytes"] < len(plain)  # the S2 stream the server sent
    assert body["config"]["name"] == "ORDERS"
    assert body["state"]["messages"] == env["summary"]["messages"] == 2997  # 3000 minus 3 interior deletes
    assert body["state"]["last_seq"] == env["summary"]["last_seq"] == 3000
    assert sorted(c["name"] for c in body["consumers"]) == ["billing", "eu-audit"]
    assert body["compression"] == {"algorithm": "zstd", "level": 3}


@pytest.fixture
def orders(nats_server) -> str:
    asyncio.run(fill_stream(nats_server.url, messages=3000))
    return nats_server.url


# -- tests ---------------------------------------------------------------------------------------------------------


def test_canonical_encoding_rules():
    """Spec §3.1 on a worked example: sorted keys, no whitespace, lowercase \\u escapes, surrogate pairs."""
    obj = {"b": [1, True, None], "a": '\u00e9\x7f\x01\n\t/"\\\U0001f600', "B": {"z": -2, "y": ""}}
    expected = b'{"B":{"y":"","z":-2},"a":"\\u00e9\\u007f\\u0001\\n\\t/\\"\\\\\\ud83d\\ude00","b":[1,true,null]}'
    assert canonical(obj) == expected


def test_age_backup_read_by_independent_reader(orders, tmp_path, keyring, identity_file):
    archive = tmp_path / "archive"
    res = _backup(orders, archive, keys=keyring)
    assert sorted(p.name for p in archive.iterdir() if p.name != ".incomplete") == ["data", "manifests", "refs"]
    ref, raw, env = _find_only(archive, res)
    _check_envelope(ref, raw, env, res)

    assert env["encryption"]["scheme"] == "aes-256-gcm"
    slots = env["encryption"]["key_slots"]
    assert [s["type"] for s in slots] == ["age"]
    assert slots[0]["recipient"] == identity_file[1]
    assert base64.b64decode(slots[0]["wrapped"]).startswith(b"age-encryption.org/v1\n")
    assert isinstance(env["body"], str)

    stored = audit(archive, env)  # no key involved
    assert len(stored) == len(env["blocks"])

    data_key = unwrap_age(env, read_identity_file(identity_file[0]))
    assert len(data_key) == 32
    body = open_body(env, data_key)
    plain = decode_blocks(env, body, stored, data_key)
    _check_plaintext(env, body, plain)

    # the last-block flag and the index are bound: the wrong AAD does not open
    n = len(stored)
    with pytest.raises(FormatError):
        open_sealed(data_key, stored[0], aad_block(env["backup_id"], 0, True))
    with pytest.raises(FormatError):
        open_sealed(data_key, stored[n - 1], aad_block(env["backup_id"], n - 1, False))
    with pytest.raises(FormatError):
        open_sealed(data_key, stored[1], aad_block(env["backup_id"], 0, False))
    # a wrong identity does not unwrap
    with pytest.raises(FormatError):
        unwrap_age(env, [pyrage.x25519.Identity.generate()])

    # a flipped bit in the data object is found by the keyless audit
    data_path = archive / env["data"]["key"]
    data = bytearray(data_path.read_bytes())
    data[env["blocks"][1][0] + 5] ^= 0x01
    data_path.chmod(0o600)
    data_path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="does not match its SHA-256"):
        audit(archive, env)


def test_unencrypted_backup_read_by_independent_reader(orders, tmp_path):
    archive = tmp_path / "archive"
    res = _backup(orders, archive, encrypt=False)
    ref, raw, env = _find_only(archive, res)
    _check_envelope(ref, raw, env, res)

    assert env["encryption"] == {"key_slots": [], "scheme": "none"}
    assert isinstance(env["body"], dict)
    body = open_body(env, None)
    stored = audit(archive, env)
    # stored blocks are the zstd frames themselves
    assert all(s.startswith(b"\x28\xb5\x2f\xfd") for s in stored)
    plain = decode_blocks(env, body, stored, None)
    _check_plaintext(env, body, plain)
    assert isinstance(body["timings"]["seconds"], float)  # floats live only in the body


def test_raw_key_backup_read_by_independent_reader(orders, tmp_path):
    archive = tmp_path / "archive"
    raw_key = os.urandom(32)
    res = _backup(orders, archive, keys=KeyRing(raw_keys=[raw_key]))
    ref, raw, env = _find_only(archive, res)
    _check_envelope(ref, raw, env, res)

    slots = env["encryption"]["key_slots"]
    assert [s["type"] for s in slots] == ["raw"]
    assert slots[0]["key_id"] == raw_key_fingerprint(raw_key)
    assert set(slots[0]) == {"type", "key_id", "wrapped"}
    assert len(base64.b64decode(slots[0]["wrapped"])) == NONCE + 32 + TAG

    data_key = unwrap_raw(env, raw_key)
    body = open_body(env, data_key)
    plain = decode_blocks(env, body, audit(archive, env), data_key)
    _check_plaintext(env, body, plain)

    with pytest.raises(FormatError):
        unwrap_raw(env, os.urandom(32))  # no slot with that fingerprint
    # the slot is bound to its backup id
    sealed = base64.b64decode(slots[0]["wrapped"])
    with pytest.raises(FormatError):
        open_sealed(raw_key, sealed, aad_slot("00" * 16))


def test_reader_rejects_edited_clear_envelope(orders, tmp_path, keyring, identity_file):
    archive = tmp_path / "archive"
    res = _backup(orders, archive, keys=keyring)
    _, raw, env = _find_only(archive, res)
    identities = read_identity_file(identity_file[0])
    data_key = unwrap_age(env, identities)
    assert open_body(env, data_key)["config"]["name"] == "ORDERS"  # the original opens

    # edit a clear field, re-encode canonically, store under the new hash: the hash check passes ...
    edited = dict(env, stream="INVOICES")
    new_raw = canonical(edited)
    new_id = sha256_hex(new_raw)
    assert new_id != res.manifest_id
    (archive / "manifests" / new_id).write_bytes(new_raw)
    _, env2 = load_manifest(archive, new_id)
    assert env2["stream"] == "INVOICES"
    audit(archive, env2)  # ... the data is untouched, and the data key still unwraps ...
    assert unwrap_age(env2, identities) == data_key
    # ... but the body no longer authenticates
    with pytest.raises(FormatError, match="authentication failed"):
        open_body(env2, data_key)

    # the same edit stored under the old name fails the hash check
    (archive / "manifests" / res.manifest_id).write_bytes(new_raw)
    with pytest.raises(FormatError, match="do not hash"):
        load_manifest(archive, res.manifest_id)

    # changing the block table (dropping the last block) is also caught by the body
    dropped = dict(env, blocks=env["blocks"][:-1])
    dropped["data"] = dict(env["data"], size=sum(b[1] for b in dropped["blocks"]))
    with pytest.raises(FormatError, match="authentication failed"):
        open_body(dropped, data_key)


def test_decoded_backup_read_by_independent_reader(orders, tmp_path, keyring, identity_file):
    """--store decoded: the payload is the NATSARC1 archive (§10.2), holding what the S2 stream of a default backup
    of the same stream holds; an export frames it exactly as §10.2 says."""
    from pipeline.format import s2  # only to compare with the default backup's payload: the reader itself needs no S2
    from pipeline.ops.natscli import ExportOptions, export_backup

    default = _backup(orders, tmp_path / "default", keys=keyring)
    archive = tmp_path / "archive"
    res = _backup(orders, archive, keys=keyring, store="decoded")
    assert res.inner_encoding == "natsarc" and default.inner_encoding == "s2-stream"
    ref, raw, env = _find_only(archive, res)
    _check_envelope(ref, raw, env, res)
    assert "inner_encoding" not in json.dumps({k: v for k, v in env.items() if k != "body"})  # sealed, not clear

    data_key = unwrap_age(env, read_identity_file(identity_file[0]))
    body = open_body(env, data_key)
    blocks = plain_blocks(env, body, audit(archive, env), data_key)
    plain = b"".join(blocks)
    _check_plaintext(env, body, plain, "natsarc")

    # the same entries as inside the default backup's S2 stream (only the time stamps of the state and consumer
    # entries differ: the server writes the time of the snapshot there)
    _, denv = load_manifest(tmp_path / "default", default.manifest_id)
    dkey = unwrap_age(denv, read_identity_file(identity_file[0]))
    dbody = open_body(denv, dkey)
    dplain = decode_blocks(denv, dbody, audit(tmp_path / "default", denv), dkey)
    _check_plaintext(denv, dbody, dplain)

    def comparable(entries: list) -> list:
        return [(n, ts if seq else 0, seq, h, p) for n, ts, seq, h, p in entries]

    assert comparable(parse_natsarc(plain)) == comparable(parse_natsarc(s2.decompress(dplain)))

    # export re-frames the archive per §10.2, byte for byte
    out = tmp_path / "natscli"
    export_backup(ExportOptions(url=str(archive), backup=res.manifest_id, directory=str(out), keys=keyring))
    assert (out / "stream.tar.s2").read_bytes() == snappy_frame(blocks)

    # an inner encoding the reader does not know is refused, not guessed at
    with pytest.raises(FormatError, match="inner encoding"):
        plain_blocks(env, {**body, "snapshot": {**body["snapshot"], "inner_encoding": "zstd-dict"}}, [], data_key)
