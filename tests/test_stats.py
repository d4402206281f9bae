"""`jsarchive stats URL` (issue 18 point 9): an archive summed up, from the same catalog `ls` prints.

Real nats-servers, real backups through the CLI, a local archive and an S3 one with Object Lock (moto)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from tests.streams import fill_stream
from tests.test_bad_input import cli_env, jsarchive, one_error

pytestmark = pytest.mark.timeout(300)


def ok_json(*args: str | Path, env: dict[str, str]) -> dict:
    run = jsarchive(*args, env=env)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    return json.loads(run.stdout)


def backup(server_url: str, stream: str, url: str | Path, env: dict[str, str], *extra: str) -> dict:
    return ok_json(
        "stream", "backup", stream, url, "-s", server_url, "--no-encrypt", "--no-progress", "--json", *extra, env=env
    )["backup"]


async def _events(url: str, count: int) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10)
        await js.add_stream(name="EVENTS", subjects=["events.>"])
        for i in range(count):
            await js.publish(f"events.e{i % 3}", f"event {i} ".encode() * 20)
    finally:
        await nc.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


def test_stats_agrees_with_ls(nats_server, tmp_path: Path, env: dict[str, str]) -> None:
    asyncio.run(fill_stream(nats_server.url, "ORDERS", 1500))
    asyncio.run(_events(nats_server.url, 400))
    archive = tmp_path / "archive"
    backup(nats_server.url, "ORDERS", archive, env)
    backup(nats_server.url, "EVENTS", archive, env)

    rows = ok_json("ls", archive, "--json", env=env)["backups"]
    stats = ok_json("stats", archive, "--json", env=env)
    assert len(rows) == 2 and stats["ok"] is True and stats["schema"] == 1
    assert stats["backups"] == 2 and stats["streams"] == 2
    assert stats["messages"] == sum(r["messages"] for r in rows) == 1500 - 3 + 400  # fill_stream deletes 7, 8 and 1000
    assert stats["bytes"] == sum(r["bytes"] for r in rows) > 0
    assert stats["stored_bytes"] == sum(r["stored_bytes"] for r in rows) > 0
    assert stats["ratio"] == round(stats["bytes"] / stats["stored_bytes"], 3)
    assert stats["oldest"] == rows[-1]["created"] and stats["newest"] == rows[0]["created"]
    assert stats["storage_classes"] == {"LOCAL": {"backups": 2, "stored_bytes": stats["stored_bytes"]}}
    assert (stats["locked_backups"], stats["locked_bytes"], stats["sets"], stats["problems"]) == (0, 0, 0, [])
    # every object: the two data objects, their manifests and refs
    files = [p for p in archive.rglob("*") if p.is_file()]
    assert stats["objects"] == len(files) == 6
    assert stats["object_bytes"] == sum(p.stat().st_size for p in files)
    by_stream = {r["stream"]: r for r in rows}
    assert [s["stream"] for s in stats["per_stream"]] == ["EVENTS", "ORDERS"]
    for s in stats["per_stream"]:
        r = by_stream[s["stream"]]
        assert (s["backups"], s["bytes"], s["stored_bytes"]) == (1, r["bytes"], r["stored_bytes"])
        assert s["oldest"] == s["newest"] == r["created"]

    run = jsarchive("stats", archive, env=env)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert "2 of 2 stream(s)" in run.stdout and f"{stats['messages']:,}" in run.stdout
    assert "EVENTS" in run.stdout and "ORDERS" in run.stdout and "class LOCAL" in run.stdout


def test_stats_of_a_missing_path_is_not_found(tmp_path: Path, env: dict[str, str]) -> None:
    one_error(jsarchive("stats", tmp_path / "nope", env=env), 3, "no archive at")
    run = jsarchive("stats", tmp_path / "nope", "--json", env=env)
    assert run.returncode == 3 and json.loads(run.stdout)["error"]["kind"] == "not_found"
    empty = ok_json("stats", tmp_path, "--json", env=env)  # an existing directory is an empty archive
    assert (empty["backups"], empty["bytes"], empty["oldest"], empty["per_stream"]) == (0, 0, None, [])


def test_stats_counts_locked_bytes_and_storage_classes(nats_server, moto, lock_bucket, tmp_path: Path) -> None:
    """On S3 with Object Lock: one backup locked for a day in STANDARD_IA, one unlocked in STANDARD."""
    env = {**cli_env(tmp_path), "AWS_ENDPOINT_URL": moto.endpoint}
    asyncio.run(fill_stream(nats_server.url, "ORDERS", 800, consumers=False))
    url = f"s3://{lock_bucket}/arch"
    locked = backup(
        nats_server.url, "ORDERS", url, env, "--lock-mode", "GOVERNANCE", "--retain-days", "1",
        "--storage-class", "STANDARD_IA",
    )  # fmt: skip
    plain = backup(nats_server.url, "ORDERS", url, env)
    stats = ok_json("stats", url, "--json", env=env)
    assert (stats["backups"], stats["streams"]) == (2, 1)
    assert stats["stored_bytes"] == locked["stored_bytes"] + plain["stored_bytes"]
    assert (stats["locked_backups"], stats["locked_bytes"]) == (1, locked["stored_bytes"])
    assert stats["storage_classes"] == {
        "STANDARD": {"backups": 1, "stored_bytes": plain["stored_bytes"]},
        "STANDARD_IA": {"backups": 1, "stored_bytes": locked["stored_bytes"]},
    }
    text = jsarchive("stats", url, env=env).stdout
    assert "in 1 backup(s)" in text and "class STANDARD_IA" in text
