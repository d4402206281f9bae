"""What `jsarchive --version` prints: the version, which decoders run (C or pure Python), the servers supported.

Loaded only by ``--version``; it imports the C extensions themselves (cheap) rather than pipeline.format.s2 and
natsarc (which pull in tarfile, dataclasses and google-crc32c), and repeats their choice: tests/test_version.py checks
that the two agree.
"""

from __future__ import annotations

import importlib
import os
import sys

from pipeline import __version__

# The nats-server minor versions jsarchive is tested against (README "Server versions"); the snapshot format
# changes at 2.15 (pipeline/format/snapshot.py FIRST_V2_VERSION).
SUPPORTED_SERVERS = ("2.10", "2.15")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def s2_accelerated() -> bool:
    """Whether pipeline.format.s2 decodes blocks in C (its ``ACCELERATED``): built, and not JSARCHIVE_S2_PURE."""
    return _importable("pipeline.format._s2block") and os.environ.get("JSARCHIVE_S2_PURE", "") in ("", "0")


def natsarc_accelerated() -> bool:
    """Whether pipeline.format.natsarc counts archives with its C walk."""
    return _importable("pipeline.format._natsarc")


def _decoder(accelerated: bool, module: str) -> str:
    if accelerated:
        return f"C ({module})"
    if module.endswith("_s2block") and _importable(module):
        return "pure Python (JSARCHIVE_S2_PURE is set)"
    return "pure Python (the C extension is not built)"


def version_text() -> str:
    from pipeline.format.snapshot import FIRST_V2_VERSION

    low, high = SUPPORTED_SERVERS
    major, minor = FIRST_V2_VERSION[:2]
    return "\n".join(
        [
            f"jsarchive {__version__}",
            f"S2 block decoder: {_decoder(s2_accelerated(), 'pipeline.format._s2block')}",
            f"NATSARC walker: {_decoder(natsarc_accelerated(), 'pipeline.format._natsarc')}",
            f"nats-server: {low} to {high} "
            f"(snapshot format V1 for {major}.{minor - 1} and older, V2 for {major}.{minor})",
            f"Python {'.'.join(map(str, sys.version_info[:3]))} ({sys.implementation.name})",
        ]
    )
