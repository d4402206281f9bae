"""S3 test fixtures: moto's standalone server in its own process on a free loopback port, buckets, fault injection.

Import the fixtures into a test module with ``from tests.s3_fixtures import ...  # noqa: F401``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from pipeline.jetstream.embedded import free_port
from sinks import SinkOptions
from sinks.s3 import S3Sink

READY_DEADLINE = 30.0  # seconds for moto to start answering (it imports every service it emulates)
STOP_DEADLINE = 10.0


@dataclass
class MotoServer:
    endpoint: str
    process: subprocess.Popen
    log: Path

    def reset(self) -> None:
        """Drop every bucket and object (moto keeps them all in RAM) and any state-manager settings."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()


def _start_moto(log: Path) -> MotoServer:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = MotoServer(endpoint, proc, log)
    deadline = time.monotonic() + READY_DEADLINE
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"moto server on {endpoint} not ready after {READY_DEADLINE:g} s; see {log}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(STOP_DEADLINE)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's S3 emulator as a separate process (``python -m moto.server``), stopped by its PID."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    last: Exception | None = None
    for _ in range(3):  # the free port can be taken between probing and binding; try another
        try:
            server = _start_moto(log)
            break
        except RuntimeError as e:
            last = e
    else:
        raise RuntimeError(f"could not start moto: {last}")
    try:
        yield server
    finally:
        _stop(server.process)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake static credentials; nothing from the developer's ~/.aws, environment or instance metadata."""
    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_RETRY_MODE",
        "AWS_MAX_ATTEMPTS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def moto(moto_server: MotoServer, aws_env: None) -> Iterator[MotoServer]:
    """The running server, emptied after each test."""
    yield moto_server
    moto_server.reset()


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    """A plain boto3 client to inspect what the sink did (not the sink's own client)."""
    return boto3.client("s3", endpoint_url=moto.endpoint, config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"plain-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def lock_bucket(s3: Any) -> str:
    """A bucket with Object Lock enabled (and therefore versioning)."""
    name = f"locked-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def make_sink(moto: MotoServer) -> Callable[..., S3Sink]:
    def make(bucket: str, prefix: str = "arch", **options: Any) -> S3Sink:
        options.setdefault("endpoint_url", moto.endpoint)
        return S3Sink.from_url(f"s3://{bucket}/{prefix}", SinkOptions(**options))

    return make


@pytest.fixture
def sink(make_sink: Callable[..., S3Sink], bucket: str) -> S3Sink:
    return make_sink(bucket)


@pytest.fixture
def lock_sink(make_sink: Callable[..., S3Sink], lock_bucket: str) -> S3Sink:
    return make_sink(lock_bucket)


# -- fault injection and request capture through botocore's event hooks ---------------------------------------------
class _RawBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_kw: Any) -> Iterator[bytes]:
        yield self._body


def fake_response(
    request: Any, status: int, code: str | None = None, headers: dict[str, str] | None = None
) -> AWSResponse:
    """A response as if S3 had sent it: ``code`` becomes an S3 XML error body."""
    body = b""
    if code is not None:
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>injected {code}</Message><RequestId>test</RequestId></Error>"
        ).encode()
    return AWSResponse(request.url, status, {"x-amz-request-id": "test", **(headers or {})}, _RawBody(body))


def request_body(request: Any) -> bytes:
    body = request.body
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    pos = body.tell()
    data = body.read()
    body.seek(pos)
    return data


@dataclass
class Sent:
    """One HTTP attempt as botocore sent it."""

    operation: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Wire:
    """Records every attempt of the sink's client and answers chosen ones with injected faults.

    ``fail(op, *faults)``: the next attempts of ``op`` get these faults in turn; a fault is an exception to raise
    (e.g. ``ConnectionClosedError``), an ``(status, code)`` pair to answer with, or a callable ``(request) ->
    AWSResponse | None``.
    """

    sent: list[Sent] = field(default_factory=list)
    faults: dict[str, list[Any]] = field(default_factory=dict)

    def attach(self, sink: S3Sink) -> Wire:
        sink.client.meta.events.register("before-send.s3", self._before_send)
        return self

    def fail(self, operation: str, *faults: Any) -> None:
        self.faults.setdefault(operation, []).extend(faults)

    def calls(self, operation: str) -> list[Sent]:
        return [s for s in self.sent if s.operation == operation]

    def _before_send(self, request: Any, event_name: str = "", **_kw: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]  # before-send.s3.UploadPart
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        self.sent.append(Sent(operation, request.method, request.url, headers, request_body(request)))
        queue = self.faults.get(operation)
        if not queue:
            return None
        fault = queue.pop(0)
        if isinstance(fault, BaseException):
            raise fault
        if callable(fault):
            return fault(request)
        status, code = fault
        return fake_response(request, status, code)
