"""Every stream kind round-trips: backup on one real server, restore into another, and what the server promises holds.

The post-restore check (pipeline/flows/restore.py ``compare_state``) must accept what the server is documented to change
on a restore and still catch real loss. What the servers do, as seen here:

- 2.15 (V2) restores a stream that never held a message with first_seq 1 where the backup says 0; 2.14 (V1) keeps 0.
- Messages whose ``Nats-TTL`` expired are not restored but their sequences are kept (V1 and V2).
- ``max_age`` expires old messages right after the restore (V2) or before the restore answers (V1); with
  ``subject_delete_marker_ttl`` a marker per subject follows; a due schedule fires on the restored stream.
- A restored mirror resumes from its origin at its own last sequence; a durable source resumes where its consumer on
  the origin stands; a plain source on 2.15 takes a restored origin again from its first message (duplicates).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nats
import nats.js.errors
import pytest

from pipeline.base.errors import IntegrityError, ServerRefused
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.flows.restore import RestoreOptions, RestoreResult, _await_healthy, compare_state, restore_stream
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.keys.keyring import KeyRing
from tests.conftest import make_server
from tests.settle import eventually
from tests.streams import comparable, read_messages, stream_state

pytestmark = pytest.mark.timeout(120)  # every wait below has a deadline; a hang fails here with a traceback

# -- helpers ------------------------------------------------------------------------------------------------------


async def _request(url: str, op: str, body: dict | None = None) -> dict:
    nc = await nats.connect(url)
    try:
        msg = await nc.request(f"$JS.API.{op}", json.dumps(body).encode() if body is not None else b"", timeout=10)
    finally:
        await nc.close()
    return json.loads(msg.data)


async def _api(url: str, op: str, body: dict | None = None) -> dict:
    resp = await _request(url, op, body)
    assert "error" not in resp, f"{op}: {resp['error']}"
    return resp


async def _publish(url: str, subject: str, data: bytes = b"", headers: dict | None = None) -> dict:
    nc = await nats.connect(url)
    try:
        msg = await nc.request(subject, data, headers=headers, timeout=10)
    finally:
        await nc.close()
    ack = json.loads(msg.data)
    assert "error" not in ack, f"publish {subject}: {ack['error']}"
    return ack


def _create(url: str, config: dict) -> None:
    asyncio.run(_api(url, f"STREAM.CREATE.{config['name']}", config))


def _pub(url: str, subject: str, data: bytes = b"", headers: dict | None = None) -> dict:
    return asyncio.run(_publish(url, subject, data, headers))


def _state(url: str, name: str) -> dict:
    return comparable(asyncio.run(stream_state(url, name)))


def _messages(url: str, name: str) -> list[tuple[int, str, dict | None, bytes]]:
    return asyncio.run(read_messages(url, name))


def _stored(url: str, name: str) -> list[tuple[int, str, str | None, bytes]]:
    """Every message by sequence through the stream API, for the streams a reading consumer may not be put on (a
    work queue takes no second unfiltered consumer)."""
    st = _state(url, name)
    out = []
    for seq in range(st["first_seq"], st["last_seq"] + 1):
        resp = asyncio.run(_request(url, f"STREAM.MSG.GET.{name}", {"seq": seq}))
        if (resp.get("error") or {}).get("err_code") == 10037:  # no message: a deleted sequence
            continue
        m = resp["message"]
        hdrs = base64.b64decode(m["hdrs"]).decode() if m.get("hdrs") else None
        out.append((m["seq"], m["subject"], hdrs, base64.b64decode(m.get("data") or "")))
    return out


def _backup(url: str, archive: Path, stream: str, keyring: KeyRing) -> None:
    backup_stream(BackupOptions(stream=stream, url=str(archive), connect=ConnectOptions(servers=url), keys=keyring))


def _restore(url: str, archive: Path, stream: str, keyring: KeyRing) -> RestoreResult:
    return restore_stream(
        RestoreOptions(url=str(archive), stream=stream, connect=ConnectOptions(servers=url), keys=keyring, wait=15)
    )


_eventually = eventually


def _wait_messages(url: str, name: str, n: int) -> None:
    _eventually(lambda: _state(url, name)["messages"], lambda m: m >= n)


def _payloads(url: str, name: str) -> list[bytes]:
    return [data for _, _, _, data in _messages(url, name)]


def _has(warnings: list[str], *needles: str) -> bool:
    return any(all(n in w for n in needles) for w in warnings)


# -- kinds that come back exactly as they were -------------------------------------------------------------------


def _plain_with_deletes(url: str) -> str:
    _create(url, {"name": "PLAIN", "subjects": ["plain.>"]})
    for i in range(1, 21):
        _pub(url, f"plain.{i % 3}", f"m{i}".encode(), {"X-Index": str(i)})
    for seq in (1, 2, 7, 8, 13, 20):  # at the front, inside and at the end: the last one keeps last_seq at 20
        asyncio.run(_api(url, "STREAM.MSG.DELETE.PLAIN", {"seq": seq}))
    return "PLAIN"


def _after_plain(url: str) -> None:
    assert _pub(url, "plain.0", b"next")["seq"] == 21  # the trailing deleted sequence is not reused


def _counter(url: str) -> str:
    _create(url, {"name": "COUNT", "subjects": ["count.>"], "allow_msg_counter": True, "allow_direct": True})
    for incr in ("+5", "+5", "+5"):
        _pub(url, "count.a", headers={"Nats-Incr": incr})
    _pub(url, "count.b", headers={"Nats-Incr": "-2"})
    return "COUNT"


def _after_counter(url: str) -> None:
    assert _pub(url, "count.a", headers={"Nats-Incr": "+1"})["val"] == "16"  # the count carries on from 15


def _atomic(url: str) -> str:
    _create(url, {"name": "BATCH", "subjects": ["batch.>"], "allow_atomic": True})
    _commit_batch(url, "b1", 3)
    return "BATCH"


def _commit_batch(url: str, batch: str, n: int) -> dict:
    async def run() -> dict:
        nc = await nats.connect(url)
        try:
            for i in range(1, n):
                await nc.publish("batch.x", f"{batch}-{i}".encode(), headers=_batch_headers(batch, i))
            msg = await nc.request(
                "batch.x", f"{batch}-{n}".encode(), headers=_batch_headers(batch, n, commit=True), timeout=10
            )
        finally:
            await nc.close()
        return json.loads(msg.data)

    return asyncio.run(run())


def _batch_headers(batch: str, i: int, commit: bool = False) -> dict:
    h = {"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(i)}
    if commit:
        h["Nats-Batch-Commit"] = "1"
    return h


def _after_atomic(url: str) -> None:
    ack = _commit_batch(url, "b2", 2)
    assert ack.get("batch") == "b2" and ack.get("count") == 2 and ack.get("seq") == 5, ack


def _kv(url: str) -> str:
    async def run() -> None:
        nc = await nats.connect(url)
        try:
            kv = await nc.jetstream().create_key_value(bucket="cfg", history=5)
            for v in (b"1", b"2", b"3"):
                await kv.put("a", v)
            await kv.put("b", b"gone")
            await kv.delete("b")
            await kv.put("c", b"purged")
            await kv.purge("c")
            await kv.put("d.e", b"nested")
        finally:
            await nc.close()

    asyncio.run(run())
    return "KV_cfg"


def _after_kv(url: str) -> None:
    async def run() -> None:
        nc = await nats.connect(url)
        try:
            kv = await nc.jetstream().key_value("cfg")
            assert (await kv.get("a")).value == b"3"
            assert [e.value for e in await kv.history("a")] == [b"1", b"2", b"3"]
            assert (await kv.get("d.e")).value == b"nested"
            for key in ("b", "c"):
                with pytest.raises(nats.js.errors.NotFoundError):
                    await kv.get(key)
            assert (await kv.put("a", b"4")) == 9  # revisions continue after the backup's last (8)
        finally:
            await nc.close()

    asyncio.run(run())


BIG = bytes(range(256)) * 1200  # 300 KiB: several chunks of the object store's default 128 KiB


def _objects(url: str) -> str:
    async def run() -> None:
        nc = await nats.connect(url)
        try:
            obs = await nc.jetstream().create_object_store(bucket="files")
            await obs.put("big.bin", BIG)
            await obs.put("small.txt", b"small")
            await obs.put("old.txt", b"old")
            await obs.delete("old.txt")
        finally:
            await nc.close()

    asyncio.run(run())
    return "OBJ_files"


def _after_objects(url: str) -> None:
    async def run() -> None:
        nc = await nats.connect(url)
        try:
            obs = await nc.jetstream().object_store("files")
            assert (await obs.get("big.bin")).data == BIG
            assert (await obs.get("small.txt")).data == b"small"
            with pytest.raises(nats.js.errors.NotFoundError):
                await obs.get("old.txt")
        finally:
            await nc.close()

    asyncio.run(run())


def _work_queue(url: str) -> str:
    _create(url, {"name": "JOBS", "subjects": ["jobs.>"], "retention": "workqueue"})
    for i in range(5):
        _pub(url, "jobs.a", f"j{i}".encode())
    consumer = {"durable_name": "worker", "ack_policy": "explicit"}
    asyncio.run(_api(url, "CONSUMER.CREATE.JOBS.worker", {"stream_name": "JOBS", "config": consumer}))

    async def take_two() -> None:
        nc = await nats.connect(url)
        try:
            sub = await nc.jetstream().pull_subscribe_bind("worker", stream="JOBS")
            for m in await sub.fetch(2, timeout=10):
                await m.ack_sync()
        finally:
            await nc.close()

    asyncio.run(take_two())
    _eventually(lambda: _state(url, "JOBS")["messages"], lambda m: m == 3)
    return "JOBS"


def _after_work_queue(url: str) -> None:
    async def take() -> list[bytes]:
        nc = await nats.connect(url)
        try:
            sub = await nc.jetstream().pull_subscribe_bind("worker", stream="JOBS")
            return [m.data for m in await sub.fetch(3, timeout=10)]
        finally:
            await nc.close()

    assert asyncio.run(take()) == [b"j2", b"j3", b"j4"]  # the worker carries on with what was left to do


def _origin(url: str, name: str = "ORIG", n: int = 3) -> None:
    _create(url, {"name": name, "subjects": [f"{name.lower()}.>"]})
    for i in range(n):
        _pub(url, f"{name.lower()}.a", f"o{i}".encode())


def _mirror(url: str) -> str:
    _origin(url)
    _create(url, {"name": "MIR", "mirror": {"name": "ORIG"}})
    _wait_messages(url, "MIR", 3)
    return "MIR"


def _sourced(url: str) -> str:
    _origin(url)
    _create(url, {"name": "AGG", "subjects": ["agg.>"], "sources": [{"name": "ORIG"}]})
    _pub(url, "agg.own", b"own")
    _wait_messages(url, "AGG", 4)
    return "AGG"


def _nothing(url: str) -> None:
    return None


SOURCING_NOTE = ("sources 'ORIG' without a durable consumer", "duplicates")

# (builder, what the server promises afterwards on the target, warnings the restore must give)
EXACT: dict[str, tuple[Callable[[str], str], Callable[[str], None], tuple[str, ...]]] = {
    "interior-deletes": (_plain_with_deletes, _after_plain, ()),
    "counter": (_counter, _after_counter, ()),
    "atomic-batch": (_atomic, _after_atomic, ()),
    "kv": (_kv, _after_kv, ()),
    "object-store": (_objects, _after_objects, ()),
    "work-queue": (_work_queue, _after_work_queue, ()),
    "mirror-origin-absent": (_mirror, _nothing, ()),
    "sourced-origin-absent": (_sourced, _nothing, SOURCING_NOTE),
}


@pytest.mark.parametrize("kind", list(EXACT))
def test_kind_round_trips_exactly(kind, nats_server, second_server, tmp_path, keyring):
    build, after, note = EXACT[kind]
    name = build(nats_server.url)
    read = _stored if kind == "work-queue" else _messages
    before, msgs = _state(nats_server.url, name), read(nats_server.url, name)
    assert before["messages"] > 0
    _backup(nats_server.url, tmp_path / "archive", name, keyring)

    r = _restore(second_server.url, tmp_path / "archive", name, keyring)

    assert _state(second_server.url, name) == before
    assert read(second_server.url, name) == msgs
    if note:
        assert _has(r.warnings, *note), r.warnings
    else:
        assert r.warnings == []
    after(second_server.url)


# -- empty kinds: nothing to lose, first_seq 0 comes back as 1 on 2.15 ----------------------------------------------


def _never_written(url: str) -> str:
    _create(url, {"name": "NEVER", "subjects": ["never.>"]})
    return "NEVER"


def _purged(url: str) -> str:
    _create(url, {"name": "PURGED", "subjects": ["purged.>"]})
    for i in range(10):
        _pub(url, "purged.a", str(i).encode())
    asyncio.run(_api(url, "STREAM.PURGE.PURGED"))
    return "PURGED"


def _empty_kv(url: str) -> str:
    async def run() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().create_key_value(bucket="nokeys")
        finally:
            await nc.close()

    asyncio.run(run())
    return "KV_nokeys"


def _empty_mirror(url: str) -> str:
    _create(url, {"name": "EORIG", "subjects": ["eorig.>"]})
    _create(url, {"name": "EMIR", "mirror": {"name": "EORIG"}})
    return "EMIR"


# (builder, subject a new message goes to on the restored stream or None for a mirror, first_seq after restore)
EMPTY: dict[str, tuple[Callable[[str], str], str | None, int]] = {
    "never-written": (_never_written, "never.a", 1),
    "purged-to-empty": (_purged, "purged.a", 11),
    "kv-no-keys": (_empty_kv, "$KV.nokeys.k", 1),
    "empty-mirror": (_empty_mirror, None, 1),
}


@pytest.mark.parametrize("kind", list(EMPTY))
def test_empty_kind_round_trips(kind, nats_server, second_server, tmp_path, keyring):
    build, subject, first_after = EMPTY[kind]
    name = build(nats_server.url)
    before = _state(nats_server.url, name)
    assert before["messages"] == 0
    _backup(nats_server.url, tmp_path / "archive", name, keyring)

    r = _restore(second_server.url, tmp_path / "archive", name, keyring)

    after = _state(second_server.url, name)
    assert after == before | {"first_seq": first_after}
    if before["first_seq"] != first_after:  # never held a message: 2.15 says 1 where the snapshot said 0
        assert before["first_seq"] == 0 and before["last_seq"] == 0
        assert _has(r.warnings, "first_seq is 1, the backup's was 0", "nothing is missing"), r.warnings
    else:
        assert r.warnings == []
    if subject is not None:  # the next message continues the sequence: nothing is reused
        assert _pub(second_server.url, subject, b"next")["seq"] == before["last_seq"] + 1


# -- kinds the server changes on restore: TTL, max_age, delete markers, schedules ---------------------------------


def _expiring_kinds(url: str, archive: Path, keyring: KeyRing) -> float:
    """TTL, AGED, MARKED and SCHED streams, each backed up at once; returns when all of them have come due."""
    _create(url, {"name": "SCHED", "subjects": ["sched.>"], "allow_msg_schedules": True, "allow_msg_ttl": True})
    at = (datetime.now(timezone.utc) + timedelta(seconds=3)).replace(microsecond=0)
    _pub(url, "sched.plain", b"plain")
    _pub(
        url,
        "sched.job",
        b"fire",
        {"Nats-Schedule": f"@at {at.strftime('%Y-%m-%dT%H:%M:%SZ')}", "Nats-Schedule-Target": "sched.out"},
    )
    _backup(url, archive, "SCHED", keyring)

    _create(url, {"name": "AGED", "subjects": ["aged.>"], "max_age": 2_000_000_000})
    for i in range(4):
        _pub(url, "aged.a", str(i).encode())
    _backup(url, archive, "AGED", keyring)

    marked = {"name": "MARKED", "subjects": ["marked.>"], "max_age": 2_000_000_000, "allow_msg_ttl": True}
    _create(url, marked | {"subject_delete_marker_ttl": 60_000_000_000})
    for i in range(4):
        _pub(url, f"marked.{i % 2}", str(i).encode())
    _backup(url, archive, "MARKED", keyring)

    _create(url, {"name": "TTL", "subjects": ["ttl.>"], "allow_msg_ttl": True})
    for i in range(1, 6):  # 2 and 4 expire: two interior gaps appear on restore
        _pub(url, "ttl.short" if i % 2 == 0 else "ttl.keep", f"t{i}".encode(), {"Nats-TTL": "2s"} if i % 2 == 0 else {})
    _backup(url, archive, "TTL", keyring)
    return at.timestamp() + 0.5


def _check_expiring_kinds(url: str, results: dict[str, RestoreResult]) -> None:
    ttl = _state(url, "TTL")
    assert (ttl["messages"], ttl["first_seq"], ttl["last_seq"], ttl["num_deleted"]) == (3, 1, 5, 2)
    assert [(seq, data) for seq, _, _, data in _messages(url, "TTL")] == [(1, b"t1"), (3, b"t3"), (5, b"t5")]
    assert _has(results["TTL"].warnings, "messages is 3, the backup held 5", "Nats-TTL")

    aged = _eventually(lambda: _state(url, "AGED"), lambda s: s["messages"] == 0)
    assert (aged["messages"], aged["first_seq"], aged["last_seq"]) == (0, 5, 4)
    assert _pub(url, "aged.a", b"next")["seq"] == 5

    # Each expired subject leaves a delete marker (a new message), so the stream ends past the backup's last_seq.
    # Messages are read only once the state has settled: a consumer reading while messages expire can stall.
    marked = _eventually(lambda: _state(url, "MARKED"), lambda s: s["messages"] == 2 and s["first_seq"] > 4)
    assert (marked["messages"], marked["first_seq"], marked["last_seq"]) == (2, 5, 6)
    markers = _messages(url, "MARKED")
    assert sorted(subject for _, subject, _, _ in markers) == ["marked.0", "marked.1"]
    assert all((h or {}).get("Nats-Marker-Reason") == "MaxAge" for _, _, h, _ in markers), markers

    # The due schedule fires on the restored stream: the schedule (seq 2) is gone, what it fired is new (seq 3).
    sched = _eventually(lambda: _state(url, "SCHED"), lambda s: s["last_seq"] == 3)
    assert (sched["messages"], sched["first_seq"], sched["last_seq"]) == (2, 1, 3)
    fired = [(seq, subject, data) for seq, subject, _, data in _messages(url, "SCHED")]
    assert fired == [(1, "sched.plain", b"plain"), (3, "sched.out", b"fire")]


def test_expiring_kinds_v2(nats_server, second_server, tmp_path, keyring):
    due = _expiring_kinds(nats_server.url, tmp_path / "archive", keyring)
    time.sleep(max(0.0, due - time.time()))
    results = {
        s: _restore(second_server.url, tmp_path / "archive", s, keyring) for s in ("TTL", "AGED", "MARKED", "SCHED")
    }
    _check_expiring_kinds(second_server.url, results)


# -- mirrors and sources whose origin is on the target ------------------------------------------------------------


def test_mirror_and_sources_with_restored_origin(nats_server, second_server, tmp_path, keyring):
    src, dst, archive = nats_server.url, second_server.url, tmp_path / "archive"
    _origin(src)
    feed = {"durable_name": "feed", "deliver_subject": "feed.deliver", "ack_policy": "flow_control"}
    asyncio.run(_api(src, "CONSUMER.CREATE.ORIG.feed", {"stream_name": "ORIG", "config": feed}))
    _create(src, {"name": "MIR", "mirror": {"name": "ORIG"}})
    _create(src, {"name": "AGG", "subjects": ["agg.>"], "sources": [{"name": "ORIG"}]})
    durable = {"name": "ORIG", "consumer": {"name": "feed", "deliver_subject": "feed.deliver"}}
    _create(src, {"name": "DAGG", "subjects": ["dagg.>"], "sources": [durable]})
    for name in ("MIR", "AGG", "DAGG"):
        _wait_messages(src, name, 3)
    # The durable source's position is its consumer on the origin: back the origin up once that has caught up.
    _eventually(lambda: asyncio.run(_api(src, "CONSUMER.INFO.ORIG.feed"))["ack_floor"]["stream_seq"], lambda f: f == 3)
    for name in ("ORIG", "MIR", "AGG", "DAGG"):
        _backup(src, archive, name, keyring)

    assert _restore(dst, archive, "ORIG", keyring).warnings == []
    for i in range(2):
        _pub(dst, "orig.a", f"new{i}".encode())
    results = {name: _restore(dst, archive, name, keyring) for name in ("MIR", "AGG", "DAGG")}

    # The mirror resumes at its own last sequence: it becomes the origin again, sequence for sequence.
    _wait_messages(dst, "MIR", 5)
    assert [(s, d) for s, _, _, d in _messages(dst, "MIR")] == [(s, d) for s, _, _, d in _messages(dst, "ORIG")]
    assert not _has(results["MIR"].warnings, "duplicates")
    # A plain source on 2.15 sees the restored origin as a new stream and takes it again from the start: the
    # restore says so, and this is what happens (if a server stops doing it, the warning can go).
    assert _has(results["AGG"].warnings, *SOURCING_NOTE), results["AGG"].warnings
    _wait_messages(dst, "AGG", 8)
    assert _payloads(dst, "AGG") == [b"o0", b"o1", b"o2", b"o0", b"o1", b"o2", b"new0", b"new1"]
    # Durable sourcing resumes where the restored consumer on the origin stands: only the two new messages (and
    # by now a re-sourcing from the start would have shown, as it did for AGG).
    _wait_messages(dst, "DAGG", 5)
    assert _payloads(dst, "DAGG") == [b"o0", b"o1", b"o2", b"new0", b"new1"]
    assert results["DAGG"].warnings == []


# -- the check still catches real loss -----------------------------------------------------------------------------


def test_real_loss_is_still_caught(nats_server, second_server, tmp_path, keyring):
    name = _plain_with_deletes(nats_server.url)
    _backup(nats_server.url, tmp_path / "archive", name, keyring)
    expected = _state(nats_server.url, name)
    _restore(second_server.url, tmp_path / "archive", name, keyring)
    asyncio.run(_api(second_server.url, f"STREAM.MSG.DELETE.{name}", {"seq": 3}))  # the first message goes missing

    async def check() -> None:
        async with await connect(ConnectOptions(servers=second_server.url)) as js:
            await _await_healthy(js, name, expected, 0, 1.0)

    with pytest.raises(IntegrityError, match=r"messages is 13, expected 14"):
        asyncio.run(check())

    # A stream that ends below the backup's last sequence (here: re-created empty) is loss once the wait is over,
    # not a transfer that took too long.
    asyncio.run(_api(second_server.url, f"STREAM.DELETE.{name}"))
    _create(second_server.url, {"name": name, "subjects": ["plain.>"]})
    with pytest.raises(IntegrityError, match=r"last_seq is 0, expected 20 \(sequences would be reused\)"):
        asyncio.run(check())


ALL = {"messages": 10, "first_seq": 1, "last_seq": 10, "num_subjects": 2, "num_deleted": 0, "bytes": 500}


@pytest.mark.parametrize(
    "actual, config, error",
    [
        ({"last_seq": 9}, {"allow_msg_ttl": True, "max_age": 10**9}, r"last_seq is 9, expected 10"),
        ({"messages": 9, "first_seq": 2}, {}, r"messages is 9, expected 10"),
        ({"first_seq": 2}, {}, r"first_seq is 2, expected 1 \(the first messages are missing\)"),
        ({"num_subjects": 1}, {}, r"num_subjects is 1, expected 2"),
        ({"messages": 9}, {"max_msgs": 10}, r"messages is 9, expected 10"),  # the backup was within the limit
        ({"messages": 9}, {"mirror": {"name": "ORIG"}}, r"messages is 9, expected 10"),
    ],
)
def test_compare_state_fails_on_loss(actual, config, error):
    with pytest.raises(IntegrityError, match=error):
        compare_state("S", ALL, ALL | actual, config=config)


@pytest.mark.parametrize(
    "expected, actual, config, warned",
    [
        ({"messages": 0, "first_seq": 0, "last_seq": 0}, {"first_seq": 1}, {}, "an empty stream"),
        (ALL, {"messages": 7, "first_seq": 4, "num_deleted": 0}, {"allow_msg_ttl": True}, "3 dropped"),
        (ALL, {"messages": 0, "first_seq": 11, "num_subjects": 0}, {"max_age": 5 * 10**9}, "max_age 5 s"),
        (ALL, {"first_seq": 2, "last_seq": 11}, {"allow_msg_schedules": True}, "schedules that fired"),
        (ALL, {"messages": 12, "last_seq": 12}, {"mirror": {"name": "ORIG"}}, "pulled from its origin 'ORIG'"),
        (ALL, {"first_seq": 4, "last_seq": 13}, {"max_msgs": 10, "sources": [{"name": "O"}]}, "max_msgs 10"),
        (ALL, {"num_deleted": 3}, {}, "num_deleted is 3"),
        (ALL | {"messages": 20}, {"messages": 10, "first_seq": 11}, {"max_msgs": 10}, "max_msgs 10"),
    ],
)
def test_compare_state_accepts_what_the_server_does(expected, actual, config, warned):
    warnings = compare_state("S", expected, expected | actual, config=config)
    assert _has(warnings, warned), warnings


def test_compare_state_skips_absent_keys():
    assert compare_state("S", {"last_seq": 5}, {"messages": 0, "first_seq": 9, "last_seq": 5}) == []


def test_compare_state_with_a_counted_expectation():
    """``expected`` counted from the archive ends at its last message: trailing deleted sequences restored as such,
    or a purged stream restored at its position, are no difference worth a word."""
    trailing = {"messages": 14, "first_seq": 3, "last_seq": 19}
    assert compare_state("S", trailing, trailing | {"last_seq": 20, "num_deleted": 4}) == []
    purged = {"messages": 0, "first_seq": 0, "last_seq": 0}
    assert compare_state("S", purged, {"messages": 0, "first_seq": 11, "last_seq": 10}) == []


# -- V1 (2.14.6): the kinds that exist there ---------------------------------------------------------------------

V1_EXACT = {
    "NEVER": _never_written,  # V1 keeps first_seq 0
    "PURGED": _purged,
    "PLAIN": _plain_with_deletes,
    "KV_nokeys": _empty_kv,
    "KV_cfg": _kv,
    "OBJ_files": _objects,
    "COUNT": _counter,
    "MIR": _mirror,
    "AGG": lambda url: (_create(url, {"name": "AGG", "subjects": ["agg.>"], "sources": [{"name": "ORIG"}]}), "AGG")[1],
}


def test_v1_kinds_on_2_14(tmp_path, keyring):
    archive = tmp_path / "archive"
    with make_server("2.14.6", tmp_path / "a", "a") as a, make_server("2.14.6", tmp_path / "b", "b") as b:
        assert a.varz()["version"] == "2.14.6"
        due = _expiring_kinds(a.url, archive, keyring)
        before: dict[str, tuple[dict, list]] = {}
        for name, build in V1_EXACT.items():
            assert build(a.url) == name
            if name == "AGG":
                _wait_messages(a.url, "AGG", 3)
            before[name] = (_state(a.url, name), _messages(a.url, name))
            _backup(a.url, archive, name, keyring)
        _create(a.url, {"name": "MEM", "subjects": ["mem.>"], "storage": "memory"})
        with pytest.raises(ServerRefused, match=r"memory storage: backing it up needs nats-server 2.15"):
            _backup(a.url, archive, "MEM", keyring)

        for name, (state, msgs) in before.items():
            r = _restore(b.url, archive, name, keyring)
            assert _state(b.url, name) == state, name
            assert _messages(b.url, name) == msgs, name
            assert r.warnings == [], (name, r.warnings)  # 2.14 resumes plain sources by sequence: no note
        assert _state(b.url, "NEVER")["first_seq"] == 0
        _after_plain(b.url)
        _after_kv(b.url)
        _after_objects(b.url)
        _after_counter(b.url)

        time.sleep(max(0.0, due - time.time()))
        results = {s: _restore(b.url, archive, s, keyring) for s in ("TTL", "AGED", "MARKED", "SCHED")}
        _check_expiring_kinds(b.url, results)
        # V1 applies max_age before the restore answers: the check sees the drop and says why.
        assert _has(results["AGED"].warnings, "messages is 0, the backup held 4", "max_age 2 s")
