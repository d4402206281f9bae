"""Backups taken under live traffic are honest and restorable (pipeline/format/census.py,
pipeline/jetstream/livetail.py).

Writers run exactly while the server's snapshot runs (from its SNAPSHOT_CREATE advisory to its SNAPSHOT_COMPLETE),
with the snapshot slowed down (1 KiB chunks, a 1 KiB window: one ack round trip per chunk) so that they overlap
the walk. Then:

- V2 (2.15): a KV bucket with history 1 whose keys are overwritten during the snapshot restores every key with its
  newest value (the messages written meanwhile were read and appended: the backup is as of one sequence); a limits
  stream evicting during the backup and a stream whose consumer acks during it restore exactly what the archive
  holds; verify --deep passes on each.
- V1 (2.14): the same loads give backups that are either consistent (their census agrees with the snapshot's
  index) and restore to what they hold, or that fail clearly after their retries — never a backup that restores to a
  stream claiming messages it lacks.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from pipeline.archive.repository import Repository
from pipeline.archive.verify import VerifyOptions, verify_archive
from pipeline.base.errors import TransferFailed
from pipeline.base.transfer import TransferConfig
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.flows.restore import RestoreOptions, restore_stream
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.keys.keyring import KeyRing
from tests.conftest import make_server
from tests.streams import read_messages

pytestmark = pytest.mark.timeout(400)

SLOW = TransferConfig(snapshot_chunk=1024, snapshot_window=1024)


async def _during_snapshot(url: str, stream: str, work, backup) -> object:
    """Run ``backup()`` (blocking, in a thread) while ``work(js)`` loops from the snapshot's start to its end."""
    nc = await nats.connect(url)
    started, completed = asyncio.Event(), asyncio.Event()

    async def on_create(_msg) -> None:
        started.set()

    async def on_complete(_msg) -> None:
        completed.set()

    await nc.subscribe(f"$JS.EVENT.ADVISORY.STREAM.SNAPSHOT_CREATE.{stream}", cb=on_create)
    await nc.subscribe(f"$JS.EVENT.ADVISORY.STREAM.SNAPSHOT_COMPLETE.{stream}", cb=on_complete)
    await nc.flush()
    js = nc.jetstream(timeout=30)
    writes = 0

    async def load() -> None:
        nonlocal writes
        await asyncio.wait_for(started.wait(), 60)
        while not completed.is_set():
            await work(js)
            writes += 1
            if writes % 20 == 0:
                await asyncio.sleep(0)

    task = asyncio.ensure_future(load())
    try:
        result = await asyncio.to_thread(backup)
    finally:
        completed.set()
        await asyncio.gather(task, return_exceptions=True)
        await nc.close()
    assert writes > 50, f"only {writes} writes overlapped the snapshot: the test did not load the backup"
    return result


def _backup(url: str, archive: Path, keyring: KeyRing, stream: str):
    return lambda: backup_stream(
        BackupOptions(stream=stream, url=str(archive), connect=ConnectOptions(servers=url), keys=keyring, transfer=SLOW)
    )


def _restore(archive: Path, url: str, keyring: KeyRing, stream: str):
    return restore_stream(
        RestoreOptions(url=str(archive), stream=stream, connect=ConnectOptions(servers=url), keys=keyring)
    )


def _verify_deep(archive: Path, keyring: KeyRing) -> None:
    report = verify_archive(VerifyOptions(url=str(archive), latest=True, deep=True, keys=keyring))
    assert report.ok, [b.problems for b in report.backups]
    assert all(b.deep for b in report.backups)


async def _kv_values(url: str, bucket: str) -> dict[str, bytes]:
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream(timeout=30).key_value(bucket)
        out = {}
        for k in await kv.keys():
            out[k] = (await kv.get(k)).value
        return out
    finally:
        await nc.close()


async def _fill_kv(url: str, bucket: str, keys: int) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        await js.create_key_value(bucket=bucket, history=1)
        pending = []
        for i in range(keys):
            pending.append(await js.publish_async(f"$KV.{bucket}.k{i}", os.urandom(600)))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await nc.close()


