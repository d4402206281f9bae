"""Unit tests of the stages, without servers: block cutting, compression, sealing, manifests, keys."""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.base.errors import IntegrityError, KeyUnavailable, UsageError
from pipeline.format import manifest as mf
from pipeline.format.blocks import MAX_BLOCKS, BlockCutter, MiB, choose_block_size
from pipeline.format.compress import BlockCompressor, Compression
from pipeline.format.snapshot import V1, V2, detect_snapshot_format
from pipeline.jetstream.client import api_error, parse_version
from pipeline.keys import crypto
from pipeline.keys.keyring import KeyRing, KeySlot, fingerprint, generate_identity, parse_raw_key


# -- block cutting ---------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=40), size=st.integers(1, 257))
def test_cutter_reassembles_and_flags_only_the_last_block(chunks, size):
    cutter = BlockCutter(size)
    out = [b for c in chunks for b in cutter.feed(c)]
    out.append(cutter.finish())
    assert b"".join(b for _, b, _ in out) == b"".join(chunks)
    assert [i for i, _, _ in out] == list(range(len(out)))
    assert [last for _, _, last in out] == [False] * (len(out) - 1) + [True]
    assert all(len(b) == size for _, b, _ in out[:-1])
    assert 0 <= len(out[-1][1]) <= size


def test_block_size_grows_to_stay_under_the_part_limit():
    assert choose_block_size(0) == 8 * MiB
    assert choose_block_size(10 * 1024**3) == 8 * MiB
    big = 200 * 1024**3
    size = choose_block_size(big)
    assert size % MiB == 0 and size * MAX_BLOCKS >= big * 1.5


# -- compression -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec,expect", [("zstd", ("zstd", 3)), ("zstd:19", ("zstd", 19)), ("none", ("none", 0)), (" ZSTD:1 ", ("zstd", 1))]
)
def test_compression_spec(spec, expect):
    c = Compression.parse(spec)
    assert (c.algorithm, c.level) == expect


@pytest.mark.parametrize("spec", ["zstd:0", "zstd:23", "zstd:x", "gzip", "none:3", ""])
def test_bad_compression_spec(spec):
    with pytest.raises(UsageError):
        Compression.parse(spec)


@given(data=st.binary(max_size=5000))
def test_zstd_round_trip_is_one_frame(data):
    c = BlockCompressor(Compression("zstd", 3))
    frame = c.compress(data)
    assert frame[:4] == b"\x28\xb5\x2f\xfd"  # zstd magic: a standard frame any zstd can read
    assert c.decompress(frame, len(data)) == data


# -- sealing ---------------------------------------------------------------------------------------------------
BID = "0123456789abcdef0123456789abcdef"


def test_seal_binds_backup_index_and_last_flag():
    key = crypto.new_data_key()
    sealed = crypto.seal(key, b"block", crypto.block_aad(BID, 3, False))
    assert crypto.open_sealed(key, sealed, crypto.block_aad(BID, 3, False)) == b"block"
    for aad in (crypto.block_aad(BID, 4, False), crypto.block_aad(BID, 3, True), crypto.block_aad("f" * 32, 3, False)):
        with pytest.raises(crypto.OpenFailed):
            crypto.open_sealed(key, sealed, aad)
    with pytest.raises(crypto.OpenFailed):
        crypto.open_sealed(crypto.new_data_key(), sealed, crypto.block_aad(BID, 3, False))
    flipped = bytearray(sealed)
    flipped[20] ^= 1
    with pytest.raises(crypto.OpenFailed):
        crypto.open_sealed(key, bytes(flipped), crypto.block_aad(BID, 3, False))
    assert len(sealed) == len(b"block") + crypto.OVERHEAD
    with pytest.raises(crypto.OpenFailed):
        crypto.open_sealed(key, b"short", b"")


# -- keys ------------------------------------------------------------------------------------------------------
def _identity_file(tmp_path, mode=0o600):
    ident, public = generate_identity()
    p = tmp_path / f"id-{public[-6:]}"
    p.write_text(f"# comment\n{ident}\n")
    p.chmod(mode)
    return p, public


def test_age_slots_open_only_with_the_identity(tmp_path):
    p, public = _identity_file(tmp_path)
    writer = KeyRing.load(recipients=[public], use_env=False)
    assert writer.can_write
    dk = crypto.new_data_key()
    slots = writer.wrap(dk, BID)
    assert [s.type for s in slots] == ["age"] and slots[0].recipient == public
    # a recipient-only host cannot open what it wrote
    with pytest.raises(KeyUnavailable, match=public):
        writer.unwrap(slots, BID)
    reader = KeyRing.load(identity_files=[str(p)], use_env=False)
    assert reader.unwrap(slots, BID) == dk
    other, _ = _identity_file(tmp_path)
    with pytest.raises(KeyUnavailable, match="age recipient"):
        KeyRing.load(identity_files=[str(other)], use_env=False).unwrap(slots, BID)


