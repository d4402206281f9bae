"""Bad input is a test (DESIGN.md §6): every case gives one clear error, a specific exit code, no partial stream.

Each case drives the real CLI as a subprocess against real nats-servers and checks four things:

- stderr holds exactly one ``jsarchive: error: …`` line (besides progress log lines), no traceback, and stdout
  holds no result;
- the exit code is the documented one for the error class (pipeline/base/errors.py);
- no stream was left behind on the target server;
- the archive is untouched: every file's path and SHA-256 is the same before and after (the ``.incomplete/``
  temp dir is ignored, but must be empty afterwards).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from pipeline.format.manifest import canonical
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec, free_port
from tests.conftest import make_server
from tests.streams import fill_stream, stream_state

JSARCHIVE = str(Path(sys.executable).parent / "jsarchive")
ERROR_PREFIX = "jsarchive: error: "
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d ")  # LogProgress lines (stderr is not a TTY here)
V1_SERVER = "2.14.6"
STREAM = "ORDERS"


# -- running the CLI ------------------------------------------------------------------------------------------


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def cli_env(home: Path) -> dict[str, str]:
    """The environment without the developer's NATS settings, contexts or $JSARCHIVE_KEY."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_") and k != "JSARCHIVE_KEY"}
    env["XDG_CONFIG_HOME"] = str(home / "xdg")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def jsarchive(*args: str | Path, env: dict[str, str], timeout: float = 120.0) -> Run:
    argv = [JSARCHIVE, *map(str, args)]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(argv, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


async def _watching(url: str, argv: list[str], env: dict[str, str], timeout: float) -> tuple[Run, list[str]]:
    nc = await nats.connect(url)
    seen: list[str] = []

    async def note(msg: Msg) -> None:
        seen.append(msg.subject)

    try:
        await nc.subscribe("$JS.EVENT.ADVISORY.STREAM.>", cb=note)
        await nc.flush()
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        seconds = time.monotonic() - t0
        await asyncio.sleep(0.5)  # advisories are published asynchronously
        await nc.flush()
    finally:
        await nc.close()
    return Run(argv, proc.returncode, out.decode(), err.decode(), seconds), seen


def jsarchive_watching(
    *args: str | Path, url: str, env: dict[str, str], timeout: float = 120.0
) -> tuple[Run, list[str]]:
    """Run the CLI and collect the subjects of the stream advisories that ``url``'s server publishes meanwhile."""
    return asyncio.run(_watching(url, [JSARCHIVE, *map(str, args)], env, timeout))


def one_error(run: Run, exit_code: int, *needles: str) -> str:
    """Assert the run failed with ``exit_code`` and exactly one clear error line; return that line's message."""
    where = f"\n$ {' '.join(run.args)}\nexit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "Traceback" not in run.stderr, where
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, f"expected exactly one error line{where}"
    noise = [ln for ln in lines if not ln.startswith(ERROR_PREFIX) and not LOG_LINE.match(ln)]
    assert not noise, f"stderr holds more than the error and progress lines{where}"
    assert lines[-1] == errors[0], f"the error line is not the last line{where}"
    assert run.stdout.strip() == "", f"a failed run printed a result{where}"
    assert run.returncode == exit_code, f"expected exit {exit_code}{where}"
    message = errors[0][len(ERROR_PREFIX) :]
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in the error message{where}"
    return message


# -- archive snapshots ----------------------------------------------------------------------------------------


def archive_state(root: Path) -> dict[str, str]:
    """Every file's path → SHA-256, and every directory (as ``path/``), under ``root``, except ``.incomplete/``."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != ".incomplete"]
        for d in dirnames:
            out[(rel / d).as_posix() + "/"] = "dir"
        for name in filenames:
            out[(rel / name).as_posix()] = hashlib.sha256((Path(dirpath) / name).read_bytes()).hexdigest()
    return out


def assert_archive_untouched(root: Path, before: dict[str, str]) -> None:
    after = archive_state(root)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert (added, removed, changed) == ([], [], []), f"archive changed: +{added} -{removed} ~{changed}"
    incomplete = root / ".incomplete"
    left = sorted(p.name for p in incomplete.iterdir()) if incomplete.exists() else []
    assert left == [], f"temporary files left in {incomplete}: {left}"


def only(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {root}, found {found}"
    return found[0]


# -- servers ----------------------------------------------------------------------------------------------------


async def _stream_info(url: str, name: str) -> dict | None:
    async with await connect(ConnectOptions(servers=url)) as js:
        return await js.stream_info(name)


def stream_exists(url: str, name: str) -> bool:
    return asyncio.run(_stream_info(url, name)) is not None


def assert_no_stream(url: str, name: str, watch: float = 0.0) -> None:
    """The stream is not on the server, and (with ``watch``) does not appear there for that many seconds."""
    deadline = time.monotonic() + watch
    while True:
        info = asyncio.run(_stream_info(url, name))
        assert info is None, f"a partial stream {name!r} was left on {url}: {info.get('state')}"
        if time.monotonic() >= deadline:
            return
        time.sleep(0.25)


async def fill_random(url: str, name: str, messages: int, size: int) -> None:
    """A file stream of incompressible payloads: its snapshot is about ``messages × size`` bytes."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
        pending = []
        for i in range(messages):
            pending.append(await js.publish_async(f"{name.lower()}.{i % 8}", os.urandom(size)))
            if len(pending) >= 100:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await nc.close()


# -- keys and the pristine archive ------------------------------------------------------------------------------


@dataclass
class Key:
    path: Path
    recipient: str


def keygen(path: Path, env: dict[str, str]) -> Key:
    run = jsarchive("keygen", "-o", path, env=env)
    assert run.returncode == 0, run.stderr
    m = re.search(r"^# public key: (age1\S+)$", path.read_text(), re.M)
    assert m, path.read_text()
    return Key(path, m.group(1))


@dataclass
class Pristine:
    archive: Path
    key: Key
    other_key: Key
    manifest_id: str
    backup_id: str
    server_version: str
    blocks: int
    state: dict[str, str]  # archive_state() right after the backup


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """One encrypted multi-block V2 backup of ORDERS (consumers, deletes), made once; tests damage copies of it."""
    base = tmp_path_factory.mktemp("bad-input")
    env = cli_env(base)
    key, other = keygen(base / "a.key", env), keygen(base / "b.key", env)
    archive = base / "archive"
    with EmbeddedServer(ServerSpec(name="source"), workdir=base / "nats") as srv:
        # ~2 MB of snapshot: enough that a 2.15 server keeps a partial stream when a restore fails near the end.
        asyncio.run(fill_stream(srv.url, STREAM, messages=20_000, deletes=(7, 8, 1000, 15_000), payload_size=200))
        run = jsarchive(
            *backup_args(STREAM, archive, srv.url, "-i", key.path, "--block-size", "64KiB", "--json"), env=env
        )
        assert run.returncode == 0, run.stderr
        res = json.loads(run.stdout)["backup"]
    assert res["snapshot_format"] == "V2"
    assert res["blocks"] >= 16, res  # many blocks: corrupting the last one leaves earlier ones to send
    ids = res["manifest_id"], res["backup_id"], res["server_version"], res["blocks"]
    return Pristine(archive, key, other, *ids, archive_state(archive))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


@pytest.fixture
def archive(pristine: Pristine, tmp_path: Path) -> Path:
    """A private copy of the pristine archive, free to damage."""
    dest = tmp_path / "archive"
    shutil.copytree(pristine.archive, dest)
    # Tests only ever damage copies; if this fails, something outside this module changed the shared original.
    assert archive_state(dest) == pristine.state, f"the pristine archive {pristine.archive} was altered"
    return dest


def backup_args(stream: str, archive: Path, url: str, *extra: str | Path) -> list[str | Path]:
    return ["stream", "backup", stream, archive, "-s", url, "--no-progress", *extra]


def restore_args(archive: Path, url: str, *extra: str | Path) -> list[str | Path]:
    return ["stream", "restore", archive, STREAM, "-s", url, "--no-progress", *extra]


# -- keys ---------------------------------------------------------------------------------------------------------


def test_restore_with_another_identity_names_the_slots(pristine, archive, nats_server, env):
    before = archive_state(archive)
    run = jsarchive(*restore_args(archive, nats_server.url, "-i", pristine.other_key.path), env=env)
    one_error(run, 5, f"age recipient {pristine.key.recipient}")
    assert pristine.other_key.recipient not in run.stderr  # names the slots, not the key that was given
    assert_no_stream(nats_server.url, STREAM)
    assert_archive_untouched(archive, before)


def test_restore_without_any_key(pristine, archive, nats_server, env):
    before = archive_state(archive)
    run = jsarchive(*restore_args(archive, nats_server.url), env=env)
    one_error(run, 5, f"age recipient {pristine.key.recipient}", "--identity")
    assert_no_stream(nats_server.url, STREAM)
    assert_archive_untouched(archive, before)


def test_backup_without_key_points_to_keygen(nats_server, tmp_path, env):
    asyncio.run(fill_random(nats_server.url, "SMALL", 20, 100))
    archive = tmp_path / "fresh-archive"
    run = jsarchive(*backup_args("SMALL", archive, nats_server.url), env=env)
    one_error(run, 5, "jsarchive keygen", "--no-encrypt")
    assert not archive.exists() or archive_state(archive) == {}


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_identity_file_readable_by_others(command, pristine, archive, nats_server, tmp_path, env):
    key = tmp_path / "loose.key"
    shutil.copyfile(pristine.key.path, key)
    key.chmod(0o644)
    asyncio.run(fill_random(nats_server.url, "SMALL", 20, 100))
    before = archive_state(archive)
    if command == "backup":
        args = backup_args("SMALL", archive, nats_server.url, "-i", key)
    else:
        args = restore_args(archive, nats_server.url, "-i", key)
    one_error(jsarchive(*args, env=env), 2, "chmod 600", str(key))
    assert_no_stream(nats_server.url, STREAM)
    assert_archive_untouched(archive, before)


# -- damaged archives -----------------------------------------------------------------------------------------


def flip_bit(archive: Path, p: Pristine) -> None:
    data = archive / "data" / p.backup_id
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))


