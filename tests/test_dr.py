"""Disaster recovery on real clusters with spare servers: lost follower → peer-remove heals it; every replica lost →
restore from the archive. Plus the verdicts themselves on stream-info answers shaped like the server's.

Each scenario starts its own cluster (killing servers leaves it unusable for others) with a system account, and
kills servers by their own PID. Unauthenticated clients land in the APP account (``no_auth_user``), so the stream
helpers need no credentials; the system account is ``sys``/``sys``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, Placement, StreamConfig

from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.jetstream.embedded import EmbeddedServer, free_port, start_cluster
from pipeline.ops.dr import (
    EMPTIED,
    HEALING,
    HEALTHY,
    LOST,
    NEEDS_PEER_REMOVE,
    QUORUM_LOST,
    R1_LOST,
    ClusterView,
    LatestBackup,
    StatusReport,
    judge,
    plan_recovery,
)
from tests.settle import until
from tests.test_cluster import JSARCHIVE

pytestmark = pytest.mark.timeout(400)

ACCOUNTS = """accounts {
  SYS: { users: [ { user: sys, password: sys } ] }
  APP: { jetstream: enabled, users: [ { user: app, password: app } ] }
}
system_account: SYS
no_auth_user: app
"""
SYS = ("--system-user", "sys", "--system-password", "sys")


# -- verdicts on answers shaped like the server's (reference §4.2) ----------------------------------------------


def _info(leader: str | None, replicas: list[dict], messages: int = 100, last_seq: int = 100, r: int = 3) -> dict:
    cluster: dict = {"name": "c", "replicas": replicas}
    if leader:
        cluster["leader"] = leader
    return {
        "config": {"name": "S", "num_replicas": r},
        "state": {"messages": messages, "last_seq": last_seq},
        "cluster": cluster,
    }


def _rep(name: str, current: bool = True, active_s: float = 0.2, **kw: object) -> dict:
    return {"name": name, "current": current, "active": int(active_s * 1e9), **kw}


BACKUP = LatestBackup("ab" * 32, "2026-11-23T00:00:00.000000Z", 3600.0, messages=100, last_seq=100, replicas=3)


def test_verdict_healthy_and_lagging() -> None:
    assert judge("S", _info("a", [_rep("b"), _rep("c")])).verdict == HEALTHY
    h = judge("S", _info("a", [_rep("b"), _rep("c", current=False, lag=12)]))
    assert h.verdict == HEALING and "catching up: c" in h.detail
    assert [p.state for p in h.peers] == ["current", "current", "lagging"]


def test_verdict_dead_follower_judged_by_active_or_liveness_not_current() -> None:
    # G10: a dead follower still says current:true; 16 s without contact gives it away
    h = judge("S", _info("a", [_rep("b"), _rep("c", current=True, active_s=16.4)]))
    assert h.verdict == NEEDS_PEER_REMOVE and h.remove == ["c"]
    # with the system account's ping, a server that is gone is gone at once
    h = judge("S", _info("a", [_rep("b"), _rep("c", active_s=1.5)]), gone_servers={"c"})
    assert h.verdict == NEEDS_PEER_REMOVE and h.remove == ["c"]
    assert judge("S", _info("a", [_rep("b"), _rep("c", active_s=1.5)])).verdict == HEALTHY


def test_verdict_quorum_lost_compares_survivor_with_backup() -> None:
    info = _info(
        None,
        [_rep("e1", False, 0), _rep("e2", False, 0), _rep("e3", True, 3.4)],
        messages=80,
        last_seq=80,
    )
    h = judge("S", info, backup=BACKUP)
    assert h.verdict == QUORUM_LOST and h.remove == ["e1", "e2"]
    assert "e3" in h.detail and "last_seq 80" in h.detail and "last_seq 100" in h.detail
    assert "more than the survivor" in h.detail
    # two of three alive without a leader: an election, not a loss
    assert judge("S", _info(None, [_rep("e1"), _rep("e2"), _rep("e3", False, 0)])).verdict == HEALING


def test_verdict_lost_r1_lost_emptied() -> None:
    assert judge("S", None, backup=BACKUP).verdict == LOST
    assert judge("S", None).verdict == LOST
    r1 = LatestBackup("cd" * 32, "2026-11-23T00:00:00.000000Z", 60.0, messages=5, last_seq=5, replicas=1)
    assert judge("S", None, backup=r1).verdict == R1_LOST
    # The meta group may still answer for an assignment with no replica left (an R1 stream whose server was just
    # removed): nothing for a peer-remove to promote, so a restore, not "quorum lost".
    assert judge("S", _info(None, [], r=1)).verdict == R1_LOST
    gone = judge("S", _info(None, [_rep("e2", False, 0), _rep("e3", False, 0)]), gone_servers={"e2", "e3"})
    assert gone.verdict == LOST and gone.restore_required and "e2, e3" in gone.detail
    empty = _info("a", [_rep("b"), _rep("c")], messages=0, last_seq=0)
    assert judge("S", empty, backup=BACKUP).verdict == EMPTIED
    assert judge("S", empty).verdict == HEALTHY  # nothing to compare with
    purged = _info("a", [_rep("b"), _rep("c")], messages=0, last_seq=100)
    assert judge("S", purged, backup=BACKUP).verdict == HEALTHY  # a purge keeps last_seq


def test_verdict_shrunk_group_and_desired_peer_set_are_healing() -> None:
    assert judge("S", _info("a", [_rep("b")])).verdict == HEALING  # R3 with 2 peers (no spare yet)
    info = _info("a", [_rep("b"), _rep("c")])
    info["cluster"]["desired"] = {"status": {"description": "waiting for peer set to settle"}}
    h = judge("S", info)
    assert h.verdict == HEALING and "settle" in h.detail


def test_plan_orders_peer_removes_before_restores_and_names_what_blocks() -> None:
    streams = [
        judge("A", _info("a", [_rep("b"), _rep("x", active_s=30)])),
        judge("B", None, backup=BACKUP),
        judge("C", None),
    ]
    report = StatusReport("now", ClusterView(system=True, members=["a", "b", "x"], gone=["x"]), streams, "file:///a")
    p = plan_recovery(report, have_system=False)
    kinds = [(a.kind, a.target) for a in p.actions]
    assert kinds[0] == ("peer-remove", "x") and kinds.index(("restore", "B")) > kinds.index(("wait", "A"))
    assert "system account" in (p.actions[0].blocked or "")
    blocked = {a.target: a.blocked for a in p.actions if a.kind == "restore"}
    assert blocked["B"] is None and "no backup" in (blocked["C"] or "")
    report.archive = None  # no archive: restores are blocked, and the plan says why
    assert {a.target: a.blocked for a in plan_recovery(report, have_system=True).blocked} == {
        "B": "needs --archive URL",
        "C": "needs --archive URL",
    }
    assert not plan_recovery(StatusReport("now", ClusterView(system=True), [], None), have_system=True).actions


# -- real clusters ------------------------------------------------------------------------------------------------


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., list[EmbeddedServer]]]:
    started: list[EmbeddedServer] = []

    def make(size: int, tags: list[list[str]] | None = None) -> list[EmbeddedServer]:
        servers = start_cluster("c", size, tags=tags, accounts=ACCOUNTS, timeout=60)
        started.extend(servers)
        return servers

    yield make
    for s in started:
        s.cleanup()


def _urls(servers: list[EmbeddedServer]) -> str:
    return ",".join(s.url for s in servers)


def _lose(server: EmbeddedServer) -> None:
    """A server and its disk are gone: SIGKILL by PID and remove its store."""
    server.kill()
    shutil.rmtree(server.store_dir, ignore_errors=True)


async def _retrying(step, deadline_s: float = 20.0):  # noqa: ANN001, ANN202 - any coroutine function
    """Retry ``step`` while the cluster is still settling: a new stream's or consumer's leader is being elected,
    or its interest has not reached every server (503, no responders, 10005/10008 after a meta election)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await step()
        except (
            nats.js.errors.APIError,
            nats.js.errors.NoStreamResponseError,
            nats.errors.NoRespondersError,
            nats.errors.TimeoutError,
        ) as e:
            transient = not isinstance(e, nats.js.errors.APIError) or (
                e.err_code in (10005, 10008) or e.code in (503, None)
            )
            if not transient or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.3)


