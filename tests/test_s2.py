"""The S2 decoder (pipeline.format.s2): real server snapshots, a reference encoder, the C and Python decoders compared.

Byte-exactness is shown three ways: every block's CRC-32C (computed by the server's writer) is checked; the
decoded V2 archive holds exactly the messages the server has; and the decoded bytes, framed again (uncompressed
Snappy frames, and S2 frames with repeat codes from the encoder below), restore into the server to the same
stream. The last also proves the test encoder writes what klauspost's reader accepts.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import shutil
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import google_crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.format import natsarc, s2
from pipeline.jetstream.client import ConnectOptions, connect
from tests.conftest import make_server
from tests.streams import comparable, fill_stream, read_messages, stream_state

MESSAGES = 2000
needs_c = pytest.mark.skipif(
    s2._c is None,
    reason="the C accelerator pipeline.format._s2block is not built (no compiler, or run `.venv/bin/pip install -e .`)",
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- a reference S2 / Snappy encoder ------------------------------------------------------------------------------


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def emit_literal(out: bytearray, data: bytes, size: int | None = None) -> None:
    """A literal; ``size`` forces 1-4 extra length bytes (non-minimal encodings are valid)."""
    n = len(data) - 1
    if size is None:
        size = 0 if n < 60 else (n.bit_length() + 7) // 8
    if size == 0:
        assert n < 60
        out.append(n << 2)
    else:
        assert n < 1 << (8 * size)
        out.append((59 + size) << 2)
        out += n.to_bytes(size, "little")
    out += data


def emit_copy(out: bytearray, offset: int, length: int, kind: int) -> None:
    """copy1 (4-11 bytes, offset 1-2047), copy2 (1-64, offset < 65536) or copy4 (1-64)."""
    if kind == 1:
        assert 4 <= length <= 11 and 0 < offset < 2048
        out += bytes([0x01 | (length - 4) << 2 | (offset >> 8) << 5, offset & 0xFF])
    elif kind == 2:
        assert 1 <= length <= 64 and 0 < offset < 1 << 16
        out += bytes([0x02 | (length - 1) << 2]) + offset.to_bytes(2, "little")
    else:
        assert 1 <= length <= 64 and 0 < offset < 1 << 32
        out += bytes([0x03 | (length - 1) << 2]) + offset.to_bytes(4, "little")


REPEAT_FORMS = {  # form: (min length, max length)
    0: (4, 8),
    1: (8, 263),
    2: (260, 65795),
    3: (65540, 65540 + (1 << 24) - 1),
}


def emit_repeat(out: bytearray, length: int, form: int | None = None) -> None:
    """An S2 repeat (copy1 with offset 0) of the previous copy's offset."""
    if form is None:
        form = next(f for f, (lo, hi) in REPEAT_FORMS.items() if lo <= length <= hi)
    lo, hi = REPEAT_FORMS[form]
    assert lo <= length <= hi
    if form == 0:
        out += bytes([0x01 | (length - 4) << 2, 0])
    elif form == 1:
        out += bytes([0x01 | 5 << 2, 0, length - 8])
    elif form == 2:
        out += bytes([0x01 | 6 << 2, 0]) + (length - 260).to_bytes(2, "little")
    else:
        out += bytes([0x01 | 7 << 2, 0]) + (length - 65540).to_bytes(3, "little")


def emit_match(out: bytearray, offset: int, length: int, last_offset: int) -> None:
    if offset == last_offset:
        emit_repeat(out, length)
        return
    first = min(length, 64)
    rest = length - first
    if 0 < rest < 4:
        first, rest = length - 4, 4
    kind = 1 if 4 <= first <= 11 and offset < 2048 else 2 if offset < 1 << 16 else 4
    emit_copy(out, offset, first, kind)
    if rest:
        emit_repeat(out, rest)


def compress_block(data: bytes) -> bytes:
    """A greedy LZ77 S2 block: literals, copies, and repeats whenever a match reuses the previous offset."""
    out = bytearray(uvarint(len(data)))
    table: dict[bytes, int] = {}
    n = len(data)
    i = lit = last = 0
    while i + 4 <= n:
        key = data[i : i + 4]
        cand = table.get(key)
        table[key] = i
        if cand is None:
            i += 1
            continue
        length = 4
        while i + length < n and data[cand + length] == data[i + length]:
            length += 1
        if lit < i:
            emit_literal(out, data[lit:i])
        emit_match(out, i - cand, length, last)
        last = i - cand
        i += length
        lit = i
    if lit < n:
        emit_literal(out, data[lit:])
    return bytes(out)