def test_raw_key_slots_and_fingerprints(monkeypatch):
    raw = os.urandom(32)
    monkeypatch.setenv("JSARCHIVE_KEY", raw.hex())
    ring = KeyRing.load()
    dk = crypto.new_data_key()
    slots = ring.wrap(dk, BID)
    assert slots[0].key_id == fingerprint(raw) and raw.hex() not in json.dumps([s.to_json() for s in slots])
    assert ring.unwrap(slots, BID) == dk
    with pytest.raises(KeyUnavailable, match="altered"):
        ring.unwrap(slots, "f" * 32)  # a slot copied into another backup does not open there
    monkeypatch.setenv("JSARCHIVE_KEY", base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(KeyUnavailable, match=fingerprint(raw)):
        KeyRing.load().unwrap(slots, BID)


@pytest.mark.parametrize("text", ["", "abcd", "zz" * 32, base64.b64encode(b"x" * 31).decode()])
def test_bad_raw_keys(text):
    with pytest.raises(UsageError, match="256-bit"):
        parse_raw_key(text, "test")


def test_key_file_permissions_and_contents(tmp_path):
    p, _ = _identity_file(tmp_path, mode=0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        KeyRing.load(identity_files=[str(p)], use_env=False)
    bad = tmp_path / "bad"
    bad.write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    bad.chmod(0o600)
    with pytest.raises(UsageError, match="not an age X25519 identity"):
        KeyRing.load(identity_files=[str(bad)], use_env=False)
    with pytest.raises(UsageError, match="does not exist"):
        KeyRing.load(identity_files=[str(tmp_path / "nope")], use_env=False)
    with pytest.raises(UsageError, match="not an age X25519 recipient"):
        KeyRing.load(recipients=["age1nope"], use_env=False)
    rf = tmp_path / "recipients"
    _, pub1 = generate_identity()
    _, pub2 = generate_identity()
    rf.write_text(f"# team\n{pub1}\n\n{pub2}\n")
    assert KeyRing.load(recipients_files=[str(rf)], use_env=False).recipients == [pub1, pub2]


# -- manifest --------------------------------------------------------------------------------------------------
def _envelope(blocks=((0, 10, "a" * 64), (10, 5, "b" * 64)), scheme="aes-256-gcm", slots=None):
    slot = KeySlot("raw", b"w" * 60, key_id="k" * 16).to_json()
    return {
        "backup_id": BID,
        "stream": "S",
        "created": "2026-01-01T00:00:00.000000Z",
        "snapshot_format": "V2",
        "data": {"key": f"data/{BID}", "size": sum(b[1] for b in blocks), "block_size": 10},
        "blocks": [list(b) for b in blocks],
        "encryption": {"scheme": scheme, "key_slots": [slot] if slots is None else slots},
    }


def test_manifest_round_trip_and_content_address():
    dk = crypto.new_data_key()
    raw = mf.build(_envelope(), {"config": {"name": "S"}}, dk)
    assert raw == mf.canonical(json.loads(raw))  # canonical: re-encoding gives the same bytes
    m = mf.parse(raw, mf.manifest_id(raw))
    assert m.stream == "S" and m.encrypted and len(m.blocks) == 2 and m.blocks[1].offset == 10
    assert m.open_body(dk) == {"config": {"name": "S"}}
    with pytest.raises(IntegrityError):
        m.open_body(crypto.new_data_key())
    with pytest.raises(IntegrityError, match="altered"):
        mf.parse(raw + b" ", mf.manifest_id(raw))


def test_manifest_clear_fields_are_bound_to_the_body():
    dk = crypto.new_data_key()
    env = json.loads(mf.build(_envelope(), {"x": 1}, dk))
    env["stream"] = "OTHER"
    forged = mf.canonical(env)
    m = mf.parse(forged, mf.manifest_id(forged))  # well-formed, correctly named ...
    with pytest.raises(IntegrityError, match="altered"):
        m.open_body(dk)  # ... but the body no longer authenticates


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e["blocks"].__setitem__(1, [11, 5, "b" * 64]),  # gap in offsets
        lambda e: e["data"].__setitem__("size", 99),
        lambda e: e["blocks"].__setitem__(0, [0, 10, "nothex"]),
        lambda e: e.__setitem__("backup_id", "xyz"),
        lambda e: e["encryption"].__setitem__("key_slots", []),
        lambda e: e["encryption"].__setitem__("scheme", "rot13"),
        lambda e: e.__setitem__("version", 2),
        lambda e: e.pop("stream"),
        lambda e: e.__setitem__("blocks", []),
    ],
)
def test_invalid_manifests_are_rejected(mutate):
    env = json.loads(mf.build(_envelope(), {}, crypto.new_data_key()))
    mutate(env)
    raw = mf.canonical(env)
    with pytest.raises(IntegrityError):
        mf.parse(raw, mf.manifest_id(raw))


