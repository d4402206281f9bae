"""``--store decoded``: backups that keep the decoded NATSARC1 archive (inner encoding "natsarc"), on real servers.

Every reader of the data must handle them: restore (plain and rewritten), inspect, cat, verify --deep, export,
show; old servers are refused before anything is written; and the point of it all, a smaller archive, is
measured on realistic data rather than assumed.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner
from nats.js.api import StreamConfig

from benchmarks.bench_core import event
from pipeline.archive.inspect import inspect_backup, iter_messages, message_record
from pipeline.archive.reader import BlockReader
from pipeline.archive.repository import Repository
from pipeline.archive.verify import VerifyOptions, verify_archive
from pipeline.base.errors import IntegrityError
from pipeline.base.transfer import TransferConfig
from pipeline.entry.cli import main
from pipeline.flows.backup import BackupOptions, BackupResult, backup_stream
from pipeline.flows.restore import RestoreOptions, RestoreResult, restore_stream
from pipeline.format import manifest as mf
from pipeline.format import s2
from pipeline.format.natsarc import MAGIC
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.keys.keyring import KeyRing
from pipeline.ops.natscli import ExportOptions, export_backup
from tests.conftest import make_server
from tests.servers import V1_VERSIONS
from tests.streams import comparable, fill_stream, read_messages, stream_state

N = 3000


def _backup(url: str, archive: Path, keys: KeyRing, store: str, **kw: object) -> BackupResult:
    """A backup of ORDERS in 64 KiB blocks (several blocks even for small streams), unless ``kw`` says otherwise."""
    opts = BackupOptions(
        stream="ORDERS", url=str(archive), keys=keys, transfer=TransferConfig(block_size=64 * 1024), store=store
    )
    opts.connect = ConnectOptions(servers=url)
    for name, value in kw.items():
        setattr(opts, name, value)
    return backup_stream(opts)


def _restore(url: str, archive: Path, keys: KeyRing, backup: str, **kw: object) -> RestoreResult:
    opts = RestoreOptions(url=str(archive), stream="ORDERS", backup=backup, keys=keys)
    opts.connect = ConnectOptions(servers=url)
    for name, value in kw.items():
        setattr(opts, name, value)
    return restore_stream(opts)


async def _delete(url: str, name: str) -> None:
    async with await connect(ConnectOptions(servers=url)) as js:
        assert await js.delete_stream(name)


async def _names(url: str) -> list[str]:
    async with await connect(ConnectOptions(servers=url)) as js:
        return sorted(await js.stream_names())


def _body(archive: Path, manifest_id: str, keys: KeyRing) -> tuple[mf.Manifest, dict, bytes | None]:
    repo = Repository.open(str(archive))
    m = repo.load_manifest(manifest_id)
    key = keys.unwrap(repo.key_slots(m), m.backup_id, m.open_body) if m.encrypted else None
    return m, m.open_body(key), key


def _cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def orders(nats_server) -> str:
    asyncio.run(fill_stream(nats_server.url, messages=N, deletes=(7, 8, 1000)))
    return nats_server.url


# -- round trip ---------------------------------------------------------------------------------------------------


def test_roundtrip_through_the_cli(nats_server, tmp_path, keyring, identity_file):
    """Backup with --store decoded, delete, restore: state, consumers and every message identical."""
    url, archive = nats_server.url, tmp_path / "archive"
    filled = asyncio.run(fill_stream(url, messages=20_000, deletes=(7, 8, 1000, 15_000)))
    before = asyncio.run(stream_state(url, "ORDERS"))
    msgs_before = asyncio.run(read_messages(url, "ORDERS"))
    assert before["num_deleted"] == 4 and before["consumers"]["billing"]["ack_floor"] > 6000

    key = ["-i", str(identity_file[0])]
    store = ["--store", "decoded", "--block-size", "256KiB"]
    code, out, err = _cli("stream", "backup", "ORDERS", str(archive), "-s", url, *key, *store, "--json")
    assert code == 0, err
    res = json.loads(out)["backup"]
    assert res["inner_encoding"] == "natsarc" and res["snapshot_format"] == "V2"
    assert res["messages"] == filled.messages and res["blocks"] > 1
    assert 0 < res["received_bytes"] < res["snapshot_bytes"]  # S2 as sent < the decoded archive stored

    m, body, data_key = _body(archive, res["manifest_id"], keyring)
    assert body["snapshot"]["inner_encoding"] == "natsarc"
    assert body["snapshot"]["received_bytes"] == res["received_bytes"]
    assert m.summary["snapshot_bytes"] == body["snapshot"]["bytes"] == res["snapshot_bytes"]
    first = BlockReader(Repository.open(str(archive)), m, body, data_key, 1, 1).read_block(0)
    assert first.startswith(MAGIC)  # the blocks hold the archive itself, no S2 framing

    asyncio.run(_delete(url, "ORDERS"))
    code, out, err = _cli("stream", "restore", str(archive), "ORDERS", "-s", url, *key, "--json")
    assert code == 0, err
    r = json.loads(out)["restore"]
    assert r["manifest_id"] == res["manifest_id"] and r["consumers"] == ["billing", "eu-audit"]
    assert comparable(asyncio.run(stream_state(url, "ORDERS"))) == comparable(before)
    assert asyncio.run(read_messages(url, "ORDERS")) == msgs_before


def test_decoded_is_stored_smaller_on_realistic_data(nats_server, tmp_path, keyring):
    """The benchmark's JSON events (unique ids, random fields, no padding): zstd on the decoded archive must beat
    zstd on the server's S2 bytes. A real comparison: this fails if decoding does not pay."""
    url = nats_server.url

    async def fill() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream(timeout=30)
            await js.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"]))
            rng, t0 = random.Random(7), time.time()
            futs = []
            for i in range(1, 20_001):
                futs.append(await js.publish_async(f"events.{('DE', 'US', 'JP')[i % 3]}", event(rng, i, t0)))
                if len(futs) >= 2000:
                    await asyncio.gather(*futs)
                    futs.clear()
            await asyncio.gather(*futs)
        finally:
            await nc.close()

    asyncio.run(fill())
    kw = {"stream": "EVENTS", "block_size": 1024 * 1024}
    snapshot = _backup(url, tmp_path / "snapshot", keyring, "snapshot", **kw)
    decoded = _backup(url, tmp_path / "decoded", keyring, "decoded", **kw)
    assert snapshot.inner_encoding == "s2-stream" and decoded.inner_encoding == "natsarc"
    assert decoded.messages == snapshot.messages == 20_000
    assert decoded.stored_bytes < snapshot.stored_bytes, (decoded.stored_bytes, snapshot.stored_bytes)
    # and it still comes back whole
    restored = asyncio.run(read_messages(url, "EVENTS"))
    asyncio.run(_delete(url, "EVENTS"))
    restore_stream(
        RestoreOptions(
            url=str(tmp_path / "decoded"), stream="EVENTS", connect=ConnectOptions(servers=url), keys=keyring
        )
    )
    assert asyncio.run(read_messages(url, "EVENTS")) == restored


