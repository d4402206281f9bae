"""Partial and renamed restores (rewrite mode): pure rewriting, then real 2.15 servers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from pipeline.archive.inspect import iter_messages
from pipeline.base.errors import ConflictError, ServerRefused, UsageError
from pipeline.base.transfer import TransferConfig
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.flows.restore import RestoreOptions, restore_stream
from pipeline.format.natsarc import END_MARKER, encode_entry, encode_head, iter_entries
from pipeline.format.rewrite import (
    RewriteSpec,
    SubjectMap,
    filters_overlap,
    plan_rewrite,
    rewrite_archive,
    snappy_framed,
)
from pipeline.format.s2 import iter_decode
from pipeline.format.selection import subject_matches
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.keys.keyring import KeyRing
from tests.conftest import make_server
from tests.servers import V1_VERSIONS
from tests.streams import fill_stream, read_messages, stream_state

N = 3000

# -- pure ---------------------------------------------------------------------------------------------------------


def test_subject_map() -> None:
    sm = SubjectMap.parse(["orders.*.new=drill.new.*", "orders.>=drill.orders.>"])
    assert sm.map("orders.eu.new") == "drill.new.eu"
    assert sm.map("orders.eu.paid") == "drill.orders.eu.paid"
    assert sm.map("orders.>") == "drill.orders.>"
    assert sm.map("orders.*.new") == "drill.new.*"
    assert sm.map("audit.log") is None
    assert sm.map("orders") is None
    with pytest.raises(UsageError):
        SubjectMap.parse(["orders.>=drill.*"])
    with pytest.raises(UsageError):
        SubjectMap.parse(["orders.>"])
    assert filters_overlap("orders.>", "orders.eu.*")
    assert filters_overlap("*.eu", "orders.*")
    assert not filters_overlap("orders.>", "drill.orders.>")
    assert not filters_overlap("orders.eu", "orders.eu.x")


def test_snappy_frames_decode() -> None:
    archive = b"NATSARC1" + encode_entry("a.b", -5, 3, b"NATS/1.0\r\n\r\n", b"x" * 200_000) + b"\x00" * 5
    framed = b"".join(snappy_framed([archive[:10], archive[10:]]))
    assert framed.startswith(b"\xff\x06\x00\x00sNaPpY")
    assert b"".join(iter_decode([framed])) == archive
    (e,) = list(iter_entries([archive]))
    assert (e.name, e.timestamp, e.sequence, len(e.payload)) == ("a.b", -5, 3, 200_000)


# -- real servers -------------------------------------------------------------------------------------------------


def _backup(url: str, archive: Path, keyring: KeyRing) -> str:
    asyncio.run(fill_stream(url, messages=N, deletes=(7, 8, 1000)))
    res = backup_stream(
        BackupOptions(
            stream="ORDERS",
            url=str(archive),
            connect=ConnectOptions(servers=url),
            keys=keyring,
            transfer=TransferConfig(block_size=64 * 1024),
        )
    )
    return res.manifest_id


def _restore(url: str, archive: Path, keyring: KeyRing, **kw: object):
    return restore_stream(
        RestoreOptions(url=str(archive), stream="ORDERS", connect=ConnectOptions(servers=url), keys=keyring, **kw)
    )


async def _names(url: str) -> list[str]:
    async with await connect(ConnectOptions(servers=url)) as js:
        return sorted(await js.stream_names())


def test_renamed_next_to_original(nats_server, tmp_path, keyring):
    url, archive = nats_server.url, tmp_path / "archive"
    _backup(url, archive, keyring)
    before = asyncio.run(read_messages(url, "ORDERS"))
    state_before = asyncio.run(stream_state(url, "ORDERS"))

    with pytest.raises(ConflictError, match="overlaps"):  # same subjects as ORDERS: refused before any byte
        _restore(url, archive, keyring, new_name="DRILL")
    assert asyncio.run(_names(url)) == ["ORDERS"]
    with pytest.raises(UsageError, match="audit.log"):  # a message subject no mapping covers
        _restore(url, archive, keyring, new_name="DRILL", subject_map=["orders.>=drill.orders.>"])
    assert asyncio.run(_names(url)) == ["ORDERS"]

    r = _restore(
        url, archive, keyring, new_name="DRILL", subject_map=["orders.>=drill.orders.>", "audit.>=drill.audit.>"]
    )
    assert r.stream == "DRILL"
    assert asyncio.run(_names(url)) == ["DRILL", "ORDERS"]
    after = asyncio.run(read_messages(url, "DRILL"))
    assert after == [(seq, "drill." + subj, h, data) for seq, subj, h, data in before]
    st = asyncio.run(stream_state(url, "DRILL"))
    assert st["_info"]["config"]["subjects"] == ["drill.orders.>", "drill.audit.>"]
    assert st["consumers"]["eu-audit"]["filter_subject"] == "drill.orders.eu.>"
    assert st["consumers"]["billing"]["ack_floor"] == state_before["consumers"]["billing"]["ack_floor"]
    assert asyncio.run(read_messages(url, "ORDERS")) == before  # the original is untouched

    async def publish() -> None:
        nc = await nats.connect(url)
        try:
            ack = await nc.jetstream().publish("drill.orders.eu.new", b"new")
            assert ack.stream == "DRILL"
        finally:
            await nc.close()

    asyncio.run(publish())
    assert asyncio.run(stream_state(url, "ORDERS"))["messages"] == state_before["messages"]
    assert asyncio.run(stream_state(url, "DRILL"))["messages"] == state_before["messages"] + 1

    with pytest.raises(ConflictError, match="already exists"):
        _restore(url, archive, keyring, new_name="DRILL", subject_map=["orders.>=x.>", "audit.>=y.>"])


def test_subject_filter(nats_server, second_server, tmp_path, keyring):
    archive = tmp_path / "archive"
    _backup(nats_server.url, archive, keyring)
    before = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    r = _restore(second_server.url, archive, keyring, subjects=["orders.eu.>"])
    want = [m for m in before if subject_matches("orders.eu.>", m[1])]
    assert asyncio.run(read_messages(second_server.url, "ORDERS")) == want  # same sequences
    st = asyncio.run(stream_state(second_server.url, "ORDERS"))
    assert st["messages"] == len(want) == r.messages
    assert st["last_seq"] == before[-1][0]
    assert set(st["consumers"]) == {"billing", "eu-audit"}


def test_until_seq_clamps_consumers(nats_server, second_server, tmp_path, keyring):
    archive = tmp_path / "archive"
    _backup(nats_server.url, archive, keyring)
    before = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    orig = asyncio.run(stream_state(nats_server.url, "ORDERS"))
    assert orig["consumers"]["billing"]["ack_floor"] > 800
    _restore(second_server.url, archive, keyring, until_seq=800)
    st = asyncio.run(stream_state(second_server.url, "ORDERS"))
    assert st["last_seq"] == 800
    assert asyncio.run(read_messages(second_server.url, "ORDERS")) == [m for m in before if m[0] <= 800]
    for name, c in st["consumers"].items():
        assert c["ack_floor"] <= 800, name
        assert c["num_pending"] == 0, name

    async def infos() -> list[dict]:
        async with await connect(ConnectOptions(servers=second_server.url)) as js:
            return await js.consumers("ORDERS")

    for c in asyncio.run(infos()):
        assert c["delivered"]["stream_seq"] <= 800
        assert c["ack_floor"]["consumer_seq"] <= c["delivered"]["consumer_seq"]


def test_until_time(nats_server, second_server, tmp_path, keyring):
    archive = tmp_path / "archive"
    mid = _backup(nats_server.url, archive, keyring)
    before = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    msgs = list(iter_messages(str(archive), mid, keys=keyring))
    until = next(m.timestamp for m in msgs if m.sequence >= 2001)
    cut = 0
    for m in msgs:
        if m.timestamp >= until:
            break
        cut = m.sequence
    _restore(second_server.url, archive, keyring, until_ns=until)
    st = asyncio.run(stream_state(second_server.url, "ORDERS"))
    assert st["last_seq"] == cut
    assert asyncio.run(read_messages(second_server.url, "ORDERS")) == [m for m in before if m[0] <= cut]


def test_v1_backup_refused(tmp_path, keyring):
    with make_server(V1_VERSIONS[0], tmp_path / "nats") as srv:
        asyncio.run(fill_stream(srv.url, messages=200, deletes=(), consumers=False))
        backup_stream(
            BackupOptions(
                stream="ORDERS", url=str(tmp_path / "a"), connect=ConnectOptions(servers=srv.url), keys=keyring
            )
        )
        with pytest.raises(UsageError, match="need a V2 backup") as e:
            _restore(srv.url, tmp_path / "a", keyring, new_name="COPY", subject_map=["orders.>=c.>", "audit.>=d.>"])
        assert e.value.exit_code == 2


def test_cli_renamed_and_cut(nats_server, tmp_path, keyring, identity_file):
    from click.testing import CliRunner

    from pipeline.entry.cli import main

    url, archive = nats_server.url, tmp_path / "archive"
    _backup(url, archive, keyring)
    before = asyncio.run(read_messages(url, "ORDERS"))
    args = ["stream", "restore", str(archive), "ORDERS", "-s", url, "-i", str(identity_file[0]), "--json"]
    r = CliRunner().invoke(main, [*args, "--as", "DRILL", "--subject-map", "orders.>=d.o.>"])
    assert r.exit_code == 2 and "audit.log" in r.output, r.output  # audit.log maps nowhere
    rewrite = ["--as", "DRILL", "--subject-map", "orders.>=d.o.>", "--subject-map", "audit.>=d.a.>"]
    r = CliRunner().invoke(main, [*args, *rewrite, "--subject", "orders.us.*", "--until-seq", "2000"])
    assert r.exit_code == 0, r.output
    want = [(s, "d.o." + subj[len("orders.") :], h, d) for s, subj, h, d in before if s <= 2000 and ".us." in subj]
    assert asyncio.run(read_messages(url, "DRILL")) == want
    assert asyncio.run(stream_state(url, "DRILL"))["last_seq"] == 2000


def test_old_server_refused(nats_server, tmp_path, keyring):
    archive = tmp_path / "archive"
    _backup(nats_server.url, archive, keyring)
    with make_server(V1_VERSIONS[0], tmp_path / "old") as srv:
        with pytest.raises(ServerRefused, match="2.15") as e:
            _restore(srv.url, archive, keyring, until_seq=10)
        assert e.value.exit_code == 8
        assert asyncio.run(_names(srv.url)) == []


def test_entries_appended_past_the_heads_last_seq_are_kept() -> None:
    """A client-written archive (a backup's catch-up read, a merged chain) holds messages past its state.json's
    last_seq; a rewrite keeps them and its state runs to the last of them."""
    head = encode_head({"messages": 2, "first_seq": 1, "last_seq": 2}, [], 0)
    entries = b"".join(encode_entry(f"s.{i}", 1_000 + i, i, b"", b"m%d" % i) for i in (1, 2, 3, 4))
    archive = [head + entries + END_MARKER]
    plan = plan_rewrite(archive, {"name": "S", "subjects": ["s.>"]}, RewriteSpec(new_name="T"))
    assert plan.expected_state()["last_seq"] == 4 and plan.expected_state()["messages"] == 4
    kept = [e.sequence for e in iter_entries(rewrite_archive(archive, plan)) if e.sequence]
    assert kept == [1, 2, 3, 4]
