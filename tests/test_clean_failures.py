"""Clean failures (issue: archives that cannot hurt their reader, point 3): one `jsarchive: error:` line and a
documented exit code, never a traceback.

- the object store (moto's server, its own process) dies in the middle of an upload: exit 7, and the upload is
  not committed;
- --lock-mode on an S3 bucket without Object Lock, or on a GCS bucket without object retention, is refused before
  the snapshot starts (no snapshot advisory, nothing written);
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.s3_fixtures import _start_moto, _stop
from tests.test_bad_input import (
    JSARCHIVE,
    Run,
    cli_env,
    fill_random,
    jsarchive_watching,
    one_error,
)

pytestmark = pytest.mark.timeout(300)

SLOW = ["--chunk-size", "1KiB", "--window-size", "1KiB", "--block-size", "64KiB"]


def _s3_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    env = cli_env(tmp_path)
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_ENDPOINT_URL=endpoint,
    )
    return env


def test_object_store_gone_mid_upload(nats_server, identity_file, tmp_path: Path) -> None:
    asyncio.run(fill_random(nats_server.url, "BIG", 1500, 10_000))
    moto = _start_moto(tmp_path / "moto.log")
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=moto.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
        s3.create_bucket(Bucket="dr-archive")
        env = _s3_env(tmp_path, moto.endpoint)
        argv = [
            JSARCHIVE,
            "stream",
            "backup",
            "BIG",
            "s3://dr-archive/prod",
            "-s",
            nats_server.url,
            "-i",
            str(identity_file[0]),
            *SLOW,
        ]
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while not s3.list_multipart_uploads(Bucket="dr-archive").get("Uploads"):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the backup never started its upload"
                time.sleep(0.05)
            time.sleep(0.3)
            _stop(moto.process)  # the object store goes away mid-upload
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        run = Run(argv, proc.returncode, out, err, time.monotonic() - t0)
        assert "Traceback" not in err, err
        one_error(run, 7)
    finally:
        _stop(moto.process)


def test_lock_mode_on_a_bucket_without_object_lock_is_refused_first(
    moto, s3, bucket, nats_server, identity_file, tmp_path: Path
) -> None:
    asyncio.run(fill_random(nats_server.url, "ORDERS", 100, 100))
    env = _s3_env(tmp_path, moto.endpoint)
    run, seen = jsarchive_watching(
        "stream",
        "backup",
        "ORDERS",
        f"s3://{bucket}/prod",
        "-s",
        nats_server.url,
        "-i",
        identity_file[0],
        "--lock-mode",
        "COMPLIANCE",
        "--retain-days",
        "3",
        url=nats_server.url,
        env=env,
    )
    one_error(run, 2, "Object Lock", bucket)
    assert not [s for s in seen if "SNAPSHOT" in s], seen  # refused before the snapshot started
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_lock_mode_on_a_gcs_bucket_that_cannot_retain_is_refused_first(
    gcs_emulator, nats_server, identity_file, tmp_path: Path
) -> None:
    asyncio.run(fill_random(nats_server.url, "ORDERS", 100, 100))
    env = {**cli_env(tmp_path), "STORAGE_EMULATOR_HOST": gcs_emulator.url}
    bucket = gcs_emulator.make_bucket("nolock")
    run, seen = jsarchive_watching(
        "stream",
        "backup",
        "ORDERS",
        f"gs://{bucket}/prod",
        "-s",
        nats_server.url,
        "-i",
        identity_file[0],
        "--lock-mode",
        "GOVERNANCE",
        "--retain-days",
        "3",
        url=nats_server.url,
        env=env,
    )
    one_error(run, 2, "neither object retention enabled nor a retention policy", bucket)
    assert not [s for s in seen if "SNAPSHOT" in s], seen
