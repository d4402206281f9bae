"""Restore-point chains (pipeline/format/chain.py): planning a target over a base and its deltas, finding holes,
and merging the chain into one NATSARC1 archive that a real nats-server 2.15 restores exactly.

The merge test builds its deltas the way an incremental backup will: the messages after the previous point read
with STREAM.MSG.GET (pipeline/jetstream/livetail.py ``read_tail``), the head from stream and consumer info.
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.archive.repository import Repository
from pipeline.base.errors import IntegrityError, NotFoundError, UsageError
from pipeline.flows.delta import after, chain_start
from pipeline.format import s2
from pipeline.format.chain import (
    ChainHole,
    ChainInconsistent,
    MergeStats,
    NoRestorePoint,
    RestorePoint,
    chain_breaks,
    merge_archives,
    plan_chain,
    required_points,
    why_full,
)
from pipeline.format.natsarc import END_MARKER, STATE_ENTRY, ArchiveReader, Consumer, encode_entry, encode_head
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.jetstream.livetail import parse_time_ns, read_tail
from tests.streams import fill_stream

S = 1_000_000_000


def pt(
    pid: str, parent: str | None, first: int, last: int, t: int, *, created: str = "c1", chain: str | None = None
) -> RestorePoint:
    return RestorePoint(
        id=pid,
        parent=parent,
        chain=chain or (pid if parent is None else "b"),
        stream="ORDERS",
        stream_created=created,
        first_seq=first,
        last_seq=last,
        captured_ns=t * S,
    )


BASE = pt("b", None, 1, 100, 10)
D1 = pt("d1", "b", 101, 150, 20)
D2 = pt("d2", "d1", 151, 200, 30)
D3 = pt("d3", "d2", 201, 260, 40)
CHAIN = [BASE, D1, D2, D3]


def ids(points) -> list[str]:
    return [p.id for p in points]


# -- plan_chain: targets ------------------------------------------------------------------------------------------


def test_newest_takes_the_whole_chain():
    plan = plan_chain(reversed(CHAIN))  # order of the listing does not matter
    assert ids(plan.path) == ["b", "d1", "d2", "d3"]
    assert plan.state_from == D3 and plan.last_seq == plan.until_seq == 260 and plan.at_ns is None


def test_until_seq_inside_a_delta_takes_consumers_from_the_capture_before_it():
    plan = plan_chain(CHAIN, until_seq=170)
    assert ids(plan.path) == ["b", "d1", "d2"]
    assert plan.state_from == D1  # the newest capture not after sequence 170
    assert plan.last_seq == plan.until_seq == 170
    exact = plan_chain(CHAIN, until_seq=150)
    assert ids(exact.path) == ["b", "d1"] and exact.state_from == D1 and exact.until_seq == 150
    inside_base = plan_chain(CHAIN, until_seq=40)
    assert ids(inside_base.path) == ["b"] and inside_base.state_from == BASE and inside_base.last_seq == 40


def test_until_seq_past_the_newest_point_restores_the_newest_and_says_so():
    plan = plan_chain(CHAIN, until_seq=10_000)
    assert plan.point == D3 and plan.until_seq == 260
    assert any("before 10000" in n for n in plan.notes)


def test_at_a_time_between_captures_reads_the_next_delta_up_to_that_time():
    plan = plan_chain(CHAIN, at_ns=25 * S)
    assert ids(plan.path) == ["b", "d1", "d2"]
    assert plan.state_from == D1 and plan.last_seq == 150 and plan.until_seq == 200 and plan.at_ns == 25 * S
    on_capture = plan_chain(CHAIN, at_ns=20 * S)
    assert on_capture.state_from == D1 and on_capture.point == D2  # messages stored at 20 s exactly may follow D1
    after = plan_chain(CHAIN, at_ns=99 * S)
    assert after.point == D3 and after.at_ns is None and any("before" in n for n in after.notes)


def test_at_a_time_before_the_oldest_point_is_not_found():
    with pytest.raises(NoRestorePoint) as e:
        plan_chain(CHAIN, at_ns=5 * S)
    assert isinstance(e.value, NotFoundError) and "the oldest is full backup b" in str(e.value)


def test_bad_targets_are_usage_errors():
    with pytest.raises(UsageError, match="not both"):
        plan_chain(CHAIN, until_seq=5, at_ns=5)
    with pytest.raises(UsageError, match="at least 1"):
        plan_chain(CHAIN, until_seq=0)
    other = RestorePoint("x", None, "x", "OTHER", "c1", 1, 5, S)
    with pytest.raises(UsageError, match="several streams"):
        plan_chain([*CHAIN, other])
    with pytest.raises(NoRestorePoint):
        plan_chain([])


def test_inconsistent_points_are_refused():
    with pytest.raises(ChainInconsistent, match="listed twice"):
        plan_chain([BASE, BASE])
    with pytest.raises(ChainInconsistent, match="names no chain"):
        plan_chain([RestorePoint("b", None, "", "ORDERS", "c1", 1, 5, S)])
    with pytest.raises(ChainHole) as e:  # a delta must carry its parent's chain id
        plan_chain([BASE, pt("d1", "b", 101, 150, 20, chain="other")])
    assert e.value.brk.reason == "chain"
    with pytest.raises(ChainInconsistent, match="not a range"):
        plan_chain([BASE, pt("d1", "b", 101, 50, 20)])
    # only empty captures at one time can link in a circle (ranges rise along every other link)
    loop = [pt("d1", "d2", 1, 0, 20, chain="x"), pt("d2", "d1", 1, 0, 20, chain="x")]
    with pytest.raises(ChainInconsistent, match="its own ancestor"):
        plan_chain(loop)


# -- plan_chain: holes --------------------------------------------------------------------------------------------


def test_a_missing_delta_restores_points_before_it_and_refuses_points_after_it():
    holed = [BASE, D1, D3]  # d2 (151-200) is gone
    for target in ({}, {"until_seq": 170}, {"until_seq": 201}, {"at_ns": 35 * S}, {"at_ns": 45 * S}):
        with pytest.raises(ChainHole) as e:
            plan_chain(holed, **target)
        err = e.value
        assert isinstance(err, IntegrityError) and err.exit_code == 4
        assert (err.brk.reason, err.brk.first, err.brk.last) == ("missing", 151, 200), target
        assert "sequences 151-200 are not in the archive" in str(err)
        assert err.restorable == D1 and "--until-seq 150" in str(err)
    # before the hole: restores, with nothing of d3
    assert ids(plan_chain(holed, until_seq=150).path) == ["b", "d1"]
    assert ids(plan_chain(holed, until_seq=120).path) == ["b", "d1"]
    assert ids(plan_chain(holed, at_ns=15 * S).path) == ["b", "d1"]
    # at a time after d1's capture: the messages between it and then are in the missing delta
    with pytest.raises(ChainHole):
        plan_chain(holed, at_ns=21 * S)
    assert plan_chain(holed, at_ns=20 * S).state_from == D1


def test_a_gap_between_ranges_names_the_never_captured_sequences():
    gapped = [BASE, D1, pt("d2", "d1", 156, 200, 30)]
    with pytest.raises(ChainHole) as e:
        plan_chain(gapped)
    assert (e.value.brk.reason, e.value.brk.first, e.value.brk.last) == ("gap", 151, 155)
    assert "sequences 151-155 between d1 and d2 were never captured" in str(e.value)
    assert plan_chain(gapped, until_seq=150).point == D1
    [brk] = chain_breaks(gapped)
    assert brk.point == "d2" and brk.missing_range == "sequences 151-155"


def test_deleted_messages_are_not_holes():
    """Continuity is on captured ranges: a delta during which every new message was deleted again captures
    151-200 with no message, and a delta that found nothing new captures an empty range."""
    empty = pt("e", "d2", 201, 200, 35)
    after = pt("d3", "e", 201, 260, 40)
    plan = plan_chain([BASE, D1, D2, empty, after])
    assert ids(plan.path) == ["b", "d1", "d2", "e", "d3"]
    assert chain_breaks([BASE, D1, D2, empty, after]) == []
    assert plan_chain([BASE, D1, D2, empty, after], at_ns=36 * S).state_from == empty


def test_overlap_and_time_reversal_are_broken_links():
    with pytest.raises(ChainHole) as e:
        plan_chain([BASE, D1, pt("d2", "d1", 140, 200, 30)])
    assert e.value.brk.reason == "overlap" and "inside the range of d1" in str(e.value)
    with pytest.raises(ChainHole) as e:
        plan_chain([BASE, D1, pt("d2", "d1", 151, 200, 15)], until_seq=200)
    assert e.value.brk.reason == "time"


def test_a_missing_base_names_what_is_unknown():
    with pytest.raises(ChainHole) as e:
        plan_chain([D1, D2])
    assert e.value.brk.reason == "missing" and e.value.brk.first == 0
    assert "sequences up to 100" in str(e.value) and e.value.restorable is None


def test_a_re_created_stream_breaks_the_chain():
    # the stream was deleted and created again: a delta that claims the old chain as parent is refused ...
    new_delta = pt("d2", "d1", 151, 200, 30, created="c2")
    with pytest.raises(ChainHole) as e:
        plan_chain([BASE, D1, new_delta])
    assert e.value.brk.reason == "recreated" and e.value.restorable == D1
    # ... and the new incarnation's own chain (a new full backup) is what sequence targets and newest use
    base2 = pt("b2", None, 1, 40, 50, created="c2")
    d = pt("x1", "b2", 41, 80, 60, created="c2", chain="b2")
    pts = [BASE, D1, D2, base2, d]
    assert ids(plan_chain(pts).path) == ["b2", "x1"]
    plan = plan_chain(pts, until_seq=120)  # beyond the new incarnation's last: never the old stream's 120
    assert plan.point == d and any("incarnations" in n for n in plan.notes)
    assert ids(plan_chain(pts, at_ns=25 * S).path) == ["b", "d1", "d2"]  # a time reaches the old one


def test_a_new_full_backup_starts_a_new_chain():
    base2 = pt("b2", None, 1, 200, 35)
    d = pt("x1", "b2", 201, 300, 45, chain="b2")
    pts = [*CHAIN, base2, d]
    assert ids(plan_chain(pts).path) == ["b2", "x1"]
    assert ids(plan_chain(pts, at_ns=32 * S).path) == ["b", "d1", "d2", "d3"]
    # a sequence target takes the first capture that reached it
    assert ids(plan_chain(pts, until_seq=230).path) == ["b", "d1", "d2", "d3"]
    assert ids(plan_chain(pts, until_seq=280).path) == ["b2", "x1"]


def test_required_points_and_why_full():
    assert required_points(CHAIN, ["d2"]) == {"b", "d1", "d2"}
    assert required_points(CHAIN, ["b", "gone"]) == {"b"}
    assert required_points([BASE, D1, D3], ["d3"]) == {"d3"}  # already broken: what remains of its path
    assert why_full(D3, stream_created="c1", first_seq=1, last_seq=300) is None
    assert "re-created" in why_full(D3, stream_created="c2", first_seq=1, last_seq=300)
    assert "before the previous backup's 260" in why_full(D3, stream_created="c1", first_seq=1, last_seq=10)
    assert "purged or compacted" in why_full(D3, stream_created="c1", first_seq=262, last_seq=300)
    assert why_full(D3, stream_created="c1", first_seq=261, last_seq=300) is None  # limits at the edge: a delta


# -- plan_chain: properties ---------------------------------------------------------------------------------------

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chains(draw):
    """A base and deltas (some empty) with captures 1 s apart, and a set of deltas removed from the listing."""
    base_last = draw(st.integers(0, 50))
    points = [pt("p0", None, 1, base_last, 1, chain="p0")]
    for i in range(1, draw(st.integers(0, 8)) + 1):
        prev = points[-1]
        size = draw(st.integers(0, 20))
        points.append(pt(f"p{i}", prev.id, prev.last_seq + 1, prev.last_seq + size, i + 1, chain="p0"))
    removed = draw(st.sets(st.integers(1, len(points) - 1))) if len(points) > 1 else set()
    return points, removed


@PROPERTY
@given(chains(), st.integers(1, 250))
def test_until_seq_restores_exactly_before_the_first_missing_range(case, n):
    points, removed = case
    present = [p for i, p in enumerate(points) if i not in removed]
    hole = min((points[i].first_seq for i in removed), default=None)
    newest = max(i for i in range(len(points)) if i not in removed)
    # only the newest captures are gone: nothing after them was ever in the archive, so the newest present restores
    tail_only = all(i > newest for i in removed)
    expect_ok = hole is None or n < hole or tail_only
    try:
        plan = plan_chain(present, until_seq=n)
    except ChainHole as e:
        assert not expect_ok, (n, hole)
        assert e.brk.first >= hole  # the break nearest the wanted point: at or after the first missing range
        return
    assert expect_ok, (n, hole, ids(present))
    path = plan.path
    assert path[0].is_base and all(b.first_seq == a.last_seq + 1 for a, b in zip(path, path[1:], strict=False))
    assert plan.until_seq == min(n, plan.point.last_seq)
    assert plan.state_from in path and plan.state_from.last_seq <= max(plan.until_seq, path[0].last_seq)
    assert not any(p.id == points[i].id for i in removed for p in path)


@PROPERTY
@given(chains(), st.integers(0, 12))
def test_at_time_never_uses_a_capture_after_the_target_for_state(case, t):
    points, removed = case
    present = [p for i, p in enumerate(points) if i not in removed]
    try:
        plan = plan_chain(present, at_ns=t * S)
    except (ChainHole, NoRestorePoint):
        return
    assert plan.state_from.captured_ns <= t * S
    assert all(b.first_seq == a.last_seq + 1 for a, b in zip(plan.path, plan.path[1:], strict=False))
    assert plan.point in (plan.state_from, *[p for p in present if p.parent == plan.state_from.id])


# -- merge_archives on synthetic archives ---------------------------------------------------------------------------


def _archive(state: dict, msgs: list[tuple[int, str, int]], consumers=()) -> list[bytes]:
    body = b"".join(encode_entry(s, ts, seq, b"", f"m{seq}".encode()) for seq, s, ts in msgs)
    raw = encode_head(state, consumers) + body + END_MARKER
    return [raw[i : i + 37] for i in range(0, len(raw), 37)]  # entries cut across blocks


def _merged(plan, archives, stats=None) -> ArchiveReader:
    return ArchiveReader([b"".join(merge_archives(plan, archives, stats=stats, batch=64))])


def test_merge_keeps_sequences_and_gaps_and_takes_the_head_of_the_capture_before_the_target():
    base = _archive({"first_seq": 1, "last_seq": 100}, [(s, "a", s) for s in range(1, 101) if s % 10])
    cons = Consumer("c", {"durable_name": "c"}, {"delivered": {"stream_seq": 150, "consumer_seq": 140}})
    d1 = _archive({"first_seq": 5, "last_seq": 150, "bytes": 9}, [(s, "b", s) for s in range(101, 149)], [cons])
    d2 = _archive({"first_seq": 5, "last_seq": 200}, [(s, "c", s) for s in range(151, 201)])
    stats = MergeStats()
    r = _merged(plan_chain(CHAIN[:3], at_ns=D1.captured_ns), [base, d1, d2], stats)
    assert r.state["first_seq"] == 5 and r.state["last_seq"] == 150 and r.state["consumer_count"] == 1
    assert [c.name for c in r.consumers] == ["c"] and r.consumers[0].state["delivered"]["stream_seq"] == 150
    seqs = [m.sequence for m in r.messages()]
    # 1-4 were gone by d1's capture (its first_seq); 10, 20, ... and 149-150 were deleted; d2's messages were all
    # stored before the target time (their timestamps are tiny), so they follow
    assert seqs[:3] == [5, 6, 7] and 10 not in seqs and 149 not in seqs and seqs[-1] == 200 and r.complete
    assert stats.below_floor == 4 and stats.per_point == {"b": 86, "d1": 48, "d2": 50}
    # a sequence cut bounds consumers as the server does (stream sequences; consumer sequences left)
    r = _merged(plan_chain(CHAIN[:3], until_seq=120), [base, d1])
    assert r.state["last_seq"] == 120 and max(m.sequence for m in r.messages()) == 120


def test_merge_with_a_time_cut_stops_at_the_first_message_after_it():
    base = _archive({"first_seq": 1, "last_seq": 100}, [(s, "a", s) for s in range(1, 101)])
    d1 = _archive({"first_seq": 1, "last_seq": 150}, [(s, "b", s) for s in range(101, 151)])
    d2 = _archive({"first_seq": 1, "last_seq": 200}, [(s, "c", 25 * S + s) for s in range(151, 201)])
    stats = MergeStats()
    r = _merged(plan_chain(CHAIN[:3], at_ns=25 * S + 170), [base, d1, d2], stats)
    assert r.state["last_seq"] == 150  # the lower bound: stored messages up to the cut extend it
    assert [m.sequence for m in r.messages()][-1] == 170 and stats.last_seq == 170 and stats.after_cut == 30


def test_merge_refuses_an_archive_that_holds_sequences_outside_its_range():
    base = _archive({"first_seq": 1, "last_seq": 100}, [(1, "a", 1)])
    d1 = _archive({"first_seq": 1, "last_seq": 150}, [(99, "b", 1)])
    with pytest.raises(ChainInconsistent, match="holds sequence 99, outside the range it captured"):
        list(merge_archives(plan_chain(CHAIN[:2]), [base, d1]))
    with pytest.raises(ValueError):
        list(merge_archives(plan_chain(CHAIN[:2]), [base]))


def test_merge_of_a_truncated_delta_fails():
    base = _archive({"first_seq": 1, "last_seq": 100}, [(1, "a", 1)])
    d1 = b"".join(_archive({"first_seq": 1, "last_seq": 150}, [(101, "b", 1), (102, "b", 2)]))
    with pytest.raises(IntegrityError, match="truncated"):
        list(merge_archives(plan_chain(CHAIN[:2], until_seq=101), [base, [d1[:-3]]]))


# -- a real nats-server 2.15 -------------------------------------------------------------------------------------


async def _snapshot(js, stream: str) -> tuple[list[bytes], dict]:
    chunks: list[bytes] = []

    async def on_chunk(c: bytes) -> None:
        chunks.append(bytes(c))

    snap = await js.snapshot(stream, on_chunk, chunk_size=64 * 1024)
    return list(s2.iter_decode(chunks)), snap.state


async def _entries(js, stream: str) -> list[bytes]:
    """Every stored message as its NATSARC1 entry (subject, raw headers, payload, sequence, timestamp)."""
    out: list[bytes] = []

    async def emit(b: bytes) -> None:
        out.append(b)

    await read_tail(js, stream, 0, emit)
    return [m for m in _split(b"".join(out))]


def _split(raw: bytes) -> list[bytes]:
    r = ArchiveReader([b"NATSARC1", encode_entry(STATE_ENTRY, 0, 0, b"", b"{}"), raw, END_MARKER])
    return [encode_entry(m.subject, m.timestamp, m.sequence, m.header, m.data) for m in r.messages()]


async def _capture(js, stream: str, parent: RestorePoint, pid: str) -> tuple[RestorePoint, list[bytes], list]:
    """A delta after ``parent``: its messages read after the parent's point, its head from stream and consumer
    info (as an incremental backup will take it). Returns the point, the archive and the live state then."""
    entries: list[bytes] = []

    async def emit(b: bytes) -> None:
        entries.append(b)

    tail = await read_tail(js, stream, parent.last_seq, emit)
    info = await js.stream_info(stream)
    consumers = []
    for c in await js.consumers(stream):
        delivered, floor = dict(c["delivered"]), dict(c["ack_floor"])
        if c.get("num_ack_pending"):
            delivered = dict(floor)  # no pending details in consumer info: redeliver what is unacked
        state = {"delivered": delivered, "ack_floor": floor}
        consumers.append(Consumer(c["name"], c["config"], state))
    captured = parse_time_ns(info["ts"]) if info.get("ts") else time.time_ns()
    point = RestorePoint(
        pid, parent.id, parent.chain, stream, info["created"], parent.last_seq + 1, tail.point, captured
    )
    archive = encode_head(info["state"], consumers, captured) + b"".join(entries) + END_MARKER
    return point, [archive], await _entries(js, stream)


async def _restore(url: str, config: dict, merged: bytes) -> None:
    framed = b"".join(bytes(x) for x in s2.snappy_framed([merged]))
    state = ArchiveReader([merged]).state

    async def chunks():
        for i in range(0, len(framed), 64 * 1024):
            yield framed[i : i + 64 * 1024]

    async with await connect(ConnectOptions(servers=url)) as js:
        await js.delete_stream(config["name"])
        await js.restore(config["name"], {"config": config, "state": state}, chunks(), in_flight=2)


async def _positions(js, stream: str) -> dict:
    return {
        c["name"]: (c["delivered"]["stream_seq"], c["ack_floor"]["stream_seq"], c["num_pending"])
        for c in await js.consumers(stream)
    }


async def _publish(url: str, first: int, n: int) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        for i in range(first, first + n):
            subj = ("orders.eu.new", "orders.us.paid", "audit.log")[i % 3]
            await js.publish(subj, f"late {i}".encode() * (i % 7 + 1), headers={"X-Late": str(i)})
            if i % 50 == 0:
                await asyncio.sleep(0.002)  # spread timestamps: the time target falls between messages
    finally:
        await nc.close()


async def _ack(url: str, durable: str, n: int) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        sub = await js.pull_subscribe_bind(durable, stream="ORDERS")
        left = n
        while left > 0:
            for m in await sub.fetch(min(left, 200), timeout=10):
                await m.ack_sync()
                left -= 1
    finally:
        await nc.close()


@pytest.mark.timeout(300)
def test_a_base_and_two_deltas_restore_at_each_point_as_the_stream_was(nats_server, second_server):
    """Base snapshot, then messages, deletes inside the delta windows and acks, captured as two deltas; the merged
    archive restores on 2.15 with every message (sequence, subject, raw headers, payload, timestamp), every gap and
    the consumers of the capture at the target — for the newest point, a sequence and a time between captures."""
    url = nats_server.url

    async def scenario():
        await fill_stream(url, messages=2000, deletes=(7, 8, 1000))
        async with await connect(ConnectOptions(servers=url)) as js:
            info = await js.stream_info("ORDERS")
            config, created = info["config"], info["created"]
            base_archive, snap_state = await _snapshot(js, "ORDERS")
            state_ts = _state_ts(base_archive)
            base = RestorePoint(
                "base", None, "base", "ORDERS", created, snap_state["first_seq"], snap_state["last_seq"], state_ts
            )
            live0 = await _entries(js, "ORDERS")

            await _publish(url, 1, 300)
            for seq in (2010, 2011, 2150):
                await js.api("STREAM.MSG.DELETE.ORDERS", {"seq": seq}, stream="ORDERS")
            await _ack(url, "billing", 100)
            d1, a1, live1 = await _capture(js, "ORDERS", base, "d1")
            pos1 = await _positions(js, "ORDERS")

            await _publish(url, 301, 400)
            for seq in (2400, 2700):  # 2700: the stream's last sequence, a trailing delete
                await js.api("STREAM.MSG.DELETE.ORDERS", {"seq": seq}, stream="ORDERS")
            await _ack(url, "eu-audit", 50)
            d2, a2, live2 = await _capture(js, "ORDERS", d1, "d2")
            pos2 = await _positions(js, "ORDERS")
            state2 = (await js.stream_info("ORDERS"))["state"]
        return config, [base, d1, d2], [base_archive, a1, a2], (live0, live1, live2), (pos1, pos2), state2

    config, points, archives, lives, positions, state2 = asyncio.run(scenario())
    base, d1, d2 = points
    assert d1.last_seq == 2300 and d2.last_seq == 2700 and d1.first_seq == 2001

    async def restored() -> tuple[list[bytes], dict, dict]:
        async with await connect(ConnectOptions(servers=second_server.url)) as js:
            return (
                await _entries(js, "ORDERS"),
                (await js.stream_info("ORDERS"))["state"],
                await _positions(js, "ORDERS"),
            )

    def restore(plan) -> tuple[list[bytes], dict, dict]:
        merged = b"".join(merge_archives(plan, archives[: len(plan.path)]))
        asyncio.run(_restore(second_server.url, config, merged))
        return asyncio.run(restored())

    # newest: identical to the live stream at d2, trailing delete and consumers included
    got, st2, pos = restore(plan_chain(points))
    assert got == lives[2] and len(got) == 2000 - 3 + 700 - 5
    for key in ("messages", "bytes", "first_seq", "last_seq", "num_deleted", "num_subjects"):
        assert st2[key] == state2[key], key
    assert st2["last_seq"] == 2700 and pos == positions[1]

    # a sequence: the stream when its last sequence was d1's point, consumers as captured then
    got, st1, pos = restore(plan_chain(points, until_seq=d1.last_seq))
    assert got == lives[1] and st1["last_seq"] == 2300 and pos == positions[0]

    # a time between d1 and d2: d1's consumers, d2's messages stored up to that time
    later = [m for m in ArchiveReader(archives[2]).messages()]
    t = later[len(later) // 2].timestamp
    plan = plan_chain(points, at_ns=t)
    assert plan.state_from == d1 and plan.point == d2
    got, _, pos = restore(plan)
    want = [e for e in lives[2] if _seq_ts(e)[0] <= d1.last_seq or _seq_ts(e)[1] <= t]
    assert got == want and len(lives[1]) < len(want) < len(lives[2])
    assert {k: v[:2] for k, v in pos.items()} == {k: v[:2] for k, v in positions[0].items()}  # delivered, floor

    # the merged base alone (the full backup) equals the stream as it was then
    got, _, _ = restore(plan_chain(points, until_seq=base.last_seq))
    assert got == lives[0]


def _state_ts(archive: list[bytes]) -> int:
    from pipeline.format.natsarc import iter_entries

    return next(e.timestamp for e in iter_entries(archive) if e.name == STATE_ENTRY)


def _seq_ts(entry: bytes) -> tuple[int, int]:
    m = next(ArchiveReader([b"NATSARC1", encode_entry(STATE_ENTRY, 0, 0, b"", b"{}"), entry, END_MARKER]).messages())
    return m.sequence, m.timestamp


def test_chain_start_after_a_known_point_reads_no_archive() -> None:
    """``stream follow`` hands each segment the point it just committed: the next start comes from it, against an
    empty archive, and still falls back to a full backup when the stream was re-created or the chain is long."""
    created = "2026-12-01T10:00:00.000000001Z"
    envelope = {
        "id": "ab" * 16,
        "parent": None,
        "first_seq": 1,
        "last_seq": 50,
        "captured": "2026-12-01T11:00:00Z",
        "stream_created": created,
    }
    known = after("cd" * 32, "S", envelope, None)
    assert (known.parent.id, known.chain_id, known.points) == ("cd" * 32, "ab" * 16, 1)
    empty = Repository.open("mem://chain-start-hint")
    live = {"created": created, "state": {"first_seq": 1, "last_seq": 60}}
    nxt = chain_start(empty, "S", live, None, known)
    assert nxt.parent == known.parent and nxt.points == 1 and nxt.why_full is None
    # without the hand-over the same empty archive starts a new chain
    assert chain_start(empty, "S", live, None).parent is None
    recreated = chain_start(empty, "S", {**live, "created": "2026-12-01T12:00:00Z"}, None, known)
    assert recreated.parent is None and "re-created" in recreated.why_full
    longer = after("ef" * 32, "S", {**envelope, "parent": "cd" * 32, "first_seq": 51, "last_seq": 60}, nxt)
    assert longer.points == 2
    assert "full-every" in chain_start(empty, "S", live, 2, longer).why_full
