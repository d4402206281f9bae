"""natscli interoperability: `jsarchive export` writes what natscli writes, `jsarchive import` reads it back.

- backup.json: jsm.go re-encodes the snapshot response through its typed structs; a golden file pins the field
  order, omitempty and Go's escaping without a server.
- stream.tar.s2: the chunks exactly as the server sent them during the backup, captured on the wire here.
- an exported directory restores through the raw protocol (backup.json as the request, stream.tar.s2 as chunks),
  and imports back into an archive as a backup that restores and re-exports byte for byte.
- bad directories: one error line, a documented exit code, nothing written.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import nats
import pytest

from pipeline.archive.repository import Repository
from pipeline.base.transfer import TransferConfig
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.flows.restore import RestoreOptions, restore_stream
from pipeline.jetstream import client as jsmod
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.ops.natscli import ExportOptions, ImportOptions, backup_json, export_backup, import_directory
from tests.streams import comparable, fill_stream, read_messages, stream_state
from tests.test_bad_input import archive_state, assert_archive_untouched, cli_env, jsarchive, one_error

pytestmark = pytest.mark.timeout(300)

# The config and state nats-server 2.15.1 sent for a KV bucket made by nats-py (server field order).
KV_RESPONSE = (
    '{"config":{"name":"KV_cfg","subjects":["$KV.cfg.\\u003e"],"retention":"limits","max_consumers":-1,'
    '"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":1,"max_msg_size":-1,"discard":"new",'
    '"storage":"file","num_replicas":1,"duplicate_window":120000000000,"compression":"none","allow_direct":false,'
    '"mirror_direct":false,"sealed":false,"deny_delete":true,"deny_purge":false,"allow_rollup_hdrs":true,'
    '"consumer_limits":{},"allow_msg_ttl":true,"metadata":{"_nats.req.level":"1"}},"state":{"messages":1,'
    '"bytes":40,"first_seq":1,"first_ts":"2026-11-23T22:23:00.325567219Z","last_seq":1,'
    '"last_ts":"2026-11-23T22:23:00.325567219Z","num_subjects":1,"consumer_count":0}}'
)
# What natscli writes for it: jsm.go's StreamConfig order (max_msgs_per_subject first, storage before discard,
# sealed … mirror_direct, metadata, allow_msg_ttl, consumer_limits), compression "none" omitted (omitempty on an
# int enum), Go's HTML-safe escaping, two-space indent, no trailing newline.
KV_BACKUP_JSON = """{
  "config": {
    "name": "KV_cfg",
    "subjects": [
      "$KV.cfg.\\u003e"
    ],
    "retention": "limits",
    "max_consumers": -1,
    "max_msgs_per_subject": 1,
    "max_msgs": -1,
    "max_bytes": -1,
    "max_age": 0,
    "max_msg_size": -1,
    "storage": "file",
    "discard": "new",
    "num_replicas": 1,
    "duplicate_window": 120000000000,
    "sealed": false,
    "deny_delete": true,
    "deny_purge": false,
    "allow_rollup_hdrs": true,
    "allow_direct": false,
    "mirror_direct": false,
    "metadata": {
      "_nats.req.level": "1"
    },
    "allow_msg_ttl": true,
    "consumer_limits": {}
  },
  "state": {
    "messages": 1,
    "bytes": 40,
    "first_seq": 1,
    "first_ts": "2026-11-23T22:23:00.325567219Z",
    "last_seq": 1,
    "last_ts": "2026-11-23T22:23:00.325567219Z",
    "num_subjects": 1,
    "consumer_count": 0
  }
}"""


def test_backup_json_is_what_jsm_go_writes() -> None:
    resp = json.loads(KV_RESPONSE)
    # The manifest keeps config and state as canonical (sorted) JSON: the server's order is gone, and must not matter.
    shuffled = json.loads(json.dumps(resp, sort_keys=True))
    assert backup_json(shuffled["config"], shuffled["state"]).decode() == KV_BACKUP_JSON
    assert backup_json(resp["config"], resp["state"]).decode() == KV_BACKUP_JSON


def test_backup_json_escaping_zero_values_and_unknown_fields() -> None:
    config = {
        "name": "S",
        "description": "a<b> & c\u2028é\ttab",
        "placement": {"cluster": "east", "tags": ["region:eu"]},
        "sources": [{"name": "X", "external": {"deliver": "d", "api": "a"}}],
        "compression": "s2",
        "persist_mode": "default",
        "allow_future_flag": True,  # a field jsm.go does not know: kept, after the known ones
    }
    out = backup_json(config, {"messages": 0})
    text = out.decode("utf-8")
    assert '"description": "a\\u003cb\\u003e \\u0026 c\\u2028é\\ttab"' in text  # raw UTF-8, Go's escapes
    assert "é".encode() in out
    doc = json.loads(text)
    cfg = list(doc["config"])
    # Non-omitempty fields absent from the input appear with Go's zero values, in struct order.
    assert cfg[:6] == ["name", "description", "retention", "max_consumers", "max_msgs_per_subject", "max_msgs"]
    assert doc["config"]["retention"] == "limits" and doc["config"]["storage"] == "file"
    assert doc["config"]["consumer_limits"] == {} and doc["config"]["sealed"] is False
    assert doc["config"]["compression"] == "s2"  # not the zero value: kept
    assert "persist_mode" not in doc["config"]  # "default" is the enum's zero value: omitted
    assert cfg[-1] == "allow_future_flag"
    assert list(doc["config"]["placement"]) == ["cluster", "tags"]
    assert list(doc["config"]["sources"][0]) == ["name", "external"]
    assert list(doc["config"]["sources"][0]["external"]) == ["api", "deliver"]
    assert doc["state"]["first_ts"] == "0001-01-01T00:00:00Z" and doc["state"]["consumer_count"] == 0
    assert not text.endswith("\n")


# -- with a server ---------------------------------------------------------------------------------------------


def _capture_snapshots(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record every snapshot's response and chunk payloads as they arrive from the server."""
    seen: list[dict] = []
    real = jsmod.JetStream.snapshot

    async def tapped(self, stream, on_chunk, **kw):  # type: ignore[no-untyped-def]
        rec = {"stream": stream, "chunks": bytearray(), "response": None}
        seen.append(rec)
        inner_start = kw.pop("on_start", None)

        def on_start(resp: dict) -> None:
            rec["response"] = resp
            if inner_start:
                inner_start(resp)

        async def chunk(data: bytes) -> None:
            rec["chunks"].extend(data)
            await on_chunk(data)

        return await real(self, stream, chunk, on_start=on_start, **kw)

    monkeypatch.setattr(jsmod.JetStream, "snapshot", tapped)
    return seen


