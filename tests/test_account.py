"""Whole accounts through the CLI against real servers: backup sets, restores into another cluster, shards, seals.

The account in ``east`` (session fixture ``two_clusters``) gets five streams of every kind an account holds: a KV
bucket written with nats-py's KV API, an object-store bucket, a file stream with a filtered consumer, an R3 stream
and a memory stream. It is backed up once (module fixture) and restored into ``west`` by tag; every test leaves
west without these streams and the module deletes them from east at the end. Bad input runs against standalone
servers. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, Placement, StorageType, StreamConfig

from pipeline.archive.repository import Repository
from pipeline.archive.runs import RunIncomplete, Shard, resolve_run, resolve_shard, seal_run_in, shard_of
from pipeline.base.errors import UsageError
from pipeline.format.manifest import canonical
from pipeline.format.sets import parse_set, select_streams
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.jetstream.embedded import EmbeddedServer
from tests.conftest import make_server
from tests.settle import eventually_async
from tests.streams import comparable, read_messages, stream_state, wait_consumers_settled
from tests.test_bad_input import Run, archive_state, assert_archive_untouched, cli_env, jsarchive

pytestmark = pytest.mark.timeout(420)

KV_BUCKET = "acctcfg"
OBJ_BUCKET = "acctfiles"
ORDERS, R3, MEM = "ACC_ORDERS", "ACC_R3", "ACC_MEM"
KV_STREAM, OBJ_STREAM = f"KV_{KV_BUCKET}", f"OBJ_{OBJ_BUCKET}"
MINE = [KV_STREAM, OBJ_STREAM, ORDERS, R3, MEM]
BLOB = hashlib.sha256(b"blob").digest() * 12_000  # 384 KB: three object-store chunks, not compressible to nothing
ERROR_PREFIX = "jsarchive: error: "
RESTORE_WAIT = "60"


# -- unit: shards, runs, selection, sets (no server) ----------------------------------------------------------------


def test_shard_of_is_stable_and_spreads() -> None:
    # Pinned: a change here would reshuffle the streams of runs already in flight.
    assert [shard_of("ORDERS", n) for n in (1, 2, 3, 4, 7, 16)] == [0, 1, 0, 3, 2, 3]
    assert [shard_of("KV_config", n) for n in (1, 2, 3, 4, 7, 16)] == [0, 1, 2, 3, 1, 15]
    names = [f"S{i}" for i in range(1000)]
    counts = [sum(1 for n in names if shard_of(n, 4) == i) for i in range(4)]
    assert sum(counts) == 1000 and min(counts) > 200  # every shard gets a fair share
    # Each name belongs to exactly one shard, whatever the order or the other names.
    shards = [Shard(i, 4) for i in range(4)]
    assert all(sum(s.owns(n) for s in shards) == 1 for n in names)
    assert [n for n in reversed(names) if shards[2].owns(n)] == [n for n in names if shards[2].owns(n)][::-1]


@pytest.mark.parametrize(
    ("shard", "count", "env", "expected"),
    [
        ("1/4", None, {}, (1, 4)),
        (None, None, {"CLOUD_RUN_TASK_INDEX": "2", "CLOUD_RUN_TASK_COUNT": "5"}, (2, 5)),
        (None, None, {"AWS_BATCH_JOB_ARRAY_INDEX": "0", "AWS_BATCH_JOB_ARRAY_SIZE": "3"}, (0, 3)),
        (None, 6, {"JOB_COMPLETION_INDEX": "5"}, (5, 6)),
        (None, None, {"JOB_COMPLETION_INDEX": "1", "JSARCHIVE_SHARD_COUNT": "2"}, (1, 2)),
        ("0/2", None, {"CLOUD_RUN_TASK_INDEX": "1", "CLOUD_RUN_TASK_COUNT": "2"}, (0, 2)),  # the flag wins
        (None, None, {}, None),
    ],
)
def test_resolve_shard(shard, count, env, expected) -> None:
    got = resolve_shard(shard, count, env)
    assert ((got.index, got.count) if got else None) == expected


@pytest.mark.parametrize(
    ("shard", "count", "env", "needle"),
    [
        ("3/2", None, {}, "out of range"),
        ("2/2", None, {}, "out of range"),
        ("1/0", None, {}, "at least 1"),
        ("x", None, {}, "INDEX/COUNT"),
        (None, None, {"JOB_COMPLETION_INDEX": "1"}, "--shard-count"),
        (None, None, {"CLOUD_RUN_TASK_INDEX": "4", "CLOUD_RUN_TASK_COUNT": "4"}, "out of range"),
        ("1/4", 3, {}, "disagree"),
    ],
)
def test_resolve_shard_refuses(shard, count, env, needle) -> None:
    with pytest.raises(UsageError, match=needle):
        resolve_shard(shard, count, env)


def test_resolve_run() -> None:
    assert resolve_run("nightly-1", {}) == "nightly-1"
    assert resolve_run(None, {"JSARCHIVE_RUN": "r2"}) == "r2"
    assert resolve_run(None, {"CLOUD_RUN_EXECUTION": "job-abc12"}) == "job-abc12"
    batch = {"AWS_BATCH_JOB_ID": "4f1c-77:3", "AWS_BATCH_JOB_ARRAY_INDEX": "3"}
    assert resolve_run(None, batch) == "4f1c-77"  # the parent array job: shared by every child
    assert resolve_run(None, {"CLOUD_RUN_EXECUTION": "job-abc12"}, platform=False) is None
    with pytest.raises(UsageError, match="run id"):
        resolve_run("a/b", {})


def test_select_streams() -> None:
    names = ["KV_a", "KV_b", "OBJ_x", "ORDERS"]
    assert select_streams(names, [], []) == names
    assert select_streams(names, ["KV_*"], []) == ["KV_a", "KV_b"]
    assert select_streams(names, [], ["KV_*", "OBJ_*"]) == ["ORDERS"]
    with pytest.raises(UsageError, match="'NOPE\\*' matches none"):
        select_streams(names, ["KV_*", "NOPE*"], [])
    with pytest.raises(UsageError, match="leave none"):
        select_streams(names, ["KV_*"], ["KV_*"])


def test_parse_set_refuses_malformed_sets() -> None:
    good = {
        "format": "jsarchive.set",
        "version": 1,
        "started": "t",
        "finished": "t",
        "streams": [{"stream": "A", "manifest_id": "a" * 64}],
    }
    assert parse_set(canonical(good), "x" * 64).streams[0]["stream"] == "A"
    for bad, why in [
        ({**good, "version": 2}, "version"),
        ({**good, "format": "jsarchive.manifest"}, "format"),
        ({**good, "streams": [{"stream": "A", "manifest_id": "zz"}]}, "manifest id"),
        ({**good, "streams": [good["streams"][0], good["streams"][0]]}, "twice"),
    ]:
        with pytest.raises(Exception, match=why):
            parse_set(canonical(bad), "x" * 64)


# -- helpers ------------------------------------------------------------------------------------------------------


def _fails(run: Run, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one error line on stderr and nothing else there; --json output says ok: false."""
    where = f"\n$ {' '.join(run.args)}\nexit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "Traceback" not in run.stderr, where
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), f"expected one error line{where}"
    assert run.returncode == code, f"expected exit {code}{where}"
    if "--json" in run.args:
        out = json.loads(run.stdout)
        assert out["ok"] is False and out["error"]["exit_code"] == code, where
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in the error line{where}"
    return lines[0]


