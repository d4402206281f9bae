"""Scheduled runs: the Lambda handler, the Cloud Functions handlers, the container entry, Cloud Run shards, metrics.

Everything runs against real components: nats-servers (one in operator/JWT mode, so a natscli credentials file
from Secrets Manager is exercised for real), moto's server for S3, Secrets Manager, SSM and KMS, functions-framework's
own app for the Cloud Functions entry, and the ``jsarchive`` CLI in subprocesses for Cloud Run tasks. Three small
HTTP servers stand in for services that cannot run here: a Pushgateway that records what is pushed (checked with
prometheus_client's parser), and the Lambda Runtime API that awslambdaric talks to. The Lambda ``context`` of the
in-process tests is a small object with ``get_remaining_time_in_millis``, the runtime's interface. Every server is
on 127.0.0.1, stopped by its PID or shut down, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import nats
import nkeys
import pytest
from nats.aio.client import RawCredentials
from prometheus_client.parser import text_string_to_metric_families

from pipeline.archive.repository import Repository
from pipeline.archive.runs import shard_of
from pipeline.archive.verify import VerifyOptions, verify_archive
from pipeline.base.errors import UsageError
from pipeline.entry import handlers, metrics
from pipeline.format.sets import parse_set
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec
from pipeline.keys.keyring import KeyRing, generate_identity
from sinks import SinkOptions
from tests.s3_fixtures import MotoServer

pytestmark = pytest.mark.timeout(300)

JSARCHIVE = str(Path(sys.executable).parent / "jsarchive")
# CloudWatch's metric units (PutMetricData / EMF).
CW_UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes", "Bits",
    "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
    "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


# -- stand-ins for services that cannot run here ---------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """A Pushgateway stand-in: records every request and answers 200 (what the Pushgateway answers to a push)."""

    url: str
    requests: list[Request] = field(default_factory=list)

    def pushes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("PUT", "POST")]


@pytest.fixture
def pushgateway() -> Iterator[Recorder]:
    rec = Recorder("")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            rec.requests.append(Request(self.command, self.path, dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = do_GET = _record

        def log_message(self, *_a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class Context:
    """What the Lambda runtime passes as ``context``, with a deadline ``seconds`` from now."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "jsarchive-backup"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


# -- NATS in operator mode: a natscli credentials file ---------------------------------------------------------


def _kp(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _jwt(claims: dict, signer: nkeys.KeyPair) -> str:
    claims = {"iat": int(time.time()), "iss": signer.public_key.decode(), **claims}
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(signer.sign(head.encode()))


@dataclass
class JwtServer:
    server: EmbeddedServer
    creds: str  # the text of a natscli .creds file for a user of account APP

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def jwt_server(tmp_path: Path) -> Iterator[JwtServer]:
    """nats-server in operator mode with account APP (JetStream enabled) and a user's credentials."""
    op, app, sys_acct = _kp(nkeys.PREFIX_BYTE_OPERATOR), _kp(nkeys.PREFIX_BYTE_ACCOUNT), _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    user = _kp(nkeys.PREFIX_BYTE_USER)
    base = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}
    js_limits = {**base, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    op_jwt = _jwt({"sub": op.public_key.decode(), "name": "op", "nats": {"type": "operator", "version": 2}}, op)
    app_jwt = _jwt(
        {"sub": app.public_key.decode(), "name": "APP", "nats": {"limits": js_limits, "type": "account", "version": 2}},
        op,
    )
    sys_jwt = _jwt(
        {"sub": sys_acct.public_key.decode(), "name": "SYS", "nats": {"limits": base, "type": "account", "version": 2}},
        op,
    )
    claims = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}
    user_jwt = _jwt({"sub": user.public_key.decode(), "name": "backup", "nats": claims}, app)
    creds = (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n"
    )
    conf = (
        f"operator: {op_jwt}\nsystem_account: {sys_acct.public_key.decode()}\nresolver: MEMORY\n"
        f"resolver_preload: {{\n  {app.public_key.decode()}: {app_jwt}\n  {sys_acct.public_key.decode()}: {sys_jwt}\n}}"
    )
    with EmbeddedServer(ServerSpec(name="jwt", accounts=conf), workdir=tmp_path / "nats-jwt") as srv:
        yield JwtServer(srv, creds)


PASSWORD = "pw-" + uuid.uuid4().hex[:12]


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """nats-server whose only user is backup/PASSWORD."""
    auth = f'authorization {{ users = [ {{ user: "backup", password: "{PASSWORD}" }} ] }}'
    with EmbeddedServer(ServerSpec(name="auth", accounts=auth), workdir=tmp_path / "nats-auth") as srv:
        yield srv


