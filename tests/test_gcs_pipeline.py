"""Backups through the GCS sink end to end, on both emulators: real nats-servers, the pipeline and the CLI."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from pipeline.base.transfer import TransferConfig
from pipeline.entry.cli import main
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.flows.restore import RestoreOptions, restore_stream
from pipeline.jetstream.client import ConnectOptions
from pipeline.jetstream.placement import RestoreTarget
from tests.streams import fill_stream, read_messages, stream_state, wait_consumers_settled


def test_round_trip_through_gcs(nats_server, second_server, keyring, gcs_emulator, monkeypatch):
    # $AWS_ENDPOINT_URL must never redirect a gs:// archive to an S3 endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    asyncio.run(fill_stream(nats_server.url, messages=6000))
    before = asyncio.run(stream_state(nats_server.url, "ORDERS"))
    msgs = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    url = f"gs://{gcs_emulator.make_bucket()}/prod"
    res = backup_stream(
        BackupOptions(
            stream="ORDERS",
            url=url,
            connect=ConnectOptions(servers=nats_server.url),
            keys=keyring,
            transfer=TransferConfig(block_size=64 * 1024),
            storage_class="NEARLINE",
        )
    )
    assert res.blocks > 5
    names = gcs_emulator.raw_names(url[5:].split("/")[0])
    assert sorted(names) == sorted(
        [f"prod/data/{res.backup_id}", f"prod/manifests/{res.manifest_id}", f"prod/{res.ref}"]
    )
    r = CliRunner().invoke(main, ["ls", url, "--json"])
    assert r.exit_code == 0, r.output
    [entry] = json.loads(r.stdout)["backups"]
    assert entry["manifest_id"] == res.manifest_id and entry["stored_bytes"] == res.stored_bytes

    out = restore_stream(
        RestoreOptions(url=url, stream="ORDERS", connect=ConnectOptions(servers=second_server.url), keys=keyring)
    )
    assert out.messages == before["messages"]
    after = asyncio.run(stream_state(second_server.url, "ORDERS"))
    keys = ("messages", "first_seq", "last_seq", "num_deleted", "num_subjects", "consumers")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}
    assert asyncio.run(read_messages(second_server.url, "ORDERS")) == msgs


def test_missing_bucket_is_one_clear_error(nats_server, identity_file, gcs_emulator):
    asyncio.run(fill_stream(nats_server.url, messages=200, consumers=False))
    r = CliRunner().invoke(
        main,
        [
            "stream",
            "backup",
            "ORDERS",
            "gs://no-such-bucket-here/x",
            "-s",
            nats_server.url,
            "-i",
            str(identity_file[0]),
        ],
    )
    assert r.exit_code == 3, r.output
    assert "no-such-bucket-here" in r.stderr and r.stderr.count("jsarchive: error:") == 1


def test_restore_from_gcs_into_a_cluster(nats_server, two_clusters, keyring, gcp_storage_emulator, monkeypatch):
    """Backup into GCS, restore straight from the bucket into cluster west, placed by tag, as R1."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcp_storage_emulator.url)
    asyncio.run(fill_stream(nats_server.url, "GCSDR", messages=4000))
    before = asyncio.run(stream_state(nats_server.url, "GCSDR"))
    url = f"gs://{gcp_storage_emulator.make_bucket()}/dr"
    backup_stream(BackupOptions(stream="GCSDR", url=url, connect=ConnectOptions(servers=nats_server.url), keys=keyring))
    west = two_clusters["west"]
    try:
        r = restore_stream(
            RestoreOptions(
                url=url,
                stream="GCSDR",
                connect=ConnectOptions(servers=west[0].url),
                keys=keyring,
                target=RestoreTarget(tags=("az:3",), replicas=1),
            )
        )
        assert r.cluster == "west" and r.leader == "west-3" and r.replicas == []
        after = wait_consumers_settled(west[1].url, "GCSDR", before)
        keys = ("messages", "first_seq", "last_seq", "num_deleted", "num_subjects", "consumers")
        assert {k: after[k] for k in keys} == {k: before[k] for k in keys}
    finally:
        asyncio.run(_delete_stream(west[0].url, "GCSDR"))


async def _delete_stream(url: str, name: str) -> None:
    from pipeline.jetstream.client import connect

    async with await connect(ConnectOptions(servers=url)) as js:
        await js.delete_stream(name)