# -- rewritten restores -------------------------------------------------------------------------------------------


def test_renamed_and_partial_restores(orders, second_server, tmp_path, keyring):
    url, archive = orders, tmp_path / "archive"
    res = _backup(url, archive, keyring, "decoded")
    before = asyncio.run(read_messages(url, "ORDERS"))
    state_before = asyncio.run(stream_state(url, "ORDERS"))

    r = _restore(
        url,
        archive,
        keyring,
        res.manifest_id,
        new_name="DRILL",
        subject_map=["orders.>=drill.orders.>", "audit.>=drill.audit.>"],
    )
    assert r.stream == "DRILL" and asyncio.run(_names(url)) == ["DRILL", "ORDERS"]
    assert asyncio.run(read_messages(url, "DRILL")) == [(q, "drill." + s, h, d) for q, s, h, d in before]
    st = asyncio.run(stream_state(url, "DRILL"))
    assert st["consumers"]["eu-audit"]["filter_subject"] == "drill.orders.eu.>"
    assert st["consumers"]["billing"]["ack_floor"] == state_before["consumers"]["billing"]["ack_floor"]

    _restore(second_server.url, archive, keyring, res.manifest_id, subjects=["orders.eu.>"], until_seq=2000)
    want = [m for m in before if m[0] <= 2000 and m[1].startswith("orders.eu.")]
    assert asyncio.run(read_messages(second_server.url, "ORDERS")) == want
    st = asyncio.run(stream_state(second_server.url, "ORDERS"))
    assert st["last_seq"] == 2000 and set(st["consumers"]) == {"billing", "eu-audit"}
    assert all(c["ack_floor"] <= 2000 for c in st["consumers"].values())