def masked(data: bytes) -> int:
    c = google_crc32c.value(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def chunk(ctype: int, body: bytes) -> bytes:
    return bytes([ctype]) + len(body).to_bytes(3, "little") + body


def frame(data: bytes, *, block: int = 1 << 20, snappy: bool = False, compress: bool = True) -> bytes:
    """A framed stream: S2 (``S2sTwO``) or Snappy (``sNaPpY``) identifier, compressed or uncompressed chunks."""
    out = bytearray(s2.SNAPPY_STREAM_IDENTIFIER if snappy else s2.S2_STREAM_IDENTIFIER)
    for off in range(0, len(data), block):
        part = data[off : off + block]
        crc = masked(part).to_bytes(4, "little")
        out += chunk(0x00, crc + compress_block(part)) if compress else chunk(0x01, crc + part)
    return bytes(out)


def model(ops: list[tuple]) -> tuple[bytes, bytes]:
    """Encode a program of S2 operations; return (block, expected output built byte by byte)."""
    out = bytearray()
    enc = bytearray()
    last = 0
    for op in ops:
        if op[0] == "lit":
            emit_literal(enc, op[1], op[2])
            out += op[1]
            continue
        if op[0] == "rep":
            offset, length = last, op[1]
            emit_repeat(enc, length, op[2])
        else:
            _, kind, offset, length = op
            emit_copy(enc, offset, length, kind)
            last = offset
        for _ in range(length):
            out.append(out[-offset])
    return uvarint(len(out)) + bytes(enc), bytes(out)


@st.composite
def programs(draw: st.DrawFn) -> list[tuple]:
    ops: list[tuple] = []
    produced = 0
    last = 0
    for _ in range(draw(st.integers(1, 30))):
        kinds = ["lit"] if not produced else ["lit", "copy1", "copy2", "copy4"] + (["rep"] if last else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "lit":
            data = draw(st.binary(min_size=1, max_size=draw(st.sampled_from([8, 70, 300]))))
            n = len(data) - 1
            minimal = 0 if n < 60 else (n.bit_length() + 7) // 8
            size = draw(st.integers(max(minimal, 0), 4)) if draw(st.booleans()) else None
            if size == 0 and n >= 60:
                size = None
            ops.append(("lit", data, size))
            produced += len(data)
        elif kind == "rep":
            form = draw(st.sampled_from([0, 0, 1, 1, 2, 3]))
            lo, hi = REPEAT_FORMS[form]
            length = draw(st.integers(lo, min(hi, lo + 300)))
            ops.append(("rep", length, form))
            produced += length
        else:
            k = int(kind[-1])
            limit = {1: 2047, 2: 65535, 4: produced}[k]
            offset = draw(st.integers(1, min(produced, limit)))
            length = draw(st.integers(4, 11)) if k == 1 else draw(st.integers(1, 64))
            ops.append(("copy", k, offset, length))
            produced += length
            last = offset
    return ops


def outcome(fn: Callable[..., bytes], *args: object) -> tuple[str, object]:
    try:
        return "ok", fn(*args)
    except s2.S2Error as e:
        return type(e).__name__, str(e)
    except ValueError as e:
        return "ValueError", str(e)


def c_decode(data: bytes, max_size: int = s2.MAX_BLOCK_SIZE) -> bytes:
    return s2._c.decode_block(data, max_size)


def stream_outcome(data: bytes, accelerated: bool, verify_crc: bool = True, step: int = 4096) -> tuple[str, object]:
    parts = [data[i : i + step] for i in range(0, len(data), step)]
    return outcome(lambda: b"".join(s2.iter_decode(parts, accelerated=accelerated, verify_crc=verify_crc)))


# -- real snapshots -----------------------------------------------------------------------------------------------


async def _snapshot(url: str) -> tuple[bytes, dict]:
    buf = bytearray()

    async def on_chunk(c: bytes) -> None:
        buf.extend(c)

    async with await connect(ConnectOptions(servers=url)) as js:
        res = await js.snapshot("ORDERS", on_chunk, chunk_size=64 * 1024)
    return bytes(buf), {"config": res.config, "state": res.state}


class Real:
    def __init__(self, url: str, raw: bytes, request: dict, messages: list) -> None:
        self.url, self.raw, self.request, self.messages = url, raw, request, messages
        self.state = asyncio.run(stream_state(url, "ORDERS"))


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Real]]:
    """A V2 (2.15.x) and a V1 (2.14.6) server, each with a filled ORDERS stream and its raw snapshot."""
    out: dict[str, Real] = {}
    with (
        make_server(None, tmp_path_factory.mktemp("v2")) as v2,
        make_server("2.14.6", tmp_path_factory.mktemp("v1")) as v1,
    ):
        for name, srv in (("V2", v2), ("V1", v1)):
            asyncio.run(fill_stream(srv.url, messages=MESSAGES))
            msgs = asyncio.run(read_messages(srv.url, "ORDERS"))
            raw, request = asyncio.run(_snapshot(srv.url))
            out[name] = Real(srv.url, raw, request, msgs)
        yield out