def test_v2_kv_overwritten_during_the_backup_keeps_every_newest_value(tmp_path: Path, keyring: KeyRing) -> None:
    with make_server(None, tmp_path / "a", "a") as a, make_server(None, tmp_path / "b", "b") as b:
        keys = 20_000
        asyncio.run(_fill_kv(a.url, "cfg", keys))
        rng = random.Random(7)

        async def overwrite(js) -> None:
            await js.publish(f"$KV.cfg.k{rng.randrange(keys)}", b"new-" + os.urandom(8))

        archive = tmp_path / "archive"
        res = asyncio.run(_during_snapshot(a.url, "KV_cfg", overwrite, _backup(a.url, archive, keyring, "KV_cfg")))
        live = asyncio.run(_kv_values(a.url, "cfg"))
        assert len(live) == keys
        last = asyncio.run(_last_seq(a.url, "KV_cfg"))
        assert res.point == last  # as of the stream's last sequence: the writers stopped with the snapshot
        assert any("added" in w for w in res.warnings), res.warnings
        assert res.messages >= keys
        _verify_deep(archive, keyring)
        _restore(archive, b.url, keyring, "KV_cfg")
        assert asyncio.run(_kv_values(b.url, "cfg")) == live


async def _last_seq(url: str, stream: str) -> int:
    async with await connect(ConnectOptions(servers=url)) as js:
        info = await js.stream_info(stream)
        return int(info["state"]["last_seq"])


async def _make_stream(url: str, cfg: StreamConfig, n: int, durable: bool = False) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        await js.add_stream(cfg)
        pending = []
        for i in range(n):
            pending.append(await js.publish_async(f"{cfg.name.lower()}.{i % 50}", os.urandom(700)))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        if durable:
            await js.add_consumer(cfg.name, ConsumerConfig(durable_name="worker", ack_policy=AckPolicy.EXPLICIT))
    finally:
        await nc.close()


def _load_kinds():
    """(name, stream config, messages, work factory) for the loads that run during the backup."""
    kinds = []

    def publisher(name: str):
        i = [0]

        async def work(js) -> None:
            i[0] += 1
            await js.publish(f"{name.lower()}.{i[0] % 50}", os.urandom(300))

        return work

    kinds.append(("STEADY", StreamConfig(name="STEADY", subjects=["steady.>"]), 20_000, publisher("STEADY")))
    kinds.append(
        ("LIMITS", StreamConfig(name="LIMITS", subjects=["limits.>"], max_msgs=15_000), 15_000, publisher("LIMITS"))
    )
    return kinds


async def _acker(url: str, stream: str):
    nc = await nats.connect(url)
    sub = await nc.jetstream(timeout=30).pull_subscribe_bind("worker", stream=stream)

    async def work(_js) -> None:
        for m in await sub.fetch(10, timeout=5):
            await m.ack()

    return nc, work


@pytest.mark.parametrize("version", [None, "2.14.6"], ids=["v2-2.15", "v1-2.14"])
def test_streams_under_load_restore_what_the_archive_holds(version, tmp_path: Path, keyring: KeyRing) -> None:
    with make_server(version, tmp_path / "a", "a") as a, make_server(version, tmp_path / "b", "b") as b:
        archive = tmp_path / "archive"
        loads = _load_kinds()
        for _name, cfg, n, _work in loads:
            asyncio.run(_make_stream(a.url, cfg, n))
        asyncio.run(_make_stream(a.url, StreamConfig(name="ACKED", subjects=["acked.>"]), 20_000, durable=True))
        for name, _cfg, _n, work in [*loads, ("ACKED", None, 0, None)]:
            if name == "ACKED":

                async def run_acked():
                    nc, w = await _acker(a.url, "ACKED")
                    try:
                        return await _during_snapshot(a.url, "ACKED", w, _backup(a.url, archive, keyring, "ACKED"))
                    finally:
                        await nc.close()

                outcome = _attempt(lambda: asyncio.run(run_acked()))
            else:
                outcome = _attempt(
                    lambda name=name, work=work: asyncio.run(
                        _during_snapshot(a.url, name, work, _backup(a.url, archive, keyring, name))
                    )
                )
            if isinstance(outcome, TransferFailed):  # V1 only: an inconsistent snapshot, retried, refused
                assert version is not None and "incomplete" in str(outcome), outcome
                assert not Repository.open(str(archive)).refs(name)
                continue
            res = outcome
            r = _restore(archive, b.url, keyring, name)
            restored = asyncio.run(read_messages(b.url, name))
            assert restored[-1][0] == r.last_seq
            if version is None:
                # as of one sequence: the writers stopped with the snapshot, so that is the live stream's end, and
                # the restore is the live stream message for message (limits drop what they dropped live)
                assert res.point == asyncio.run(_last_seq(a.url, name)), (name, res.point)
                assert restored == asyncio.run(read_messages(a.url, name)), name
            else:
                # V1 copies blocks as they are: the restore holds exactly what the census counted in them
                assert r.messages == len(restored) == res.messages, (name, r.messages, len(restored), res.messages)
        _verify_deep(archive, keyring)


