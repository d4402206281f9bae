"""The backup's V2 census count (pipeline.format.natsarc.count_archive and its C walk, pipeline/format/_natsarc.c).

count_archive must say exactly what ArchiveReader says about an archive — the same counts, or the same error class
and message — with the C walk and with its pure-Python fallback, however the archive is cut into blocks. Shown on
random archives, on random mutations and truncations of them, on hostile entry headers (overlong varints, sizes
at and above the limits), on random bytes fed to the walk directly, and on a real nats-server 2.15 snapshot,
whose count must equal the stream's state.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.format import natsarc, s2
from pipeline.format.census import Census
from pipeline.format.natsarc import END_MARKER, MAGIC, MAX_ENTRY, MAX_NAME, ArchiveCount, encode_entry, put_uvarint
from pipeline.format.snapshot import V2
from pipeline.jetstream.client import ConnectOptions, connect
from tests.streams import fill_stream

pytestmark = pytest.mark.timeout(300)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Without a compiler the accelerator is legitimately absent (JSARCHIVE_NO_EXTENSIONS=1 builds that case on purpose).
NO_EXTENSIONS = os.environ.get("JSARCHIVE_NO_EXTENSIONS", "") not in ("", "0")
WAYS = [False] if NO_EXTENSIONS else [False, True]


def reference(blocks: list[bytes]) -> ArchiveCount:
    """What ArchiveReader (the reader restore and inspect use) finds."""
    reader = natsarc.ArchiveReader(blocks)
    seqs = list(reader.sequences())
    assert reader.complete
    return ArchiveCount(
        messages=len(seqs),
        first_seq=seqs[0] if seqs else 0,
        last_seq=seqs[-1] if seqs else 0,
        consumers=len(reader.consumers),
        state=reader.state,
    )


def outcome(fn, blocks: list[bytes]) -> tuple:
    """("ok", result) or (error class, message); anything but an ArchiveError fails the test."""
    try:
        return ("ok", fn(blocks))
    except natsarc.ArchiveError as e:
        return (type(e), str(e))


def outcomes(blocks: list[bytes]) -> list[tuple]:
    ref = outcome(reference, blocks)
    return [ref] + [outcome(lambda b, acc=acc: natsarc.count_archive(b, accelerated=acc), blocks) for acc in WAYS]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` split at ``points`` (repeated points give empty blocks, which the readers must skip)."""
    edges = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


# -- random archives ----------------------------------------------------------------------------------------------

NAMES = st.text(alphabet="ab.>*é\x00\ud7ff", min_size=1, max_size=10)
TIMESTAMPS = st.integers(-(2**63), 2**63 - 1)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def meta_entry(draw) -> bytes:
    kind = draw(st.sampled_from(["state", "consumer", "consumer", "other"]))
    ts = draw(TIMESTAMPS)
    if kind == "state":
        body = json.dumps(draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4))).encode()
        return encode_entry("state.json", ts, 0, b"", body)
    if kind == "consumer":
        obj = {"config": draw(st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3)), "state": {}}
        body = json.dumps(obj).encode()
        split = draw(st.integers(0, len(body)))  # the JSON may sit partly in the header part
        return encode_entry(f"consumers/{draw(NAMES)}", ts, 0, body[:split], body[split:])
    return encode_entry(draw(st.sampled_from(["other", "x/y"])), ts, 0, b"", draw(st.binary(max_size=20)))


@st.composite
def archives(draw) -> tuple[bytes, list[int]]:
    """A valid archive and the offsets of its entries."""
    parts = [MAGIC]
    for _ in range(draw(st.integers(0, 4))):
        parts.append(draw(meta_entry()))
    seq = 0
    for _ in range(draw(st.integers(0, 40))):
        if draw(st.integers(0, 9)) == 0:
            parts.append(draw(meta_entry()))  # entries without a sequence can follow messages too
            continue
        seq = max(seq, draw(st.sampled_from([0, 0, 0, 2**32, 2**63]))) + draw(st.integers(1, 2**20))
        header = draw(st.sampled_from([b"", b"NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n"]))
        size = draw(st.sampled_from([0, 1, 50, 300, 5000, 70_000]))
        parts.append(encode_entry(draw(NAMES), draw(TIMESTAMPS), seq, header, bytes([seq & 0xFF]) * size))
    if draw(st.booleans()):  # the largest sequence a uvarint holds
        parts.append(encode_entry("s.last", 0, 2**64 - 1, b"", b"z"))
    parts.append(END_MARKER)
    offsets, at = [], 0
    for p in parts:
        at += len(p)
        offsets.append(at)
    return b"".join(parts), offsets[:-1]


