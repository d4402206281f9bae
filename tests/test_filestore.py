"""The V1 snapshot census (pipeline.format.filestore) against real 2.14 / 2.12 / 2.10 servers.

Real snapshots are taken with the raw protocol and decoded; the census must count exactly the stream's state
(interior erases and no-erase deletes, a purge, a subject purge, headers, several blocks, a KV-like stream whose
old revisions are removed through limits), must name a snapshot whose last block lost its tail, and must turn
every malformed input into IntegrityError.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import struct
import tarfile
import time
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from pipeline.base.errors import IntegrityError
from pipeline.format.filestore import V1Census, V1Counts
from pipeline.format.s2 import FramedDecoder
from pipeline.jetstream.client import ConnectOptions, connect
from tests.conftest import make_server
from tests.servers import V1_VERSIONS
from tests.streams import fill_stream

ORDERS_MSGS = 12_000  # ~13 MB with 1 KB payloads: two 8 MB blocks


async def snapshot(url: str, name: str) -> tuple[bytes, dict]:
    """The decoded tar of a snapshot of ``name`` and the stream state right after it."""
    dec = FramedDecoder()
    out = bytearray()

    async def on_chunk(chunk: bytes) -> None:
        for block in dec.feed(chunk):
            out.extend(block)

    async with await connect(ConnectOptions(servers=url)) as js:
        await js.snapshot(name, on_chunk)
        info = await js.stream_info(name)
    dec.finish()
    assert info is not None
    return bytes(out), info["state"]


async def delete_no_erase(nc: nats.NATS, stream: str, seq: int) -> None:
    # RemoveMsg instead of EraseMsg: the record stays in its block, only a tombstone and index.db know.
    resp = await nc.request(
        f"$JS.API.STREAM.MSG.DELETE.{stream}", json.dumps({"seq": seq, "no_erase": True}).encode(), timeout=10
    )
    assert json.loads(resp.data).get("success"), resp.data


async def fill_all(url: str) -> None:
    await fill_stream(
        url, messages=ORDERS_MSGS, consumers=False, deletes=(7, 8, 1000, 9000), payload_size=1000
    )  # nats-py's delete_msg erases: ebit records plus tombstones
    nc = await nats.connect(url)
    try:
        await delete_no_erase(nc, "ORDERS", 2000)
        js = nc.jetstream(timeout=30)
        # KV-like: history 3 per key, so old revisions go through limits and stay in the blocks as records.
        await js.add_stream(StreamConfig(name="KV", subjects=["kv.>"], max_msgs_per_subject=3))
        # ~3.4 revisions per key plus one hot key: removals at the head and all through the first 4 MB block.
        keys = ["kv.hot" if i % 7 == 0 else f"kv.key{i % 1500}" for i in range(6000)]
        # publish_async is a coroutine that returns the ack's future: gather the futures, not the coroutines.
        acks = [await js.publish_async(k, b"v" * 1000, headers={"R": str(i)}) for i, k in enumerate(keys)]
        await asyncio.gather(*acks)
        await delete_no_erase(nc, "KV", 5950)
        # A purge, more messages, a subject purge and interior deletes of both kinds.
        await js.add_stream(StreamConfig(name="P", subjects=["p.>"]))
        for i in range(500):
            await js.publish(f"p.{'ab'[i % 2]}", b"before")
        await js.purge_stream("P")
        for i in range(300):
            await js.publish(f"p.{'abc'[i % 3]}", b"after", headers={"I": str(i)})
        await js.purge_stream("P", subject="p.b")
        await js.delete_msg("P", 650)
        await delete_no_erase(nc, "P", 701)  # p.c: 700 went with the p.b purge
        await js.publish("p.a", b"last")
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[bytes, dict]]:
    out = {}
    for version in V1_VERSIONS:
        with make_server(version, tmp_path_factory.mktemp(f"v1-{version}")) as srv:
            asyncio.run(fill_all(srv.url))
            for name in ("ORDERS", "KV", "P"):
                out[(version, name)] = asyncio.run(snapshot(srv.url, name))
    return out


def census(data: bytes, piece: int | None = None) -> V1Counts:
    c = V1Census()
    if piece is None:
        c.feed(data)
    else:
        for i in range(0, len(data), piece):
            c.feed(memoryview(data)[i : i + piece])
    return c.finish()


def members(tar: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return [(m, tf.extractfile(m).read() if m.isfile() else b"") for m in tf.getmembers()]


def rebuild(parts: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in parts:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def live_record_offsets(block: bytes) -> list[int]:
    """Offsets of the live message records of a block: an independent walk, for building test inputs."""
    out, pos = [], 0
    while pos < len(block):
        rl, seq = struct.unpack_from("<IQ", block, pos)
        if not seq & (3 << 62) and seq:
            out.append(pos)
        pos += rl & 0x7FFFFFFF
    return out


@pytest.mark.parametrize("version", V1_VERSIONS)
@pytest.mark.parametrize("stream", ["ORDERS", "KV", "P"])
def test_census_matches_stream_state(snapshots: dict, version: str, stream: str) -> None:
    tar, state = snapshots[(version, stream)]
    counts = census(tar)
    assert (counts.messages, counts.first_seq, counts.last_seq) == (
        state["messages"],
        state["first_seq"],
        state["last_seq"],
    )
    assert (counts.claimed_messages, counts.claimed_first_seq, counts.claimed_last_seq) == (
        state["messages"],
        state["first_seq"],
        state["last_seq"],
    )
    assert counts.shortfall() is None, counts
    assert counts.notes == [] and counts.errors == []
    assert counts.blocks == sum(1 for m, _ in members(tar) if m.name.endswith(".blk"))
    if stream in ("ORDERS", "KV"):
        assert counts.blocks >= 2, "the stream should span several message blocks"
    # Any piece size gives the same answer: records and headers straddle the boundaries.
    assert census(tar, piece=4093) == counts
    if len(tar) < 300_000:
        assert census(tar, piece=1) == counts


@pytest.mark.parametrize("version", V1_VERSIONS)
def test_kv_limit_removals_are_known_only_to_index_db(snapshots: dict, version: str) -> None:
    """Old KV revisions stay in the block as records: only index.db's first_seq / deleted set removes them."""
    tar, state = snapshots[(version, "KV")]
    parts = members(tar)
    blocks = [d for m, d in parts if m.name.endswith(".blk")]
    records = sum(len(live_record_offsets(b)) for b in blocks)
    assert records >= state["messages"] + 1000  # ~1500 revisions removed through limits, one no-erase delete
    without = census(rebuild([(m, d) for m, d in parts if not m.name.endswith("index.db")]))
    assert without.claimed_messages is None and any("index.db" in n for n in without.notes)
    assert without.messages > state["messages"] and without.shortfall() is None