@pytest.mark.parametrize("fmt", ["V2", "V1"])
def test_real_snapshot_decodes_the_same_every_way(real, fmt):
    raw = real[fmt].raw
    assert raw.startswith(s2.S2_STREAM_IDENTIFIER)
    pure = s2.decompress(raw, accelerated=False)
    assert len(pure) > len(raw)  # it was compressed
    # any way of cutting the input gives the same bytes
    rng = random.Random(7)
    cuts, at = [], 0
    while at < len(raw):
        n = rng.choice([1, 3, 10, 4096, 70_000])
        cuts.append(raw[at : at + n])
        at += n
    assert b"".join(s2.iter_decode(cuts, accelerated=False)) == pure
    assert b"".join(s2.iter_decode(cuts)) == pure
    with s2.S2Reader([raw]) as f:
        assert f.read() == pure
    if s2._c is not None:
        assert s2.decompress(raw, accelerated=True) == pure
    if fmt == "V2":
        assert pure.startswith(natsarc.MAGIC)
    else:
        with tarfile.open(fileobj=io.BytesIO(pure), mode="r:") as tf:
            names = tf.getnames()
        assert {"meta.inf", "meta.sum", "msgs/index.db", "obs/billing/o.dat", "obs/eu-audit/meta.inf"} <= set(names)
        assert any(n.startswith("msgs/") and n.endswith(".blk") for n in names)


def test_real_snapshots_use_s2_extensions(real):
    """The server's blocks are larger than Snappy allows and use repeat codes: a Snappy decoder would not do."""
    raw = real["V2"].raw
    pos, repeats, largest = len(s2.S2_STREAM_IDENTIFIER), 0, 0
    while pos < len(raw):
        ctype, clen = raw[pos], int.from_bytes(raw[pos + 1 : pos + 4], "little")
        if ctype == 0:
            block = raw[pos + 8 : pos + 4 + clen]
            largest = max(largest, s2.block_length(block)[0])
            repeats += count_repeats(block)
        pos += 4 + clen
    assert repeats > 0
    assert largest > s2.MAX_SNAPPY_BLOCK_SIZE


def count_repeats(block: bytes) -> int:
    _, s = s2.block_length(block)
    n = 0
    while s < len(block):
        tag = block[s]
        kind = tag & 3
        if kind == 0:
            x = tag >> 2
            extra = x - 59 if x >= 60 else 0
            x = int.from_bytes(block[s + 1 : s + 1 + extra], "little") if extra else x
            s += 1 + extra + x + 1
        elif kind == 1:
            code = (tag >> 2) & 7
            if ((tag & 0xE0) << 3 | block[s + 1]) == 0:
                n += 1
                s += {5: 1, 6: 2, 7: 3}.get(code, 0)
            s += 2
        else:
            s += 3 if kind == 2 else 5
    return n