def _release_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsmod.JetStream, "snapshot", _REAL_SNAPSHOT)


_REAL_SNAPSHOT = jsmod.JetStream.snapshot


@pytest.fixture
def exported(nats_server, tmp_path, keyring, monkeypatch):
    """A backup of ORDERS (consumers, deletes, headers) with the snapshot captured on the wire, then exported."""
    filled = asyncio.run(fill_stream(nats_server.url, "ORDERS", 3_000, deletes=(7, 8, 1000)))
    seen = _capture_snapshots(monkeypatch)
    archive = tmp_path / "archive"
    res = backup_stream(
        BackupOptions(
            stream="ORDERS",
            url=str(archive),
            connect=ConnectOptions(servers=nats_server.url),
            keys=keyring,
            transfer=TransferConfig(block_size=64 * 1024),
        )
    )
    _release_snapshots(monkeypatch)
    assert len(seen) == 1 and res.blocks > 1
    out = tmp_path / "natscli" / "ORDERS"
    ex = export_backup(ExportOptions(url=str(archive), backup=res.manifest_id[:10], directory=str(out), keys=keyring))
    return {"filled": filled, "backup": res, "wire": seen[0], "dir": out, "export": ex, "archive": archive}


def test_export_is_byte_identical_to_the_wire(exported) -> None:
    out: Path = exported["dir"]
    wire = exported["wire"]
    assert sorted(p.name for p in out.iterdir()) == ["backup.json", "stream.tar.s2"]
    assert (out / "stream.tar.s2").read_bytes() == bytes(wire["chunks"])
    resp = wire["response"]
    assert (out / "backup.json").read_bytes() == backup_json(resp["config"], resp["state"])
    assert exported["export"].kind == "stream" and exported["export"].streams[0].snapshot_format == "V2"
    # Everything the server sent survives (jsm.go only drops zero values it omits).
    doc = json.loads((out / "backup.json").read_bytes())
    for key, value in resp["config"].items():
        if key in doc["config"]:
            assert doc["config"][key] == value, key
        else:
            assert value in (False, "none", "", 0, None, {}, []), key
    assert doc["state"] == {k: v for k, v in resp["state"].items()}