def remove_data(archive: Path, p: Pristine) -> None:
    (archive / "data" / p.backup_id).unlink()


def truncate_data(archive: Path, p: Pristine) -> None:
    data = archive / "data" / p.backup_id
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size - 1000)


def tamper_manifest_in_place(archive: Path, p: Pristine) -> None:
    """Change one byte of the manifest, keep its name: its bytes no longer hash to it."""
    path = archive / "manifests" / p.manifest_id
    raw = path.read_bytes()
    at = raw.index(b'"created":"') + len(b'"created":"') + 3  # a digit of the year
    digit = b"%d" % ((int(raw[at : at + 1]) + 1) % 10)
    path.write_bytes(raw[:at] + digit + raw[at + 1 :])


def rewrite_manifest_under_new_hash(archive: Path, p: Pristine) -> None:
    """Edit a clear field, store the edit under its own correct hash and point the ref at it.

    The hash check passes; the sealed body, whose associated data covers the clear envelope, must not open.
    """
    raw = (archive / "manifests" / p.manifest_id).read_bytes()
    env = json.loads(raw)
    env["summary"]["messages"] += 1000
    edited = canonical(env)
    new_id = hashlib.sha256(edited).hexdigest()
    (archive / "manifests" / new_id).write_bytes(edited)
    (archive / "manifests" / p.manifest_id).unlink()
    ref = only(archive, f"refs/{STREAM}/*")
    assert ref.read_text().strip() == p.manifest_id
    ref.write_text(new_id + "\n")