def splits(data: bytes):
    return st.one_of(
        st.lists(st.integers(0, len(data)), max_size=30),
        # regular steps, no more than ~300 blocks
        st.integers(1, 97).map(lambda k: list(range(max(k, len(data) // 300), len(data), max(k, len(data) // 300)))),
    )


@PROPERTY
@given(st.data())
def test_random_archives_count_the_same_every_way(data):
    raw, _ = data.draw(archives())
    blocks = cut(raw, data.draw(splits(raw)))
    results = outcomes(blocks)
    assert results[0][0] == "ok"
    assert all(r == results[0] for r in results), results


# -- mutations, truncations, hostile headers ----------------------------------------------------------------------

HOSTILE_VARINTS = st.one_of(
    st.integers(0, 2**64 - 1).map(put_uvarint),
    st.sampled_from([0, 1, MAX_NAME, MAX_NAME + 1, MAX_ENTRY, MAX_ENTRY + 1, 2**63, 2**64 - 1]).map(put_uvarint),
    st.just(b"\x80\x80\x00"),  # 0, not minimally encoded: still a valid uvarint
    st.just(b"\xff" * 9 + b"\x01"),  # 2^64 - 1
    st.sampled_from([b"\xff" * 9 + b"\x02", b"\x80" * 9 + b"\x7f", b"\xff" * 10, b"\xff" * 11]),  # overflow
)


@st.composite
def hostile_entry(draw) -> bytes:
    fields = [draw(HOSTILE_VARINTS) for _ in range(5)]
    return b"".join(fields) + draw(st.binary(max_size=40))


@st.composite
def mutated(draw) -> bytes:
    raw, offsets = draw(archives())
    buf = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append", "hostile", "hostile"]))
        at = draw(st.integers(0, len(buf)))
        if op == "flip" and at < len(buf):
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(buf):
            buf[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del buf[at:]
        elif op == "append":
            buf += draw(st.binary(min_size=1, max_size=8))
        elif op == "hostile":  # at an entry boundary, where a header is read
            where = draw(st.sampled_from(offsets)) if offsets else len(MAGIC)
            buf[where:where] = draw(hostile_entry())
    return bytes(buf)


@PROPERTY
@given(st.data())
def test_damaged_archives_fail_the_same_every_way(data):
    raw = data.draw(mutated())
    blocks = cut(raw, data.draw(splits(raw)))
    results = outcomes(blocks)
    assert all(r == results[0] for r in results), results


@PROPERTY
@given(st.data())
def test_every_truncation_is_the_same_error(data):
    raw, _ = data.draw(archives())
    end = data.draw(st.integers(0, len(raw) - 1))
    blocks = cut(raw[:end], data.draw(splits(raw[:end])))
    results = outcomes(blocks)
    assert results[0][0] in (natsarc.ArchiveTruncated, natsarc.ArchiveError), results
    assert all(r == results[0] for r in results), results


@pytest.mark.parametrize(
    "tail, error, message",
    [
        (b"", natsarc.ArchiveTruncated, "it ends at byte 8 without its end marker"),
        (b"\x03\x80", natsarc.ArchiveTruncated, "it ends inside an entry at byte 9"),
        (b"\x03\x00\x01\x00\x09ab", natsarc.ArchiveTruncated, "it ends inside an entry at byte 15"),
        (b"\x03" + b"\xff" * 9 + b"\x02", natsarc.ArchiveError, "bad varint at byte 9"),
        (b"\x03" + b"\xff" * 10, natsarc.ArchiveError, "bad varint at byte 9"),
        (b"\x00\x00\x01\x00\x00", natsarc.ArchiveError, "entry at byte 8 has no name"),
        (END_MARKER + b"\x00", natsarc.ArchiveError, "data after the end marker at byte 13"),
        (
            put_uvarint(MAX_NAME + 1) + b"\x00\x01\x00\x00",
            natsarc.ArchiveError,
            f"impossible sizes (name {MAX_NAME + 1}, header 0, payload 0)",
        ),
        (
            b"\x01\x00\x01" + put_uvarint(2**64 - 1) * 2,
            natsarc.ArchiveError,
            f"impossible sizes (name 1, header {2**64 - 1}, payload {2**64 - 1})",
        ),
        (
            encode_entry("a", 0, 5, b"", b"") + encode_entry("a", 0, 5, b"", b""),
            natsarc.ArchiveError,
            "message sequence 5 at byte 14 follows sequence 5",
        ),
        (
            encode_entry("consumers/c", 0, 0, b"", b"[1]"),
            natsarc.ArchiveError,
            "entry 'consumers/c' is not a JSON object",
        ),
        (encode_entry("state.json", 0, 0, b"{", b""), natsarc.ArchiveError, "entry 'state.json' is not JSON"),
    ],
)
@pytest.mark.parametrize("accelerated", WAYS)
def test_each_error(tail, error, message, accelerated):
    raw = MAGIC + tail
    for step in (1, 2, 5, len(raw)):
        blocks = [raw[i : i + step] for i in range(0, len(raw), step)]
        with pytest.raises(error, match="^natsarc: ") as info:
            natsarc.count_archive(blocks, accelerated=accelerated)
        assert info.type is error and message in str(info.value)
        assert outcome(reference, blocks) == (info.type, str(info.value))


@pytest.mark.parametrize("accelerated", WAYS)
def test_not_an_archive(accelerated):
    for raw in (b"", b"NATS", b"NATSARC2" + END_MARKER):
        blocks = [raw[:3], raw[3:]]
        with pytest.raises(natsarc.ArchiveError, match="not a NATSARC1 archive") as info:
            natsarc.count_archive(blocks, accelerated=accelerated)
        assert outcome(reference, blocks) == (info.type, str(info.value))


@pytest.mark.parametrize("accelerated", WAYS)
def test_large_entries_across_many_blocks(accelerated):
    """Entries far larger than a block, blocks of every kind of buffer, a state entry split over 1-byte blocks."""
    rng = random.Random(5)
    state = {"messages": 3, "pad": "x" * 50_000}
    raw = b"".join(
        [
            MAGIC,
            encode_entry("state.json", 1, 0, b"", json.dumps(state).encode()),
            encode_entry("consumers/big", 1, 0, b"", json.dumps({"config": {"pad": "y" * 300_000}}).encode()),
            encode_entry("s.1", 1, 1, b"NATS/1.0\r\n\r\n", rng.randbytes(3_000_000)),
            encode_entry("s.2", 1, 2, b"", b""),
            encode_entry("s.3", 1, 10, b"", rng.randbytes(100_000)),
            END_MARKER,
        ]
    )
    want = ArchiveCount(messages=3, first_seq=1, last_seq=10, consumers=1, state=state)
    for step in (65_536, 4093, 1_000_000):
        blocks = [raw[i : i + step] for i in range(0, len(raw), step)]
        assert natsarc.count_archive(blocks, accelerated=accelerated) == want
        assert natsarc.count_archive([bytearray(b) for b in blocks], accelerated=accelerated) == want
        assert natsarc.count_archive([memoryview(b) for b in blocks], accelerated=accelerated) == want
    small = raw[:200_000]  # the state entry in 1-byte blocks, the rest in one
    assert natsarc.count_archive([*(small[i : i + 1] for i in range(len(small))), raw[200_000:]]) == want


# -- the C walk itself --------------------------------------------------------------------------------------------


def test_the_accelerator_is_built_and_chosen():
    if NO_EXTENSIONS:  # the pure-Python install: the fallback is used, and asking for the walk is an error
        assert natsarc._walk is None
        with pytest.raises(RuntimeError, match="not built"):
            natsarc.count_archive([MAGIC + END_MARKER], accelerated=True)
        assert natsarc.count_archive([MAGIC + END_MARKER]) == ArchiveCount()
        return
    from pipeline.format import _natsarc

    assert natsarc._walk is _natsarc.walk
    raw = MAGIC + encode_entry("a", 0, 3, b"", b"x") + encode_entry("b", 0, 7, b"h", b"") + END_MARKER
    assert _natsarc.walk(raw, 8, 0) == (len(raw), 2, 3, 7, "end", 0)
    assert _natsarc.walk(raw[:-1], 8, 0) == (len(raw) - 5, 2, 3, 7, "more", 0)
    assert _natsarc.walk(raw[:-6], 8, 0) == (15, 1, 3, 3, "more", 7)  # the second entry needs 7 bytes
    meta = MAGIC + encode_entry("state.json", 0, 0, b"", b"{}")
    assert _natsarc.walk(meta, 8, 9) == (8, 0, 0, 9, "meta", 0)
    with pytest.raises(ValueError, match="^natsarc: message sequence 3 at byte 1008 follows sequence 3$"):
        _natsarc.walk(raw, 8, 3, 1000)
    with pytest.raises(ValueError, match="outside the buffer"):
        _natsarc.walk(raw, len(raw) + 1, 0)
    with pytest.raises(ValueError, match="outside the buffer"):
        _natsarc.walk(raw, -1, 0)
    with pytest.raises(OverflowError):
        _natsarc.walk(raw, 8, -1)
    with pytest.raises(OverflowError):
        _natsarc.walk(raw, 8, 2**64)
    with pytest.raises(TypeError):
        _natsarc.walk("not bytes", 0, 0)


@pytest.mark.skipif(NO_EXTENSIONS, reason="built without extensions on purpose (JSARCHIVE_NO_EXTENSIONS)")
@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 120), st.integers(0, 2**64 - 1), st.integers(0, 2**40))
def test_the_walk_survives_any_bytes(raw, pos, last, base):
    """Random bytes at any position: a result that makes sense, or ValueError; never a crash or a read past."""
    from pipeline.format import _natsarc

    pos = min(pos, len(raw))
    view = memoryview(bytearray(raw))  # exactly len(raw) bytes: a read past its end would be undefined
    try:
        end, n, first, new_last, status, need = _natsarc.walk(view, pos, last, base)
    except ValueError as e:
        assert str(e).startswith("natsarc: ")
        return
    assert pos <= end <= len(raw) and status in ("more", "meta", "end")
    assert (n == 0 and first == 0 and new_last == last) or (last < first <= new_last)
    if status == "more" and need:
        assert end + need > len(raw)
    if status == "end":
        assert end == len(raw)


GUARDED_WALK = r"""
import ctypes, mmap, random, sys
from pipeline.format import _natsarc

page = mmap.PAGESIZE
mem = mmap.mmap(-1, 2 * page)
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
if libc.mprotect(ctypes.addressof(ctypes.c_char.from_buffer(mem)) + page, page, 0) != 0:  # PROT_NONE
    sys.exit("mprotect failed")
view = memoryview(mem)
rng = random.Random(int(sys.argv[1]))
pieces = [b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"\xff" * 9 + b"\x01", b"\xff" * 9 + b"\x02", b"\x80" * 10,
          b"\x81\x80\x40", b"ab", b"\x05", b"\x02"]
for _ in range(50_000):
    n = rng.randrange(0, 60)
    if rng.random() < 0.5:
        raw = rng.randbytes(n)
    else:
        raw = b"".join(rng.choice(pieces) for _ in range(n // 3))
    view[page - len(raw) : page] = raw
    try:
        _natsarc.walk(view[page - len(raw) : page], rng.randrange(len(raw) + 1), rng.choice([0, 5, 2**64 - 1]))
    except ValueError:
        pass
print("survived")
"""


@pytest.mark.skipif(NO_EXTENSIONS, reason="built without extensions on purpose (JSARCHIVE_NO_EXTENSIONS)")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mprotect through ctypes (Linux)")
def test_the_walk_never_reads_past_its_buffer():
    """Hostile bytes that end right before an inaccessible page: one byte read past the end would be SIGSEGV."""
    res = subprocess.run(
        [sys.executable, "-c", GUARDED_WALK, "3"], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0 and res.stdout.strip() == "survived", (res.returncode, res.stdout, res.stderr)


# -- a real snapshot ----------------------------------------------------------------------------------------------


def test_real_snapshot_counted_as_the_stream_holds(nats_server):
    """nats-server 2.15: deletes and two consumers; the count equals the stream's state every way it is cut."""

    async def take() -> tuple[list[bytes], dict, object]:
        await fill_stream(nats_server.url, messages=20_000, deletes=(1, 7, 8, 1000, 19_999))
        chunks: list[bytes] = []
        census = Census(V2)

        async def on_chunk(c: bytes) -> None:
            chunks.append(bytes(c))
            await census.feed(c)

        async with await connect(ConnectOptions(servers=nats_server.url)) as js:
            await js.snapshot("ORDERS", on_chunk, chunk_size=64 * 1024)
            info = await js.stream_info("ORDERS")
        return chunks, info["state"], await census.finish()

    chunks, state, held = asyncio.run(take())
    assert state["messages"] == 19_995 and state["first_seq"] == 2 and state["last_seq"] == 20_000
    decoded = list(s2.iter_decode(chunks))
    want = ArchiveCount(
        messages=state["messages"],
        first_seq=state["first_seq"],
        last_seq=state["last_seq"],
        consumers=2,
        state=reference(decoded).state,
    )
    assert want.state["messages"] == state["messages"]
    raw = b"".join(decoded)
    for acc in WAYS:
        assert natsarc.count_archive(decoded, accelerated=acc) == want
        for step in (4093, 100_000):
            assert natsarc.count_archive([raw[i : i + step] for i in range(0, len(raw), step)], accelerated=acc) == want
    assert (held.messages, held.first_seq, held.last_seq, held.consumers) == (19_995, 2, 20_000, 2)
    assert held.archive_state == want.state