def test_export_restores_through_the_raw_protocol(exported, second_server) -> None:
    """natscli's restore, by hand: backup.json is the request, stream.tar.s2 the chunks."""
    out: Path = exported["dir"]
    request = json.loads((out / "backup.json").read_bytes())
    data = (out / "stream.tar.s2").read_bytes()

    async def chunks():
        for i in range(0, len(data), 64 * 1024):  # jsm.go's chunk size
            yield data[i : i + 64 * 1024]

    async def restore() -> dict:
        async with await connect(ConnectOptions(servers=second_server.url)) as js:
            return await js.restore("ORDERS", request, chunks(), in_flight=1)

    final = asyncio.run(restore())
    assert final["config"]["name"] == "ORDERS"
    got = asyncio.run(stream_state(second_server.url, "ORDERS"))
    assert got["messages"] == exported["filled"].messages and got["num_deleted"] == 3
    assert set(got["consumers"]) == {"billing", "eu-audit"}
    assert got["consumers"]["eu-audit"]["filter_subject"] == "orders.eu.>"


def test_import_of_an_export_round_trips(exported, nats_server, second_server, tmp_path, keyring) -> None:
    before = asyncio.run(stream_state(nats_server.url, "ORDERS"))
    messages = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    archive2 = tmp_path / "archive2"
    imp = import_directory(ImportOptions(directory=str(exported["dir"]), url=str(archive2), keys=keyring))
    assert imp.kind == "stream" and imp.set_id is None and len(imp.streams) == 1
    b = imp.streams[0]
    assert b.stream == "ORDERS" and b.encrypted and b.snapshot_format == "V2"
    assert b.messages == exported["filled"].messages

    m = Repository.open(str(archive2)).load_manifest(b.manifest_id)
    assert m.envelope["origin"]["type"] == "natscli-import"
    assert m.envelope["origin"]["directory"] == "ORDERS"
    assert m.encrypted and m.key_slots  # encrypted like any other backup

    r = restore_stream(
        RestoreOptions(
            url=str(archive2), stream="ORDERS", connect=ConnectOptions(servers=second_server.url), keys=keyring
        )
    )
    assert r.manifest_id == b.manifest_id and r.consumers == ["billing", "eu-audit"]
    assert comparable(asyncio.run(stream_state(second_server.url, "ORDERS"))) == comparable(before)
    assert asyncio.run(read_messages(second_server.url, "ORDERS")) == messages

    # Exported again, the imported backup gives back the very same two files.
    again = tmp_path / "again"
    export_backup(ExportOptions(url=str(archive2), backup=b.manifest_id, directory=str(again), keys=keyring))
    for name in ("backup.json", "stream.tar.s2"):
        assert (again / name).read_bytes() == (exported["dir"] / name).read_bytes(), name


