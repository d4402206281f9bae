"""Replacing a live stream cannot lose it (pipeline/flows/replace.py), on real servers.

Before `account restore --on-exists replace` deletes a live stream: the replacing backup is verified deep, the
target is preflighted with a placeholder stream, and the live stream is saved as a pre-restore backup. A refusal at
any step leaves the live stream as it was; a restore that fails after the delete names the safety backup and the
command that brings it back, and that backup does bring it back.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pipeline.archive.repository import Repository
from pipeline.base.errors import IntegrityError
from pipeline.base.transfer import TransferConfig
from pipeline.flows.replace import PRE_RESTORE, replace_stream
from pipeline.flows.restore import RestoreOptions, restore_stream
from pipeline.format import marks
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.jetstream.preflight import PLACEHOLDER_PREFIX
from pipeline.keys.keyring import KeyRing
from tests.streams import fill_stream, read_messages
from tests.test_bad_input import cli_env, jsarchive

pytestmark = pytest.mark.timeout(300)


async def _names(url: str) -> list[str]:
    async with await connect(ConnectOptions(servers=url)) as js:
        return await js.stream_names()


async def _publish_live(url: str, n: int) -> None:
    """Make the live stream differ from the backup: later writes that only the safety backup can hold."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for i in range(n):
            await js.publish("orders.eu.late", b"late %d" % i)
    finally:
        await nc.close()


@pytest.fixture
def account_archive(nats_server, tmp_path: Path, keyring: KeyRing) -> Path:
    """An account set of ORDERS (2,000 messages) taken from ``nats_server``; ORDERS then gets 50 more (live)."""
    asyncio.run(fill_stream(nats_server.url, messages=2_000))
    archive = tmp_path / "archive"
    run = jsarchive(
        "account",
        "backup",
        archive,
        "-s",
        nats_server.url,
        "-i",
        tmp_path / "backup.key",
        "--block-size",
        "64KiB",
        env=cli_env(tmp_path),
    )
    assert run.returncode == 0, run.stderr
    asyncio.run(_publish_live(nats_server.url, 50))
    return archive


def _replace(archive: Path, url: str, tmp_path: Path, *extra: str):
    return jsarchive(
        "account",
        "restore",
        archive,
        "-s",
        url,
        "-i",
        tmp_path / "backup.key",
        "--on-exists",
        "replace",
        "--json",
        *extra,
        env=cli_env(tmp_path),
    )


def test_a_flipped_bit_leaves_the_live_stream_untouched(nats_server, account_archive: Path, tmp_path: Path):
    before = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    data = next((account_archive / "data").iterdir())
    raw = bytearray(data.read_bytes())
    raw[len(raw) - 100] ^= 0x10  # the last block: a size check or a partial read would not see it
    data.write_bytes(bytes(raw))
    run = _replace(account_archive, nats_server.url, tmp_path)
    assert run.returncode == 4, run.stdout + run.stderr
    failed = json.loads(run.stdout)["restore"]["failed"]
    assert [f["stream"] for f in failed] == ["ORDERS"] and "deep verification" in failed[0]["message"]
    assert "not touched" in failed[0]["message"]
    assert asyncio.run(read_messages(nats_server.url, "ORDERS")) == before
    assert len(Repository.open(str(account_archive)).refs("ORDERS")) == 1  # no safety backup was needed


def test_an_unplaceable_restore_is_refused_before_the_delete(nats_server, account_archive: Path, tmp_path: Path):
    before = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    run = _replace(account_archive, nats_server.url, tmp_path, "--replicas", "3")
    assert run.returncode == 8, run.stdout + run.stderr
    failed = json.loads(run.stdout)["restore"]["failed"]
    assert "not touched" in failed[0]["message"] and "replicas" in failed[0]["message"]
    assert asyncio.run(read_messages(nats_server.url, "ORDERS")) == before
    assert not [n for n in asyncio.run(_names(nats_server.url)) if n.startswith(PLACEHOLDER_PREFIX)]