# -- readers ------------------------------------------------------------------------------------------------------


def test_inspect_cat_verify_show_and_export(orders, second_server, tmp_path, keyring, identity_file):
    """Every reader sees in a decoded backup what it sees in a default backup of the same stream."""
    plain_archive, archive = tmp_path / "plain", tmp_path / "archive"
    plain = _backup(orders, plain_archive, keyring, "snapshot")
    res = _backup(orders, archive, keyring, "decoded")
    key = ["-i", str(identity_file[0])]

    a = inspect_backup(str(plain_archive), plain.manifest_id, keys=keyring)
    b = inspect_backup(str(archive), res.manifest_id, keys=keyring)
    assert (a.inner_encoding, b.inner_encoding) == ("s2-stream", "natsarc")
    assert b.snapshot_format == "V2" and b.complete and b.warnings == a.warnings
    assert b.snapshot_bytes == b.decoded_bytes == res.snapshot_bytes  # nothing to decode: stored is decoded
    assert b.decoded_bytes == a.decoded_bytes  # the same archive (its state timestamps have the same length)
    for field in ("messages", "message_bytes", "first_seq", "last_seq", "deleted", "first_time", "last_time"):
        assert getattr(b, field) == getattr(a, field), field
    assert b.messages == N - 3 and b.subjects == a.subjects
    assert [(c.name, c.position) for c in b.consumers] == [(c.name, c.position) for c in a.consumers]

    records = [message_record(m) for m in iter_messages(str(archive), res.manifest_id, keys=keyring)]
    assert records == [message_record(m) for m in iter_messages(str(plain_archive), plain.manifest_id, keys=keyring)]
    code, out, err = _cli("cat", str(archive), res.manifest_id[:10], *key, "--subject", "orders.eu.>", "--seq", "-500")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines == [r for r in records if r["sequence"] <= 500 and r["subject"].startswith("orders.eu.")]

    rep = verify_archive(VerifyOptions(url=str(archive), backup=res.manifest_id, deep=True, keys=keyring))
    assert rep.exit_code == 0, rep.to_json()
    check = rep.backups[0]
    assert check.deep and check.messages == N - 3 and check.snapshot_bytes == res.snapshot_bytes

    code, out, err = _cli("show", str(archive), res.manifest_id, *key)
    assert code == 0, err
    assert "natsarc (the decoded NATSARC1 archive, re-framed on restore" in out

    # export: a natscli directory whose stream.tar.s2 the server restores (natscli sends the file as it is)
    out_dir = tmp_path / "natscli"
    ex = export_backup(ExportOptions(url=str(archive), backup=res.manifest_id, directory=str(out_dir), keys=keyring))
    data = (out_dir / "stream.tar.s2").read_bytes()
    assert data.startswith(s2.SNAPPY_STREAM_IDENTIFIER) and ex.streams[0].snapshot_bytes == len(data)
    archive_bytes = s2.decompress(data)
    assert archive_bytes.startswith(MAGIC) and len(archive_bytes) == res.snapshot_bytes
    request = json.loads((out_dir / "backup.json").read_bytes())

    async def natscli_restore() -> None:
        async def chunks():
            for i in range(0, len(data), 64 * 1024):  # jsm.go's chunk size
                yield data[i : i + 64 * 1024]

        async with await connect(ConnectOptions(servers=second_server.url)) as js:
            await js.restore("ORDERS", request, chunks(), in_flight=1)

    asyncio.run(natscli_restore())
    assert asyncio.run(read_messages(second_server.url, "ORDERS")) == asyncio.run(read_messages(orders, "ORDERS"))
    got = asyncio.run(stream_state(second_server.url, "ORDERS"))
    assert got["num_deleted"] == 3 and set(got["consumers"]) == {"billing", "eu-audit"}