def test_account_directory_imports_as_a_set(nats_server, second_server, tmp_path, identity_file) -> None:
    async def fill() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="prefs")
        await kv.put("theme", b"dark <&>")
        await js.add_stream(name="EVENTS", subjects=["events.>"])
        for i in range(200):
            await js.publish(f"events.{i % 3}", b"e%d" % i)
        await nc.close()

    asyncio.run(fill())
    archive, env, key = tmp_path / "archive", cli_env(tmp_path), identity_file[0]
    run = jsarchive("account", "backup", archive, "-s", nats_server.url, "-i", key, "--json", env=env)
    assert run.returncode == 0, run.stderr
    set_id = json.loads(run.stdout)["account"]["set_id"]
    out = tmp_path / "natscli-account"
    run = jsarchive("export", archive, set_id[:8], out, "-i", key, "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["EVENTS", "KV_prefs"]  # nats account backup's layout
    assert all(
        sorted(p.name for p in (out / s).iterdir()) == ["backup.json", "stream.tar.s2"] for s in ("EVENTS", "KV_prefs")
    )

    archive2 = tmp_path / "archive2"
    run = jsarchive("import", out, archive2, "-i", key, "--json", env=env)
    assert run.returncode == 0, run.stderr
    imported = json.loads(run.stdout)["import"]
    assert imported["kind"] == "account" and imported["set_id"]
    assert sorted(s["stream"] for s in imported["streams"]) == ["EVENTS", "KV_prefs"]
    run = jsarchive(
        "account", "restore", archive2, imported["set_id"], "-s", second_server.url, "-i", key, "--json", env=env
    )
    assert run.returncode == 0, run.stderr
    assert sorted(r["stream"] for r in json.loads(run.stdout)["restore"]["restored"]) == ["EVENTS", "KV_prefs"]

    async def read_back() -> tuple[bytes, int]:
        nc = await nats.connect(second_server.url)
        js = nc.jetstream()
        kv = await js.key_value("prefs")
        entry = await kv.get("theme")
        info = await js.stream_info("EVENTS")
        await nc.close()
        return entry.value, info.state.messages

    assert asyncio.run(read_back()) == (b"dark <&>", 200)


# -- bad directories -------------------------------------------------------------------------------------------


def _stream_dir(root: Path, name: str = "S") -> Path:
    d = root / name
    d.mkdir(parents=True)
    return d


@pytest.mark.parametrize(
    ("make", "code", "needles"),
    [
        (lambda d: None, 3, ["no backup.json", "not a natscli"]),
        (lambda d: (d / "backup.json").write_text("{not json"), 2, ["backup.json", "not valid JSON"]),
        (lambda d: (d / "backup.json").write_text('{"config": {}, "state": {}}'), 2, ["no config with a stream name"]),
        (lambda d: (d / "backup.json").write_text('{"config": {"name": "S"}, "state": {}}'), 3, ["no stream.tar.s2"]),
        (
            lambda d: [
                (d / "backup.json").write_text('{"config": {"name": "S"}, "state": {}}'),
                (d / "stream.tar.s2").write_bytes(os.urandom(100)),
            ],
            2,
            ["not an S2 stream"],
        ),
    ],
    ids=["no-backup-json", "bad-json", "no-name", "no-data", "not-s2"],
)
def test_import_refuses_what_is_not_a_natscli_backup(tmp_path, make, code, needles) -> None:
    env = cli_env(tmp_path)
    key = tmp_path / "backup.key"
    assert jsarchive("keygen", "-o", key, env=env).returncode == 0
    d = tmp_path / "in" / "S"
    d.mkdir(parents=True)
    make(d)
    archive = tmp_path / "archive"
    before = archive_state(archive)
    one_error(jsarchive("import", d, archive, "-i", key, env=env), code, *needles)
    assert_archive_untouched(archive, before)


def test_account_import_checks_every_directory_first(exported, tmp_path, identity_file) -> None:
    """One broken stream directory in an account backup: nothing at all is imported."""
    env, key = cli_env(tmp_path), identity_file[0]
    account = tmp_path / "account"
    account.mkdir()
    os.rename(exported["dir"], account / "ORDERS")
    (account / "BROKEN").mkdir()
    (account / "BROKEN" / "backup.json").write_text('{"config": {"name": "BROKEN"}, "state": {}}')
    archive = tmp_path / "archive-account"
    before = archive_state(archive)
    one_error(jsarchive("import", account, archive, "-i", key, env=env), 3, "BROKEN", "no stream.tar.s2")
    assert_archive_untouched(archive, before)