async def _fill_async(url: str, name: str, messages: int, placement: dict | None, replicas: int) -> None:
    """Unique JSON events on ``<name>.<n>`` subjects, and a durable that acked a third of them. Every step is
    idempotent (message ids dedupe a resent batch), so a step refused while the cluster settles is simply retried."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        tags = (placement or {}).get("tags")
        cfg = StreamConfig(
            name=name,
            subjects=[f"{name.lower()}.>"],
            num_replicas=replicas,
            placement=Placement(tags=tags) if tags else None,
        )
        await _retrying(lambda: js.add_stream(cfg))

        async def publish() -> None:
            acks = [
                await js.publish_async(
                    f"{name.lower()}.{i % 5}",
                    json.dumps({"id": i, "at": time.time_ns()}).encode(),
                    headers={"Nats-Msg-Id": f"{name}-{i}"},
                )
                for i in range(messages)
            ]
            await asyncio.gather(*acks)

        await _retrying(publish)
        await _retrying(
            lambda: js.add_consumer(name, ConsumerConfig(durable_name="worker", ack_policy=AckPolicy.EXPLICIT))
        )
        sub = await js.pull_subscribe_bind("worker", stream=name)
        left = messages // 3
        while left > 0:
            for m in await _retrying(lambda n=min(left, 500): sub.fetch(n, timeout=10)):
                await m.ack_sync()
                left -= 1
    finally:
        await nc.close()


def _fill(url: str, name: str, messages: int, placement: dict | None = None, replicas: int = 3) -> None:
    asyncio.run(_fill_async(url.split(",")[0], name, messages, placement, replicas))


async def _stream_info(url: str, name: str, timeout: float = 3.0) -> dict | None:
    async with await connect(ConnectOptions(servers=url)) as js:
        return await js.stream_info(name, timeout=timeout)


def _wait_current(url: str, name: str, replicas: int, deadline_s: float = 30.0) -> dict:
    def current(info: dict | None) -> bool:
        cl = (info or {}).get("cluster") or {}
        reps = cl.get("replicas") or []
        return bool(cl.get("leader")) and len(reps) == replicas - 1 and all(r.get("current") for r in reps)

    return until(lambda: asyncio.run(_stream_info(url, name)), current, f"{name} has all replicas current", deadline_s)


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([JSARCHIVE, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _json(p: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON (exit {p.returncode}): {p.stdout[-2000:]}\n{p.stderr[-3000:]}") from None


def _backup(url: str, stream: str, archive: Path, key: Path) -> None:
    p = _run("stream", "backup", stream, str(archive), "-s", url, "--identity", str(key), "--json")
    assert p.returncode == 0, p.stderr


def _streams(doc: dict) -> dict[str, dict]:
    return {s["stream"]: s for s in doc["streams"]}


def test_lost_follower_needs_peer_remove_and_recover_heals_it(
    make_cluster: Callable[..., list[EmbeddedServer]], tmp_path: Path, identity_file: tuple[Path, str]
) -> None:
    servers = make_cluster(5)
    url = _urls(servers)
    _fill(url, "DRA", 3_000)
    info = _wait_current(url, "DRA", 3)
    archive = tmp_path / "archive"
    _backup(url, "DRA", archive, identity_file[0])
    follower = info["cluster"]["replicas"][0]["name"]
    by_name = {s.spec.name: s for s in servers}
    _lose(by_name[follower])
    alive = _urls([s for s in servers if s.spec.name != follower])

    p = _run("dr", "status", "-s", alive, *SYS, "--archive", str(archive), "--json")
    assert p.returncode == 1, p.stderr
    doc = _json(p)
    assert doc["cluster"]["gone"] == [follower]
    dra = _streams(doc)["DRA"]
    assert dra["verdict"] == NEEDS_PEER_REMOVE and dra["remove"] == [follower]
    assert [x["state"] for x in dra["peers"] if x["name"] == follower] == ["gone"]
    assert dra["backup"]["messages"] == info["state"]["messages"]

    # the plan alone changes nothing
    p = _run("dr", "recover", "-s", alive, *SYS, "--json")
    assert p.returncode == 0, p.stderr
    plan = _json(p)
    assert plan["applied"] is False
    assert [(a["kind"], a["target"]) for a in plan["actions"]][0] == ("peer-remove", follower)
    assert _json(_run("dr", "status", "-s", alive, *SYS, "--json"))["cluster"]["gone"] == [follower]

    # without the system account the lost follower shows once its leader has not heard from it for --lost-after
    # (G10: `current` stays true for a while); peer-remove is then blocked, and nothing is done
    deadline = time.monotonic() + 40
    while True:
        dra = _streams(_json(_run("dr", "status", "-s", alive, "--json")))["DRA"]
        if dra["verdict"] == NEEDS_PEER_REMOVE or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert dra["verdict"] == NEEDS_PEER_REMOVE and dra["remove"] == [follower], dra
    p = _run("dr", "recover", "-s", alive, "--yes", "--json")
    assert p.returncode == 2 and "system account" in p.stderr, p.stderr

    p = _run("dr", "recover", "-s", alive, *SYS, "--yes", "--json")
    assert p.returncode == 0, p.stderr + p.stdout[-3000:]
    res = _json(p)
    assert res["ok"] and res["after"]["healthy"]
    assert {a["kind"]: a["outcome"] for a in res["actions"]} == {"peer-remove": "done", "wait": "done"}
    after = _wait_current(alive, "DRA", 3)
    names = {after["cluster"]["leader"], *(r["name"] for r in after["cluster"]["replicas"])}
    assert follower not in names and len(names) == 3
    assert after["state"]["messages"] == info["state"]["messages"]
    assert after["state"]["last_seq"] == info["state"]["last_seq"]


def test_all_replicas_lost_is_restored_from_the_archive(
    make_cluster: Callable[..., list[EmbeddedServer]], tmp_path: Path, identity_file: tuple[Path, str]
) -> None:
    # 7 servers: losing the 3 tagged "doomed" keeps the meta group's quorum (4 of 7)
    tags = [["rack:doomed"]] * 3 + [["rack:safe"]] * 4
    servers = make_cluster(7, tags)
    url = _urls(servers)
    _fill(url, "DRB", 4_000, placement={"tags": ["rack:doomed"]})
    _fill(url, "DRR1", 500, placement={"tags": ["rack:doomed"]}, replicas=1)
    _fill(url, "DRC", 1_000, placement={"tags": ["rack:safe"]})
    before = {n: _wait_current(url, n, r) for n, r in (("DRB", 3), ("DRR1", 1), ("DRC", 3))}
    archive = tmp_path / "archive"
    key = identity_file[0]
    for n in before:
        _backup(url, n, archive, key)
    for s in servers[:3]:
        _lose(s)
    alive = _urls(servers[3:])

    doc = _json(_run("dr", "status", "-s", alive, *SYS, "--archive", str(archive), "--json"))
    verdicts = {n: s["verdict"] for n, s in _streams(doc).items()}
    assert verdicts == {"DRB": LOST, "DRR1": R1_LOST, "DRC": HEALTHY}, doc
    assert doc["cluster"]["gone"] == sorted(s.spec.name for s in servers[:3])

    p = _run(
        "dr", "recover", "-s", alive, *SYS, "--archive", str(archive), "--identity", str(key),
        "--cluster", "c", "--wait", "60", "--yes", "--json",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr + p.stdout[-4000:]
    res = _json(p)
    done = {(a["kind"], a["target"]): a["outcome"] for a in res["actions"]}
    assert all(v == "done" for v in done.values()), res["actions"]
    assert {t for k, t in done if k == "peer-remove"} == {s.spec.name for s in servers[:3]}
    assert {t for k, t in done if k == "restore"} == {"DRB", "DRR1"}
    assert res["after"]["healthy"], res["after"]
    for n, r in (("DRB", 3), ("DRR1", 1), ("DRC", 3)):
        info = _wait_current(alive, n, r)
        assert info["state"]["messages"] == before[n]["state"]["messages"], n
        assert info["state"]["last_seq"] == before[n]["state"]["last_seq"], n
        assert info["state"]["consumer_count"] == 1, n


def test_quorum_lost_survivor_is_recovered_by_peer_remove(
    make_cluster: Callable[..., list[EmbeddedServer]], tmp_path: Path, identity_file: tuple[Path, str]
) -> None:
    """Leader and one follower lost, one replica survives: no backup needed, peer-remove makes it leader again."""
    servers = make_cluster(5)
    url = _urls(servers)
    _fill(url, "DRQ", 2_000)
    info = _wait_current(url, "DRQ", 3)
    archive = tmp_path / "archive"
    _backup(url, "DRQ", archive, identity_file[0])
    by_name = {s.spec.name: s for s in servers}
    doomed = [info["cluster"]["leader"], info["cluster"]["replicas"][0]["name"]]
    survivor = info["cluster"]["replicas"][1]["name"]
    for name in doomed:
        _lose(by_name[name])
    alive = _urls([s for s in servers if s.spec.name not in doomed])

    deadline = time.monotonic() + 40
    while True:  # the survivor answers once it has given up on an election (a few seconds)
        doc = _json(_run("dr", "status", "-s", alive, *SYS, "--archive", str(archive), "--json"))
        drq = _streams(doc)["DRQ"]
        if drq["verdict"] == QUORUM_LOST or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert drq["verdict"] == QUORUM_LOST, drq
    assert drq["remove"] == sorted(doomed) and drq["leader"] is None
    assert survivor in drq["detail"] and f"last_seq {info['state']['last_seq']}" in drq["detail"]
    assert not drq["restore_required"]

    res = _json(_run("dr", "recover", "-s", alive, *SYS, "--archive", str(archive), "--yes", "--json"))
    assert res["ok"], res["actions"]
    assert {a["kind"] for a in res["actions"]} == {"peer-remove", "note", "wait"}  # no restore: the survivor heals
    after = _wait_current(alive, "DRQ", 3)
    assert after["state"]["messages"] == info["state"]["messages"]
    assert survivor in {after["cluster"]["leader"], *(r["name"] for r in after["cluster"]["replicas"])}


def test_status_on_a_standalone_server_and_bad_input(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    asyncio.run(_fill_async(nats_server.url, "SOLO", 50, None, 1))
    doc = _json(_run("dr", "status", "-s", nats_server.url, "--json"))
    assert doc["healthy"] and _streams(doc)["SOLO"]["verdict"] == HEALTHY
    assert _streams(doc)["SOLO"]["detail"] == "standalone"
    p = _run("dr", "status", "-s", nats_server.url, "--stream", "NOPE")
    assert p.returncode == 3 and p.stderr.strip() == "jsarchive: error: no stream named NOPE in this account"
    # credentials that are not the system account's: one clear error, not a silent "everything is alive"
    p = _run("dr", "status", "-s", nats_server.url, "--system-user", "nobody", "--system-password", "x")
    assert p.returncode == 8 and "not for the system account" in p.stderr, p.stderr
    p = _run("dr", "status", "-s", f"nats://127.0.0.1:{free_port()}", "--timeout", "1")
    assert p.returncode == 7 and p.stderr.startswith("jsarchive: error: cannot connect"), p.stderr
    p = _run("dr", "recover", "-s", nats_server.url, "--system-password", "x")
    assert p.returncode == 2 and "--system-password needs --system-user" in p.stderr
    p = _run("dr", "status", "-s", nats_server.url, "--system-context", "no-such-context")
    assert p.returncode == 2 and "NATS context 'no-such-context' does not exist" in p.stderr, p.stderr