def test_unencrypted_manifest_keeps_the_body_in_the_clear():
    body = {
        "config": {"name": "S"},
        "snapshot": {"bytes": 15},
        "compression": {"algorithm": "none", "level": 0},
        "plain_blocks": [[10, "c" * 64], [5, "d" * 64]],
    }
    raw = mf.build(_envelope(scheme="none", slots=[]), body, None)
    m = mf.parse(raw, mf.manifest_id(raw))
    assert not m.encrypted and m.open_body(None) == body
    # a clear body is checked like any object read from an archive: it cannot be planted half-formed
    raw = mf.build(_envelope(scheme="none", slots=[]), {"config": {"name": "S"}}, None)
    with pytest.raises(IntegrityError, match="body.snapshot"):
        mf.parse(raw, mf.manifest_id(raw))


# -- protocol helpers ------------------------------------------------------------------------------------------
def test_snapshot_format_detection_from_s2_prefix():
    ident = b"\xff\x06\x00\x00S2sTwO"
    literal = lambda data: bytes([(len(data) - 1) << 2]) + data  # noqa: E731 - S2 literal tag, short form
    v2 = ident + b"\x00" + (4 + 1 + 9).to_bytes(3, "little") + b"CRC!" + b"\x40" + literal(b"NATSARC1x")
    v1 = ident + b"\x00" + (4 + 1 + 9).to_bytes(3, "little") + b"CRC!" + b"\x40" + literal(b"meta.inf\x00")
    unc = b"\xff\x06\x00\x00sNaPpY" + b"\x01" + (4 + 10).to_bytes(3, "little") + b"CRC!" + b"NATSARC1.."
    assert detect_snapshot_format(v2) == V2
    assert detect_snapshot_format(v1) == V1
    assert detect_snapshot_format(unc) == V2
    assert detect_snapshot_format(ident) is None  # 2.10 sends the identifier as a chunk of its own
    assert detect_snapshot_format(v2[:14]) is None


def test_versions_and_error_mapping():
    assert parse_version("2.15.1") == (2, 15, 1) and parse_version("v2.10.26-beta") == (2, 10, 26)
    assert parse_version("garbage") == (0, 0, 0)
    e = api_error({"code": 500, "err_code": 10064, "description": "snapshot failed: no impl"}, "MEM")
    assert "memory storage" in str(e) and "2.15" in str(e) and e.exit_code == 8
    e = api_error({"code": 400, "err_code": 10130, "description": "stream name already in use"}, "S")
    assert e.exit_code == 6 and "'S' already exists" in str(e)
    e = api_error({"code": 400, "err_code": 10005, "description": "no suitable peers for placement"}, "S")
    assert e.exit_code == 8 and "--tag" in str(e)
    e = api_error({"code": 404, "err_code": 10059, "description": "stream not found"}, "S")
    assert e.exit_code == 3
    e = api_error({"code": 418, "err_code": 99999, "description": "teapot"}, "S")
    assert "teapot" in str(e) and e.exit_code == 8


def test_block_cutter_reuses_recycled_buffers_without_mixing_contents() -> None:
    data = bytes(range(256)) * 400  # 102,400 bytes
    cutter = BlockCutter(10_000)
    out: list[bytes] = []
    seen: list[int] = []
    for off in range(0, len(data), 3_001):
        for _index, block, _last in cutter.feed(data[off : off + 3_001]):
            out.append(bytes(block))
            seen.append(id(block))
            cutter.recycle(block)  # done with it: the next full block may be written into it
    _index, block, last = cutter.finish()
    out.append(bytes(block))
    assert last and b"".join(out) == data
    assert len(set(seen)) < len(seen)  # buffers were reused
    cutter.recycle(bytearray(5))  # a short (last) block is not taken back
    assert all(len(b) == 10_000 for b in cutter._free)