def _attempt(fn):
    try:
        return fn()
    except TransferFailed as e:
        return e


# -- the open end of an archive, without a server -----------------------------------------------------------------


def _archive(n: int) -> tuple[bytes, list[bytes]]:
    from pipeline.format.natsarc import MAGIC, encode_entry

    entries = [encode_entry(f"s.{i}", 1_700_000_000_000_000_000 + i, i, b"", os.urandom(200)) for i in range(1, n)]
    return MAGIC + b"".join(entries), entries


@pytest.mark.parametrize("encoding", ["s2-stream", "natsarc"])
@pytest.mark.parametrize("append", [False, True])
def test_open_end_appends_before_the_end_marker(encoding: str, append: bool) -> None:
    from pipeline.format import payload, s2
    from pipeline.format.natsarc import END_MARKER, encode_entry

    body, _ = _archive(2_000)  # ~420 KB: several 64 KiB chunks, so the held end is two of them
    framed = b"".join(bytes(x) for x in s2.snappy_framed([body + END_MARKER]))
    form = payload.StoredForm(encoding, open_end=True)
    stored = bytearray()
    rng = random.Random(3)
    pos = 0
    while pos < len(framed):
        step = rng.randrange(1, 40_000)
        for piece in form.feed(framed[pos : pos + step]):
            stored += piece
        pos += step
    extra = encode_entry("s.late", 1_800_000_000_000_000_000, 5_000, b"", b"late") if append else b""
    if append:
        for piece in form.append(extra):
            stored += piece
    for piece in form.finish():
        stored += piece
    decoded = b"".join(s2.iter_decode([bytes(stored)])) if encoding == "s2-stream" else bytes(stored)
    assert decoded == body + extra + END_MARKER
    if encoding == "s2-stream" and not append:
        assert bytes(stored) == framed  # unchanged: byte for byte what the server sent
    assert form.stored == len(stored)


def test_open_end_refuses_a_stream_without_its_end_marker() -> None:
    from pipeline.base.errors import IntegrityError
    from pipeline.format import payload, s2

    body, _ = _archive(50)
    framed = b"".join(bytes(x) for x in s2.snappy_framed([body]))  # no end marker
    form = payload.StoredForm("s2-stream", open_end=True)
    list(form.feed(framed))
    with pytest.raises(IntegrityError, match="end marker"):
        list(form.append(b"x"))


# -- reading after the snapshot, without a server ------------------------------------------------------------------


def test_message_times_parse_to_the_nanosecond() -> None:
    from pipeline.jetstream.livetail import parse_time_ns

    assert parse_time_ns("2026-12-01T18:17:35.141027772Z") == 1_796_149_055_141_027_772
    assert parse_time_ns("2026-12-01T18:17:35Z") == 1_796_149_055_000_000_000
    assert parse_time_ns("2026-12-01T18:17:35.5Z") == 1_796_149_055_500_000_000
    assert parse_time_ns("2026-12-01T19:17:35.000000001+01:00") == 1_796_149_055_000_000_001


@pytest.mark.parametrize(
    "resp",
    [
        {},
        {"message": "x"},
        {"message": {"subject": "a", "seq": 1, "time": "not a time"}},
        {"message": {"subject": "a", "seq": 1, "time": "2026-12-01T18:17:35Z", "data": "%%%"}},
        {"message": {"seq": 1, "time": "2026-12-01T18:17:35Z"}},
    ],
)
def test_a_malformed_message_read_after_the_snapshot_is_an_integrity_error(resp: dict) -> None:
    from pipeline.base.errors import IntegrityError
    from pipeline.jetstream.livetail import _entry

    with pytest.raises(IntegrityError, match="after the snapshot"):
        _entry("S", resp)
