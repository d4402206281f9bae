"""Cluster DR through the CLI: back up an R3 stream in ``east``, restore it into the independent ``west`` cluster.

Everything runs against the session's two real 3-node clusters (``two_clusters``), so every test leaves west
without the test stream, and the module removes the source stream from east at the end. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats.js.errors
import pytest

from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.jetstream.embedded import EmbeddedServer
from tests.streams import Filled, comparable, fill_stream, read_messages, stream_state, wait_consumers_settled

pytestmark = pytest.mark.timeout(300)

STREAM = "CLDR"
MESSAGES = 20_000
CLI_TIMEOUT = 180.0  # per jsarchive invocation; the restore's own --wait is shorter
RESTORE_WAIT = "60"
PLACEMENT_ERROR = 10005  # "no suitable peers for placement", transient right after a meta election (G15)


def _jsarchive_binary() -> str:
    candidate = Path(sys.executable).parent / "jsarchive"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("jsarchive")
    assert found, "the jsarchive entry point is not installed in this environment"
    return found


JSARCHIVE = _jsarchive_binary()


@dataclass
class Cli:
    env: dict[str, str]
    key: Path
    archive: Path

    def run(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [JSARCHIVE, *args], env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def restore(self, url: str, *extra: str, stream: str = STREAM) -> subprocess.CompletedProcess:
        return self.run(
            "stream",
            "restore",
            str(self.archive),
            stream,
            "-s",
            url,
            "--identity",
            str(self.key),
            "--wait",
            RESTORE_WAIT,
            "--json",
            *extra,
        )


@dataclass
class Source:
    cli: Cli
    east: list[EmbeddedServer]
    west: list[EmbeddedServer]
    filled: Filled
    backup: dict
    state: dict
    messages: list


# -- helpers ----------------------------------------------------------------------------------------------------


def _names(servers: list[EmbeddedServer]) -> set[str]:
    return {s.spec.name for s in servers}


async def _stream_names(url: str) -> list[str]:
    async with await connect(ConnectOptions(servers=url)) as js:
        return await js.stream_names()


async def _stream_info(url: str, name: str) -> dict | None:
    async with await connect(ConnectOptions(servers=url)) as js:
        return await js.stream_info(name)


async def _delete_until_gone(url: str, name: str, deadline_s: float = 20.0) -> None:
    """Delete ``name`` (if present) and wait until STREAM.NAMES no longer lists it (a delete may go unanswered)."""
    deadline = time.monotonic() + deadline_s
    async with await connect(ConnectOptions(servers=url)) as js:
        while True:
            names = await js.stream_names()
            if name not in names:
                return
            await js.delete_stream(name)
            if time.monotonic() >= deadline:
                raise AssertionError(f"stream {name} still listed at {url} after {deadline_s:g} s: {names}")
            await asyncio.sleep(0.1)


async def _assert_stays_absent(url: str, name: str, seconds: float = 1.0) -> None:
    """``name`` is not listed now, nor at any of a few checks over the next ``seconds`` (G4: late partial streams)."""
    deadline = time.monotonic() + seconds
    async with await connect(ConnectOptions(servers=url)) as js:
        while True:
            names = await js.stream_names()
            assert name not in names, f"stream {name} was left behind in the target: {names}"
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.2)


def _fill_with_retry(url: str, name: str, messages: int, deadline_s: float = 30.0, **kw: object) -> Filled:
    """fill_stream, retrying the stream create while the cluster still refuses it for a moment: a fresh meta leader
    answers 10005 (G15), a busy one 503/10008. Only the create is retried: when it fails, nothing was made."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return asyncio.run(fill_stream(url, name, messages, **kw))
        except nats.js.errors.APIError as e:
            transient = e.err_code in (PLACEMENT_ERROR, 10008) or e.code == 503
            if not transient or time.monotonic() >= deadline:
                raise
            if asyncio.run(_stream_info(url, name)) is not None:
                raise  # the create went through and something later failed: not a readiness problem
        time.sleep(0.2)