async def _fill(url: str, streams: dict[str, tuple[int, int]], **connect: Any) -> None:
    """Streams name → (messages, payload size); subjects ``<name lower>.<n % 3>``."""
    nc = await nats.connect(url, **connect)
    try:
        js = nc.jetstream(timeout=30)
        for name, (count, size) in streams.items():
            await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
            pending = []
            for i in range(count):
                body = hashlib.sha256(f"{name}{i}".encode()).digest() * (size // 32 + 1)
                pending.append(await js.publish_async(f"{name.lower()}.{i % 3}", body[:size]))
                if len(pending) >= 200:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
    finally:
        await nc.close()


def _lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _events(lines: list[dict], event: str) -> list[dict]:
    return [ln for ln in lines if ln.get("event") == event]


def _check_emf(doc: dict, namespace: str = "jsarchive") -> dict[str, float]:
    """The EMF specification's rules: returns the metric values."""
    aws = doc["_aws"]
    assert isinstance(aws["Timestamp"], int) and abs(aws["Timestamp"] / 1000 - time.time()) < 600
    directives = aws["CloudWatchMetrics"]
    assert isinstance(directives, list) and len(directives) == 1
    d = directives[0]
    assert d["Namespace"] == namespace
    for dimset in d["Dimensions"]:
        assert isinstance(dimset, list) and 1 <= len(dimset) <= 30
        for dim in dimset:
            assert isinstance(doc[dim], str) and doc[dim], f"dimension {dim} needs a string value"
    values = {}
    for m in d["Metrics"]:
        assert set(m) <= {"Name", "Unit", "StorageResolution"} and m["Unit"] in CW_UNITS
        value = doc[m["Name"]]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), m["Name"]
        values[m["Name"]] = value
    assert len(values) == len(d["Metrics"]) <= 100
    return values