def test_tampered_block_fails_everywhere(orders, tmp_path, keyring, identity_file):
    archive = tmp_path / "archive"
    res = _backup(orders, archive, keyring, "decoded")
    m, _, _ = _body(archive, res.manifest_id, keyring)
    data_path = archive / m.data_object
    data = bytearray(data_path.read_bytes())
    data[m.blocks[1].offset + 40] ^= 0x01
    data_path.chmod(0o600)
    data_path.write_bytes(bytes(data))
    key = ["-i", str(identity_file[0])]

    for deep in ([], ["--deep"]):
        code, out, err = _cli("verify", str(archive), res.manifest_id, *key, *deep, "--json")
        assert code == 4, (deep, out, err)
        assert "block 1" in json.dumps(json.loads(out)), out
    with pytest.raises(IntegrityError, match="block 1"):
        inspect_backup(str(archive), res.manifest_id, keys=keyring)
    asyncio.run(_delete(orders, "ORDERS"))
    code, _, err = _cli("stream", "restore", str(archive), "ORDERS", "-s", orders, *key)
    assert code == 4 and "block 1" in err, err
    assert asyncio.run(_names(orders)) == []  # the partial stream was removed


def test_unknown_inner_encoding_is_refused_by_every_reader(orders, tmp_path, keyring):
    """A body naming an encoding this version does not know (a newer writer) is refused, never guessed at."""
    archive = tmp_path / "archive"
    res = _backup(orders, archive, KeyRing(), "decoded", encrypt=False)
    raw = (archive / "manifests" / res.manifest_id).read_bytes()
    env = json.loads(raw)
    env["body"]["snapshot"]["inner_encoding"] = "zstd-dict"
    forged = mf.canonical(env)
    forged_id = mf.manifest_id(forged)
    (archive / "manifests" / forged_id).write_bytes(forged)

    with pytest.raises(IntegrityError, match="'zstd-dict', which this jsarchive cannot read"):
        inspect_backup(str(archive), forged_id)
    with pytest.raises(IntegrityError, match="cannot read"):
        list(iter_messages(str(archive), forged_id))
    with pytest.raises(IntegrityError, match="cannot read"):
        export_backup(ExportOptions(url=str(archive), backup=forged_id, directory=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
    rep = verify_archive(VerifyOptions(url=str(archive), backup=forged_id, deep=True))
    assert rep.exit_code == 4 and "cannot read" in " ".join(rep.backups[0].problems)
    asyncio.run(_delete(orders, "ORDERS"))
    with pytest.raises(IntegrityError, match="cannot read"):
        _restore(orders, archive, KeyRing(), forged_id)
    assert asyncio.run(_names(orders)) == []


# -- old servers and accounts -------------------------------------------------------------------------------------


def test_v1_server_refused_before_anything_is_written(tmp_path, identity_file):
    with make_server(V1_VERSIONS[0], tmp_path / "nats") as srv:
        assert srv.varz()["version"] == "2.14.6"
        asyncio.run(fill_stream(srv.url, messages=200, deletes=(), consumers=False))
        key = ["-i", str(identity_file[0])]
        for cmd in (["stream", "backup", "ORDERS"], ["account", "backup"]):
            archive = tmp_path / f"archive-{cmd[0]}"
            code, out, err = _cli(*cmd, str(archive), "-s", srv.url, *key, "--store", "decoded", "--json")
            assert code == 8, (cmd, out, err)
            assert json.loads(out)["error"]["kind"] == "server"
            assert "--store decoded" in err and "2.14.6" in err and "--store snapshot" in err
            assert not [p for p in archive.rglob("*") if p.is_file()]  # no data, manifest, ref, plan or set
        # the default still works there
        code, out, err = _cli("stream", "backup", "ORDERS", str(tmp_path / "ok"), "-s", srv.url, *key, "--json")
        assert code == 0 and json.loads(out)["backup"]["inner_encoding"] == "s2-stream", err


def test_account_backup_stores_decoded(orders, second_server, tmp_path, keyring, identity_file):
    archive = tmp_path / "archive"
    key = ["-i", str(identity_file[0])]
    code, out, err = _cli("account", "backup", str(archive), "-s", orders, *key, "--store", "decoded", "--json")
    assert code == 0, err
    streams = json.loads(out)["account"]["streams"]
    assert [(s["stream"], s["status"]) for s in streams] == [("ORDERS", "backed_up")]
    mid = streams[0]["manifest_id"]
    _, body, _ = _body(archive, mid, keyring)
    assert body["snapshot"]["inner_encoding"] == "natsarc"
    code, _, err = _cli("account", "restore", str(archive), "-s", second_server.url, *key, "--json")
    assert code == 0, err
    assert asyncio.run(read_messages(second_server.url, "ORDERS")) == asyncio.run(read_messages(orders, "ORDERS"))
