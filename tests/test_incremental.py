"""Incremental backups and restores to a point of a chain (issue 17), on real nats-servers through the CLI.

A base and three deltas (one of them empty) of a stream that gains messages, loses one inside a delta's window and
whose durable acknowledges more between captures. Each point, restored into a second server, must equal the live
stream as it was when that point was taken: every message with its sequence, subject, headers, payload and
timestamp, the deletes, the state and the consumer's position. Then the ways a chain ends or breaks: a re-created
stream, ``--full-every``, a missing delta (verify and restore name the range), prune with chains, a V1 server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec
from tests.conftest import make_server
from tests.servers import V1_VERSIONS
from tests.test_bad_input import Run, cli_env, jsarchive, one_error

pytestmark = pytest.mark.timeout(400)

STREAM = "ORDERS"


def ok(run: Run) -> Run:
    assert run.returncode == 0, f"$ {' '.join(run.args)}\nexit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr
    return run


def backup(url: str, root: Path, env: dict, *extra: str) -> dict:
    run = ok(
        jsarchive("stream", "backup", STREAM, root, "--no-encrypt", "--json", *extra, env={**env, "NATS_URL": url})
    )
    return json.loads(run.stdout)["backup"]


def restore(url: str, root: Path, env: dict, *extra: str) -> Run:
    return jsarchive(
        "stream", "restore", root, STREAM, "--allow-unencrypted", "--json", *extra, env={**env, "NATS_URL": url}
    )


async def _publish(url: str, first: int, count: int, *, create: bool = False) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        if create:
            await js.add_stream(StreamConfig(name=STREAM, subjects=["orders.>"]))
            await js.add_consumer(STREAM, ConsumerConfig(durable_name="billing", ack_policy=AckPolicy.EXPLICIT))
        for i in range(first, first + count):
            await js.publish(f"orders.{i % 3}", f"order {i}".encode() * (1 + i % 5), headers={"n": str(i)})
    finally:
        await nc.close()


async def _ack(url: str, count: int) -> None:
    """The durable fetches and acknowledges ``count`` more messages (none left pending)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        sub = await js.pull_subscribe_bind("billing", stream=STREAM)
        done = 0
        while done < count:
            for m in await sub.fetch(count - done, timeout=5):
                await m.ack_sync()
                done += 1
        await sub.unsubscribe()
    finally:
        await nc.close()


async def _delete(url: str, seq: int) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_msg(STREAM, seq)
    finally:
        await nc.close()


