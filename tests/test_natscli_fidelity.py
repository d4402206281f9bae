"""natscli fidelity, checked against what jsm.go does with the same data.

- A `nats stream backup --no-consumers` directory still counts the stream's consumers in backup.json; import
  reads the snapshot (V2 state.json + consumers/ entries, V1 obs/ members) and the restore expects none.
- Newer jsm.go names the data file stream.arc.s2: import reads both names.
- A memory-storage stream exports with a warning (jsm.go refuses it client-side), exit 0.
- sources[].consumer (durable sourcing) is written in jsm.go's field order.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pipeline.archive.repository import Repository
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.flows.restore import RestoreOptions, restore_stream
from pipeline.format.sets import parse_set
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.keys.keyring import KeyRing
from pipeline.ops.natscli import (
    ExportOptions,
    ImportOptions,
    NatscliStream,
    backup_json,
    export_backup,
    import_directory,
)
from tests.conftest import make_server
from tests.streams import fill_stream, stream_state
from tests.test_bad_input import archive_state, assert_archive_untouched, cli_env, jsarchive, one_error

pytestmark = pytest.mark.timeout(300)


async def _natscli_backup(url: str, stream: str, directory: Path, *, no_consumers: bool, data_name: str) -> dict:
    """What `nats stream backup [--no-consumers]` writes, by the raw snapshot protocol: chunks + backup.json."""
    chunks = bytearray()
    resp: dict = {}

    async def on_chunk(data: bytes) -> None:
        chunks.extend(data)

    async with await connect(ConnectOptions(servers=url)) as js:
        await js.snapshot(stream, on_chunk, no_consumers=no_consumers, chunk_size=128 * 1024, on_start=resp.update)
    directory.mkdir(parents=True, mode=0o700)
    (directory / data_name).write_bytes(bytes(chunks))
    (directory / "backup.json").write_bytes(backup_json(resp["config"], resp["state"]))
    return resp


def _body(archive: Path, manifest_id: str, keys: KeyRing) -> dict:
    repo = Repository.open(str(archive))
    m = repo.load_manifest(manifest_id)
    return m.open_body(keys.unwrap(repo.key_slots(m), m.backup_id, m.open_body))


@pytest.mark.parametrize(
    ("version", "no_consumers", "data_name"),
    [
        (None, True, "stream.arc.s2"),  # 2.15 (V2), named as newer jsm.go names it
        (None, False, "stream.tar.s2"),
        ("2.14.6", True, "stream.tar.s2"),  # V1 tar
        ("2.14.6", False, "stream.tar.s2"),
    ],
    ids=["v2-no-consumers", "v2-consumers", "v1-no-consumers", "v1-consumers"],
)
def test_import_reads_consumers_from_the_snapshot(tmp_path, keyring, version, no_consumers, data_name) -> None:
    with make_server(version, tmp_path / "src", "src") as src, make_server(version, tmp_path / "dst", "dst") as dst:
        filled = asyncio.run(fill_stream(src.url, "ORDERS", 3_000, deletes=(7, 8)))
        d = tmp_path / "natscli" / "ORDERS"
        resp = asyncio.run(_natscli_backup(src.url, "ORDERS", d, no_consumers=no_consumers, data_name=data_name))
        # The premise: backup.json cannot tell, it counts the stream's consumers either way.
        assert json.loads((d / "backup.json").read_bytes())["state"]["consumer_count"] == 2
        assert resp["state"]["consumer_count"] == 2

        archive = tmp_path / "archive"
        imp = import_directory(ImportOptions(directory=str(d), url=str(archive), keys=keyring))  # no flag
        b = imp.streams[0]
        assert b.snapshot_format == ("V2" if version is None else "V1")
        assert b.consumers == (0 if no_consumers else 2)
        body = _body(archive, b.manifest_id, keyring)
        assert body["snapshot"]["no_consumers"] is no_consumers
        assert body["state"]["consumer_count"] == 2  # backup.json's state is kept: a re-export gives it back

        r = restore_stream(
            RestoreOptions(url=str(archive), stream="ORDERS", connect=ConnectOptions(servers=dst.url), keys=keyring)
        )
        assert r.consumers == ([] if no_consumers else ["billing", "eu-audit"])
        got = asyncio.run(stream_state(dst.url, "ORDERS"))
        assert got["messages"] == filled.messages
        assert sorted(got["consumers"]) == ([] if no_consumers else ["billing", "eu-audit"])

        again = tmp_path / "again"
        export_backup(ExportOptions(url=str(archive), backup=b.manifest_id, directory=str(again), keys=keyring))
        assert (again / "backup.json").read_bytes() == (d / "backup.json").read_bytes()
        assert (again / "stream.tar.s2").read_bytes() == (d / data_name).read_bytes()


def test_recorded_consumers_follow_the_snapshot() -> None:
    def stream(declared: int, held: int) -> NatscliStream:
        state = {"messages": 5, "consumer_count": declared}
        return NatscliStream(Path("d"), "S", {"name": "S"}, state, Path("d/x"), 1, "V1", "", "", held)

    left_out = stream(2, 0)  # --no-consumers
    assert left_out.no_consumers and left_out.manifest_state() == {"messages": 5, "consumer_count": 2}
    some = stream(3, 1)  # e.g. V1 leaves memory-storage consumers out: only the count can say so
    assert not some.no_consumers and some.manifest_state() == {"messages": 5, "consumer_count": 1}
    for declared, held in ((0, 0), (2, 2), (1, 2)):
        s = stream(declared, held)
        assert not s.no_consumers and s.manifest_state()["consumer_count"] == declared


@pytest.fixture
def natscli_dirs(nats_server, tmp_path) -> dict[str, Path]:
    """ORDERS (two consumers) backed up natscli-style, with and without consumers."""
    asyncio.run(fill_stream(nats_server.url, "ORDERS", 3_000, deletes=(7,)))
    out = {}
    for label, nc in (("with", False), ("without", True)):
        out[label] = tmp_path / f"natscli-{label}" / "ORDERS"
        asyncio.run(_natscli_backup(nats_server.url, "ORDERS", out[label], no_consumers=nc, data_name="stream.tar.s2"))
    return out


@pytest.mark.parametrize(
    ("which", "flag", "needles"),
    [
        ("with", "--no-consumers", ["--no-consumers", "holds 2 consumer(s)", "leave the flag out"]),
        ("without", "--consumers", ["--consumers", "holds no consumers", "counts 2", "leave the flag out"]),
    ],
)
def test_a_consumers_flag_that_contradicts_the_snapshot_is_refused(
    natscli_dirs, tmp_path, identity_file, which, flag, needles
) -> None:
    env, key = cli_env(tmp_path), identity_file[0]
    archive = tmp_path / "archive"
    before = archive_state(archive)
    one_error(jsarchive("import", natscli_dirs[which], archive, flag, "-i", key, env=env), 2, *needles)
    assert_archive_untouched(archive, before)
    # A flag that agrees is accepted.
    agree = "--consumers" if which == "with" else "--no-consumers"
    run = jsarchive("import", natscli_dirs[which], archive, agree, "-i", key, "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["import"]["streams"][0]["consumers"] == (2 if which == "with" else 0)


def test_account_directory_set_records_consumers_left_out(natscli_dirs, tmp_path, identity_file) -> None:
    env, key = cli_env(tmp_path), identity_file[0]
    account = tmp_path / "account"
    account.mkdir()
    natscli_dirs["without"].rename(account / "ORDERS")
    run = jsarchive("import", account, tmp_path / "archive", "-i", key, "--json", env=env)
    assert run.returncode == 0, run.stderr
    imported = json.loads(run.stdout)["import"]
    assert imported["kind"] == "account" and imported["streams"][0]["consumers"] == 0
    repo = Repository.open(str(tmp_path / "archive"))
    bset = parse_set(repo.load_set(imported["set_id"]), imported["set_id"])
    assert bset.doc["options"]["consumers"] is False


def test_both_data_file_names_is_refused(natscli_dirs, tmp_path, identity_file) -> None:
    d = natscli_dirs["with"]
    (d / "stream.arc.s2").write_bytes((d / "stream.tar.s2").read_bytes())
    env, key = cli_env(tmp_path), identity_file[0]
    archive = tmp_path / "archive"
    before = archive_state(archive)
    one_error(jsarchive("import", d, archive, "-i", key, env=env), 2, "stream.tar.s2", "stream.arc.s2", "both")
    assert_archive_untouched(archive, before)


def test_a_damaged_snapshot_is_refused_before_anything_is_written(natscli_dirs, tmp_path, identity_file) -> None:
    d = natscli_dirs["with"]
    data = bytearray((d / "stream.tar.s2").read_bytes())
    data[200] ^= 0xFF  # inside the first S2 chunk, past the bytes that name the format: its CRC no longer matches
    (d / "stream.tar.s2").write_bytes(bytes(data))
    env, key = cli_env(tmp_path), identity_file[0]
    archive = tmp_path / "archive"
    before = archive_state(archive)
    one_error(jsarchive("import", d, archive, "-i", key, env=env), 2, "stream.tar.s2", "readable V2 snapshot")
    assert_archive_untouched(archive, before)


# -- export warnings ---------------------------------------------------------------------------------------------


def test_export_of_a_memory_stream_warns_that_natscli_refuses_it(
    nats_server, second_server, tmp_path, keyring, identity_file
) -> None:
    asyncio.run(fill_stream(nats_server.url, "MEM", 3_000, storage="memory"))
    asyncio.run(_disk(nats_server.url))
    archive = tmp_path / "archive"
    ids = {}
    for stream in ("MEM", "DISK"):
        ids[stream] = backup_stream(
            BackupOptions(
                stream=stream, url=str(archive), connect=ConnectOptions(servers=nats_server.url), keys=keyring
            )
        ).manifest_id

    env, key = cli_env(tmp_path), identity_file[0]
    run = jsarchive("export", archive, ids["MEM"][:10], tmp_path / "mem", "-i", key, "--json", env=env)
    assert run.returncode == 0, run.stderr
    warnings = json.loads(run.stdout)["export"]["warnings"]
    assert len(warnings) == 1 and "memory storage" in warnings[0] and "ErrMemoryStreamNotSupported" in warnings[0]
    assert "warning:" in run.stderr and "memory storage" in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in (tmp_path / "mem").iterdir()) == ["backup.json", "stream.tar.s2"]
    doc = json.loads((tmp_path / "mem" / "backup.json").read_bytes())
    assert doc["config"]["storage"] == "memory"  # what jsm.go checks before it sends anything

    run = jsarchive("export", archive, ids["MEM"][:10], tmp_path / "mem-text", "-i", key, env=env)
    assert run.returncode == 0 and "memory storage" in run.stderr and "Exported backup" in run.stdout

    res = export_backup(
        ExportOptions(url=str(archive), backup=ids["DISK"], directory=str(tmp_path / "disk"), keys=keyring)
    )
    assert res.warnings == [] and res.to_json()["warnings"] == []
    run = jsarchive("export", archive, ids["DISK"][:10], tmp_path / "disk-cli", "-i", key, env=env)
    assert run.returncode == 0 and "warning" not in run.stderr

    # The server itself takes the exported memory stream: the warning is about natscli only.
    request = json.loads((tmp_path / "mem" / "backup.json").read_bytes())
    payload = (tmp_path / "mem" / "stream.tar.s2").read_bytes()

    async def chunks():
        for i in range(0, len(payload), 64 * 1024):
            yield payload[i : i + 64 * 1024]

    async def restore() -> dict:
        async with await connect(ConnectOptions(servers=second_server.url)) as js:
            return await js.restore("MEM", request, chunks(), in_flight=1)

    assert asyncio.run(restore())["config"]["storage"] == "memory"


async def _disk(url: str) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="DISK", subjects=["disk.>"])
    for i in range(100):
        await js.publish(f"disk.{i % 3}", b"d%d" % i)
    await nc.close()


# -- backup.json: durable sourcing -------------------------------------------------------------------------------

# The config nats-server 2.15.1 sent for a stream sourcing ORDERS through the durable consumer agg-src (server
# field order; the consumer was created with ack_policy flow_control and deliver_subject agg.deliver).
SOURCED_RESPONSE = (
    '{"config":{"name":"AGG","retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,'
    '"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,'
    '"sources":[{"name":"ORDERS","consumer":{"name":"agg-src","deliver_subject":"agg.deliver"}}],'
    '"compression":"none","allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,'
    '"deny_purge":false,"allow_rollup_hdrs":false,"consumer_limits":{},"allow_msg_ttl":false,'
    '"metadata":{"_nats.level":"5","_nats.req.level":"0","_nats.ver":"2.15.1"}},"state":{"messages":1,"bytes":118,'
    '"first_seq":1,"first_ts":"2026-12-01T18:19:26.292590045Z","last_seq":1,'
    '"last_ts":"2026-12-01T18:19:26.292590045Z","num_subjects":1,"consumer_count":0}}'
)
# natscli's backup.json for it: StreamSource's consumer is jsm.go's StreamConsumerSource, name then
# deliver_subject (both omitempty), placed after the other StreamSource fields.
SOURCED_BACKUP_JSON = """{
  "config": {
    "name": "AGG",
    "retention": "limits",
    "max_consumers": -1,
    "max_msgs_per_subject": -1,
    "max_msgs": -1,
    "max_bytes": -1,
    "max_age": 0,
    "max_msg_size": -1,
    "storage": "file",
    "discard": "old",
    "num_replicas": 1,
    "sources": [
      {
        "name": "ORDERS",
        "consumer": {
          "name": "agg-src",
          "deliver_subject": "agg.deliver"
        }
      }
    ],
    "sealed": false,
    "deny_delete": false,
    "deny_purge": false,
    "allow_rollup_hdrs": false,
    "allow_direct": false,
    "mirror_direct": false,
    "metadata": {
      "_nats.level": "5",
      "_nats.req.level": "0",
      "_nats.ver": "2.15.1"
    },
    "consumer_limits": {}
  },
  "state": {
    "messages": 1,
    "bytes": 118,
    "first_seq": 1,
    "first_ts": "2026-12-01T18:19:26.292590045Z",
    "last_seq": 1,
    "last_ts": "2026-12-01T18:19:26.292590045Z",
    "num_subjects": 1,
    "consumer_count": 0
  }
}"""


def test_backup_json_orders_a_durable_source_consumer_as_jsm_go() -> None:
    resp = json.loads(SOURCED_RESPONSE)
    shuffled = json.loads(json.dumps(resp, sort_keys=True))  # as the manifest keeps it: deliver_subject first
    assert backup_json(shuffled["config"], shuffled["state"]).decode() == SOURCED_BACKUP_JSON
    assert backup_json(resp["config"], resp["state"]).decode() == SOURCED_BACKUP_JSON
    # Both fields are omitempty; a mirror's consumer goes through the same struct.
    mirror = {"name": "M", "mirror": {"consumer": {"deliver_subject": "d"}, "name": "ORDERS", "external": None}}
    doc = json.loads(backup_json(mirror, {}))
    assert doc["config"]["mirror"] == {"name": "ORDERS", "consumer": {"deliver_subject": "d"}}