def test_replace_saves_the_live_stream_first(nats_server, account_archive: Path, tmp_path: Path):
    live = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    run = _replace(account_archive, nats_server.url, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    res = json.loads(run.stdout)["restore"]
    assert res["replaced"] == ["ORDERS"]
    saved = res["safety_backups"]["ORDERS"]
    restored = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    assert len(restored) == len(live) - 50  # the backup's content, not the live one
    ls = jsarchive("ls", account_archive, "--json", env=cli_env(tmp_path))
    rows = {r["manifest_id"]: r for r in json.loads(ls.stdout)["backups"]}
    assert rows[saved]["origin"] == PRE_RESTORE
    assert rows[saved]["messages"] == len(live)
    text = jsarchive("ls", account_archive, env=cli_env(tmp_path)).stdout
    assert "pre-restore" in text


def test_no_safety_backup_opts_out(nats_server, account_archive: Path, tmp_path: Path):
    run = _replace(account_archive, nats_server.url, tmp_path, "--no-safety-backup")
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["restore"]["safety_backups"] == {}
    assert len(Repository.open(str(account_archive)).refs("ORDERS")) == 1


class _CorruptWhenAccepted:
    """Progress that flips a bit in the backup's last block once the server has accepted the restore: the archive
    going bad after the delete, the one failure the checks before the delete cannot rule out."""

    def __init__(self, data: Path) -> None:
        self.data = data

    def start(self, task: str, total: int | None) -> None:
        if task.startswith("restore "):
            raw = bytearray(self.data.read_bytes())
            raw[len(raw) - 100] ^= 0x10
            self.data.write_bytes(bytes(raw))

    def advance(self, nbytes: int) -> None: ...

    def finish(self, summary: str = "", *, what: str = "") -> None: ...

    def abort(self, reason: str = "interrupted") -> None: ...

    def log(self, message: str) -> None: ...

    def part(self) -> _CorruptWhenAccepted:
        return self


def test_a_restore_failing_after_the_delete_names_the_safety_backup(
    nats_server, account_archive: Path, tmp_path: Path, keyring: KeyRing
):
    live = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    repo = Repository.open(str(account_archive))
    [ref] = repo.refs("ORDERS")
    mid = repo.load_ref(ref).id
    data = account_archive / "data" / repo.load_ref(ref).backup_id
    opts = RestoreOptions(
        url=str(account_archive),
        stream="ORDERS",
        backup=mid,
        connect=ConnectOptions(servers=nats_server.url),
        keys=keyring,
        transfer=TransferConfig(prefetch=1, workers=1),
    )
    with pytest.raises(IntegrityError) as err:
        asyncio.run(replace_stream(opts, progress=_CorruptWhenAccepted(data)))
    msg = str(err.value)
    assert "saved first as backup" in msg and "jsarchive stream restore" in msg and "--backup" in msg
    assert "ORDERS" not in asyncio.run(_names(nats_server.url))  # the partial restore was removed
    saved = msg.split("saved first as backup ")[1][:12]
    r = restore_stream(
        RestoreOptions(
            url=str(account_archive),
            stream="ORDERS",
            backup=saved,
            connect=ConnectOptions(servers=nats_server.url),
            keys=keyring,
        )
    )
    assert asyncio.run(read_messages(nats_server.url, "ORDERS")) == live
    assert marks.mark_of(asyncio.run(_info(nats_server.url))).backup == r.manifest_id


async def _info(url: str) -> dict | None:
    async with await connect(ConnectOptions(servers=url)) as js:
        return await js.stream_info("ORDERS")


def test_a_plain_restore_is_preflighted_before_any_byte(nats_server, second_server, account_archive, tmp_path: Path):
    from tests.test_bad_input import jsarchive_watching, one_error

    run, seen = jsarchive_watching(
        "stream",
        "restore",
        account_archive,
        "ORDERS",
        "-s",
        second_server.url,
        "-i",
        tmp_path / "backup.key",
        "--replicas",
        "3",
        url=second_server.url,
        env=cli_env(tmp_path),
    )
    one_error(run, 8, "nothing was sent", "replicas")
    assert not [s for s in seen if "RESTORE" in s], seen  # the server never saw a restore request
    assert asyncio.run(_names(second_server.url)) == []


def test_a_signed_safety_backup_passes_trust(nats_server, account_archive: Path, tmp_path: Path):
    """--sign-key on account restore signs the safety backups, so a --trust-key restore can bring them back."""
    from tests.test_trust import SignKey

    key = SignKey(tmp_path, "ops")
    run = _replace(account_archive, nats_server.url, tmp_path, "--sign-key", str(key.private))
    assert run.returncode == 0, run.stdout + run.stderr
    saved = json.loads(run.stdout)["restore"]["safety_backups"]["ORDERS"]
    assert (account_archive / "signatures" / saved / key.fingerprint).is_file()
    back = jsarchive(
        "stream",
        "restore",
        account_archive,
        "ORDERS",
        "-s",
        nats_server.url,
        "-i",
        tmp_path / "backup.key",
        "--backup",
        saved,
        "--trust-key",
        key.public,
        "--json",
        env=cli_env(tmp_path),
    )
    assert back.returncode == 6, back.stdout + back.stderr  # trusted and opened; the stream exists: a conflict


class _RecreateWhenSaving(_CorruptWhenAccepted):
    """Progress that deletes and re-creates the live stream (another operator) just as its safety backup starts."""

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self, task: str, total: int | None) -> None: ...

    def log(self, message: str) -> None:
        import threading

        import nats
        from nats.js.api import StreamConfig

        async def recreate() -> None:
            nc = await nats.connect(self.url)
            js = nc.jetstream()
            await js.delete_stream("ORDERS")
            await js.add_stream(StreamConfig(name="ORDERS", subjects=["orders.>"]))
            await js.publish("orders.new", b"someone else's stream")
            await nc.close()

        if "safety backup" in message:
            t = threading.Thread(target=lambda: asyncio.run(recreate()))
            t.start()
            t.join(30)


def test_a_stream_recreated_while_it_is_saved_is_not_deleted(
    nats_server, account_archive: Path, tmp_path: Path, keyring: KeyRing
):
    from pipeline.base.errors import ConflictError

    repo = Repository.open(str(account_archive))
    [ref] = repo.refs("ORDERS")
    opts = RestoreOptions(
        url=str(account_archive),
        stream="ORDERS",
        backup=repo.load_ref(ref).id,
        connect=ConnectOptions(servers=nats_server.url),
        keys=keyring,
    )
    with pytest.raises(ConflictError, match="re-created"):
        asyncio.run(replace_stream(opts, progress=_RecreateWhenSaving(nats_server.url)))
    assert asyncio.run(read_messages(nats_server.url, "ORDERS"))[-1][3] == b"someone else's stream"