async def _drop(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(STREAM)
    finally:
        await nc.close()


async def _live(url: str) -> dict:
    """What a restore must give back: every message (with its timestamp), the state, the durable's position."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(STREAM)
        st = info.state
        msgs = []
        for seq in range(st.first_seq, st.last_seq + 1):
            try:
                m = await js.get_msg(STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            msgs.append((m.seq, m.subject, dict(m.headers or {}), m.data, m.time))
        c = await js.consumer_info(STREAM, "billing")
        return {
            "messages": msgs,
            "state": (st.messages, st.first_seq, st.last_seq, st.num_deleted),
            "billing": (c.ack_floor.stream_seq, c.delivered.stream_seq, c.num_pending, c.num_ack_pending),
        }
    finally:
        await nc.close()


def live(url: str) -> dict:
    return asyncio.run(_live(url))


@pytest.fixture
def env(tmp_path: Path) -> dict:
    return cli_env(tmp_path)


def test_base_and_three_deltas_restore_each_point(nats_server, second_server, tmp_path, env):
    src, dst, root = nats_server.url, second_server.url, tmp_path / "archive"
    points: list[tuple[dict, dict]] = []

    asyncio.run(_publish(src, 1, 100, create=True))
    asyncio.run(_ack(src, 20))
    points.append((backup(src, root, env, "--incremental"), live(src)))
    asyncio.run(_publish(src, 101, 30))
    asyncio.run(_delete(src, 110))  # a delete inside the next delta's window stays a delete
    asyncio.run(_ack(src, 10))
    points.append((backup(src, root, env, "--incremental"), live(src)))
    points.append((backup(src, root, env, "--incremental"), live(src)))  # nothing new: an empty delta
    asyncio.run(_publish(src, 131, 25))
    asyncio.run(_delete(src, 140))
    asyncio.run(_ack(src, 5))
    points.append((backup(src, root, env, "--incremental"), live(src)))

    base = points[0][0]
    assert base["chain"]["parent"] is None and base["full_reason"], base
    for (prev, _), (cur, _) in zip(points, points[1:], strict=False):
        assert cur["chain"]["parent"] == prev["manifest_id"]
        assert cur["chain"]["id"] == base["backup_id"]
        assert cur["chain"]["first_seq"] == prev["chain"]["last_seq"] + 1
    assert [p["chain"]["last_seq"] for p, _ in points] == [100, 130, 130, 155]
    # a delta stores its own range only: the empty one no message, the others far less than the base
    assert points[2][0]["messages"] == 0
    assert points[1][0]["stored_bytes"] < base["stored_bytes"]
    # a delta's size is what it captured (headers and payloads of its range), not the whole stream's
    payloads = sum(len(m[3]) for m in points[1][1]["messages"] if m[0] > 100)
    assert payloads < points[1][0]["bytes"] < base["bytes"] and points[2][0]["bytes"] == 0

    for manifest, expected in points:
        ok(restore(dst, root, env, "--backup", manifest["manifest_id"]))
        assert live(dst) == expected, manifest["manifest_id"]
        asyncio.run(_drop(dst))

    # the newest point by default, restored from its chain of four captures
    ok(restore(dst, root, env))
    assert live(dst) == points[-1][1]
    asyncio.run(_drop(dst))

    # --until-seq inside the last delta: the stream as it was when its last sequence was 135
    ok(restore(dst, root, env, "--until-seq", "135"))
    got = live(dst)
    assert got["messages"] == [m for m in points[-1][1]["messages"] if m[0] <= 135]
    assert got["state"][2] == 135
    asyncio.run(_drop(dst))

    # --at a time between two captures: every message stored by then, the consumer as of the capture before it
    # (message times are read to the microsecond: T one microsecond later is after message 145's nanoseconds)
    t = next(m[4] for m in points[-1][1]["messages"] if m[0] == 145) + dt.timedelta(microseconds=1)
    run = ok(restore(dst, root, env, "--at", t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
    got = live(dst)
    assert got["messages"] == [m for m in points[-1][1]["messages"] if m[0] <= 145], json.loads(run.stdout)
    assert got["messages"][-1][0] == 145
    assert got["billing"][0] == points[2][1]["billing"][0]  # ack floor of the capture before T

    # ls says which backups are full and which are deltas of what
    listed = ok(jsarchive("ls", root, env=env)).stdout
    assert f"delta 101-130 after {base['manifest_id'][:12]}" in listed and " full" in listed, listed
    rows = json.loads(ok(jsarchive("ls", root, "--json", env=env)).stdout)
    rows = rows["backups"] if isinstance(rows, dict) else rows
    assert sorted(r["chain"]["last_seq"] for r in rows) == [100, 130, 130, 155]

    # cat of a delta reads the stream up to its point through the chain, with no server
    lines = ok(jsarchive("cat", root, points[1][0]["manifest_id"], env=env)).stdout.splitlines()
    assert [json.loads(x)["sequence"] for x in lines] == [m[0] for m in points[1][1]["messages"]]

    # verify sees one sound chain of four restore points
    out = json.loads(ok(jsarchive("verify", root, "--all", "--json", env=env)).stdout)
    chains = [link for link in out["links"] if link["kind"] == "chain"]
    assert len(chains) == 1 and chains[0]["ok"], chains


def test_recreated_stream_and_full_every_start_new_chains(nats_server, tmp_path, env):
    url, root = nats_server.url, tmp_path / "archive"
    asyncio.run(_publish(url, 1, 20, create=True))
    first = backup(url, root, env, "--incremental", "--full-every", "2")
    asyncio.run(_publish(url, 21, 5))
    second = backup(url, root, env, "--incremental", "--full-every", "2")
    assert second["chain"]["parent"] == first["manifest_id"]
    third = backup(url, root, env, "--incremental", "--full-every", "2")
    assert third["chain"]["parent"] is None and "--full-every 2" in third["full_reason"], third
    assert third["messages"] == 25

    asyncio.run(_drop(url))
    asyncio.run(_publish(url, 1, 7, create=True))
    fourth = backup(url, root, env, "--incremental")
    assert fourth["chain"]["parent"] is None and "re-created" in fourth["full_reason"], fourth
    assert fourth["messages"] == 7

    # the re-created stream is what the newest point restores
    asyncio.run(_drop(url))
    ok(restore(url, root, env))
    assert len(live(url)["messages"]) == 7


def test_missing_delta_is_a_hole_that_verify_and_restore_name(nats_server, second_server, tmp_path, env):
    src, dst, root = nats_server.url, second_server.url, tmp_path / "archive"
    asyncio.run(_publish(src, 1, 50, create=True))
    backup(src, root, env, "--incremental")
    asyncio.run(_publish(src, 51, 10))
    lost = backup(src, root, env, "--incremental")
    asyncio.run(_publish(src, 61, 10))
    backup(src, root, env, "--incremental")
    # the middle delta is lost: its manifest and its ref
    (root / "manifests" / lost["manifest_id"]).unlink()
    for ref in root.glob(f"refs/{STREAM}/*"):
        if lost["backup_id"] in ref.name:
            ref.unlink()

    run = jsarchive("verify", root, "--all", env=env)
    assert run.returncode == 4, run.stdout + run.stderr
    assert "51-60" in run.stdout + run.stderr

    run = jsarchive(
        "stream", "restore", root, STREAM, "--allow-unencrypted", "--no-progress", env={**env, "NATS_URL": dst}
    )
    message = one_error(run, 4)
    assert "51-60" in message and "--until-seq 50" in message, message
    # points before the hole still restore
    ok(restore(dst, root, env, "--until-seq", "50"))
    assert live(dst)["state"][:3] == (50, 1, 50)


def test_prune_keeps_what_a_kept_point_needs(nats_server, tmp_path, env):
    url, root = nats_server.url, tmp_path / "archive"
    asyncio.run(_publish(url, 1, 30, create=True))
    ids = [backup(url, root, env, "--incremental")["manifest_id"]]
    for first in (31, 41):
        asyncio.run(_publish(url, first, 10))
        ids.append(backup(url, root, env, "--incremental")["manifest_id"])

    out = json.loads(ok(jsarchive("prune", root, "--keep-last", "1", "--confirm", "--json", env=env)).stdout)
    kept = {b["manifest_id"]: b for b in out["backups"] if b["action"] == "keep"}
    assert set(kept) == set(ids), out
    assert any("needed by" in r for r in kept[ids[0]]["reasons"]), kept[ids[0]]

    # once a full backup is the one kept, the whole chain goes, and nothing of it is left behind
    full = backup(url, root, env)
    ok(jsarchive("prune", root, "--keep-last", "1", "--confirm", env=env))
    assert sorted(p.name for p in (root / "manifests").iterdir()) == [full["manifest_id"]]
    asyncio.run(_drop(url))
    ok(restore(url, root, env))
    assert len(live(url)["messages"]) == 50


def test_incremental_is_refused_on_a_v1_server(tmp_path, env):
    with make_server(V1_VERSIONS[0], tmp_path / "old") as old:
        asyncio.run(_publish(old.url, 1, 5, create=True))
        run = jsarchive(
            "stream",
            "backup",
            STREAM,
            tmp_path / "archive",
            "--no-encrypt",
            "--incremental",
            "--no-progress",
            env={**env, "NATS_URL": old.url},
        )
        message = one_error(run, 8)
        assert "--incremental" in message and "2.15" in message
        assert not (tmp_path / "archive" / "manifests").exists() or not any(
            (tmp_path / "archive" / "manifests").iterdir()
        )


def test_account_backup_incremental_and_restore(nats_server, second_server, tmp_path, env):
    src, dst, root = nats_server.url, second_server.url, tmp_path / "archive"
    asyncio.run(_publish(src, 1, 40, create=True))
    first = json.loads(
        ok(
            jsarchive(
                "account", "backup", root, "--incremental", "--no-encrypt", "--json", env={**env, "NATS_URL": src}
            )
        ).stdout
    )
    asyncio.run(_publish(src, 41, 15))
    second = json.loads(
        ok(
            jsarchive(
                "account", "backup", root, "--incremental", "--no-encrypt", "--json", env={**env, "NATS_URL": src}
            )
        ).stdout
    )
    first, second = first["account"], second["account"]
    (s1,), (s2,) = first["streams"], second["streams"]
    envelope = json.loads((root / "manifests" / s2["manifest_id"]).read_bytes())
    assert envelope["chain"]["parent"] == s1["manifest_id"], envelope.get("chain")
    assert (envelope["chain"]["first_seq"], envelope["chain"]["last_seq"]) == (41, 55)
    expected = live(src)
    ok(
        jsarchive(
            "account", "restore", root, second["set_id"], "--allow-unencrypted", "--json", env={**env, "NATS_URL": dst}
        )
    )
    assert live(dst) == expected


def test_drill_restores_the_newest_point_of_each_chain(nats_server, tmp_path, env):
    url, root = nats_server.url, tmp_path / "archive"
    run_env = {**env, "NATS_URL": url}
    asyncio.run(_publish(url, 1, 40, create=True))
    ok(jsarchive("account", "backup", root, "--incremental", "--no-encrypt", env=run_env))
    asyncio.run(_publish(url, 41, 25))
    ok(jsarchive("account", "backup", root, "--incremental", "--no-encrypt", env=run_env))
    with EmbeddedServer(ServerSpec(name="drill", tags=["env:drill"]), workdir=tmp_path / "drill") as target:
        drill = ["drill", root, "--latest", "--tag", "env:drill", "--allow-unencrypted", "--json"]
        run = ok(jsarchive(*drill, env={**env, "NATS_URL": target.url}, timeout=180))
    report = json.loads(run.stdout)["report"]
    assert report["passed"], report
    (s,) = report["streams"]
    assert s["got"]["messages"] == s["expected"]["messages"] == 65, s
    assert s["rpo_s"] >= 0


def test_prune_keeps_the_base_a_locked_delta_needs(aws_env, moto, s3, lock_bucket, nats_server, tmp_path):
    """A delta under Object Lock stays (the lock), and so does the base it cannot be restored without (the chain),
    though the policy keeps neither; the unlocked full backup after them is what the policy keeps."""
    url, archive = nats_server.url, f"s3://{lock_bucket}/arch"
    env = {**cli_env(tmp_path), "AWS_ENDPOINT_URL": moto.endpoint}
    asyncio.run(_publish(url, 1, 30, create=True))
    base = backup(url, archive, env, "--incremental")
    asyncio.run(_publish(url, 31, 10))
    delta = backup(url, archive, env, "--incremental", "--lock-mode", "GOVERNANCE", "--retain-days", "1")
    assert delta["chain"]["parent"] == base["manifest_id"]
    backup(url, archive, env)  # a full backup of its own: the newest

    out = json.loads(ok(jsarchive("prune", archive, "--keep-last", "1", "--confirm", "--json", env=env)).stdout)
    plan = {b["manifest_id"]: b for b in out["backups"]}
    assert plan[delta["manifest_id"]]["action"] == "locked" and not plan[delta["manifest_id"]]["deleted"]
    kept = plan[base["manifest_id"]]
    assert kept["action"] == "keep" and not kept["deleted"], kept
    assert any(r.startswith("needed by") for r in kept["reasons"]), kept

    asyncio.run(_drop(url))
    ok(restore(url, archive, env, "--backup", delta["manifest_id"]))
    assert live(url)["state"][:3] == (40, 1, 40)


def test_a_delta_committed_without_its_ref_is_captured_again(nats_server, second_server, tmp_path, env):
    """A crash between a delta's manifest and its ref (the last step of a commit) leaves a manifest no ref names.
    The next incremental backup starts from the newest listed point, so it captures that range again: the archive
    then holds two children of one point, which verify accepts and restore resolves to the newest."""
    src, dst, root = nats_server.url, second_server.url, tmp_path / "archive"
    asyncio.run(_publish(src, 1, 30, create=True))
    base = backup(src, root, env, "--incremental")
    asyncio.run(_publish(src, 31, 10))
    orphan = backup(src, root, env, "--incremental")
    for ref in root.glob(f"refs/{STREAM}/*{orphan['backup_id']}*"):
        ref.unlink()
    asyncio.run(_publish(src, 41, 5))
    again = backup(src, root, env, "--incremental")
    assert again["chain"]["parent"] == base["manifest_id"] and again["chain"]["first_seq"] == 31, again["chain"]

    out = json.loads(ok(jsarchive("verify", root, "--all", "--json", env=env)).stdout)
    assert [link["ok"] for link in out["links"] if link["kind"] == "chain"] == [True], out["links"]
    expected = live(src)
    ok(restore(dst, root, env))
    assert live(dst) == expected