@pytest.mark.parametrize("version", V1_VERSIONS)
@pytest.mark.parametrize("stream", ["ORDERS", "P"])
def test_without_index_db_tombstones_are_applied(snapshots: dict, version: str, stream: str) -> None:
    tar, state = snapshots[(version, stream)]
    counts = census(rebuild([(m, d) for m, d in members(tar) if not m.name.endswith("index.db")]))
    assert counts.claimed_messages is counts.claimed_first_seq is counts.claimed_last_seq is None
    assert any("no msgs/index.db" in n for n in counts.notes)
    assert (counts.messages, counts.last_seq) == (state["messages"], state["last_seq"])


@pytest.mark.parametrize("version", V1_VERSIONS)
def test_a_block_missing_its_tail_is_a_shortfall(snapshots: dict, version: str) -> None:
    tar, state = snapshots[(version, "ORDERS")]
    parts = members(tar)
    last = max((i for i, (m, _) in enumerate(parts) if m.name.endswith(".blk")), key=lambda i: parts[i][0].name)
    info, block = parts[last]
    cut = live_record_offsets(block)[-158]
    parts[last] = (info, block[:cut])
    counts = census(rebuild(parts))
    assert counts.messages == state["messages"] - 158
    assert counts.last_seq == state["last_seq"] - 158
    assert counts.claimed_messages == state["messages"]
    why = counts.shortfall()
    assert why is not None and "158 missing" in why and info.name in why, why
    assert f"index.db claims {state['last_seq']}" in why


def test_a_block_missing_from_the_tar_is_a_shortfall(snapshots: dict) -> None:
    tar, state = snapshots[("2.14.6", "ORDERS")]
    parts = members(tar)
    first_block = next(i for i, (m, _) in enumerate(parts) if m.name.endswith(".blk"))
    name = parts[first_block][0].name
    del parts[first_block]
    counts = census(rebuild(parts))
    why = counts.shortfall()
    assert counts.messages < state["messages"] and why is not None and name in why and "missing" in why


