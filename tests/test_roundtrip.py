"""Round trips through real nats-servers: backup → delete → restore → everything identical."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline.base.transfer import TransferConfig
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.flows.restore import RestoreOptions, restore_stream
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.keys.keyring import KeyRing
from tests.conftest import make_server
from tests.servers import V1_VERSIONS
from tests.streams import comparable, fill_stream, read_messages, stream_state


async def _delete(url: str, name: str) -> None:
    async with await connect(ConnectOptions(servers=url)) as js:
        assert await js.delete_stream(name)


def _roundtrip(url: str, archive: Path, keyring: KeyRing, messages: int, expect_format: str, **fill: object) -> None:
    filled = asyncio.run(fill_stream(url, messages=messages, **fill))
    before = asyncio.run(stream_state(url, "ORDERS"))
    msgs_before = asyncio.run(read_messages(url, "ORDERS"))
    assert before["messages"] == filled.messages
    assert before["num_deleted"] == len(filled.deleted)
    assert before["consumers"]["billing"]["ack_floor"] >= messages // 3  # stream seq: deletes shift it
    assert before["consumers"]["eu-audit"]["ack_floor"] > 300  # filtered: floor is a stream sequence

    res = backup_stream(
        BackupOptions(
            stream="ORDERS",
            url=str(archive),
            connect=ConnectOptions(servers=url),
            keys=keyring,
            transfer=TransferConfig(block_size=64 * 1024),
        )
    )
    assert res.snapshot_format == expect_format
    assert res.messages == filled.messages
    assert res.blocks > 1  # small blocks on purpose: exercises multi-block sealing and ordering
    asyncio.run(_delete(url, "ORDERS"))

    r = restore_stream(
        RestoreOptions(url=str(archive), stream="ORDERS", connect=ConnectOptions(servers=url), keys=keyring)
    )
    assert r.manifest_id == res.manifest_id
    after = asyncio.run(stream_state(url, "ORDERS"))
    assert comparable(after) == comparable(before)
    assert asyncio.run(read_messages(url, "ORDERS")) == msgs_before


def test_roundtrip_v2_server(nats_server, tmp_path, keyring):
    _roundtrip(nats_server.url, tmp_path / "archive", keyring, 50_000, "V2")


@pytest.mark.parametrize("version", [V1_VERSIONS[0]])
def test_roundtrip_v1_server(version, tmp_path, keyring):
    with make_server(version, tmp_path / "nats") as srv:
        assert srv.varz()["version"] == version
        _roundtrip(srv.url, tmp_path / "archive", keyring, 50_000, "V1")


@pytest.mark.parametrize("version", V1_VERSIONS[1:])
def test_roundtrip_older_v1_servers(version, tmp_path, keyring):
    with make_server(version, tmp_path / "nats") as srv:
        assert srv.varz()["version"] == version
        _roundtrip(srv.url, tmp_path / "archive", keyring, 5_000, "V1", deletes=(7, 8, 1000))


def test_memory_stream_roundtrip_v2(nats_server, tmp_path, keyring):
    _roundtrip(nats_server.url, tmp_path / "archive", keyring, 5_000, "V2", storage="memory", deletes=(7, 8, 1000))
