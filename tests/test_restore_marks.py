"""A restore only ever deletes what it created: the restore mark (pipeline/format/marks.py) on real servers.

- a restore marks its stream in-progress, then complete with the backup's id (provenance), on V2 and V1 servers;
- a stream left in-progress (a killed restore) is refused by name with the command that removes it, untouched;
- cleanup never deletes a stream that does not carry this run's mark;
- two restores of one stream at once: one wins, the other exits 6 and touches nothing;
- a restore killed with SIGKILL mid-way leaves a stream marked in-progress, which the next restore names.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.flows.restore import RestoreOptions, _remove_partial, restore_stream
from pipeline.format import marks
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.keys.keyring import KeyRing
from tests.conftest import make_server
from tests.streams import fill_stream, read_messages
from tests.test_bad_input import JSARCHIVE, cli_env, fill_random, jsarchive, one_error

pytestmark = pytest.mark.timeout(300)


async def _info(url: str, name: str) -> dict | None:
    async with await connect(ConnectOptions(servers=url)) as js:
        return await js.stream_info(name)


def _backup(url: str, archive: Path, keyring: KeyRing, stream: str = "ORDERS") -> str:
    res = backup_stream(
        BackupOptions(stream=stream, url=str(archive), connect=ConnectOptions(servers=url), keys=keyring)
    )
    return res.manifest_id


@pytest.mark.parametrize("version", [None, "2.14.6"], ids=["v2-2.15", "v1-2.14"])
def test_restore_marks_its_stream_with_provenance(version, tmp_path: Path, keyring: KeyRing) -> None:
    with make_server(version, tmp_path / "a", "a") as a, make_server(version, tmp_path / "b", "b") as b:
        asyncio.run(fill_stream(a.url, messages=2_000))
        mid = _backup(a.url, tmp_path / "archive", keyring)
        r = restore_stream(
            RestoreOptions(
                url=str(tmp_path / "archive"), stream="ORDERS", connect=ConnectOptions(servers=b.url), keys=keyring
            )
        )
        info = asyncio.run(_info(b.url, "ORDERS"))
        mark = marks.mark_of(info)
        assert mark is not None, info["config"].get("metadata")
        assert (mark.restore_id, mark.backup, mark.state) == (r.restore_id, mid, marks.COMPLETE)
        assert not marks.is_partial(info)
        assert mark.describe().startswith(f"restored from backup {mid[:12]}")
        assert asyncio.run(read_messages(b.url, "ORDERS")) == asyncio.run(read_messages(a.url, "ORDERS"))


async def _create_marked(url: str, name: str, state: str, restore_id: str = "deadbeef") -> None:
    nc = await nats.connect(url)
    try:
        meta = {
            marks.RESTORE_ID: restore_id,
            marks.RESTORE_BACKUP: "ab" * 32,
            marks.RESTORE_STATE: state,
            marks.RESTORE_AT: "2026-12-01T00:00:00Z",
        }
        await nc.jetstream().add_stream(StreamConfig(name=name, subjects=["orders.>"], metadata=meta))
        await nc.jetstream().publish("orders.x", b"someone else's data")
    finally:
        await nc.close()


def test_a_partial_restore_is_named_and_left_alone(nats_server, second_server, tmp_path: Path, keyring) -> None:
    asyncio.run(fill_stream(nats_server.url, messages=2_000))
    _backup(nats_server.url, tmp_path / "archive", keyring)
    asyncio.run(_create_marked(second_server.url, "ORDERS", marks.IN_PROGRESS))
    key = tmp_path / "backup.key"
    run = jsarchive(
        "stream",
        "restore",
        tmp_path / "archive",
        "ORDERS",
        "-s",
        second_server.url,
        "-i",
        key,
        env=cli_env(tmp_path),
    )
    msg = one_error(run, 6, "partial restore", "nats stream rm ORDERS -f")
    assert "deadbeef" in msg
    info = asyncio.run(_info(second_server.url, "ORDERS"))
    assert info is not None and info["state"]["messages"] == 1  # untouched


def test_cleanup_never_deletes_a_stream_without_this_runs_mark(nats_server) -> None:
    async def go() -> tuple[str, str, dict | None, dict | None]:
        await _create_marked(nats_server.url, "THEIRS", marks.IN_PROGRESS, restore_id="other-run")
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(StreamConfig(name="PLAIN", subjects=["plain.>"]))
        await nc.close()
        async with await connect(ConnectOptions(servers=nats_server.url)) as js:
            a = await _remove_partial(js, "THEIRS", "this-run")
            b = await _remove_partial(js, "PLAIN", "this-run")
            return a, b, await js.stream_info("THEIRS"), await js.stream_info("PLAIN")

    a, b, theirs, plain = asyncio.run(go())
    assert "left untouched" in a and "other-run" in a
    assert "left untouched" in b and "no jsarchive restore mark" in b
    assert theirs is not None and plain is not None


def test_two_restores_of_one_stream_at_once(nats_server, second_server, tmp_path: Path, keyring) -> None:
    asyncio.run(fill_random(nats_server.url, "ORDERS", 20_000, 1024))
    mid = _backup(nats_server.url, tmp_path / "archive", keyring)
    env = cli_env(tmp_path)
    argv = [
        JSARCHIVE,
        "stream",
        "restore",
        str(tmp_path / "archive"),
        "ORDERS",
        "-s",
        second_server.url,
        "-i",
        str(tmp_path / "backup.key"),
        "--json",
        "--no-progress",
    ]
    procs = [
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    codes = sorted(p.returncode for p in procs)
    detail = "\n".join(f"exit {p.returncode}\n{o}\n{e}" for p, (o, e) in zip(procs, outs, strict=True))
    assert codes == [0, 6], detail
    loser = next(e for p, (_o, e) in zip(procs, outs, strict=True) if p.returncode == 6)
    assert "Traceback" not in loser, detail
    info = asyncio.run(_info(second_server.url, "ORDERS"))
    assert info is not None and info["state"]["messages"] == 20_000, detail
    mark = marks.mark_of(info)
    assert mark is not None and mark.state == marks.COMPLETE and mark.backup == mid


def test_a_killed_restore_leaves_a_marked_partial_stream(nats_server, second_server, tmp_path: Path, keyring):
    asyncio.run(fill_random(nats_server.url, "ORDERS", 60_000, 1024))
    _backup(nats_server.url, tmp_path / "archive", keyring)
    env = cli_env(tmp_path)
    argv = [
        JSARCHIVE,
        "stream",
        "restore",
        str(tmp_path / "archive"),
        "ORDERS",
        "-s",
        second_server.url,
        "-i",
        str(tmp_path / "backup.key"),
        "--no-progress",
        "--chunk-size",
        "64KiB",
        "--in-flight",
        "1",
    ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        seen = None
        while time.monotonic() < deadline and proc.poll() is None:
            seen = asyncio.run(_info(second_server.url, "ORDERS"))
            if seen and seen["state"]["messages"] > 0:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the restore finished before it could be killed: make the stream bigger"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    time.sleep(6)  # the server's stall watchdog (5 s) ends its side of the abandoned restore
    info = asyncio.run(_info(second_server.url, "ORDERS"))
    assert info is not None
    assert info["state"]["messages"] < 60_000
    assert marks.is_partial(info), info["config"].get("metadata")
    run = jsarchive(
        "stream",
        "restore",
        tmp_path / "archive",
        "ORDERS",
        "-s",
        second_server.url,
        "-i",
        tmp_path / "backup.key",
        env=env,
    )
    one_error(run, 6, "partial restore", "nats stream rm ORDERS -f")


def test_the_mark_keeps_other_metadata_and_ignores_malformed_ones() -> None:
    cfg = {"name": "S", "metadata": {"owner": "team-a", marks.RESTORE_STATE: "stale"}}
    stamped = marks.stamp(cfg, "rid", "ab" * 32)
    assert stamped["metadata"]["owner"] == "team-a" and cfg["metadata"][marks.RESTORE_STATE] == "stale"  # a copy
    assert marks.carries({"config": stamped}, "rid") and not marks.carries({"config": stamped}, "other")
    assert marks.is_partial({"config": stamped})
    assert not marks.is_partial({"config": marks.stamp(cfg, "rid", "ab" * 32, marks.COMPLETE)})
    for bad in (None, [], {"config": None}, {"config": {"metadata": "x"}}, {"metadata": {marks.RESTORE_ID: 7}}):
        assert marks.mark_of(bad) is None and not marks.carries(bad, "rid")


def test_a_catch_all_stream_does_not_make_the_preflight_refuse(nats_server, second_server, tmp_path: Path, keyring):
    """A stream owning the placeholder's subjects says nothing about placement: the restore goes ahead."""

    async def catch_all() -> None:
        nc = await nats.connect(second_server.url)
        await nc.jetstream().add_stream(StreamConfig(name="CATCH", subjects=["_jsarchive.>"]))
        await nc.close()

    asyncio.run(fill_stream(nats_server.url, messages=2_000))
    _backup(nats_server.url, tmp_path / "archive", keyring)
    asyncio.run(catch_all())
    r = restore_stream(
        RestoreOptions(
            url=str(tmp_path / "archive"),
            stream="ORDERS",
            connect=ConnectOptions(servers=second_server.url),
            keys=keyring,
        )
    )
    assert r.messages == asyncio.run(_info(nats_server.url, "ORDERS"))["state"]["messages"]