def test_v2_snapshot_holds_the_servers_messages(real):
    r = real["V2"]
    reader = natsarc.ArchiveReader(s2.iter_decode([r.raw]))
    assert reader.state["messages"] == MESSAGES - 3
    assert {k: reader.state[k] for k in ("first_seq", "last_seq", "num_deleted")} == {
        k: r.request["state"][k] for k in ("first_seq", "last_seq", "num_deleted")
    }
    assert sorted(c.name for c in reader.consumers) == ["billing", "eu-audit"]
    got = [
        (m.sequence, m.subject, {k: v[-1] for k, v in m.headers.fields.items()} if m.headers else None, m.data)
        for m in reader.messages()
    ]
    assert reader.complete
    assert got == r.messages


async def _restore(url: str, request: dict, data: bytes) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 128 * 1024):
            yield data[i : i + 128 * 1024]

    async with await connect(ConnectOptions(servers=url)) as js:
        assert await js.delete_stream("ORDERS")
        await js.restore("ORDERS", request, chunks(), in_flight=2)
        for _ in range(100):
            info = await js.stream_info("ORDERS")
            if info and info["state"]["messages"] == MESSAGES - 3 and len(await js.consumer_names("ORDERS")) == 2:
                return
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("encoding", ["snappy-uncompressed", "s2-with-repeats"])
@pytest.mark.parametrize("fmt", ["V2", "V1"])
def test_decoded_bytes_restore_to_the_same_stream(real, fmt, encoding):
    """Decoded, framed again, restored: the server reads our bytes as it reads its own."""
    r = real[fmt]
    decoded = s2.decompress(r.raw)
    if encoding == "snappy-uncompressed":
        data = frame(decoded, block=1 << 16, snappy=True, compress=False)
    else:
        data = frame(decoded, block=1 << 20)
        assert sum(count_repeats(b) for b in _blocks(data)) > 0
    assert s2.decompress(data) == decoded
    asyncio.run(_restore(r.url, r.request, data))
    after = asyncio.run(stream_state(r.url, "ORDERS"))
    assert comparable(after) == comparable(r.state)
    assert asyncio.run(read_messages(r.url, "ORDERS")) == r.messages


def _blocks(stream: bytes) -> Iterator[bytes]:
    pos = 0
    while pos < len(stream):
        ctype, clen = stream[pos], int.from_bytes(stream[pos + 1 : pos + 4], "little")
        if ctype == 0:
            yield stream[pos + 8 : pos + 4 + clen]
        pos += 4 + clen


# -- the two decoders against the reference encoder ---------------------------------------------------------------


@FUZZ
@given(programs())
def test_program_roundtrip(ops):
    block, expected = model(ops)
    assert s2.decode_block_py(block) == expected
    if s2._c is not None:
        assert c_decode(block) == expected
        assert c_decode(memoryview(block)) == expected
        assert c_decode(bytearray(block)) == expected


@FUZZ
@given(
    st.lists(st.sampled_from([b"abc", b"abcd", b"x" * 30, b"NATS/1.0\r\n", b"\x00\xff", b"ORDERS.eu"]), max_size=200)
)
def test_greedy_encoder_roundtrip(parts):
    data = b"".join(parts)
    stream = frame(data, block=997)
    assert s2.decompress(stream, accelerated=False) == data
    if s2._c is not None:
        assert s2.decompress(stream, accelerated=True) == data


@needs_c
@FUZZ
@given(st.binary(max_size=200), st.integers(0, 5000))
def test_random_blocks_fail_alike(data, max_size):
    got = outcome(s2.decode_block_py, data, max_size)
    assert got == outcome(c_decode, data, max_size)