def _ok(run: Run, key: str) -> dict:
    assert run.returncode == 0, f"$ {' '.join(run.args)}\nexit {run.returncode}\n{run.stdout}\n{run.stderr}"
    out = json.loads(run.stdout)
    assert out["ok"] is True
    return out[key]


async def _names(url: str) -> list[str]:
    async with await connect(ConnectOptions(servers=url)) as js:
        return sorted(await js.stream_names())


async def _delete_until_gone(url: str, names: list[str], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    async with await connect(ConnectOptions(servers=url)) as js:
        while True:
            left = [n for n in await js.stream_names() if n in names]
            if not left:
                return
            for n in left:
                await js.delete_stream(n)
            if time.monotonic() >= deadline:
                raise AssertionError(f"streams {left} still listed at {url} after {deadline_s:g} s")
            await asyncio.sleep(0.2)


async def _wait_leader(js, name: str, deadline_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """A new clustered stream takes a moment to elect its leader; until then publishes find no responder."""
    info = await eventually_async(
        lambda: js.stream_info(name),
        lambda i: i.cluster is None or bool(i.cluster.leader),
        deadline_s,
        every=0.1,
        transient=(nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.APIError),
    )
    assert info is not None and (info.cluster is None or info.cluster.leader), (
        f"stream {name} has no leader after {deadline_s:g} s"
    )


async def _read(url: str, name: str, attempts: int = 3) -> list:
    """read_messages, again if its fresh consumer has no leader yet (a clustered fetch then gets 503 or times out)."""
    for attempt in range(attempts):
        try:
            return await read_messages(url, name)
        except (asyncio.TimeoutError, nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


async def _publish(js, subject_prefix: str, n: int, parts: tuple[str, ...] = ("a",)) -> None:  # type: ignore[no-untyped-def]
    pending = []
    for i in range(1, n + 1):
        pending.append(
            await js.publish_async(
                f"{subject_prefix}.{parts[i % len(parts)]}",
                f"{subject_prefix} {i} <&>".encode(),
                headers={"X-I": str(i)},
            )
        )
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def _make_account(url: str) -> None:
    """The five streams; the first create retries while a fresh cluster still elects its meta leader."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        deadline = time.monotonic() + 20
        while True:
            try:
                kv = await js.create_key_value(bucket=KV_BUCKET, history=3)
                break
            except nats.js.errors.APIError as e:
                if e.err_code != 10005 or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)
        await _wait_leader(js, KV_STREAM)
        for i in range(60):
            await kv.put(f"key{i % 12}", f"value-{i}".encode())
        await kv.delete("key3")
        obs = await js.create_object_store(OBJ_BUCKET)
        await _wait_leader(js, OBJ_STREAM)
        await obs.put("blob.bin", BLOB)

        await js.add_stream(StreamConfig(name=ORDERS, subjects=["acc.orders.>"]))
        await _wait_leader(js, ORDERS)
        await _publish(js, "acc.orders", 3_000, ("eu.new", "eu.paid", "us.new", "ap.new"))
        await js.add_consumer(
            ORDERS, ConsumerConfig(durable_name="eu", ack_policy=AckPolicy.EXPLICIT, filter_subject="acc.orders.eu.>")
        )
        deadline = time.monotonic() + 20
        while not ((await js.consumer_info(ORDERS, "eu")).cluster or _NoCluster()).leader:  # fetches need a leader
            assert time.monotonic() < deadline, "consumer eu has no leader"
            await asyncio.sleep(0.1)
        sub = await js.pull_subscribe_bind("eu", stream=ORDERS)
        left = 400
        while left > 0:
            for m in await sub.fetch(min(left, 200), timeout=10):
                await m.ack()
                left -= 1
        await nc.flush()
        for _ in range(200):
            if (await js.consumer_info(ORDERS, "eu")).num_ack_pending == 0:
                break
            await asyncio.sleep(0.05)

        await js.add_stream(
            StreamConfig(name=R3, subjects=["acc.r3.>"], num_replicas=3, placement=Placement(cluster="east"))
        )
        await _wait_leader(js, R3)
        await _publish(js, "acc.r3", 2_000)
        await js.add_stream(StreamConfig(name=MEM, subjects=["acc.mem.>"], storage=StorageType.MEMORY))
        await _wait_leader(js, MEM)
        await _publish(js, "acc.mem", 1_000, ("x", "y"))
        await nc.flush()
    finally:
        await nc.close()


class _NoCluster:
    leader = "standalone"


@dataclass
class Account:
    east: list[EmbeddedServer]
    west: list[EmbeddedServer]
    env: dict[str, str]
    key: Path
    archive: Path
    work: Path
    names: list[str]  # every stream of the account when it was backed up
    states: dict[str, dict]
    messages: dict[str, list]
    backup: dict
    set_id: str


@pytest.fixture(scope="module")
def account(two_clusters, tmp_path_factory) -> Iterator[Account]:
    east, west = two_clusters["east"], two_clusters["west"]
    work = tmp_path_factory.mktemp("account")
    env = cli_env(work)
    key = work / "backup.key"
    for servers in (east, west):
        asyncio.run(_delete_until_gone(servers[0].url, MINE))
    try:
        assert jsarchive("keygen", "-o", key, env=env).returncode == 0
        asyncio.run(_make_account(east[0].url))
        names = asyncio.run(_names(east[1].url))
        assert set(MINE) <= set(names)
        states = {n: asyncio.run(stream_state(east[1].url, n)) for n in MINE}
        assert states[R3]["_info"]["config"]["num_replicas"] == 3
        assert states[MEM]["_info"]["config"]["storage"] == "memory"
        assert states[ORDERS]["consumers"]["eu"]["filter_subject"] == "acc.orders.eu.>"
        messages = {n: asyncio.run(_read(east[2].url, n)) for n in (ORDERS, R3, MEM)}

        archive = work / "archive"
        t0 = time.monotonic()
        run = jsarchive("account", "backup", archive, "-s", east[0].url, "-i", key, "--json", env=env, timeout=180)
        backup = _ok(run, "account")
        print(f"account backup of {len(names)} streams: {time.monotonic() - t0:.1f} s")
        yield Account(east, west, env, key, archive, work, names, states, messages, backup, backup["set_id"])
    finally:
        for servers in (west, east):
            asyncio.run(_delete_until_gone(servers[0].url, MINE))


@pytest.fixture
def clean_west(account: Account) -> Iterator[Account]:
    asyncio.run(_delete_until_gone(account.west[0].url, account.names))
    yield account
    asyncio.run(_delete_until_gone(account.west[0].url, account.names))


def _restore(a: Account, *extra: str, set_id: str | None = None) -> Run:
    return jsarchive(
        "account",
        "restore",
        a.archive,
        *([set_id] if set_id else []),
        "-s",
        a.west[0].url,
        "-i",
        a.key,
        "--wait",
        RESTORE_WAIT,
        "--json",
        *extra,
        env=a.env,
        timeout=240,
    )


_settled = wait_consumers_settled  # stream state once consumer positions match (they lag a moment after a restore)


# -- backup and restore of the whole account ----------------------------------------------------------------------


def test_backup_writes_one_set_for_every_stream(account: Account) -> None:
    b = account.backup
    assert b["account"]["name"] == "$G" and b["account"]["server"]["cluster"] == "east"
    assert b["planned"] == len(account.names) and b["failed"] == [] and b["warnings"] == []
    assert sorted(o["stream"] for o in b["streams"]) == account.names
    assert all(o["status"] == "backed_up" for o in b["streams"])
    outcomes = {o["stream"]: o for o in b["streams"]}
    assert outcomes[MEM]["messages"] == 1_000 and outcomes[R3]["messages"] == 2_000
    assert outcomes[ORDERS]["consumers"] == 1

    repo = Repository.open(str(account.archive))
    assert repo.list_sets() == [account.set_id]
    raw = repo.load_set(account.set_id)
    assert hashlib.sha256(raw).hexdigest() == account.set_id and raw == canonical(json.loads(raw))
    doc = parse_set(raw, account.set_id).doc
    assert doc["run"] is None and doc["shards"] == 1 and doc["skipped"] == []
    assert doc["started"] <= doc["finished"]
    assert doc["options"] == {"consumers": True, "check": False, "include": [], "exclude": []}
    entries = {e["stream"]: e for e in doc["streams"]}
    assert sorted(entries) == account.names
    for name in MINE:
        m = repo.load_manifest(entries[name]["manifest_id"])  # every member's manifest is there and is its stream's
        assert m.stream == name and m.backup_id == entries[name]["backup_id"] and m.encrypted
    assert entries[R3]["replicas"] == 3 and entries[MEM]["storage"] == "memory"

    run = jsarchive("account", "ls", account.archive, "--json", env=account.env)
    (row,) = _ok(run, "sets")
    assert row["set_id"] == account.set_id and row["streams"] == len(account.names) and row["account"] == "$G"


def test_restore_into_another_cluster_by_tag(clean_west: Account) -> None:
    a = clean_west
    west_names = {s.spec.name for s in a.west}
    t0 = time.monotonic()
    res = _ok(_restore(a, "--tag", "region:west", "--parallel", "3"), "restore")
    print(f"account restore of {len(a.names)} streams: {time.monotonic() - t0:.1f} s")
    assert res["set_id"] == a.set_id and res["failed"] == [] and res["skipped"] == []
    restored = {r["stream"]: r for r in res["restored"]}
    assert sorted(restored) == a.names
    for name in MINE:
        r = restored[name]
        assert r["cluster"] == "west" and r["leader"] in west_names, name
        assert r["placement"] == {"tags": ["region:west"]}, name
    assert restored[R3]["num_replicas"] == 3 and sorted(restored[R3]["replicas"]) == sorted(
        west_names - {restored[R3]["leader"]}
    )
    url = a.west[1].url
    for name in MINE:
        src = a.states[name]
        got = _settled(url, name, src)
        assert comparable(got) == comparable(src), name
        assert got["_info"]["config"]["storage"] == src["_info"]["config"]["storage"], name
    assert a.states[ORDERS]["consumers"]["eu"]["ack_floor"] > 0
    for name in (ORDERS, R3, MEM):
        assert asyncio.run(_read(a.west[2].url, name)) == a.messages[name], name

    async def buckets() -> tuple[dict, bytes, int]:
        nc = await nats.connect(a.west[0].url)
        try:
            js = nc.jetstream(timeout=30)
            kv = await js.key_value(KV_BUCKET)
            values = {}
            for i in range(12):
                try:
                    values[f"key{i}"] = (await kv.get(f"key{i}")).value
                except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                    values[f"key{i}"] = None
            history = (await kv.status()).history
            obs = await js.object_store(OBJ_BUCKET)
            blob = (await obs.get("blob.bin")).data
            return values, blob, history
        finally:
            await nc.close()

    values, blob, history = asyncio.run(buckets())
    expected = {f"key{i % 12}": f"value-{i}".encode() for i in range(60)}
    expected["key3"] = None
    assert values == expected
    assert history == 3  # the bucket's history setting came back with its data (and comparable() its 36 entries)
    assert blob == BLOB


async def _dummy(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        await js.add_stream(StreamConfig(name=ORDERS, subjects=["acc.orders.>"]))
        await _wait_leader(js, ORDERS)
        for i in range(5):
            await js.publish("acc.orders.dummy", b"dummy %d" % i)
    finally:
        await nc.close()


@pytest.mark.parametrize("mode", ["fail", "skip", "replace"])
def test_on_exists(clean_west: Account, mode: str) -> None:
    a = clean_west
    url = a.west[0].url
    asyncio.run(_dummy(url))
    select = ["--include", ORDERS, "--include", "KV_*"]
    run = _restore(a, "--tag", "region:west", "--on-exists", mode, *select)
    dummy = asyncio.run(stream_state(a.west[1].url, ORDERS))
    names = asyncio.run(_names(url))
    if mode == "fail":
        _fails(run, 6, ORDERS, "already exist", "nothing was restored")
        assert KV_STREAM not in names  # natscli's rule: every name is checked before anything is restored
        assert dummy["messages"] == 5 and dummy["last_seq"] == 5
        return
    res = _ok(run, "restore")
    assert KV_STREAM in names and comparable(asyncio.run(stream_state(url, KV_STREAM))) == comparable(
        a.states[KV_STREAM]
    )
    if mode == "skip":
        assert res["skipped"] == [{"stream": ORDERS, "reason": "exists on the target"}]
        assert [r["stream"] for r in res["restored"]] == [KV_STREAM]
        assert dummy["messages"] == 5 and dummy["last_seq"] == 5
    else:
        assert res["replaced"] == [ORDERS] and res["skipped"] == []
        assert sorted(r["stream"] for r in res["restored"]) == [ORDERS, KV_STREAM]
        assert comparable(_settled(a.west[1].url, ORDERS, a.states[ORDERS])) == comparable(a.states[ORDERS])
        assert asyncio.run(_read(url, ORDERS)) == a.messages[ORDERS]


# -- sharded runs -------------------------------------------------------------------------------------------------


def test_shards_cover_the_account_and_seal_waits_for_all(account: Account) -> None:
    a = account
    archive = a.work / "sharded"
    run_id = "acct-run-1"
    names = asyncio.run(_names(a.east[0].url))
    owners = {n: shard_of(n, 3) for n in names}
    base = ["account", "backup", archive, "-s", a.east[0].url, "-i", a.key]

    def shard(env_extra: dict[str, str], *extra: str) -> Run:
        env = {**a.env, **env_extra}
        return jsarchive(*base, *extra, env=env, timeout=180)

    # Shard 0 as a Cloud Run task, shard 1 as an AWS Batch array child (human output), shard 2 as a Kubernetes
    # indexed-job pod with an explicit count and run id.
    r0 = _ok(
        shard({"CLOUD_RUN_TASK_INDEX": "0", "CLOUD_RUN_TASK_COUNT": "3", "CLOUD_RUN_EXECUTION": run_id}, "--json"),
        "account",
    )
    assert r0["shard"] == "0/3" and r0["run"] == run_id and r0["set_id"] is None
    assert [o["stream"] for o in r0["streams"]] == sorted(n for n in names if owners[n] == 0)

    r1 = shard({"AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ARRAY_SIZE": "3", "AWS_BATCH_JOB_ID": f"{run_id}:1"})
    assert r1.returncode == 0, r1.stderr
    assert f"shard 1/3 of run {run_id}" in r1.stdout and "still pending" in r1.stdout
    for n in names:
        assert (f"  {n}: " in r1.stdout) == (owners[n] == 1), n

    missing = sorted(n for n in names if owners[n] == 2)
    seal = jsarchive("account", "seal", archive, "--run", run_id, "--json", env=a.env)
    line = _fails(seal, 3, "not complete", "shard(s) 2/3 have not started", *missing)
    assert "no set was written" in line
    assert Repository.open(str(archive)).list_sets() == []

    r2 = _ok(shard({"JOB_COMPLETION_INDEX": "2", "JSARCHIVE_SHARD_COUNT": "3"}, "--run", run_id, "--json"), "account")
    assert r2["shard"] == "2/3" and [o["stream"] for o in r2["streams"]] == missing
    assert r2["set_id"] and r2["pending"] == []  # the last shard sealed the run

    sealed = _ok(jsarchive("account", "seal", archive, "--run", run_id, "--json", env=a.env), "seal")
    assert sealed["set_id"] == r2["set_id"]  # sealing again writes the same bytes under the same name
    repo = Repository.open(str(archive))
    assert repo.list_sets() == [r2["set_id"]]
    doc = parse_set(repo.load_set(r2["set_id"]), r2["set_id"]).doc
    assert doc["run"] == run_id and doc["shards"] == 3
    per_shard = [[o["stream"] for o in r["streams"]] for r in (r0, r2)] + [sorted(n for n in names if owners[n] == 1)]
    assert sorted(s for part in per_shard for s in part) == names  # disjoint, and together the whole account
    assert sorted(e["stream"] for e in doc["streams"]) == names

    # A retried shard resumes: what it already stored is not backed up again.
    again = _ok(
        shard({"CLOUD_RUN_TASK_INDEX": "0", "CLOUD_RUN_TASK_COUNT": "3", "CLOUD_RUN_EXECUTION": run_id}, "--json"),
        "account",
    )
    assert all(o["status"] == "done_before" for o in again["streams"]) and again["set_id"] == r2["set_id"]


def test_seal_of_unknown_run(tmp_path) -> None:
    env = cli_env(tmp_path)
    _fails(jsarchive("account", "seal", tmp_path / "a", "--run", "nope", "--json", env=env), 3, "no run 'nope'")
    # One shard of two has recorded an (empty) plan: the other one might still list streams, so no seal.
    repo = Repository.open(str(tmp_path / "b"))
    plan = {
        "format": "jsarchive.run-plan",
        "version": 1,
        "run": "r",
        "shard": {"index": 0, "count": 2},
        "created": "2026-12-01T00:00:00Z",
        "streams": [],
        "mine": [],
    }
    repo.put_small("runs/r/plan/0-of-2", canonical(plan))
    with pytest.raises(RunIncomplete, match="1/2 have not started"):
        seal_run_in(repo, "r")
    assert repo.list_sets() == []


# -- natscli warnings on an old server ------------------------------------------------------------------------------


def test_memory_stream_on_old_server_is_a_warning(tmp_path, identity_file) -> None:
    env, key = cli_env(tmp_path), identity_file[0]
    with make_server("2.14.6", tmp_path / "nats") as srv:

        async def fill() -> None:
            nc = await nats.connect(srv.url)
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="FILED", subjects=["f.>"]))
            await js.add_stream(StreamConfig(name="MEMO", subjects=["m.>"], storage=StorageType.MEMORY))
            await _publish(js, "f", 50)
            await _publish(js, "m", 50)
            await nc.close()

        asyncio.run(fill())
        archive = tmp_path / "archive"
        res = _ok(jsarchive("account", "backup", archive, "-s", srv.url, "-i", key, "--json", env=env), "account")
        outcomes = {o["stream"]: o for o in res["streams"]}
        assert outcomes["FILED"]["status"] == "backed_up" and outcomes["FILED"]["snapshot_format"] == "V1"
        assert outcomes["MEMO"]["status"] == "skipped" and "2.15" in outcomes["MEMO"]["message"]
        assert len(res["warnings"]) == 1 and "MEMO" in res["warnings"][0]
        doc = parse_set(Repository.open(str(archive)).load_set(res["set_id"]), res["set_id"]).doc
        assert [e["stream"] for e in doc["streams"]] == ["FILED"]
        assert [s["stream"] for s in doc["skipped"]] == ["MEMO"] and doc["warnings"] == res["warnings"]

        # natscli -w: the warning fails the run, and no set is written.
        strict = tmp_path / "strict"
        run = jsarchive("account", "backup", strict, "-s", srv.url, "-i", key, "-w", "--json", "--no-progress", env=env)
        _fails(run, 8, "MEMO", "--critical-warnings", "no set was written")
        assert json.loads(run.stdout)["account"]["streams"][0]["stream"] == "FILED"  # what did work is reported
        assert Repository.open(str(strict)).list_sets() == []


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.fixture
def small_set(nats_server, tmp_path, identity_file) -> dict:
    """Two small streams on a standalone server, backed up as one set."""

    async def fill() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        for name in ("ALPHA", "BETA"):
            await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
            await _publish(js, name.lower(), 100)
        await nc.close()

    asyncio.run(fill())
    env, key = cli_env(tmp_path), identity_file[0]
    archive = tmp_path / "archive"
    res = _ok(jsarchive("account", "backup", archive, "-s", nats_server.url, "-i", key, "--json", env=env), "account")
    return {"env": env, "key": key, "archive": archive, "set_id": res["set_id"], "backup": res, "url": nats_server.url}


def test_restore_of_unknown_set(small_set, second_server) -> None:
    s = small_set
    before = archive_state(s["archive"])
    run = jsarchive(
        "account",
        "restore",
        s["archive"],
        "0123456789ab",
        "-s",
        second_server.url,
        "-i",
        s["key"],
        "--json",
        env=s["env"],
    )
    _fails(run, 3, "no set with id 0123456789ab")
    assert asyncio.run(_names(second_server.url)) == []
    assert_archive_untouched(s["archive"], before)


def test_restore_of_a_set_with_a_missing_manifest(small_set, second_server) -> None:
    s = small_set
    beta = next(o for o in s["backup"]["streams"] if o["stream"] == "BETA")
    os.unlink(s["archive"] / "manifests" / beta["manifest_id"])
    before = archive_state(s["archive"])
    run = jsarchive(
        "account",
        "restore",
        s["archive"],
        s["set_id"][:8],
        "-s",
        second_server.url,
        "-i",
        s["key"],
        "--json",
        env=s["env"],
    )
    _fails(run, 3, "'BETA'", beta["manifest_id"][:12], "manifest is missing")
    assert asyncio.run(_names(second_server.url)) == []  # not even ALPHA: the set is checked before anything is sent
    assert_archive_untouched(s["archive"], before)


@pytest.mark.parametrize(
    ("args", "code", "needles"),
    [
        (["--include", "NOPE*"], 2, ["--include 'NOPE*' matches none"]),
        (["--shard", "3/2", "--run", "r"], 2, ["shard 3/2", "out of range"]),
        (["--shard", "1/2"], 2, ["needs a run id"]),
    ],
    ids=["include-nothing", "shard-3-of-2", "shard-without-run"],
)
def test_backup_refuses_bad_selections(small_set, args, code, needles) -> None:
    s = small_set
    before = archive_state(s["archive"])
    run = jsarchive("account", "backup", s["archive"], "-s", s["url"], "-i", s["key"], "--json", *args, env=s["env"])
    _fails(run, code, *needles)
    assert_archive_untouched(s["archive"], before)


def test_restore_include_matching_nothing(small_set, second_server) -> None:
    s = small_set
    run = jsarchive(
        "account",
        "restore",
        s["archive"],
        "--latest",
        "--include",
        "GAMMA",
        "-s",
        second_server.url,
        "-i",
        s["key"],
        "--json",
        env=s["env"],
    )
    _fails(run, 2, "--include 'GAMMA' matches none")
    assert asyncio.run(_names(second_server.url)) == []


def test_cli_lists_account_commands() -> None:
    from click.testing import CliRunner

    from pipeline.entry.cli import main

    out = CliRunner().invoke(main, ["account", "--help"]).output
    for cmd in ("backup", "restore", "seal", "ls"):
        assert cmd in out


# -- drills --------------------------------------------------------------------------------------------------------


def _ed25519_pair(work: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private, public = work / "drill-sign.pem", work / "drill-sign.pub.pem"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def _drill_copy(a: Account, tmp_path: Path) -> Path:
    """A copy of the module's archive, so drill reports and damage stay out of the other tests' way."""
    import shutil

    copy = tmp_path / "archive"
    shutil.copytree(a.archive, copy)
    return copy


def _drill_streams(url: str) -> list[str]:
    return [n for n in asyncio.run(_names(url)) if n.startswith("DRILL_")]


def test_drill_into_another_cluster_passes_and_leaves_signed_evidence(clean_west: Account, tmp_path: Path) -> None:
    a = clean_west
    archive = _drill_copy(a, tmp_path)
    private, public = _ed25519_pair(tmp_path)
    run = jsarchive(
        "drill", archive, "--latest", "--cluster", "west", "-s", a.west[0].url, "-i", a.key,
        "--sign-key", private, "--wait", RESTORE_WAIT, "--json", env=a.env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    out = json.loads(run.stdout)
    report = out["report"]
    assert out["ok"] and report["passed"] and report["renamed"]
    assert report["set"]["id"] == a.set_id
    assert {s["stream"] for s in report["streams"]} == set(a.names)
    for s in report["streams"]:
        assert s["ok"], s
        assert s["drill_stream"] == "DRILL_" + s["stream"]
        assert s["got"]["messages"] == s["expected"]["messages"] == a.states.get(s["stream"], s["got"])["messages"]
        assert s["got"]["cluster"] == "west"
        assert all(subject.startswith("DRILL.") for subject in s["got"]["subjects"]), s["got"]["subjects"]
        assert s["rpo_s"] >= 0
    assert report["rto_s"] > 0 and sorted(out["removed"]) == sorted("DRILL_" + n for n in a.names)
    assert _drill_streams(a.west[0].url) == []  # nothing of the drill is left on the target
    assert sorted(set(asyncio.run(_names(a.east[0].url))) & set(a.names)) == sorted(a.names)

    stored = archive / out["report_key"]
    assert json.loads(stored.read_bytes()) == report
    listed = _ok(jsarchive("drills", archive, "--public-key", public, "--json", env=a.env), "reports")
    assert [(r["key"], r["passed"]) for r in listed] == [(out["report_key"], True)]
    assert listed[0]["signature"].startswith("valid: ")

    # evidence that was changed after signing is caught
    stored.write_bytes(stored.read_bytes().replace(b'"passed":true', b'"passed":false'))
    run = jsarchive("drills", archive, "--json", env=a.env)
    assert run.returncode == 4
    assert json.loads(run.stdout)["reports"][0]["signature"].startswith("invalid: ")


def test_drill_beside_production_does_not_touch_it(account: Account, tmp_path: Path) -> None:
    """A drill into production's own cluster: renamed streams and subjects, so nothing clashes (G2, G3)."""
    a = account
    archive = _drill_copy(a, tmp_path)
    before = {n: asyncio.run(stream_state(a.east[1].url, n)) for n in (ORDERS, R3)}
    run = jsarchive(
        "drill", archive, a.set_id[:12], "--cluster", "east", "--include", "ACC_*", "-s", a.east[0].url,
        "-i", a.key, "--keep", "--json", env=a.env, timeout=300,
    )  # fmt: skip
    try:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        out = json.loads(run.stdout)
        assert sorted(out["kept"]) == ["DRILL_ACC_MEM", "DRILL_ACC_ORDERS", "DRILL_ACC_R3"]

        async def publish_to_production() -> None:
            nc = await nats.connect(a.east[0].url)
            try:
                await nc.jetstream().publish("acc.r3.after-drill", b"production only")
            finally:
                await nc.close()

        asyncio.run(publish_to_production())
        drill_r3 = asyncio.run(stream_state(a.east[1].url, "DRILL_ACC_R3"))
        assert drill_r3["_info"]["state"]["messages"] == before[R3]["_info"]["state"]["messages"]
        after = asyncio.run(stream_state(a.east[1].url, R3))
        assert after["_info"]["state"]["messages"] == before[R3]["_info"]["state"]["messages"] + 1
        assert comparable(asyncio.run(stream_state(a.east[1].url, ORDERS))) == comparable(before[ORDERS])
    finally:
        asyncio.run(_delete_until_gone(a.east[0].url, ["DRILL_ACC_MEM", "DRILL_ACC_ORDERS", "DRILL_ACC_R3"]))
        # the production R3 stream is shared with other tests: take the extra message out again
        asyncio.run(_purge_subject(a.east[0].url, R3, "acc.r3.after-drill"))


async def _purge_subject(url: str, stream: str, subject: str) -> None:
    async with await connect(ConnectOptions(servers=url)) as js:
        await js.api(f"STREAM.PURGE.{stream}", {"filter": subject}, stream=stream)


def test_drill_of_a_damaged_backup_fails_with_evidence_and_leaves_nothing(clean_west: Account, tmp_path: Path) -> None:
    a = clean_west
    archive = _drill_copy(a, tmp_path)
    repo = Repository.open(str(archive))
    entry = next(e for e in json.loads(repo.load_set(a.set_id))["streams"] if e["stream"] == ORDERS)
    data = archive / "data" / entry["backup_id"]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    data.write_bytes(bytes(raw))
    run = jsarchive(
        "drill", archive, "--cluster", "west", "-s", a.west[0].url, "-i", a.key, "--wait", RESTORE_WAIT,
        "--json", env=a.env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 4, run.stdout[-3000:] + run.stderr
    out = json.loads(run.stdout)
    assert out["ok"] is False and out["report"]["passed"] is False
    bad = {s["stream"]: s for s in out["report"]["streams"] if not s["ok"]}
    assert list(bad) == [ORDERS] and "restore failed" in bad[ORDERS]["problems"][0]
    assert (archive / out["report_key"]).is_file()
    assert _drill_streams(a.west[0].url) == []


def test_drill_refuses_before_touching_anything(account: Account, tmp_path: Path) -> None:
    a = account
    archive = _drill_copy(a, tmp_path)
    base = ["drill", archive, "-s", a.west[0].url, "-i", a.key]
    run = jsarchive(*base, env=a.env)
    assert run.returncode == 2 and "--cluster NAME or --tag TAG" in run.stderr
    run = jsarchive(*base, "--cluster", "west", "--prefix", "bad.prefix", env=a.env)
    assert run.returncode == 2 and "--prefix" in run.stderr
    run = jsarchive(*base, "--cluster", "west", a.set_id, "--latest", env=a.env)
    assert run.returncode == 2
    private, _public = _ed25519_pair(tmp_path)
    private.chmod(0o644)
    run = jsarchive(*base, "--cluster", "west", "--sign-key", private, env=a.env)
    assert run.returncode == 2 and "readable by other users" in run.stderr
    not_ed25519 = tmp_path / "rsa.pem"
    fd = os.open(not_ed25519, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as f:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        f.write(
            rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    run = jsarchive(*base, "--cluster", "west", "--sign-key", not_ed25519, env=a.env)
    assert run.returncode == 2 and "not an Ed25519 key" in run.stderr
    run = jsarchive(*base, "--cluster", "west", "--sign-key", tmp_path / "missing.pem", env=a.env)
    assert run.returncode == 2 and "does not exist" in run.stderr
    assert not (archive / "drills").exists()
    assert _drill_streams(a.west[0].url) == []
