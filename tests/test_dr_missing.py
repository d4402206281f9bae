"""Disaster recovery sees what the cluster lacks: streams the archive expects (``missing``), restores that never
finished (``partial-restore``), and restores whose placement no live server can take (a blocked step, not a failed
``--yes``).

The rules are tested on plain dicts; then one standalone server with a system account carries the missing and
partial-restore scenarios end to end, and one three-server cluster (one server lost) carries the pinned placement
and the failed restore that must leave the stream ``missing`` for the next recover.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from pipeline.archive.repository import Repository
from pipeline.format import marks
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec, start_cluster
from pipeline.ops.dr import (
    HEALTHY,
    LOST,
    MISSING,
    PARTIAL_RESTORE,
    R1_LOST,
    ClusterView,
    LatestBackup,
    LiveServer,
    NewestSet,
    StatusReport,
    StreamHealth,
    expected_missing,
    judge,
    placement_problem,
    plan_recovery,
)
from tests.test_dr import ACCOUNTS, SYS, _fill_async, _json, _lose, _run, _streams, _urls, _wait_current

pytestmark = pytest.mark.timeout(400)


def _b(created: str, stream: str = "", replicas: int = 1) -> LatestBackup:
    return LatestBackup("ef" * 32, created, 60.0, messages=10, last_seq=10, replicas=replicas, stream=stream)


# -- the rules ----------------------------------------------------------------------------------------------------


def test_partial_restore_verdict_from_the_mark_in_the_stream_config() -> None:
    cfg = marks.stamp({"name": "S", "num_replicas": 1, "metadata": {"team": "x"}}, "r" * 24, "ab" * 32)
    info = {"config": cfg, "state": {"messages": 7, "last_seq": 7}}
    h = judge("S", info)
    assert h.verdict == PARTIAL_RESTORE and h.restore_required
    assert marks.mark_of(info).describe() in h.detail  # type: ignore[union-attr]
    assert h.mark is not None and h.mark["restore_id"] == "r" * 24 and h.messages == 7
    # the completed mark is provenance, not a problem; other metadata alone is no mark
    done = marks.stamp(cfg, "r" * 24, "ab" * 32, state=marks.COMPLETE)
    assert judge("S", {"config": done, "state": {"messages": 7, "last_seq": 7}}).verdict == HEALTHY
    assert judge("S", {"config": {"name": "S", "metadata": {"team": "x"}}, "state": {}}).verdict == HEALTHY


def test_missing_rule_newest_set_members_and_backups_newer_than_it() -> None:
    newest = NewestSet("12" * 32, "2026-11-23T10:00:00.000000Z", "2026-11-23T10:05:00.000000Z", {"A": "0" * 64})
    backups = {
        "A": _b("2026-11-23T10:01:00.000000Z"),
        "OLD": _b("2026-10-01T00:00:00.000000Z"),  # deleted on purpose before the set: not expected
        "NEW": _b("2026-11-23T11:00:00.000000Z"),  # backed up after the set started: expected
        "HERE": _b("2026-11-23T11:00:00.000000Z"),
    }
    why = expected_missing({"HERE"}, backups, newest)
    assert sorted(why) == ["A", "NEW"]
    assert "newest account backup set 121212121212" in why["A"] and "--ignore A" in why["A"]
    assert "newer than the newest account backup set" in why["NEW"]
    # a set member with no refs left is still expected (the set names its manifest)
    assert "GONE" in expected_missing(set(), {}, NewestSet("12" * 32, "t", "t", {"GONE": "0" * 64}))
    # no sets: every backed-up stream the cluster lacks
    assert sorted(expected_missing({"HERE"}, backups, None)) == ["A", "NEW", "OLD"]
    assert "no account backup sets" in expected_missing(set(), backups, None)["OLD"]


def test_placement_problem_cluster_tags_and_replicas() -> None:
    live = [LiveServer("c-2", "c", ["rack:safe"]), LiveServer("c-3", "c", ["Rack:Safe", "az:2"])]
    assert placement_problem({"num_replicas": 1, "placement": {"tags": ["rack:doomed"]}}, live, "c").why.startswith(
        "placement tags rack:doomed: no live server in cluster c has them all"
    )
    assert placement_problem({"num_replicas": 2, "placement": {"tags": ["rack:safe"]}}, live, "c") is None
    p = placement_problem({"num_replicas": 3, "placement": {"tags": ["rack:safe"]}}, live, "c")
    assert p is not None and p.fits == 2 and "--replicas 2" in p.fix(moved=False)
    p = placement_problem({"num_replicas": 1, "placement": {"cluster": "east"}}, live, "c")
    assert p is not None and "no live server is in it (live clusters: c)" in p.why and "--cluster/--tag" in p.fix(False)
    assert placement_problem({"num_replicas": 1, "placement": {"tags": ["az:2", "rack:safe"]}}, live, "c") is None
    # without placement the stream lands in the client's cluster: only its servers count
    assert placement_problem({"num_replicas": 2}, live, "other") is not None
    assert placement_problem({"num_replicas": 2}, live, "c") is None


def test_plan_restores_missing_without_delete_and_blocks_a_renamed_partial() -> None:
    info = {"config": marks.stamp({"name": "DRILL_B"}, "q" * 24, "cd" * 32), "state": {}}
    partial = judge("DRILL_B", info, backup=_b("2026-11-23T10:00:00.000000Z", stream="B"))
    absent = StreamHealth(
        "A", MISSING, "not in the cluster", backup=_b("2026-11-23T10:00:00.000000Z", "A"), listed=False
    )
    # listed by the meta group, but STREAM.INFO answers "not found": its listing is deleted first
    ghost = judge("G", None, backup=_b("2026-11-23T10:00:00.000000Z", "G"), not_found=True)
    assert ghost.verdict == MISSING and ghost.listed and "no server holds it" in ghost.detail
    assert judge("G", None, not_found=True).verdict == LOST  # no backup: nothing says it should exist
    streams = [absent, partial, ghost]
    p = plan_recovery(StatusReport("now", ClusterView(system=True), streams, "file:///a"), have_system=True)
    by = {a.target: a for a in p.actions}
    assert by["A"].detail.startswith("restore backup efefefefefef") and not by["A"].blocked
    assert by["G"].detail.startswith("delete the stale listing, then restore backup") and not by["G"].blocked
    assert "nats stream rm DRILL_B -f" in (by["DRILL_B"].blocked or "") and "--ignore DRILL_B" in by["DRILL_B"].blocked


# -- one standalone server with a system account ------------------------------------------------------------------


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(ServerSpec(name="solo", accounts=ACCOUNTS), workdir=tmp_path / "nats") as srv:
        yield srv


async def _admin(url: str, *, delete: tuple[str, ...] = (), partial: dict[str, tuple[str, int]] | None = None) -> None:
    """Delete streams; create streams that carry an in-progress restore mark (name -> (backup id, messages))."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        for name in delete:
            await js.delete_stream(name)
        for name, (backup, count) in (partial or {}).items():
            meta = marks.stamp({}, marks.new_restore_id(), backup)["metadata"]
            await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"], metadata=meta))
            for i in range(count):
                await js.publish(f"{name.lower()}.{i}", b"half")
    finally:
        await nc.close()


