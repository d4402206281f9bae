"""Backups through the S3 sink end to end: real nats-servers, moto's S3 server, the pipeline and the CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from botocore.exceptions import ConnectionClosedError
from click.testing import CliRunner

from pipeline.base.errors import ColdStorage, PermissionDenied
from pipeline.base.transfer import TransferConfig
from pipeline.entry.cli import main
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.flows.restore import RestoreOptions, restore_stream
from pipeline.jetstream.client import ConnectOptions
from pipeline.jetstream.placement import RestoreTarget
from pipeline.ops.listing import list_backups
from sinks import Retention, SinkOptions
from sinks.s3 import S3Sink
from tests.s3_fixtures import Wire
from tests.streams import fill_stream, read_messages, stream_state, wait_consumers_settled


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    """Every S3 client the pipeline creates records its requests here and can be given faults."""
    w = Wire()
    make = S3Sink._make_client

    def make_and_attach(self: S3Sink):
        client = make(self)
        client.meta.events.register("before-send.s3", w._before_send)
        return client

    monkeypatch.setattr(S3Sink, "_make_client", make_and_attach)
    return w


def _backup(server, url, keyring, moto, stream: str = "ORDERS", **kw) -> object:
    return backup_stream(
        BackupOptions(
            stream=stream,
            url=url,
            connect=ConnectOptions(servers=server.url),
            keys=keyring,
            transfer=TransferConfig(block_size=64 * 1024),
            sink=SinkOptions(endpoint_url=moto.endpoint),
            **kw,
        )
    )


def _restore(server, url, keyring, moto, stream: str = "ORDERS", **kw) -> object:
    return restore_stream(
        RestoreOptions(
            url=url,
            stream=stream,
            connect=ConnectOptions(servers=server.url),
            keys=keyring,
            sink=SinkOptions(endpoint_url=moto.endpoint),
            **kw,
        )
    )


def _keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_round_trip_through_s3_with_transient_faults(nats_server, second_server, keyring, moto, s3, bucket, wire):
    asyncio.run(fill_stream(nats_server.url, messages=8000))
    before = asyncio.run(stream_state(nats_server.url, "ORDERS"))
    msgs = asyncio.run(read_messages(nats_server.url, "ORDERS"))
    url = f"s3://{bucket}/prod"
    # throttling, a server error and a reset connection on the way in: all retried within the budget
    wire.fail("CreateMultipartUpload", ConnectionClosedError(endpoint_url=moto.endpoint))
    wire.fail("UploadPart", (503, "SlowDown"))
    wire.fail("PutObject", (500, "InternalError"), (503, "ServiceUnavailable"))
    res = _backup(nats_server, url, keyring, moto)
    assert len(wire.calls("UploadPart")) >= 2 and len(wire.calls("PutObject")) >= 4  # the faults were hit
    keys = _keys(s3, bucket)
    assert keys == sorted([f"prod/data/{res.backup_id}", f"prod/manifests/{res.manifest_id}", f"prod/{res.ref}"])
    assert all(s3.head_object(Bucket=bucket, Key=k).get("StorageClass", "STANDARD") == "STANDARD" for k in keys)
    [entry] = list_backups(url, sink=SinkOptions(endpoint_url=moto.endpoint))
    assert entry.manifest_id == res.manifest_id and entry.messages == before["messages"]

    # restore into another server, from the bucket; faults on the ranged reads too
    wire.fail("GetObject", (503, "SlowDown"), ConnectionClosedError(endpoint_url=moto.endpoint))
    r = _restore(second_server, url, keyring, moto)
    assert r.messages == before["messages"]
    after = asyncio.run(stream_state(second_server.url, "ORDERS"))
    assert {k: after[k] for k in ("messages", "first_seq", "last_seq", "num_deleted", "num_subjects", "consumers")} == {
        k: before[k] for k in ("messages", "first_seq", "last_seq", "num_deleted", "num_subjects", "consumers")
    }
    assert asyncio.run(read_messages(second_server.url, "ORDERS")) == msgs


def test_permanent_failure_aborts_the_upload(nats_server, keyring, moto, s3, bucket, wire):
    asyncio.run(fill_stream(nats_server.url, messages=3000, consumers=False))
    wire.fail("UploadPart", (403, "AccessDenied"))
    with pytest.raises(PermissionDenied, match="AccessDenied|denied"):
        _backup(nats_server, f"s3://{bucket}/prod", keyring, moto)
    assert len(wire.calls("UploadPart")) == 1  # permanent: not retried
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert _keys(s3, bucket) == []  # no data object, no manifest, no ref


def test_glacier_backup_needs_a_thaw(nats_server, second_server, keyring, moto, s3, bucket, identity_file):
    asyncio.run(fill_stream(nats_server.url, messages=3000, consumers=False))
    url = f"s3://{bucket}/cold"
    res = _backup(nats_server, url, keyring, moto, storage_class="GLACIER")
    assert res.storage_class == "GLACIER"
    assert s3.head_object(Bucket=bucket, Key=f"cold/data/{res.backup_id}")["StorageClass"] == "GLACIER"
    assert "StorageClass" not in s3.head_object(Bucket=bucket, Key=f"cold/manifests/{res.manifest_id}")
    with pytest.raises(ColdStorage, match=r"jsarchive thaw .*" + res.manifest_id[:12]):
        _restore(second_server, url, keyring, moto)
    assert asyncio.run(second_server_streams(second_server)) == []

    env = {"AWS_ENDPOINT_URL": moto.endpoint}
    r = CliRunner().invoke(
        main, ["thaw", url, res.manifest_id[:12], "--days", "2", "--tier", "bulk", "--json"], env=env
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["thaw"]["status"] in ("started", "available")
    rr = CliRunner().invoke(
        main,
        [
            "stream",
            "restore",
            url,
            "ORDERS",
            "-s",
            second_server.url,
            "-i",
            str(identity_file[0]),
            "--json",
            "--no-progress",
        ],
        env=env,
    )
    assert rr.exit_code == 0, rr.output
    assert json.loads(rr.stdout)["restore"]["messages"] == 3000 - 3  # fill_stream deletes 7, 8 and 1000


async def second_server_streams(server) -> list[str]:
    from pipeline.jetstream.client import connect

    async with await connect(ConnectOptions(servers=server.url)) as js:
        return await js.stream_names()


def test_cold_restore_exit_code(nats_server, keyring, moto, bucket, identity_file):
    asyncio.run(fill_stream(nats_server.url, messages=500, consumers=False))
    res = _backup(nats_server, f"s3://{bucket}/cold", keyring, moto, storage_class="DEEP_ARCHIVE")
    r = CliRunner().invoke(
        main,
        [
            "stream",
            "restore",
            f"s3://{bucket}/cold",
            "ORDERS",
            "-s",
            nats_server.url,
            "-i",
            str(identity_file[0]),
            "--s3-endpoint",
            moto.endpoint,
        ],
    )
    assert r.exit_code == 11
    assert f"data/{res.backup_id}" in r.stderr and "DEEP_ARCHIVE" in r.stderr and "jsarchive thaw" in r.stderr


def test_compliance_lock_on_every_object(nats_server, keyring, moto, s3, lock_bucket):
    asyncio.run(fill_stream(nats_server.url, messages=2000, consumers=False))
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).replace(microsecond=0)
    res = _backup(
        nats_server,
        f"s3://{lock_bucket}/locked",
        keyring,
        moto,
        retention=Retention(mode="COMPLIANCE", until=until, legal_hold=True),
    )
    assert res.lock_mode == "COMPLIANCE"
    for key in (f"locked/data/{res.backup_id}", f"locked/manifests/{res.manifest_id}", f"locked/{res.ref}"):
        head = s3.head_object(Bucket=lock_bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        assert head["ObjectLockRetainUntilDate"] >= until, key
        assert head["ObjectLockLegalHoldStatus"] == "ON", key
    data = f"locked/data/{res.backup_id}"
    version = s3.head_object(Bucket=lock_bucket, Key=data)["VersionId"]
    with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=lock_bucket, Key=data, VersionId=version)
    assert s3.head_object(Bucket=lock_bucket, Key=data)["ContentLength"] == res.stored_bytes


def test_lock_options_are_checked_before_anything_runs(tmp_path):
    for args, msg in (
        (["--retain-days", "3"], "need --lock-mode"),
        (["--lock-mode", "COMPLIANCE"], "exactly one of"),
        (["--lock-mode", "COMPLIANCE", "--retain-until", "2001-01-01"], "in the past"),
        (["--lock-mode", "COMPLIANCE", "--retain-until", "soon"], "not an ISO 8601"),
    ):
        r = CliRunner().invoke(main, ["stream", "backup", "S", str(tmp_path), "--no-encrypt", *args])
        assert r.exit_code == 2 and msg in r.stderr, (args, r.output)
    r = CliRunner().invoke(
        main,
        [
            "stream",
            "backup",
            "S",
            str(tmp_path),
            "--no-encrypt",
            "-s",
            "nats://127.0.0.1:1",
            "--lock-mode",
            "GOVERNANCE",
            "--retain-days",
            "1",
        ],
    )
    assert r.exit_code == 2 and "cannot enforce retention" in r.stderr


def test_restore_from_s3_into_a_cluster(nats_server, two_clusters, keyring, moto, bucket):
    """Backup from a standalone server into S3, restore straight from the bucket into cluster west as R3.

    The stream has a name of its own: see test_cluster.py on re-using a name just deleted in a cluster.
    """
    asyncio.run(fill_stream(nats_server.url, "S3DR", messages=4000))
    before = asyncio.run(stream_state(nats_server.url, "S3DR"))
    url = f"s3://{bucket}/dr"
    _backup(nats_server, url, keyring, moto, stream="S3DR")
    west = two_clusters["west"]
    try:
        r = _restore(west[0], url, keyring, moto, stream="S3DR", target=RestoreTarget(cluster="west", replicas=3))
        assert r.cluster == "west" and r.leader in {s.spec.name for s in west} and len(r.replicas) == 2
        after = wait_consumers_settled(west[1].url, "S3DR", before)
        keys = ("messages", "first_seq", "last_seq", "num_deleted", "num_subjects", "consumers")
        assert {k: after[k] for k in keys} == {k: before[k] for k in keys}
        assert after["_info"]["config"]["placement"] == {"cluster": "west"}
    finally:
        asyncio.run(_delete_stream(west[0].url, "S3DR"))


async def _delete_stream(url: str, name: str) -> None:
    from pipeline.jetstream.client import connect

    async with await connect(ConnectOptions(servers=url)) as js:
        await js.delete_stream(name)
