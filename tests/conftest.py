"""Shared fixtures: real nats-servers on loopback free ports, stopped by PID; keys; archives in tmp dirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec, start_cluster
from pipeline.keys.keyring import KeyRing, generate_identity

# Object-store emulator fixtures, shared by the sink and pipeline tests.
from tests.gcs_fixtures import (  # noqa: F401, I001
    fixture_fake_gcs_server,
    fixture_gcp_storage_emulator,
    fixture_gcs_emulator,
    fixture_no_google_env,
)
from tests.s3_fixtures import aws_env, bucket, lock_bucket, moto, moto_server, s3  # noqa: F401, I001
from tests.servers import server_binary


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A fresh standalone nats-server 2.15.x (snapshot format V2) with JetStream."""
    with EmbeddedServer(ServerSpec(name="standalone"), workdir=tmp_path / "nats") as srv:
        yield srv


@pytest.fixture
def second_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """Another independent 2.15.x server: the restore target."""
    with EmbeddedServer(ServerSpec(name="target"), workdir=tmp_path / "nats-target") as srv:
        yield srv


def make_server(version: str | None, workdir: Path, name: str = "s") -> EmbeddedServer:
    return EmbeddedServer(ServerSpec(name=name, binary=server_binary(version)), workdir=workdir)


@pytest.fixture(scope="session")
def two_clusters() -> Iterator[dict[str, list[EmbeddedServer]]]:
    """Two independent 3-node 2.15.x clusters, ``east`` and ``west``, each server tagged region:… and az:…."""
    clusters: dict[str, list[EmbeddedServer]] = {}
    try:
        for name in ("east", "west"):
            clusters[name] = start_cluster(name, 3, tags=[[f"region:{name}", f"az:{i + 1}"] for i in range(3)])
        yield clusters
    finally:
        for servers in clusters.values():
            for s in servers:
                s.cleanup()


@pytest.fixture
def identity_file(tmp_path: Path) -> tuple[Path, str]:
    """An age identity file (mode 600) and its public recipient."""
    ident, public = generate_identity()
    path = tmp_path / "backup.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ident + "\n")
    return path, public


@pytest.fixture
def keyring(identity_file: tuple[Path, str]) -> KeyRing:
    return KeyRing.load(identity_files=[str(identity_file[0])], use_env=False)


@pytest.fixture(autouse=True)
def _no_ambient_nats_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never pick up the developer's NATS contexts, env vars or $JSARCHIVE_KEY."""
    for var in (
        "NATS_URL",
        "NATS_CONTEXT",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_CREDS",
        "NATS_NKEY",
        "JSARCHIVE_KEY",
        "JSARCHIVE_KMS_KEY",
        "JSARCHIVE_GCP_KMS_KEY",
        "JSARCHIVE_USE_KMS_SLOTS",
        "AWS_ENDPOINT_URL_KMS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