def _ok(p, what: str) -> dict:  # noqa: ANN001 - a CompletedProcess
    assert p.returncode == 0, f"{what}: exit {p.returncode}\n{p.stderr[-3000:]}\n{p.stdout[-3000:]}"
    return _json(p)


def test_missing_and_partial_restores_on_one_server(
    solo: EmbeddedServer, tmp_path: Path, identity_file: tuple[Path, str]
) -> None:
    url, key, archive = solo.url, str(identity_file[0]), str(tmp_path / "archive")
    fill = {"OLD": 20, "A": 50, "B": 40, "D": 30, "E": 25}
    for name in ("OLD", "A", "B"):
        asyncio.run(_fill_async(url, name, fill[name], None, 1))
    _ok(_run("stream", "backup", "OLD", archive, "-s", url, "-i", key, "--json"), "backup OLD")
    asyncio.run(_admin(url, delete=("OLD",)))  # deleted on purpose before the account backup: never missing
    _ok(_run("account", "backup", archive, "-s", url, "-i", key, "--json"), "account backup")
    for name in ("D", "E"):
        asyncio.run(_fill_async(url, name, fill[name], None, 1))
        _ok(_run("stream", "backup", name, archive, "-s", url, "-i", key, "--json"), f"backup {name}")
    repo = Repository.open(archive)
    mid = {n: repo.latest(n).id for n in ("B", "E")}
    # A (in the set) and D (backed up after it) are lost; E is left half restored, P is a drill's half restore of B
    asyncio.run(_admin(url, delete=("A", "D", "E"), partial={"E": (mid["E"], 3), "P": (mid["B"], 2)}))

    p = _run("dr", "status", "-s", url, *SYS, "--archive", archive, "--json")
    assert p.returncode == 1, p.stderr
    doc = _json(p)
    rows = _streams(doc)
    assert {n: s["verdict"] for n, s in rows.items()} == {
        "A": MISSING,
        "B": HEALTHY,
        "D": MISSING,
        "E": PARTIAL_RESTORE,
        "P": PARTIAL_RESTORE,
    }, doc
    assert "newest account backup set" in rows["A"]["detail"] and rows["A"]["backup"]["messages"] == 50
    assert "newer than the newest account backup set" in rows["D"]["detail"]
    assert (
        rows["E"]["backup"]["manifest_id"] == mid["E"]
        and f"partial restore of backup {mid['E'][:12]}" in (rows["E"]["detail"])
    )
    assert doc["healthy"] is False and doc["counts"][MISSING] == 2 and doc["counts"][PARTIAL_RESTORE] == 2
    # keyless, archive-less status still sees the partial restores; --stream may name a missing stream
    p = _run("dr", "status", "-s", url, "--json")
    assert p.returncode == 1 and _streams(_json(p))["E"]["verdict"] == PARTIAL_RESTORE
    p = _run("dr", "status", "-s", url, "--archive", archive, "--stream", "A", "--json")
    assert p.returncode == 1 and [s["verdict"] for s in _json(p)["streams"]] == [MISSING], p.stderr

    base = ["dr", "recover", "-s", url, "--archive", archive, "-i", key, "--json"]
    # the renamed partial blocks the plan with the command that removes it
    p = _run(*base, *SYS)
    assert p.returncode == 2, p.stderr
    acts = {a["target"]: a for a in _json(p)["actions"]}
    assert "nats stream rm P -f" in (acts["P"]["blocked"] or "")
    assert {t for t, a in acts.items() if a["kind"] == "restore" and not a["blocked"]} == {"A", "D", "E"}
    assert acts["E"]["detail"].startswith("delete the partial restore, then restore backup")
    assert acts["A"]["detail"].startswith("restore backup")
    # --replicas beyond the live servers is blocked with the count that fits; no key: blocked, not a failed --yes
    p = _run(*base, *SYS, "--ignore", "P", "--replicas", "3")
    assert p.returncode == 2
    blocked = {a["target"]: a["blocked"] for a in _json(p)["actions"] if a["blocked"]}
    assert (
        set(blocked) == {"A", "D", "E"} and "R3 needs 3 live servers" in blocked["A"] and "--replicas 1" in blocked["A"]
    )
    p = _run("dr", "recover", "-s", url, "--archive", archive, "--ignore", "P", "--json", *SYS)
    assert p.returncode == 2 and all("cannot be restored" in a["blocked"] for a in _json(p)["actions"]), p.stdout
    # without the system account the placement is not checked, and the plan says so
    plan = _ok(_run(*base, "--ignore", "P"), "plan without the system account")
    assert any("placement was not checked" in w for w in plan["warnings"]), plan["warnings"]

    res = _ok(_run(*base, *SYS, "--ignore", "P", "--yes"), "recover")
    assert {a["target"]: a["outcome"] for a in res["actions"]} == {"A": "done", "D": "done", "E": "done"}
    assert res["after"]["healthy"] and res["after"]["ignored"] == ["P"]
    for name in ("A", "D", "E"):
        info = _wait_current(url, name, 1)
        assert info["state"]["messages"] == fill[name], name
        assert not marks.is_partial(info), name
    p = _run("dr", "status", "-s", url, "--archive", archive, "--ignore", "P", "--json")
    assert p.returncode == 0 and _json(p)["healthy"], p.stdout
    assert _run("dr", "status", "-s", url, "--archive", archive).returncode == 1  # P is still there


