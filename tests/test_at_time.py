"""Time-based selection (issue 18 point 5): `--at TIME` picks the newest backup (or set) not newer than TIME.

Real nats-servers and local archives, the CLI as an operator runs it. Three backups of one stream hold 10, 20 and
30 messages; their created times are read back from `ls --json` and TIME is chosen from them (between two, or
exactly one: "not newer than" includes it), so nothing here depends on how long anything took.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from pipeline.archive.repository import Repository, ref_time
from pipeline.archive.retention import parse_created
from pipeline.base.errors import NotFoundError, UsageError
from pipeline.format.selection import parse_datetime
from tests.streams import stream_state
from tests.test_bad_input import Run, cli_env, jsarchive, one_error

pytestmark = pytest.mark.timeout(300)

STREAM = "ORDERS"


def ok(run: Run) -> Run:
    assert run.returncode == 0, f"$ {' '.join(run.args)}\nexit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr
    return run


def ok_json(run: Run) -> dict:
    return json.loads(ok(run).stdout)


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def between(a: str, b: str) -> dt.datetime:
    """A time strictly after created time ``a`` and strictly before ``b``."""
    ta, tb = parse_created(a), parse_created(b)
    assert tb - ta >= dt.timedelta(microseconds=2), (a, b)
    return ta + (tb - ta) / 2


async def _publish(url: str, stream: str, subject: str, first: int, count: int, create: bool = False) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        if create:
            await js.add_stream(StreamConfig(name=stream, subjects=[f"{subject}.>"]))
        for i in range(first, first + count):
            await js.publish(f"{subject}.x", f"m{i}".encode())
    finally:
        await nc.close()


async def _delete_streams(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        for info in await js.streams_info():
            await js.delete_stream(info.config.name)
    finally:
        await nc.close()


@pytest.fixture
def three(nats_server, tmp_path: Path, identity_file) -> dict:
    """Backups of ORDERS holding 10, 20 and 30 messages, oldest first; the middle one is not encrypted."""
    env, key = cli_env(tmp_path), identity_file[0]
    archive = tmp_path / "archive"
    backups = []
    for n in range(3):
        asyncio.run(_publish(nats_server.url, STREAM, "orders", n * 10, 10, create=n == 0))
        extra = ["--no-encrypt"] if n == 1 else ["-i", key]
        run = jsarchive("stream", "backup", STREAM, archive, "-s", nats_server.url, "--no-progress", "--json", *extra,
                        env=env)  # fmt: skip
        backups.append(ok_json(run)["backup"]["manifest_id"])
    rows = {r["manifest_id"]: r for r in ok_json(jsarchive("ls", archive, "--json", env=env))["backups"]}
    created = [rows[mid]["created"] for mid in backups]
    assert created == sorted(created) and len(set(created)) == 3
    assert [rows[mid]["messages"] for mid in backups] == [10, 20, 30]
    return {"env": env, "key": key, "archive": archive, "ids": backups, "created": created, "url": nats_server.url}


def restore_at(three: dict, target: str, at: str, *extra: str, as_json: bool = True) -> Run:
    return jsarchive(
        "stream", "restore", three["archive"], STREAM, "-s", target, "--at", at, "-i", three["key"],
        "--no-progress", *(["--json"] if as_json else []), *extra, env=three["env"],
    )  # fmt: skip


def test_stream_restore_at_restores_the_backup_of_that_time(three: dict, second_server) -> None:
    ids, created = three["ids"], three["created"]
    # between the first and the second: the first (10 messages)
    cases = [
        (rfc3339(between(created[0], created[1])), ids[0], 10),
        # exactly the third's created time: not newer than TIME, so the third
        (created[2], ids[2], 30),
        # the same instant as the second, written with an offset (RFC 3339 +01:00): the second, unencrypted,
        # which a configured key refuses unless --allow-unencrypted
        (
            parse_created(created[1]).astimezone(dt.timezone(dt.timedelta(hours=1))).isoformat(),
            ids[1],
            20,
        ),
        # relative: no time ago is now, after every backup
        ("0s", ids[2], 30),
    ]
    for at, want, messages in cases:
        extra = ("--allow-unencrypted",) if want == ids[1] else ()
        res = ok_json(restore_at(three, second_server.url, at, *extra))["restore"]
        assert (res["manifest_id"], res["messages"]) == (want, messages), at
        state = asyncio.run(stream_state(second_server.url, STREAM))
        assert state["messages"] == messages and state["last_seq"] == messages, at
        asyncio.run(_delete_streams(second_server.url))


def test_a_refused_backup_at_time_is_passed_over_and_named(three: dict, second_server) -> None:
    ids, created = three["ids"], three["created"]
    # TIME between the second (unencrypted: refused with a key configured) and the third: the first, said so
    at = rfc3339(between(created[1], created[2]))
    run = restore_at(three, second_server.url, at)
    res = ok_json(run)["restore"]
    assert res["manifest_id"] == ids[0] and res["messages"] == 10
    assert any(f"skipped backup created {created[1]}" in w and "not encrypted" in w for w in res["warnings"])


def test_at_usage_errors_and_nothing_that_old(three: dict, second_server) -> None:
    env, archive, key = three["env"], three["archive"], three["key"]
    target = second_server.url
    one_error(
        jsarchive(
            "stream",
            "restore",
            archive,
            STREAM,
            "-s",
            target,
            "--at",
            "2h",
            "--backup",
            three["ids"][0],
            "-i",
            key,
            env=env,
        ),  # fmt: skip
        2,
        "--backup ID or --at TIME, not both",
    )
    one_error(restore_at(three, target, "yesterday", as_json=False), 2, "--at", "'yesterday' is not a time")
    one_error(restore_at(three, target, "2026-02-30T00:00:00Z", as_json=False), 2, "--at", "not a valid time")
    # every backup is newer than 3 days ago, or than an absolute time before the first: exit 3, naming the oldest
    oldest = created_text = three["created"][0]
    for at in ("3d", rfc3339(parse_created(created_text) - dt.timedelta(microseconds=1))):
        one_error(
            restore_at(three, target, at, as_json=False), 3, "at or before", f"the oldest is from {oldest}", "--at"
        )
    assert asyncio.run(_streams(target)) == []
    # --json names the setting, as every structured error does
    doc = json.loads(restore_at(three, target, "3d").stdout)
    assert doc["ok"] is False and doc["error"]["exit_code"] == 3 and "at" in doc["error"]["settings"]


async def _streams(url: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        return [i.config.name for i in await nc.jetstream(timeout=10).streams_info()]
    finally:
        await nc.close()


def test_inspect_and_export_at_pick_the_backup_of_that_time(three: dict, tmp_path: Path) -> None:
    env, archive, key, ids, created = three["env"], three["archive"], three["key"], three["ids"], three["created"]
    insp = ok_json(
        jsarchive(
            "inspect", archive, STREAM, "--at", rfc3339(between(created[0], created[1])), "-i", key, "--json", env=env
        )  # fmt: skip
    )["inspect"]
    assert insp["manifest_id"] == ids[0] and insp["messages"] == 10
    insp = ok_json(jsarchive("inspect", archive, STREAM, "--at", created[1], "-i", key, "--json", env=env))["inspect"]
    assert insp["manifest_id"] == ids[1] and insp["messages"] == 20
    one_error(jsarchive("inspect", archive, STREAM, "--at", "1w", "-i", key, env=env), 3, "the oldest is from")
    one_error(jsarchive("inspect", archive, "NOSUCH", "--at", "0s", "-i", key, env=env), 3, "no backups of stream")

    out = tmp_path / "exported"
    run = jsarchive("export", archive, STREAM, out, "--at", rfc3339(between(created[1], created[2])), "-i", key,
                    "--allow-unencrypted", "--json", env=env)  # fmt: skip
    res = ok_json(run)["export"]
    assert res["id"] == ids[1] and res["kind"] == "stream"
    assert json.loads((out / "backup.json").read_text())["state"]["messages"] == 20
    # without --allow-unencrypted the unencrypted second is refused and passed over: the first, with a warning
    out2 = tmp_path / "exported2"
    run = jsarchive("export", archive, STREAM, out2, "--at", rfc3339(between(created[1], created[2])), "-i", key,
                    "--json", env=env)  # fmt: skip
    assert ok_json(run)["export"]["id"] == ids[0]
    assert f"skipped backup created {created[1]}" in run.stderr
    one_error(jsarchive("export", archive, STREAM, tmp_path / "no", "--at", "3d", "-i", key, env=env), 3, "oldest")
    assert not (tmp_path / "no").exists()


def test_newest_at_reads_refs_under_latest_rules(three: dict) -> None:
    """The library function: a ref named before TIME whose manifest is newer is not taken for an older backup."""
    repo = Repository.open(str(three["archive"]))
    ids, created = three["ids"], three["created"]
    at = between(created[0], created[1])
    assert repo.newest_at(STREAM, at).id == ids[0]
    assert repo.newest_at(STREAM, None).id == repo.latest(STREAM).id == ids[2]
    # A planted ref, named just before TIME, pointing at the third backup's manifest.
    third = repo.load_manifest(ids[2])
    planted = repo.ref_key(STREAM, ref_time(at - dt.timedelta(microseconds=1)), third.backup_id)
    repo.sink.put(planted, ids[2].encode() + b"\n")
    skipped: list[str] = []
    assert repo.newest_at(STREAM, at, skipped=skipped).id == ids[0]
    assert len(skipped) == 1 and planted in skipped[0] and "its name says" in skipped[0]
    with pytest.raises(UsageError):
        repo.backup_for(STREAM, ids[0][:12], at)
    assert repo.backup_for(STREAM, ids[1][:12]).id == ids[1]
    with pytest.raises(NotFoundError, match="the oldest is from"):
        repo.newest_at(STREAM, parse_created(created[0]) - dt.timedelta(microseconds=1))
    # relative and RFC 3339 forms as the CLI parses them
    now_ns = 1_800_000_000 * 10**9
    assert parse_datetime("2h", now_ns) == dt.datetime.fromtimestamp(1_800_000_000 - 7200, dt.timezone.utc)
    assert parse_datetime("2026-11-23t22:22:40.1234567z") == dt.datetime(
        2026, 11, 23, 22, 22, 40, 123456, dt.timezone.utc
    )


def test_account_restore_and_drill_at_pick_the_set_of_that_time(nats_server, second_server, tmp_path: Path,
                                                               identity_file) -> None:  # fmt: skip
    env, key = cli_env(tmp_path), identity_file[0]
    archive = tmp_path / "archive"
    sets = []
    for n in range(2):
        asyncio.run(_publish(nats_server.url, "ALPHA", "alpha", n * 10, 10, create=n == 0))
        asyncio.run(_publish(nats_server.url, "BETA", "beta", n * 5, 5, create=n == 0))
        run = jsarchive("account", "backup", archive, "-s", nats_server.url, "-i", key, "--no-progress", "--json",
                        env=env)  # fmt: skip
        sets.append(ok_json(run)["account"]["set_id"])
    rows = {r["set_id"]: r for r in ok_json(jsarchive("account", "ls", archive, "--json", env=env))["sets"]}
    finished = [rows[s]["finished"] for s in sets]
    assert finished == sorted(finished)

    base = ["account", "restore", archive, "-s", second_server.url, "-i", key, "--no-progress"]
    res = ok_json(jsarchive(*base, "--json", "--at", rfc3339(between(finished[0], finished[1])), env=env))["restore"]
    assert res["set_id"] == sets[0]
    got = {s: asyncio.run(stream_state(second_server.url, s))["messages"] for s in ("ALPHA", "BETA")}
    assert got == {"ALPHA": 10, "BETA": 5}
    asyncio.run(_delete_streams(second_server.url))
    res = ok_json(jsarchive(*base, "--json", "--at", finished[1], env=env))["restore"]
    assert res["set_id"] == sets[1]
    assert asyncio.run(stream_state(second_server.url, "ALPHA"))["messages"] == 20
    asyncio.run(_delete_streams(second_server.url))

    one_error(jsarchive(*base, sets[0][:12], "--at", "1h", env=env), 2, "SET-ID or --at TIME, not both")
    one_error(jsarchive(*base, "--latest", "--at", "1h", env=env), 2, "--latest or --at TIME, not both")
    one_error(jsarchive(*base, "--at", "1d", env=env), 3, "at or before", f"the oldest finished {finished[0]}")
    assert asyncio.run(_streams(second_server.url)) == []

    # drill: the same set choice, refused before any target is touched
    drill = ["drill", archive, "--tag", "nowhere", "-s", second_server.url, "-i", key]
    one_error(jsarchive(*drill, "--at", "1d", env=env), 3, "no account backup set", "the oldest finished")
    one_error(jsarchive(*drill, sets[0][:12], "--at", "1d", env=env), 2, "SET_ID or --at TIME")
    one_error(jsarchive(*drill, "--at", "tomorrow", env=env), 2, "--at")