def _json_out(proc: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"--json output is not JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        ) from None


def _ok(proc: subprocess.CompletedProcess, what: str) -> dict:
    assert proc.returncode == 0, f"{what} failed (rc {proc.returncode}):\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    out = _json_out(proc)
    assert out["ok"] is True
    return out


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The single error line on stderr; anything else there (but progress log lines) fails the test."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("jsarchive: error: ")]
    assert len(errors) == 1, f"expected one error line on stderr, got:\n{proc.stderr}"
    assert lines == errors, f"stderr carries more than the error line:\n{proc.stderr}"
    return errors[0]


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(two_clusters: dict[str, list[EmbeddedServer]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """An R3 file stream placed in east, with the two consumers fill_stream makes, backed up once through the CLI."""
    east, west = two_clusters["east"], two_clusters["west"]
    work = tmp_path_factory.mktemp("cluster-dr")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_") and k != "JSARCHIVE_KEY"}
    env["XDG_CONFIG_HOME"] = str(work / "xdg")  # never a developer's natscli context
    cli = Cli(env=env, key=work / "backup.key", archive=work / "archive")
    for servers in (east, west):
        asyncio.run(_delete_until_gone(servers[0].url, STREAM))
    try:
        proc = cli.run("keygen", "-o", str(cli.key))
        assert proc.returncode == 0, proc.stderr
        assert cli.key.is_file()

        filled = _fill_with_retry(east[0].url, STREAM, MESSAGES, replicas=3, placement={"cluster": "east"})
        state = asyncio.run(stream_state(east[1].url, STREAM))
        info = state["_info"]
        assert info["cluster"]["name"] == "east" and info["config"]["num_replicas"] == 3
        assert state["messages"] == filled.messages and state["num_deleted"] == len(filled.deleted) > 0
        assert set(state["consumers"]) == {"billing", "eu-audit"}
        messages = asyncio.run(read_messages(east[2].url, STREAM))
        assert len(messages) == filled.messages

        # G1: the backup client connects to the stream's own cluster.
        proc = cli.run(
            "stream", "backup", STREAM, str(cli.archive), "-s", east[0].url, "--identity", str(cli.key), "--json"
        )
        backup = _ok(proc, "backup")["backup"]
        assert backup["stream"] == STREAM
        assert backup["messages"] == filled.messages
        assert backup["consumers"] == 2
        assert backup["encrypted"] is True
        assert backup["snapshot_format"] == "V2"
        yield Source(cli=cli, east=east, west=west, filled=filled, backup=backup, state=state, messages=messages)
    finally:
        for servers in (west, east):
            asyncio.run(_delete_until_gone(servers[0].url, STREAM))


@pytest.fixture
def dr(source: Source) -> Iterator[Source]:
    """The backed-up source, with west free of the test stream before and after the test."""
    asyncio.run(_delete_until_gone(source.west[0].url, STREAM))
    yield source
    asyncio.run(_delete_until_gone(source.west[0].url, STREAM))


# -- tests ------------------------------------------------------------------------------------------------------


def test_restore_r3_into_other_cluster(dr: Source) -> None:
    west = _names(dr.west)
    proc = dr.cli.restore(dr.west[0].url, "--cluster", "west")
    res = _ok(proc, "restore --cluster west")["restore"]
    src = dr.state

    assert res["manifest_id"] == dr.backup["manifest_id"]
    assert res["cluster"] == "west"
    assert res["leader"] in west
    assert sorted(res["replicas"]) == sorted(west - {res["leader"]})
    assert res["num_replicas"] == 3
    assert res["placement"] == {"cluster": "west"}
    for key in ("messages", "first_seq", "last_seq", "num_deleted", "num_subjects", "bytes"):
        assert res[key] == src[key], key
    assert res["consumers"] == ["billing", "eu-audit"]
    assert res["warnings"] == []

    # Ask another west server than the one the CLI used.
    state = asyncio.run(stream_state(dr.west[2].url, STREAM))
    info = state["_info"]
    cl = info["cluster"]
    assert cl["name"] == "west"
    assert cl.get("leader") in west
    replicas = cl.get("replicas") or []
    assert len(replicas) == 2, cl
    assert all(r["current"] for r in replicas), cl
    assert {r["name"] for r in replicas} == west - {cl["leader"]}
    assert info["config"]["num_replicas"] == 3
    assert info["config"]["placement"] == {"cluster": "west"}
    for key in ("messages", "first_seq", "last_seq", "num_deleted", "num_subjects", "bytes"):
        assert state[key] == src[key], key
    assert set(state["consumers"]) == {"billing", "eu-audit"}
    for name, c in src["consumers"].items():
        assert state["consumers"][name]["ack_floor"] == c["ack_floor"], name
        assert state["consumers"][name]["filter_subject"] == c["filter_subject"], name
    # Pending counts may lag for a moment after a restore (G7); they must converge to the source's.
    assert comparable(wait_consumers_settled(dr.west[1].url, STREAM, src)) == comparable(src)

    assert asyncio.run(read_messages(dr.west[1].url, STREAM)) == dr.messages


def test_restore_by_tag_as_r1(dr: Source) -> None:
    url = dr.west[0].url
    # The same backup under the same name again: whatever an earlier restore left in west is deleted first.
    asyncio.run(_delete_until_gone(url, STREAM))
    assert STREAM not in asyncio.run(_stream_names(url))
    tagged = [s for s in dr.west if "az:2" in (s.varz().get("tags") or [])]
    assert len(tagged) == 1, "exactly one west server carries az:2"
    target = tagged[0].varz()["server_name"]

    proc = dr.cli.restore(url, "--tag", "az:2", "--replicas", "1")
    res = _ok(proc, "restore --tag az:2 --replicas 1")["restore"]
    assert res["cluster"] == "west"
    assert res["leader"] == target
    assert res["replicas"] == []
    assert res["num_replicas"] == 1
    assert res["placement"].get("tags") == ["az:2"]
    assert not res["placement"].get("cluster")  # --tag alone replaces the backed-up {cluster: east}

    info = asyncio.run(_stream_info(dr.west[2].url, STREAM))
    assert info is not None
    assert info["config"]["num_replicas"] == 1
    assert info["config"]["placement"].get("tags") == ["az:2"]
    assert info["cluster"]["name"] == "west"
    assert info["cluster"]["leader"] == target
    assert not info["cluster"].get("replicas")
    state = wait_consumers_settled(url, STREAM, dr.state)
    assert comparable(state) == comparable(dr.state)


@pytest.mark.parametrize(
    ("flags", "mentions"),
    [(["--tag", "region:mars"], ["placement", "region:mars"]), (["--cluster", "mars"], ["placement", "--cluster"])],
    ids=["tag", "cluster"],
)
def test_unsatisfiable_placement(dr: Source, flags: list[str], mentions: list[str]) -> None:
    url = dr.west[0].url
    t0 = time.monotonic()
    proc = dr.cli.restore(url, *flags)
    took = time.monotonic() - t0
    assert proc.returncode == 8, f"rc {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    out = _json_out(proc)
    assert out["ok"] is False
    assert out["error"]["kind"] == "server" and out["error"]["exit_code"] == 8
    line = _error_line(proc)
    for word in mentions:
        assert word in line, f"{word!r} not in {line!r}"
    assert STREAM in line
    assert took < 30, f"a placement refusal is immediate (took {took:.1f} s)"
    asyncio.run(_assert_stays_absent(url, STREAM))


def test_restore_onto_existing_stream(dr: Source) -> None:
    # The source stream in east: never deleted and re-created during the module. (A stream re-created in west
    # right after a restored one of the same name was deleted sometimes picked up the deleted one's consumers a
    # few seconds later on 2.15.1: a server-side race that would make "untouched" unprovable.)
    url = dr.east[0].url
    before = asyncio.run(stream_state(dr.east[1].url, STREAM))
    assert before["messages"] == dr.filled.messages

    proc = dr.cli.restore(url, "--cluster", "east")
    assert proc.returncode == 6, f"rc {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    out = _json_out(proc)
    assert out["ok"] is False
    assert out["error"]["kind"] == "conflict" and out["error"]["exit_code"] == 6
    line = _error_line(proc)
    assert STREAM in line and "already exists" in line

    after = asyncio.run(stream_state(dr.east[2].url, STREAM))
    assert comparable(after) == comparable(before)
    assert after["_info"]["created"] == before["_info"]["created"]
    assert after["_info"]["cluster"]["leader"] in _names(dr.east)