DAMAGE: dict[str, tuple[Callable[[Path, Pristine], None], int, tuple[str, ...]]] = {
    "flipped-bit": (flip_bit, 4, ("block", "SHA-256")),
    "missing-data": (remove_data, 3, ("missing",)),
    "truncated-data": (truncate_data, 4, ("truncated",)),
    "manifest-byte-changed": (tamper_manifest_in_place, 4, ("altered",)),
    "manifest-rewritten-rehashed": (rewrite_manifest_under_new_hash, 4, ("altered",)),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_archive_refuses_restore(damage, pristine, archive, nats_server, env):
    spoil, exit_code, needles = DAMAGE[damage]
    spoil(archive, pristine)
    before = archive_state(archive)
    run = jsarchive(*restore_args(archive, nats_server.url, "-i", pristine.key.path), env=env)
    one_error(run, exit_code, *needles)
    assert_no_stream(nats_server.url, STREAM, watch=1.0)
    assert_archive_untouched(archive, before)


def test_corrupt_last_block_removes_the_partial_stream(pristine, archive, nats_server, env):
    """Earlier blocks reach the server before the last one fails its check: the partial stream must go."""
    manifest = json.loads((archive / "manifests" / pristine.manifest_id).read_bytes())
    blocks = manifest["blocks"]
    assert len(blocks) >= 16
    offset, length, _sha = blocks[-1]
    data = archive / "data" / pristine.backup_id
    raw = bytearray(data.read_bytes())
    raw[offset + length // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    before = archive_state(archive)
    run, advisories = jsarchive_watching(
        *restore_args(archive, nats_server.url, "-i", pristine.key.path), url=nats_server.url, env=env
    )
    one_error(run, 4, f"block {len(blocks) - 1}", "no partial stream was left")
    # The server had stored the earlier blocks' messages as a stream (2.15 keeps a partial stream after a failed
    # restore) and jsarchive deleted it; without this the test would not exercise the cleanup at all.
    assert f"$JS.EVENT.ADVISORY.STREAM.RESTORE_CREATE.{STREAM}" in advisories, advisories
    assert f"$JS.EVENT.ADVISORY.STREAM.DELETED.{STREAM}" in advisories, advisories
    assert_no_stream(nats_server.url, STREAM, watch=3.0)
    assert_archive_untouched(archive, before)


# -- backup ids -----------------------------------------------------------------------------------------------


def test_unknown_backup_id(pristine, archive, nats_server, env):
    before = archive_state(archive)
    unknown = hashlib.sha256(b"no such backup").hexdigest()
    for ident in (unknown, unknown[:10]):
        run = jsarchive(*restore_args(archive, nats_server.url, "-i", pristine.key.path, "--backup", ident), env=env)
        one_error(run, 3, unknown[:10])
    assert_no_stream(nats_server.url, STREAM)
    assert_archive_untouched(archive, before)


def test_bad_backup_id_prefix(pristine, archive, nats_server, env):
    # A second manifest whose name shares the first 12 digits makes an 8-digit prefix ambiguous.
    mid = pristine.manifest_id
    twin = mid[:12] + ("0" if mid[12] != "0" else "1") * 52
    shutil.copyfile(archive / "manifests" / mid, archive / "manifests" / twin)
    before = archive_state(archive)
    cases = {mid[:8]: "ambiguous", mid[:3]: "too short", "not-hex!": "not a backup id"}
    for ident, needle in cases.items():
        run = jsarchive(*restore_args(archive, nats_server.url, "-i", pristine.key.path, "--backup", ident), env=env)
        one_error(run, 2, needle)
    assert_no_stream(nats_server.url, STREAM)
    assert_archive_untouched(archive, before)


# -- servers ----------------------------------------------------------------------------------------------------


def test_restore_onto_existing_stream(pristine, archive, nats_server, env):
    asyncio.run(fill_stream(nats_server.url, STREAM, messages=500, consumers=False, deletes=(3,)))
    existing = asyncio.run(stream_state(nats_server.url, STREAM))
    before = archive_state(archive)
    run = jsarchive(*restore_args(archive, nats_server.url, "-i", pristine.key.path), env=env)
    one_error(run, 6, STREAM, "already exists")
    after = asyncio.run(stream_state(nats_server.url, STREAM))
    assert after["_info"]["created"] == existing["_info"]["created"]
    assert after["_info"]["config"] == existing["_info"]["config"]
    assert {k: v for k, v in after.items() if k != "_info"} == {k: v for k, v in existing.items() if k != "_info"}
    assert_archive_untouched(archive, before)


def test_backup_of_unknown_stream_writes_nothing(pristine, archive, nats_server, tmp_path, env):
    fresh = tmp_path / "fresh-archive"
    for target in (archive, fresh):
        before = archive_state(target)
        run = jsarchive(*backup_args("NOPE", target, nats_server.url, "-i", pristine.key.path), env=env)
        one_error(run, 3, "'NOPE'", "does not exist")
        assert_archive_untouched(target, before)
    assert not any((fresh / d).exists() for d in ("data", "manifests", "refs"))


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_unreachable_server(command, pristine, archive, env):
    url = f"nats://127.0.0.1:{free_port()}"  # nobody listens there
    before = archive_state(archive)
    if command == "backup":
        args = backup_args(STREAM, archive, url, "-i", pristine.key.path)
    else:
        args = restore_args(archive, url, "-i", pristine.key.path)
    run = jsarchive(*args, env=env, timeout=60)
    one_error(run, 7, url)
    assert run.seconds < 30, f"giving up took {run.seconds:.1f} s"
    assert_archive_untouched(archive, before)


def test_memory_stream_on_v1_server_is_refused(pristine, tmp_path, env):
    archive = tmp_path / "archive"
    with make_server(V1_SERVER, tmp_path / "old") as old:
        assert old.varz()["version"] == V1_SERVER
        asyncio.run(fill_stream(old.url, STREAM, messages=200, storage="memory", consumers=False, deletes=()))
        run = jsarchive(*backup_args(STREAM, archive, old.url, "-i", pristine.key.path), env=env)
        one_error(run, 8, "memory", "2.15", V1_SERVER)
        assert stream_exists(old.url, STREAM)  # refusing does not touch the stream
    assert archive_state(archive) == {}


def test_v2_backup_onto_v1_server_is_refused(pristine, archive, tmp_path, env):
    before = archive_state(archive)
    with make_server(V1_SERVER, tmp_path / "old") as old:
        run = jsarchive(*restore_args(archive, old.url, "-i", pristine.key.path), env=env)
        one_error(run, 8, pristine.server_version, V1_SERVER, "V2")
        assert_no_stream(old.url, STREAM, watch=1.0)
    assert_archive_untouched(archive, before)


# -- the server dies mid-backup --------------------------------------------------------------------------------


def _biggest_temp_file(archive: Path) -> int:
    incomplete = archive / ".incomplete"
    try:
        return max((p.stat().st_size for p in incomplete.iterdir()), default=0)
    except FileNotFoundError:
        return 0


@pytest.fixture
def backup_process() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; any still running at the end are stopped by their own PID."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)


@pytest.mark.parametrize("kill_after", [256 * 1024, 4 * 1024 * 1024], ids=["early", "midway"])
def test_server_killed_mid_backup(kill_after, pristine, nats_server, tmp_path, env, backup_process):
    # ~10 MB of incompressible messages sent in 1 KiB chunks with a 1 KiB window: about 1–2 s of snapshot.
    asyncio.run(fill_random(nats_server.url, "BIG", 1000, 10_000))
    archive = tmp_path / "archive"
    slow = ["--chunk-size", "1KiB", "--window-size", "1KiB", "--block-size", "64KiB"]
    argv = [JSARCHIVE, *map(str, backup_args("BIG", archive, nats_server.url, "-i", pristine.key.path, *slow))]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL
    )
    backup_process.append(proc)
    deadline = time.monotonic() + 30
    # Wait until sealed blocks are landing in the data object's temp file, then pull the plug.
    while _biggest_temp_file(archive) < kill_after:
        assert proc.poll() is None, f"the backup ended before the server could be killed: {proc.communicate()}"
        assert time.monotonic() < deadline, "the backup never started writing its data object"
        time.sleep(0.01)
    nats_server.kill()
    killed_at = time.monotonic() - t0
    stdout, stderr = proc.communicate(timeout=90)
    run = Run(argv, proc.returncode, stdout, stderr, time.monotonic() - t0)
    assert run.returncode != 0, f"the backup succeeded although its server was killed after {killed_at:.2f} s"
    message = one_error(run, 9, "BIG")
    assert "broke off" in message or "connection" in message, message
    assert run.seconds - killed_at < 30, f"noticing the dead server took {run.seconds - killed_at:.1f} s"
    assert_archive_untouched(archive, {})  # no data object, no manifest, no ref, nothing left in .incomplete/