def _families(body: bytes) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _grouping(path: str) -> dict[str, str]:
    """A Pushgateway grouping key from a push path, decoding @base64 segments."""
    assert path.startswith("/metrics/")
    parts = path[len("/metrics/") :].split("/")
    out = {}
    for name, value in zip(parts[::2], parts[1::2], strict=True):
        if name.endswith("@base64"):
            out[name[: -len("@base64")]] = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        else:
            out[name] = urllib.parse.unquote(value)
    return out


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, moto: MotoServer, tmp_path: Path) -> Path:
    """Every AWS SDK call to moto through $AWS_ENDPOINT_URL, as a function would configure an endpoint; an empty
    $TMPDIR to check that nothing lands in it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    for var in [v for v in os.environ if v.startswith("JSARCHIVE_")]:
        monkeypatch.delenv(var)
    tmp = tmp_path / "lambda-tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() caches; make it look at $TMPDIR again
    return tmp


# -- the Lambda handler ---------------------------------------------------------------------------------------


def test_lambda_scheduled_account_backup_end_to_end(
    jwt_server: JwtServer,
    moto: MotoServer,
    bucket: str,
    lambda_env: Path,
    pushgateway: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    streams = {"ORDERS": (1500, 200), "EVENTS": (400, 100), "AUDIT": (50, 1000)}
    creds_conn = {"user_credentials": RawCredentials(jwt_server.creds)}
    asyncio.run(_fill(jwt_server.url, streams, **creds_conn))
    sm = boto3.client("secretsmanager", endpoint_url=moto.endpoint)
    secret_arn = sm.create_secret(Name=f"nats/backup-{uuid.uuid4().hex[:6]}", SecretString=jwt_server.creds)["ARN"]
    key_arn = boto3.client("kms", endpoint_url=moto.endpoint).create_key()["KeyMetadata"]["Arn"]
    identity, recipient = generate_identity()
    url = f"s3://{bucket}/prod"
    for k, v in {
        "JSARCHIVE_URL": url,
        "NATS_URL": jwt_server.url,
        "JSARCHIVE_NATS_SECRET": secret_arn,
        "JSARCHIVE_KMS_KEY": key_arn,
        "JSARCHIVE_RECIPIENTS": recipient,
        "JSARCHIVE_METRICS_PUSH": pushgateway.url,
    }.items():
        monkeypatch.setenv(k, v)
    # What EventBridge Scheduler sends with the module's input template: the execution id is the run id.
    event = {"operation": "account-backup", "run": "c0ffee12-3456-7890-abcd-ef0123456789"}

    t0 = time.monotonic()
    result = handlers.lambda_handler(event, Context(900))
    print(f"lambda account backup: {time.monotonic() - t0:.1f} s")
    out = capsys.readouterr().out

    assert result["ok"] is True and result["sealed"] is True, result
    assert result["run"] == event["run"] and result["deferred"] == [] and result["failed"] == []
    assert result["streams"] == {"ok": 3, "failed": 0, "deferred": 0}

    # The set in the bucket names every stream, each with a KMS slot and an age slot.
    repo = Repository.open(url, SinkOptions(endpoint_url=moto.endpoint))
    assert repo.list_sets() == [result["set_id"]]
    bset = parse_set(repo.load_set(result["set_id"]), result["set_id"])
    assert sorted(e["stream"] for e in bset.streams) == sorted(streams)
    assert bset.doc["run"] == event["run"]
    assert {e["stream"]: e["messages"] for e in bset.streams} == {n: c for n, (c, _) in streams.items()}
    for e in bset.streams:
        m = repo.load_manifest(e["manifest_id"])
        assert m.encrypted and sorted(s.type for s in m.key_slots) == ["age", "aws-kms"]
    # ... and opens with the age identity alone (decrypted, decompressed, parsed to the end).
    ident = tmp_path / "id.key"
    ident.write_text(identity + "\n")
    ident.chmod(0o600)
    check = verify_archive(
        VerifyOptions(
            url=url,
            latest=True,
            deep=True,
            keys=KeyRing.load(identity_files=[str(ident)], use_env=False),
            sink=SinkOptions(endpoint_url=moto.endpoint),
        )
    )
    assert check.ok and len(check.backups) == 3 and all(b.deep for b in check.backups)

    # One JSON line per stream, a summary, and a well-formed EMF document.
    lines = _lines(out)
    per_stream = _events(lines, "jsarchive.stream")
    assert sorted(ln["stream"] for ln in per_stream) == sorted(streams)
    assert all(
        ln["status"] == "backed_up" and ln["severity"] == "INFO" and ln["run"] == event["run"] for ln in per_stream
    )
    assert all(ln["stored_bytes"] > 0 and ln["ratio"] > 0 and ln["manifest_id"] for ln in per_stream)
    (summary,) = _events(lines, "jsarchive.run")
    assert summary["ok"] is True and summary["set_id"] == result["set_id"] and summary["streams_ok"] == 3
    assert summary["bytes"] == sum(ln["bytes"] for ln in per_stream)
    (emf,) = [ln for ln in lines if "_aws" in ln]
    values = _check_emf(emf)
    assert emf["Operation"] == "account-backup" and emf["Archive"] == url
    assert values["Success"] == 1 and values["StreamsOk"] == 3 and values["StreamsFailed"] == 0
    assert values["StreamsDeferred"] == 0 and values["Bytes"] == summary["bytes"]
    assert values["StoredBytes"] == summary["stored_bytes"] and values["CompressionRatio"] == summary["ratio"]
    assert abs(values["LastSuccess"] - time.time()) < 120 and values["Duration"] > 0

    # The Pushgateway got the same numbers, replacing the group (PUT).
    (push,) = pushgateway.pushes()
    assert push.method == "PUT"
    assert _grouping(push.path) == {"job": "jsarchive", "operation": "account-backup", "archive": url}
    fams = _families(push.body)
    assert fams["jsarchive_success"][()] == 1 and fams["jsarchive_streams"][(("status", "ok"),)] == 3
    assert fams["jsarchive_bytes"][()] == summary["bytes"]

    # Credentials stayed in memory: nothing was written to $TMPDIR.
    assert list(lambda_env.iterdir()) == []


def test_lambda_defers_what_cannot_finish_and_a_later_attempt_seals_the_run(
    password_server: EmbeddedServer,
    moto: MotoServer,
    bucket: str,
    lambda_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    streams = {"BIG": (200, 10_000), "SMALL1": (20, 100), "SMALL2": (30, 100)}  # 2 MB and two tiny ones
    asyncio.run(_fill(password_server.url, streams, user="backup", password=PASSWORD))
    param = f"/jsarchive/nats-{uuid.uuid4().hex[:6]}"
    boto3.client("ssm", endpoint_url=moto.endpoint).put_parameter(
        Name=param, Type="SecureString", Value=json.dumps({"user": "backup", "password": PASSWORD})
    )
    _, recipient = generate_identity()
    url = f"s3://{bucket}/prod"
    for k, v in {
        "JSARCHIVE_URL": url,
        "NATS_URL": password_server.url,
        "JSARCHIVE_NATS_PARAMETER": param,
        "JSARCHIVE_RECIPIENTS": recipient,
        # 64 KiB/s assumed: BIG needs ~2 + 1.5 × 2 MB / 64 KiB ≈ 48 s; a small one ~2 s. 20 s left, 5 s margin.
        "JSARCHIVE_ASSUMED_RATE": "64KiB",
        "JSARCHIVE_SAFETY_MARGIN": "5",
    }.items():
        monkeypatch.setenv(k, v)
    context = Context(20)
    result = handlers.lambda_handler({}, context)
    lines = _lines(capsys.readouterr().out)

    run = f"run-{context.aws_request_id}"  # no run in the event: the request id, stable across Lambda's retries
    assert result["ok"] is False and result["sealed"] is False and result["set_id"] is None
    assert result["run"] == run and result["deferred"] == ["BIG"] and result["pending"] == ["BIG"]
    assert result["streams"] == {"ok": 2, "failed": 0, "deferred": 1}
    assert result["resume"]["event"] == {"operation": "account-backup", "run": run}
    assert result["resume"]["command"] == f"jsarchive account backup {url} --run {run}"
    by_stream = {ln["stream"]: ln for ln in _events(lines, "jsarchive.stream")}
    assert by_stream["BIG"]["status"] == "deferred" and by_stream["BIG"]["severity"] == "WARNING"
    assert "needs about" in by_stream["BIG"]["message"] and "assumed" in by_stream["BIG"]["message"]
    assert by_stream["SMALL1"]["status"] == by_stream["SMALL2"]["status"] == "backed_up"
    (summary,) = _events(lines, "jsarchive.run")
    assert summary["ok"] is False and summary["streams_deferred"] == 1 and summary["deferred"] == ["BIG"]
    assert "--run " + run in summary["resume"]
    values = _check_emf(next(ln for ln in lines if "_aws" in ln))
    assert values["Success"] == 0 and values["StreamsDeferred"] == 1 and "LastSuccess" not in values
    repo = Repository.open(url, SinkOptions(endpoint_url=moto.endpoint))
    assert repo.list_sets() == []  # not sealed: BIG is owed

    # The job path (the CLI in a container: Cloud Run job, ECS task, …) finishes the run and seals it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JSARCHIVE_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    p = subprocess.run(
        [JSARCHIVE, "account", "backup", url, "--run", run, "-s", password_server.url, "--user", "backup",
         "--password", PASSWORD, "-r", recipient, "--s3-endpoint", moto.endpoint, "--json"],
        capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    done = json.loads(p.stdout)["account"]
    assert {o["stream"]: o["status"] for o in done["streams"]} == {
        "BIG": "backed_up",
        "SMALL1": "done_before",
        "SMALL2": "done_before",
    }
    assert done["set_id"] and repo.list_sets() == [done["set_id"]]
    bset = parse_set(repo.load_set(done["set_id"]), done["set_id"])
    assert sorted(e["stream"] for e in bset.streams) == sorted(streams) and bset.doc["run"] == run


def test_lambda_stream_backup_deferred_when_it_cannot_finish(
    nats_server: EmbeddedServer,
    lambda_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    asyncio.run(_fill(nats_server.url, {"ONE": (100, 1000)}))
    _, recipient = generate_identity()
    archive = tmp_path / "archive"
    for k, v in {
        "JSARCHIVE_URL": str(archive),
        "JSARCHIVE_OPERATION": "stream-backup",
        "JSARCHIVE_STREAM": "ONE",
        "NATS_URL": nats_server.url,
        "JSARCHIVE_RECIPIENTS": recipient,
    }.items():
        monkeypatch.setenv(k, v)
    result = handlers.lambda_handler({}, Context(10))  # 10 s left, 30 s margin: nothing may start
    assert result["ok"] is False and result["deferred"] == ["ONE"] and "needs about" in result["message"]
    assert not archive.exists() or not any(archive.rglob("manifests/*"))
    lines = _lines(capsys.readouterr().out)
    assert [ln["status"] for ln in _events(lines, "jsarchive.stream")] == ["deferred"]

    result = handlers.lambda_handler({}, Context(900))
    assert result["ok"] is True and result["backup"]["stream"] == "ONE" and result["backup"]["messages"] == 100
    lines = _lines(capsys.readouterr().out)
    assert [ln["status"] for ln in _events(lines, "jsarchive.stream")] == ["backed_up"]
    assert _check_emf(next(ln for ln in lines if "_aws" in ln))["Success"] == 1


def test_lambda_prune_and_verify(
    nats_server: EmbeddedServer,
    lambda_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from pipeline.jetstream.embedded import free_port

    asyncio.run(_fill(nats_server.url, {"PV": (30, 100)}))
    _, recipient = generate_identity()
    archive = tmp_path / "archive"
    for k, v in {
        "JSARCHIVE_URL": str(archive),
        "JSARCHIVE_STREAM": "PV",
        "NATS_URL": nats_server.url,
        "JSARCHIVE_RECIPIENTS": recipient,
        "JSARCHIVE_METRICS_PUSH": f"http://127.0.0.1:{free_port()}",  # nobody listens: a warning, not a failure
    }.items():
        monkeypatch.setenv(k, v)
    ids = [
        handlers.lambda_handler({"operation": "stream-backup"}, Context(900))["backup"]["manifest_id"] for _ in range(3)
    ]
    out = capsys.readouterr().out
    warnings = _events(_lines(out), "jsarchive.metrics_push")
    assert len(warnings) == 3 and warnings[0]["severity"] == "WARNING"
    assert "cannot push metrics" in warnings[0]["message"]

    monkeypatch.setenv("JSARCHIVE_KEEP_LAST", "1")
    monkeypatch.setenv("JSARCHIVE_PRUNE_CONFIRM", "true")
    result = handlers.lambda_handler({"operation": "prune"}, Context(900))
    assert result["ok"] is True and result["dry_run"] is False and result["delete_backups"] == 2
    lines = _lines(capsys.readouterr().out)
    deleted = sorted(ln["manifest_id"] for ln in _events(lines, "jsarchive.prune") if ln["deleted"])
    assert deleted == sorted(ids[:2])
    assert Repository.open(str(archive)).manifest_ids() == [ids[2]]
    assert _check_emf(next(ln for ln in lines if "_aws" in ln))["Success"] == 1

    result = handlers.lambda_handler({"operation": "verify"}, Context(900))
    assert result["ok"] is True and result["checked"] == 1 and result["failed"] == 0
    lines = _lines(capsys.readouterr().out)
    assert [(ln["manifest_id"], ln["status"]) for ln in _events(lines, "jsarchive.verify")] == [(ids[2], "OK")]


@pytest.mark.parametrize(
    ("env", "event", "needles"),
    [
        ({"JSARCHIVE_URL": None}, {}, ["$JSARCHIVE_URL is not set"]),
        ({"JSARCHIVE_NATS_SECRET": "nats/does-not-exist"}, {}, ["'nats/does-not-exist'", "does not exist"]),
        ({"JSARCHIVE_NATS_PARAMETER": "/nope"}, {}, ["SSM parameter '/nope'", "does not exist"]),
        ({"NATS_URL": None}, {}, ["$NATS_URL is not set"]),
        ({"JSARCHIVE_RECIPIENTS": None}, {}, ["no key to encrypt with"]),
        ({}, {"operation": "restore"}, ["'restore' is not one of"]),
        ({}, {"bucket": "other"}, ["bucket", "does not take"]),
        ({"JSARCHIVE_OPERATION": "stream-backup"}, {}, ["needs the stream"]),
        ({"JSARCHIVE_ASSUMED_RATE": "fast"}, {}, ["$JSARCHIVE_ASSUMED_RATE", "not a size"]),
        ({"JSARCHIVE_OPERATION": "prune"}, {}, ["needs a policy"]),
    ],
)
def test_lambda_bad_configuration_is_a_clear_error(
    env: dict,
    event: dict,
    needles: list[str],
    moto: MotoServer,
    lambda_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _, recipient = generate_identity()
    base = {"JSARCHIVE_URL": str(tmp_path / "a"), "NATS_URL": "nats://127.0.0.1:1", "JSARCHIVE_RECIPIENTS": recipient}
    for k, v in {**base, **env}.items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    with pytest.raises(handlers.ConfigError) as info:
        handlers.lambda_handler(event, Context(900))
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    assert info.value.exit_code == 2
    lines = _lines(capsys.readouterr().out)
    (summary,) = _events(lines, "jsarchive.run")
    assert summary["ok"] is False and summary["severity"] == "ERROR" and summary["message"] == message
    assert summary["error"] == {"kind": "config", "exit_code": 2}
    assert _check_emf(next(ln for ln in lines if "_aws" in ln))["Success"] == 0


def test_library_errors_name_the_variables_not_the_flags(
    lambda_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A message from the library names a setting through pipeline.base.errors.setting; a function's user is told
    the environment variable to change, never a command-line flag they could not have passed."""
    _, recipient = generate_identity()
    env = {"JSARCHIVE_URL": str(tmp_path / "a"), "NATS_URL": "nats://127.0.0.1:1", "JSARCHIVE_RECIPIENTS": recipient}
    for k, v in {**env, "JSARCHIVE_COMPRESSION": "zstd:99"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UsageError) as info:
        handlers.lambda_handler({}, Context(900))
    message = str(info.value)
    assert "$JSARCHIVE_COMPRESSION 'zstd:99'" in message and "--" not in message, message
    (summary,) = _events(_lines(capsys.readouterr().out), "jsarchive.run")
    assert summary["message"] == message
    # A setting the functions have no variable for says so, rather than naming a flag as if it could be set.
    assert handlers.env_spelling("as", None) == "the command line's --as (no variable for it)"
    assert handlers.env_spelling("store", "decoded") == "the command line's --store decoded (no variable for it)"
    assert handlers.env_spelling("consumers", None) == "$JSARCHIVE_CONSUMERS=true"