def test_unreadable_index_db_is_a_note(snapshots: dict) -> None:
    tar, state = snapshots[("2.14.6", "P")]
    parts = [(m, b"\x07" + d[1:] if m.name.endswith("index.db") else d) for m, d in members(tar)]
    counts = census(rebuild(parts))
    assert counts.claimed_messages is None and any("index.db could not be read" in n for n in counts.notes)
    assert counts.messages == state["messages"]


def test_errors_txt_is_reported(snapshots: dict) -> None:
    tar, _ = snapshots[("2.10.26", "P")]
    info = tarfile.TarInfo("errors.txt")
    counts = census(rebuild([*members(tar), (info, b"Could not read message block [3]: boom")]))
    assert "Could not read message block [3]" in (counts.shortfall() or "")


# -- hostile input --------------------------------------------------------------------------------------------
def _header_offsets(tar: bytes) -> dict[str, int]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return {m.name: m.offset for m in tf.getmembers()}


def _with_size_field(tar: bytes, member: str, field: bytes) -> bytes:
    off = _header_offsets(tar)[member]
    hdr = bytearray(tar[off : off + 512])
    hdr[124:136] = field
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return tar[:off] + bytes(hdr) + tar[off + 512 :]


def test_truncated_tar(snapshots: dict) -> None:
    tar, _ = snapshots[("2.14.6", "P")]
    for cut in (0, 1, 100, 511, 512, 1500, len(tar) // 2, len(tar) - 1024, len(tar) - 600, len(tar) - 1):
        if cut == 0:
            with pytest.raises(IntegrityError, match="no end-of-archive"):
                census(b"")
            continue
        with pytest.raises(IntegrityError, match="truncated"):
            census(tar[:cut])


def test_header_claiming_a_huge_size(snapshots: dict) -> None:
    tar, _ = snapshots[("2.14.6", "P")]
    block = next(n for n in _header_offsets(tar) if n.endswith(".blk"))
    # The PAX 'size' record would override the ustar field: drop the PAX header by rewriting ustar-only.
    parts = members(tar)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for info, data in parts:
            info.size = len(data)
            info.pax_headers = {}
            tf.addfile(info, io.BytesIO(data))
    ustar = buf.getvalue()
    assert census(ustar).messages > 0
    for field in (b"77777777777\0", bytes([0x80]) + (1 << 80).to_bytes(11, "big")):
        # Either the tar ends inside the member or the walk runs into the next header: the block is named.
        with pytest.raises(IntegrityError, match=block):
            census(_with_size_field(ustar, block, field))
    with pytest.raises(IntegrityError, match="negative"):
        census(_with_size_field(ustar, block, b"\xff" * 12))
    with pytest.raises(IntegrityError, match="member size"):
        census(_with_size_field(ustar, block, b"12x45678901\0"))
    # A PAX size that is no number, or absurdly long.
    for bad in (b"banana", b"9" * 5000):
        with pytest.raises(IntegrityError, match="PAX"):
            census(_pax_member(_pax_record(b"size", bad), block))
    with pytest.raises(IntegrityError, match="PAX"):
        census(_pax_member(b"99 size=1\n", block))


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    digits = len(str(len(body)))
    while len(str(len(body) + digits)) != digits:
        digits += 1
    return b"%d" % (len(body) + digits) + body


def _pax_member(pax: bytes, name: str) -> bytes:
    """A tar whose one member is preceded by the given raw PAX header data."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        x = tarfile.TarInfo("PaxHeaders/x")
        x.type = tarfile.XHDTYPE
        x.size = len(pax)
        tf.addfile(x, io.BytesIO(pax))
        info = tarfile.TarInfo(name)
        info.size = 0
        tf.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def test_garbage_in_a_block(snapshots: dict) -> None:
    tar, _ = snapshots[("2.14.6", "ORDERS")]
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        m = next(m for m in tf.getmembers() if m.name.endswith(".blk"))
    start = m.offset_data
    for garbage in (b"\xff" * 64, b"\x00" * 64, b"\x10\x00\x00\x00" + b"\x00" * 60):
        bad = tar[:start] + garbage + tar[start + len(garbage) :]
        with pytest.raises(IntegrityError, match=m.name):
            census(bad)
    # A block whose last record is cut short (the member is shortened, the tar stays well-formed).
    parts = members(tar)
    i = next(i for i, (info, _) in enumerate(parts) if info.name == m.name)
    parts[i] = (parts[i][0], parts[i][1][:-5])
    with pytest.raises(IntegrityError, match="cut short"):
        census(rebuild(parts))


def test_random_input_and_mutations_raise_only_integrity_error(snapshots: dict) -> None:
    rng = random.Random(20261201)
    with pytest.raises(IntegrityError):
        census(rng.randbytes(10_000))
    tar, _ = snapshots[("2.12.8", "P")]
    outcomes = {"ok": 0, "integrity": 0}
    for _ in range(400):
        bad = bytearray(tar)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(bad)) if rng.random() < 0.5 else rng.randrange(min(len(bad), 4096))
            bad[pos] = rng.randrange(256)
        if rng.random() < 0.2:
            bad = bad[: rng.randrange(len(bad))]
        try:
            census(bytes(bad), piece=rng.choice([None, 1, 97, 4096]))
            outcomes["ok"] += 1
        except IntegrityError:
            outcomes["integrity"] += 1
    assert outcomes["integrity"] > 0


def test_feed_after_finish_is_refused() -> None:
    c = V1Census()
    c.feed(b"\0" * 1024)
    assert c.finish().messages == 0
    with pytest.raises(IntegrityError):
        c.feed(b"x")


# -- throughput ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_throughput_on_a_100mb_snapshot(tmp_path: Path) -> None:
    """Reported, not asserted: MB/s of tar bytes through the census."""
    with make_server("2.14.6", tmp_path / "big") as srv:
        asyncio.run(fill_stream(srv.url, messages=100_000, consumers=False, deletes=(5, 50_000), payload_size=1000))
        tar, state = asyncio.run(snapshot(srv.url, "ORDERS"))
    best = 0.0
    for _ in range(3):
        c = V1Census()
        t0 = time.perf_counter()
        view = memoryview(tar)
        for i in range(0, len(tar), 1 << 20):
            c.feed(view[i : i + (1 << 20)])
        counts = c.finish()
        best = max(best, len(tar) / (time.perf_counter() - t0) / 1e6)
    assert counts.messages == state["messages"] and counts.shortfall() is None
    print(
        f"\nV1 census: {len(tar) / 1e6:.1f} MB tar, {counts.blocks} blocks, {counts.messages} messages, {best:.0f} MB/s"
    )


def test_snapshots_under_publish_load(tmp_path: Path) -> None:
    """The measured failure: blocks copied while publishing goes on, index.db written after. Every snapshot must
    hold at least what the stream had when it started, and a snapshot is either consistent or says why not."""

    async def run(url: str) -> list[tuple[V1Counts, dict]]:
        await fill_stream(url, messages=30_000, consumers=False, deletes=(), payload_size=1000)
        stop = asyncio.Event()

        async def publish() -> None:
            nc = await nats.connect(url)
            js = nc.jetstream(timeout=30)
            while not stop.is_set():
                await asyncio.gather(*[await js.publish_async("orders.eu.new", b"x" * 500) for _ in range(200)])
            await nc.close()

        task = asyncio.create_task(publish())
        out = []
        try:
            await asyncio.sleep(0.3)
            for _ in range(4):
                dec, c = FramedDecoder(), V1Census()

                async def on_chunk(chunk: bytes, dec: FramedDecoder = dec, c: V1Census = c) -> None:
                    for block in dec.feed(chunk):
                        c.feed(block)

                async with await connect(ConnectOptions(servers=url)) as js:
                    res = await js.snapshot("ORDERS", on_chunk)
                dec.finish()
                out.append((c.finish(), res.state))
        finally:
            stop.set()
            await task
        return out

    with make_server("2.14.6", tmp_path / "load") as srv:
        results = asyncio.run(run(srv.url))
    for counts, start in results:
        assert counts.messages >= start["messages"] and counts.claimed_messages >= start["messages"]
        why = counts.shortfall()
        if why is None:
            assert counts.messages == counts.claimed_messages and counts.last_seq == counts.claimed_last_seq
        else:
            assert counts.messages < counts.claimed_messages and "missing" in why