# -- a cluster that lost the server an R1 backup is pinned to ----------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[list[EmbeddedServer]]:
    servers = start_cluster("c", 3, tags=[["rack:doomed"], ["rack:safe"], ["rack:safe"]], accounts=ACCOUNTS, timeout=60)
    try:
        yield servers
    finally:
        for s in servers:
            s.cleanup()


def _corrupt_data(archive: Path, stream: str) -> Callable[[], None]:
    """Flip bytes inside the backup's data object, keeping its size: the plan's checks pass, the restore fails.
    Returns what puts the good bytes back."""
    m = Repository.open(str(archive)).latest(stream)
    path = archive / m.data_object
    good = path.read_bytes()
    raw = bytearray(good)
    mid = len(raw) // 2
    raw[mid : mid + 16] = bytes(b ^ 0xFF for b in raw[mid : mid + 16])
    path.write_bytes(bytes(raw))
    return lambda: path.write_bytes(good)


def test_pinned_placement_is_blocked_and_a_failed_restore_stays_missing(
    cluster: list[EmbeddedServer], tmp_path: Path, identity_file: tuple[Path, str]
) -> None:
    url = _urls(cluster)
    key, archive = str(identity_file[0]), tmp_path / "archive"
    for name, count in (("R1A", 300), ("R1B", 200)):
        asyncio.run(_fill_async(cluster[0].url, name, count, {"tags": ["rack:doomed"]}, 1))
        _wait_current(url, name, 1)
        _ok(_run("stream", "backup", name, str(archive), "-s", url, "-i", key, "--json", timeout=120), f"backup {name}")
    _lose(cluster[0])
    alive = _urls(cluster[1:])
    base = ["dr", "recover", "-s", alive, *SYS, "--archive", str(archive), "-i", key, "--json"]

    # (b) both backups are pinned to the lost server's tag: blocked, naming the flags that fix it
    deadline = time.monotonic() + 30
    while True:
        p = _run(*base)
        doc = _json(p)
        if doc["status"]["cluster"]["gone"] == ["c-1"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert p.returncode == 2, p.stderr
    assert {s["stream"]: s["verdict"] for s in doc["status"]["streams"]} == {"R1A": R1_LOST, "R1B": R1_LOST}
    blocked = {a["target"]: a["blocked"] for a in doc["actions"] if a["kind"] == "restore"}
    for name in ("R1A", "R1B"):
        assert "the backed-up placement: placement tags rack:doomed" in blocked[name], blocked
        assert "--cluster/--tag" in blocked[name] and "c-2: rack:safe" in blocked[name]
    p = _run(*base, "--yes")
    assert p.returncode == 2 and "--cluster/--tag" in p.stderr, p.stderr
    assert _json(_run("dr", "status", "-s", alive, *SYS, "--json"))["cluster"]["gone"] == ["c-1"]  # nothing done
    # a live server's tag makes it runnable; --replicas is held against the servers that tag matches
    plan = _ok(_run(*base, "--tag", "rack:safe"), "plan with --tag")
    assert not [a for a in plan["actions"] if a["blocked"]] and plan["warnings"] == []
    p = _run(*base, "--tag", "rack:safe", "--replicas", "3")
    assert p.returncode == 2 and all("--replicas 2" in a["blocked"] for a in _json(p)["actions"] if a["blocked"])

    # (a) R1A's backup is damaged (size intact): the recover proves the replacement first (deep verify), so the lost
    # stream is not deleted for a restore that cannot succeed; status still reports it and the next plan retries
    repair = _corrupt_data(archive, "R1A")
    p = _run(*base, "--tag", "rack:safe", "--wait", "30", "--yes")
    assert p.returncode == 1, p.stderr + p.stdout[-3000:]
    res = _json(p)
    assert res["ok"] is False and res["error"]["exit_code"] == 1 and "restore R1A" in res["error"]["message"]
    outcome = {(a["kind"], a["target"]): a["outcome"] for a in res["actions"]}
    assert outcome == {("peer-remove", "c-1"): "done", ("restore", "R1A"): "failed", ("restore", "R1B"): "done"}
    failed = next(a for a in res["actions"] if a["target"] == "R1A")
    assert "deep verification" in failed["message"] and "not touched" in failed["message"], failed
    p = _run("dr", "status", "-s", alive, *SYS, "--archive", str(archive), "--json")
    assert p.returncode == 1, p.stderr
    doc = _json(p)
    assert {n: s["verdict"] for n, s in _streams(doc).items()} == {"R1A": R1_LOST, "R1B": HEALTHY}, doc
    assert doc["cluster"]["gone"] == [] and not doc["healthy"]
    # and the next recover plans its restore again (still pinned: only with the live tag)
    plan = _ok(_run(*base, "--tag", "rack:safe"), "second plan")
    assert [(a["kind"], a["target"], a["blocked"]) for a in plan["actions"]] == [("restore", "R1A", None)]
    p = _run(*base)
    assert p.returncode == 2 and "rack:doomed" in (_json(p)["actions"][0]["blocked"] or "")
    # with the data object readable again, the second recover takes it and everything is healthy
    repair()
    res = _ok(_run(*base, "--tag", "rack:safe", "--wait", "30", "--yes"), "second recover")
    assert res["ok"] and res["after"]["healthy"], res
    assert _wait_current(alive, "R1A", 1)["state"]["messages"] == 300