@needs_c
@FUZZ
@given(programs(), st.data())
def test_mutated_blocks_fail_alike(ops, data):
    block, _ = model(ops)
    mutated = bytearray(block)
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if how == "flip" and mutated:
            mutated[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "cut":
            del mutated[at:]
        elif how == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        elif mutated:
            del mutated[at]
    got = outcome(s2.decode_block_py, bytes(mutated))
    assert got == outcome(c_decode, bytes(mutated))


@needs_c
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_real_streams_fail_alike(real, data):
    raw = real[data.draw(st.sampled_from(["V2", "V1"]))].raw
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        how = data.draw(st.sampled_from(["flip", "flip", "cut", "insert"]))
        if how == "flip":
            mutated[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "cut":
            del mutated[at:]
            if not mutated:
                break
        else:
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    verify = data.draw(st.booleans())
    py = stream_outcome(bytes(mutated), accelerated=False, verify_crc=verify)
    c = stream_outcome(bytes(mutated), accelerated=True, verify_crc=verify)
    assert py == c


@FUZZ
@given(st.binary(max_size=300))
def test_random_streams_fail_cleanly(data):
    for stream in (data, s2.S2_STREAM_IDENTIFIER + data, s2.SNAPPY_STREAM_IDENTIFIER + data):
        py = stream_outcome(stream, accelerated=False, verify_crc=False, step=7)
        assert py[0] in ("ok", "S2Error", "S2CorruptBlock", "S2Truncated", "S2Unsupported", "S2ChecksumError")
        if s2._c is not None:
            assert stream_outcome(stream, accelerated=True, verify_crc=False, step=7) == py


# -- the framing format and limits --------------------------------------------------------------------------------


def test_masked_crc_matches_the_snappy_reference():
    assert s2.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert s2.masked_crc(b"123456789") == masked(b"123456789")


def test_both_identifiers_skippable_and_padding_chunks():
    data = os.urandom(1000) + b"z" * 5000
    crc = masked(data).to_bytes(4, "little")
    stream = (
        s2.SNAPPY_STREAM_IDENTIFIER
        + chunk(0xFE, b"\x00" * 10)
        + chunk(0x01, crc + data)
        + chunk(0x80, b"skip me")
        + s2.S2_STREAM_IDENTIFIER  # a second stream, concatenated
        + chunk(0x00, crc + compress_block(data))
        + chunk(0xFD, b"")
        + chunk(0x00, masked(b"").to_bytes(4, "little") + b"\x00")  # an empty block
    )
    for acc in (False, None):
        assert list(s2.iter_decode([stream], accelerated=acc)) == [data, data]
    assert s2.decompress(b"") == b""


@pytest.mark.parametrize(
    "stream, error, needle",
    [
        (b"\x00\x05\x00\x00hello", s2.S2Error, "not a stream identifier"),
        (b"\xff\x06\x00\x00S2sTwX", s2.S2Error, "bad stream identifier"),
        (b"\xff\x07\x00\x00S2sTwOO", s2.S2Error, "bad stream identifier"),
        (s2.S2_STREAM_IDENTIFIER + b"\x02\x00\x00\x00", s2.S2Unsupported, "unsupported chunk type 0x02"),
        (s2.S2_STREAM_IDENTIFIER + b"\x7f\x01\x00\x00x", s2.S2Unsupported, "0x7f"),
        (s2.S2_STREAM_IDENTIFIER + b"\x00\x10", s2.S2Truncated, "chunk header"),
        (s2.S2_STREAM_IDENTIFIER + b"\x00\x10\x00\x00abc", s2.S2Truncated, "ends inside"),
        (s2.S2_STREAM_IDENTIFIER + b"\xfe\x10\x00\x00abc", s2.S2Truncated, "ends inside"),
        (s2.S2_STREAM_IDENTIFIER + b"\x01\x03\x00\x00abc", s2.S2Error, "too short for its checksum"),
        (s2.S2_STREAM_IDENTIFIER + b"\x00\xff\xff\xff", s2.S2Error, "larger than a block"),
        (s2.S2_STREAM_IDENTIFIER + chunk(0x01, b"\x00\x00\x00\x00data"), s2.S2ChecksumError, "checksum mismatch"),
        (s2.S2_STREAM_IDENTIFIER + chunk(0x00, b"\x00\x00\x00\x00\x04\x01\x00"), s2.S2CorruptBlock, "bad copy offset"),
    ],
)
@pytest.mark.parametrize("accelerated", [False, None])
def test_bad_streams(stream, error, needle, accelerated):
    with pytest.raises(error, match=needle) as e:
        s2.decompress(stream, accelerated=accelerated)
    assert isinstance(e.value, s2.S2Error)
    assert e.value.exit_code == 4  # an IntegrityError: the CLI's exit code for corrupt data


def test_checksum_mismatch_in_a_real_block(real):
    raw = bytearray(real["V2"].raw)
    raw[len(s2.S2_STREAM_IDENTIFIER) + 4] ^= 0x01  # the first block's stored CRC
    with pytest.raises(s2.S2ChecksumError, match="chunk at byte 10"):
        s2.decompress(bytes(raw))
    assert s2.decompress(bytes(raw), verify_crc=False) == s2.decompress(real["V2"].raw)


def test_block_size_limits():
    big = b"ab" * (2 << 20)  # exactly 4 MiB
    assert len(big) == s2.MAX_BLOCK_SIZE
    block = uvarint(len(big))
    enc = bytearray(block)
    emit_literal(enc, b"ab")
    emit_copy(enc, 2, 64, 2)
    left = len(big) - 66
    while left:
        n = min(left, REPEAT_FORMS[3][1])
        emit_repeat(enc, n)
        left -= n
    for acc in (False, None):
        assert s2.decompress(frame_raw(bytes(enc), big), accelerated=acc) == big
        too_big = uvarint(len(big) + 1) + bytes(enc[len(block) :])
        with pytest.raises(s2.S2CorruptBlock, match="block too large"):
            s2.decompress(frame_raw(too_big, big), accelerated=acc)
    # after a Snappy identifier, blocks decode to at most 64 KiB
    ok = b"q" * (1 << 16)
    assert s2.decompress(frame(ok, block=1 << 16, snappy=True)) == ok
    assert s2.decompress(frame(ok, block=1 << 16, snappy=True, compress=False)) == ok
    with pytest.raises(s2.S2CorruptBlock, match="block too large"):
        s2.decompress(frame(ok + b"q", block=1 << 17, snappy=True))
    with pytest.raises(s2.S2Error, match="larger than a block"):
        s2.decompress(frame(ok + b"q", block=1 << 17, snappy=True, compress=False))


def frame_raw(block: bytes, decoded: bytes) -> bytes:
    return s2.S2_STREAM_IDENTIFIER + chunk(0x00, masked(decoded).to_bytes(4, "little") + block)


@pytest.mark.parametrize(
    "block, reason",
    [
        (b"", "bad block header"),
        (b"\x80", "bad block header"),
        (b"\x80" * 10 + b"\x01", "bad block header"),
        (b"\x80\x80\x80\x80\x10", "bad block header"),  # 2^32
        (b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02", "bad block header"),  # bits beyond 64
        (b"\x05\x10abc", "literal overruns"),
        (b"\x05\xf0", "truncated tag"),
        (b"\x02\x08abc", "literal overruns"),
        (b"\x08\x00a\x01", "truncated tag"),
        (b"\x08\x00a\x01\x00", "bad copy offset"),  # repeat with no previous offset
        (b"\x08\x00a\x01\x02", "bad copy offset"),  # offset beyond what was decoded
        (b"\x03\x00a\x0a\x01\x00", "copy overruns"),
        (b"\x03\x00a", "length mismatch"),
        (b"\x00", None),
    ],
)
def test_bad_blocks(block, reason):
    results = [outcome(s2.decode_block_py, block)]
    if s2._c is not None:
        results.append(outcome(c_decode, block))
    for kind, value in results:
        if reason is None:
            assert (kind, value) == ("ok", b"")
        else:
            assert (kind, value) == ("ValueError", reason)


def test_long_overlapping_copies():
    """Run-length copies (offset < length) of every offset size, and repeats across a long pattern."""
    for period in (1, 2, 3, 7, 64, 1000):
        pattern = bytes(random.Random(period).randrange(256) for _ in range(period))
        enc = bytearray()
        emit_literal(enc, pattern)
        emit_copy(enc, period, 64, 4)
        emit_repeat(enc, 70_000)
        expected = (pattern * (70_064 // period + 2))[: period + 70_064]
        block = uvarint(len(expected)) + bytes(enc)
        assert s2.decode_block_py(block) == expected
        if s2._c is not None:
            assert c_decode(block) == expected


def test_accelerator_selection(monkeypatch):
    if s2._c is None:
        with pytest.raises(RuntimeError, match="not built"):
            list(s2.iter_decode([b""], accelerated=True))
        cc = os.environ.get("CC", "cc").split()[0]
        if shutil.which(cc) and Path(s2.__file__).with_name("_s2block.c").exists():
            pytest.skip(
                f"a compiler ({cc}) is here but pipeline.format._s2block was not built: run .venv/bin/pip install -e ."
            )
    else:
        assert s2.ACCELERATED or os.environ.get("JSARCHIVE_S2_PURE")
    monkeypatch.setattr(s2, "ACCELERATED", False)
    assert s2.decode_block(b"\x03\x08abc") == b"abc"