def test_secret_formats_and_errors_never_quote_the_secret() -> None:
    seed = _kp(nkeys.PREFIX_BYTE_USER).seed.decode()
    assert handlers.parse_credentials(f"  {seed}\n", "s") == {"nkey_seed": seed}
    assert handlers.parse_credentials('{"user": "u", "password": "p", "url": "nats://h:4222"}', "s") == {
        "user": "u",
        "password": "p",
        "servers": "nats://h:4222",
    }
    assert handlers.parse_credentials('{"token": "t0k"}', "s") == {"token": "t0k"}
    creds = "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n-----BEGIN USER NKEY SEED-----\nSUAB\n"
    assert handlers.parse_credentials(creds, "s") == {"creds_data": creds.strip() + "\n"}
    assert handlers.parse_credentials(json.dumps({"creds": creds}), "s") == {"creds_data": creds.strip() + "\n"}
    for bad, needle in [
        ("hunter2-secret", "neither"),
        ('{"pass": "hunter2-secret"}', "unknown field(s) pass"),
        ('{"password": "hunter2-secret"}', "no user"),
        ("{hunter2-secret", "not valid JSON"),
        ("-----BEGIN NATS USER JWT-----\nhunter2-secret\n", "without its nkey seed"),
    ]:
        with pytest.raises(handlers.ConfigError, match=re.escape(needle)) as info:
            handlers.parse_credentials(bad, "secret X")
        assert "hunter2" not in str(info.value)


def test_time_budget() -> None:
    left = [100_000.0]
    b = handlers.TimeBudget(lambda: left[0], margin=30, assumed_rate=1_000_000)
    assert b.rate == (1_000_000, "assumed")
    assert b.admit("A", 40_000_000) is None  # 2 + 60 s ≤ 70 s
    assert "needs about 77 s" in (b.admit("A", 50_000_000) or "")
    b.observe(10_000, 0.2)  # too short to say anything about the rate
    assert b.rate[1] == "assumed"
    b.observe(4_000_000, 2.0)
    assert b.rate == (2_000_000, "observed")
    assert b.admit("A", 50_000_000) is None  # at the observed 2 MB/s: 2 + 37.5 s
    left[0] = 20_000.0
    why = b.admit("A", 1)
    assert why is not None and "0 s are left before the 30 s safety margin" in why


# -- Cloud Functions (2nd gen) ---------------------------------------------------------------------------------


def test_cloud_function_http_and_cloudevent_entries(
    password_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from functions_framework import create_app

    asyncio.run(_fill(password_server.url, {"A1": (100, 200), "A2": (10, 50)}, user="backup", password=PASSWORD))
    _, recipient = generate_identity()
    archive = tmp_path / "archive"
    for var in [v for v in os.environ if v.startswith("JSARCHIVE_")]:
        monkeypatch.delenv(var)
    for k, v in {
        "JSARCHIVE_URL": str(archive),
        "NATS_URL": password_server.url,
        # Cloud Run / Functions inject a Secret Manager secret as an environment variable.
        "JSARCHIVE_NATS_CREDENTIALS": json.dumps({"user": "backup", "password": PASSWORD}),
        "JSARCHIVE_RECIPIENTS": recipient,
        "JSARCHIVE_TIME_LIMIT": "540",
    }.items():
        monkeypatch.setenv(k, v)
    source = str(Path(handlers.__file__))
    client = create_app(target="gcf_handler", source=source).test_client()
    resp = client.post("/", json={"operation": "account-backup"}, headers={"Function-Execution-Id": "exec42"})
    assert resp.status_code == 200, resp.data
    body = resp.get_json()
    assert body["ok"] is True and body["sealed"] is True and body["run"] == "run-exec42"
    assert Repository.open(str(archive)).list_sets() == [body["set_id"]]
    lines = _lines(capsys.readouterr().out)
    assert sorted(ln["stream"] for ln in _events(lines, "jsarchive.stream")) == ["A1", "A2"]
    assert not [ln for ln in lines if "_aws" in ln]  # EMF only in Lambda

    # A failing run answers 500 with the error, so Cloud Scheduler records the attempt as failed.
    monkeypatch.setenv("JSARCHIVE_NATS_CREDENTIALS", json.dumps({"user": "backup", "password": "wrong"}))
    resp = client.post("/", json={})
    assert resp.status_code == 500
    err = resp.get_json()["error"]
    assert err["kind"] == "auth" and err["exit_code"] == 12 and password_server.url in err["message"]  # refused

    # The CloudEvent entry: a Pub/Sub message from Cloud Scheduler whose data is the event.
    monkeypatch.setenv("JSARCHIVE_NATS_CREDENTIALS", json.dumps({"user": "backup", "password": PASSWORD}))
    monkeypatch.setenv("JSARCHIVE_OPERATION", "verify")
    ce_client = create_app(target="gcf_event_handler", source=source, signature_type="cloudevent").test_client()
    data = {"message": {"data": base64.b64encode(json.dumps({"stream": "A1"}).encode()).decode()}}
    resp = ce_client.post(
        "/",
        json=data,
        headers={
            "ce-id": "evt-1",
            "ce-specversion": "1.0",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-source": "//pubsub.googleapis.com/projects/p/topics/jsarchive",
        },
    )
    assert resp.status_code == 200, resp.data
    lines = _lines(capsys.readouterr().out)
    checks = _events(lines, "jsarchive.verify")
    assert [(c["stream"], c["status"]) for c in checks] == [("A1", "OK")]


def test_handlers_import_no_cloud_sdk_or_framework() -> None:
    """Lambda cold starts and the CLI pay for nothing they do not use: SDKs load when a secret store is read."""
    code = (
        "import sys, pipeline.entry.handlers, pipeline.entry.metrics\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'functions_framework',"
        " 'flask', 'awslambdaric') or m.startswith('google.cloud.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# -- the container entry: the Lambda runtime client against a Runtime API stand-in -------------------------------


def test_container_entry_runs_the_lambda_runtime_and_otherwise_the_cli(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    asyncio.run(_fill(nats_server.url, {"C1": (50, 100)}))
    _, recipient = generate_identity()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JSARCHIVE_", "AWS_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")

    # Without the Lambda Runtime API: the jsarchive CLI (what a Cloud Run job runs).
    p = subprocess.run(
        [sys.executable, "-m", "pipeline.entry.handlers", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    # outside Lambda the container entry is the command line: its --version (tests/test_version.py has the rest)
    assert p.returncode == 0 and p.stdout.startswith("jsarchive ") and "S2 block decoder" in p.stdout, p.stderr

    got: dict[str, Any] = {}
    done = threading.Event()
    release = threading.Event()
    request_id = str(uuid.uuid4())

    class RuntimeAPI(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not self.path.endswith("/runtime/invocation/next"):
                self.send_error(404)
                return
            if got.get("served"):
                release.wait(60)  # the runtime polls again after its answer; keep it waiting until it is stopped
                self.send_error(500)
                return
            got["served"] = True
            body = json.dumps({"operation": "account-backup", "run": "entry-test"}).encode()
            self.send_response(200)
            for k, v in {
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(int((time.time() + 600) * 1000)),
                "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:jsarchive",
                "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
            }.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            got[self.path] = self.rfile.read(n)
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            done.set()

        def log_message(self, *_a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), RuntimeAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env.update(
        {
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": "jsarchive",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "JSARCHIVE_URL": str(tmp_path / "archive"),
            "NATS_URL": nats_server.url,
            "JSARCHIVE_RECIPIENTS": recipient,
        }
    )
    log = tmp_path / "runtime.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.entry.handlers"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        assert done.wait(120), f"no answer from the runtime: {log.read_text()[-3000:]}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
    answer = got.get(f"/2018-06-01/runtime/invocation/{request_id}/response")
    assert answer is not None, f"{sorted(got)}\n{log.read_text()[-3000:]}"
    result = json.loads(answer)
    assert result["ok"] is True and result["sealed"] is True and result["run"] == "entry-test"
    logged = _lines(log.read_text())
    assert [ln["stream"] for ln in _events(logged, "jsarchive.stream")] == ["C1"]
    assert _check_emf(next(ln for ln in logged if "_aws" in ln))["Success"] == 1


# -- Cloud Run job: the CLI sharded by task index ---------------------------------------------------------------


def test_cloud_run_tasks_each_back_up_their_shard_and_together_the_account(
    nats_server: EmbeddedServer, tmp_path: Path, pushgateway: Recorder
) -> None:
    count = 3
    names = [f"CR{i}" for i in range(12)]
    by_shard = {i: sorted(n for n in names if shard_of(n, count) == i) for i in range(count)}
    assert all(by_shard.values()), by_shard  # every task has work (pinned by the stable hash)
    asyncio.run(_fill(nats_server.url, {n: (40, 120) for n in names}))
    _, recipient = generate_identity()
    archive = tmp_path / "archive"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JSARCHIVE_", "CLOUD_RUN_"))}
    base.update({"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "NATS_URL": nats_server.url})
    argv = [JSARCHIVE, "account", "backup", str(archive), "-r", recipient, "--log-json"]
    argv += ["--metrics-push", pushgateway.url]
    procs = []
    for i in range(count):  # all tasks of one execution at once, as Cloud Run starts them
        env = {
            **base,
            "CLOUD_RUN_TASK_INDEX": str(i),
            "CLOUD_RUN_TASK_COUNT": str(count),
            "CLOUD_RUN_EXECUTION": "jsarchive-backup-x7k2p",
        }
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, err
            outputs.append(_lines(out))
    finally:
        for p in procs:  # a task that hung or was left behind by a failed assertion
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(10)

    seen: list[str] = []
    sealed = []
    for i, lines in enumerate(outputs):
        mine = sorted(ln["stream"] for ln in _events(lines, "jsarchive.stream"))
        assert mine == by_shard[i], f"task {i} backed up {mine}, owns {by_shard[i]}"
        (summary,) = _events(lines, "jsarchive.run")
        assert summary["ok"] is True and summary["shard"] == f"{i}/{count}" and summary["streams_ok"] == len(mine)
        assert summary["run"] == "jsarchive-backup-x7k2p"
        seen += mine
        if summary["set_id"]:
            sealed.append(summary["set_id"])
    assert sorted(seen) == sorted(names)  # together: every stream, each exactly once
    assert sealed and len(set(sealed)) == 1  # the last task(s) to finish sealed the run (the same bytes)
    repo = Repository.open(str(archive))
    assert repo.list_sets() == [sealed[0]]
    bset = parse_set(repo.load_set(sealed[0]), sealed[0])
    assert sorted(e["stream"] for e in bset.streams) == sorted(names)
    assert bset.doc["shards"] == count and bset.doc["run"] == "jsarchive-backup-x7k2p"

    # Each task pushed to its own group (so the tasks do not overwrite each other's metrics).
    groups = sorted(_grouping(r.path)["shard"] for r in pushgateway.pushes())
    assert groups == [f"{i}/{count}" for i in range(count)]
    assert all(r.method == "PUT" for r in pushgateway.pushes())


# -- --metrics-push on `jsarchive stream backup` ----------------------------------------------------------------


def test_stream_backup_pushes_metrics_put_on_success_post_on_failure(
    nats_server: EmbeddedServer, tmp_path: Path, pushgateway: Recorder
) -> None:
    asyncio.run(_fill(nats_server.url, {"ORDERS": (300, 300)}))
    _, recipient = generate_identity()
    archive = str(tmp_path / "archive")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JSARCHIVE_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")

    def run(stream: str, push: str, server: str = nats_server.url) -> subprocess.CompletedProcess:
        argv = [JSARCHIVE, "stream", "backup", stream, archive, "-s", server, "-r", recipient, "--json"]
        return subprocess.run(
            [*argv, "--metrics-push", push], capture_output=True, text=True, env=env, timeout=120
        )  # fmt: skip

    t0 = time.time()
    p = run("ORDERS", pushgateway.url)
    assert p.returncode == 0, p.stderr
    backup = json.loads(p.stdout)["backup"]
    (ok,) = pushgateway.pushes()
    assert ok.method == "PUT" and ok.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert _grouping(ok.path) == {
        "job": "jsarchive",
        "operation": "stream-backup",
        "archive": archive,
        "stream": "ORDERS",
    }
    fams = _families(ok.body)
    assert fams["jsarchive_success"][()] == 1
    assert fams["jsarchive_bytes"][()] == backup["bytes"]
    assert fams["jsarchive_stored_bytes"][()] == backup["stored_bytes"]
    assert fams["jsarchive_compression_ratio"][()] == pytest.approx(backup["bytes"] / backup["stored_bytes"], 1e-3)
    assert fams["jsarchive_streams"] == {
        (("status", "ok"),): 1,
        (("status", "failed"),): 0,
        (("status", "deferred"),): 0,
    }
    assert 0 < fams["jsarchive_duration_seconds"][()] < 120
    assert t0 - 1 <= fams["jsarchive_last_success_timestamp_seconds"][()] <= time.time() + 1

    from pipeline.jetstream.embedded import free_port

    p = run("ORDERS", pushgateway.url, server=f"nats://127.0.0.1:{free_port()}")  # the server is gone
    assert p.returncode == 7, p.stderr
    failed = pushgateway.pushes()[1]
    assert failed.method == "POST" and _grouping(failed.path) == _grouping(ok.path)
    fams = _families(failed.body)
    assert fams["jsarchive_success"][()] == 0 and fams["jsarchive_streams"][(("status", "ok"),)] == 0
    assert "jsarchive_last_success_timestamp_seconds" not in fams  # POST: the last success stays in the group

    # A Pushgateway that is down is a warning; the backup itself succeeded.
    p = run("ORDERS", f"http://127.0.0.1:{free_port()}")
    assert p.returncode == 0 and "jsarchive: warning: cannot push metrics to http://127.0.0.1:" in p.stderr


def test_push_url_encoding_and_exposition() -> None:
    report = metrics.RunReport("account-backup", "s3://b/p", ok=True, started=1_700_000_000.0, seconds=12.5)
    report.bytes, report.stored_bytes, report.streams_ok, report.shard = 3000, 1000, 4, "2/8"
    url = metrics.push_url("http://gw:9091", "jsarchive", metrics.grouping_key(report))
    assert url == (
        "http://gw:9091/metrics/job/jsarchive/operation/account-backup/archive@base64/"
        + base64.urlsafe_b64encode(b"s3://b/p").decode()
        + "/shard@base64/"
        + base64.urlsafe_b64encode(b"2/8").decode()
    )
    assert _grouping(url.split("gw:9091", 1)[1]) == {
        "job": "jsarchive",
        "operation": "account-backup",
        "archive": "s3://b/p",
        "shard": "2/8",
    }
    fams = _families(metrics.exposition(report).encode())
    assert fams["jsarchive_compression_ratio"][()] == 3.0
    assert fams["jsarchive_last_success_timestamp_seconds"][()] == 1_700_000_012.5
    with pytest.raises(metrics.MetricsPushFailed, match="not an http"):
        metrics.push("ftp://gw/", report)


def test_lambda_drill_into_the_dr_cluster(
    two_clusters: dict[str, list[EmbeddedServer]],
    lambda_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The scheduled drill of terraform/examples/*-dr-drill: restore the newest set into the DR cluster beside
    whatever runs there, check it, keep the evidence, leave nothing behind."""
    from pipeline.jetstream.client import ConnectOptions, connect

    east, west = two_clusters["east"][0].url, two_clusters["west"][0].url

    async def fill() -> None:
        nc = await nats.connect(east)
        try:
            js = nc.jetstream(timeout=30)
            await js.add_stream(name="HDRILL", subjects=["hdrill.>"])
            for i in range(40):
                for attempt in range(50):  # a new stream's interest reaches the other servers a moment later
                    try:
                        await js.publish(f"hdrill.{i % 3}", f"event {i}".encode())
                        break
                    except nats.js.errors.NoStreamResponseError:
                        if attempt == 49:
                            raise
                        await asyncio.sleep(0.1)
        finally:
            await nc.close()

    asyncio.run(fill())
    archive = tmp_path / "archive"
    for k, v in {"JSARCHIVE_URL": str(archive), "NATS_URL": east, "JSARCHIVE_NO_ENCRYPT": "true"}.items():
        monkeypatch.setenv(k, v)
    try:
        backed = handlers.lambda_handler({"operation": "account-backup", "include": "HDRILL"}, Context(900))
        assert backed["ok"], backed
        monkeypatch.setenv("NATS_URL", west)
        with pytest.raises(handlers.ConfigError, match="needs a target"):
            handlers.lambda_handler({"operation": "drill"}, Context(900))
        monkeypatch.setenv("JSARCHIVE_DRILL_CLUSTER", "west")
        result = handlers.lambda_handler({"operation": "drill"}, Context(900))
        assert result["ok"] is True and result["failed"] == [] and result["rto_s"] > 0
        assert (archive / result["report_key"]).is_file()
        lines = _lines(capsys.readouterr().out)
        [line] = [ln for ln in _events(lines, "jsarchive.drill") if ln["stream"] == "HDRILL"]
        assert line["ok"] and line["drill_stream"] == "DRILL_HDRILL"

        async def names(url: str) -> list[str]:
            async with await connect(ConnectOptions(servers=url)) as js:
                return await js.stream_names()

        assert "DRILL_HDRILL" not in asyncio.run(names(west))
    finally:

        async def drop() -> None:
            async with await connect(ConnectOptions(servers=east)) as js:
                await js.delete_stream("HDRILL")

        asyncio.run(drop())
