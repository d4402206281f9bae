"""Transfer knobs sized from the measured round trip (issue 19): the pure sizing rules, and a restore through a
delaying relay (benchmarks/relay.py) that records what it chose. Assertions are on the recorded choice, never on time.
"""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.base.errors import UsageError
from pipeline.base.transfer import (
    SNAPSHOT_CHUNK,
    SNAPSHOT_WINDOW,
    MiB,
    TransferConfig,
    auto_in_flight,
    auto_restore_chunk,
    auto_snapshot_chunk,
    auto_snapshot_window,
)
from pipeline.flows.backup import BackupOptions, backup_stream
from pipeline.flows.restore import RestoreOptions, restore_stream
from pipeline.jetstream.client import ConnectOptions, connect
from tests.streams import fill_stream

RELAY = Path(__file__).resolve().parent.parent / "benchmarks" / "relay.py"


@pytest.mark.parametrize(
    ("rtt", "chunk", "expected"),
    [
        (None, MiB, 4),  # not measured: the loopback default
        (0.0, MiB, 4),
        (0.0002, MiB, 4),  # loopback: unchanged
        (0.005, MiB, 4),  # 0.64 MB in flight needed: 1 chunk + 2, the floor
        (0.025, MiB, 6),  # 3.2 MB: 4 chunks + 2
        (0.050, MiB, 9),  # 6.4 MB: 7 chunks + 2
        (0.100, MiB, 15),  # 12.8 MB: 13 chunks + 2
        (0.200, MiB, 16),  # capped at 16 MiB in flight
        (5.0, MiB, 16),
        (0.050, 256 * 1024, 27),  # smaller chunks: more of them for the same bytes
        (0.200, 256 * 1024, 64),  # still at most 16 MiB
        (0.200, 8 * MiB, 6),  # large chunks: fewer needed
        (5.0, 8 * MiB, 16),  # ... and never fewer than 16 allowed
        (-1.0, MiB, 4),
    ],
)
def test_in_flight_from_round_trip(rtt, chunk, expected):
    assert auto_in_flight(rtt, chunk) == expected


@pytest.mark.parametrize(
    ("max_payload", "expected"),
    [(None, MiB), (0, MiB), (MiB, MiB), (8 * MiB, MiB), (512 * 1024, 512 * 1024), (64 * 1024, 64 * 1024)],
)
def test_restore_chunk_within_max_payload(max_payload, expected):
    assert auto_restore_chunk(max_payload) == expected


@pytest.mark.parametrize(
    ("rtt", "chunk", "window"),
    [
        (None, SNAPSHOT_CHUNK, SNAPSHOT_WINDOW),
        (0.0003, SNAPSHOT_CHUNK, SNAPSHOT_WINDOW),  # loopback: the measured defaults
        (0.010, MiB, SNAPSHOT_WINDOW),  # 2 × 1.28 MB is below the default window
        (0.050, MiB, SNAPSHOT_WINDOW),  # 12.8 MB: still below 16 MiB
        (0.080, MiB, 20 * MiB),  # 20.48 MB → 20 MiB (rounded up to whole MiB)
        (0.100, MiB, 25 * MiB),
        (0.300, MiB, 32 * MiB),  # the server's maximum
    ],
)
def test_snapshot_knobs_from_round_trip(rtt, chunk, window):
    assert auto_snapshot_chunk(rtt) == chunk
    assert auto_snapshot_window(rtt) == window


@pytest.fixture
def relay_50ms(nats_server) -> Iterator[str]:
    """benchmarks/relay.py in front of the server: 25 ms each way, a 50 ms round trip; stopped by its PID."""
    cmd = [sys.executable, str(RELAY), "--delay-ms", "25", "--to", f"127.0.0.1:{nats_server.port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b""
        assert line, "the relay did not start within 30 s"
        yield f"nats://127.0.0.1:{json.loads(line)['ports'][0]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def _delete(url: str, name: str) -> None:
    async with await connect(ConnectOptions(servers=url)) as js:
        assert await js.delete_stream(name)


def test_restore_sizes_in_flight_from_measured_rtt(nats_server, relay_50ms, tmp_path, keyring):
    url = nats_server.url
    archive = str(tmp_path / "archive")
    filled = asyncio.run(fill_stream(url, messages=3000))
    backup_stream(BackupOptions(stream="ORDERS", url=archive, connect=ConnectOptions(servers=url), keys=keyring))

    def restore(server_url: str, transfer: TransferConfig | None = None) -> dict:
        asyncio.run(_delete(url, "ORDERS"))
        r = restore_stream(
            RestoreOptions(
                url=archive,
                stream="ORDERS",
                connect=ConnectOptions(servers=server_url),
                keys=keyring,
                transfer=transfer or TransferConfig(),
            )
        )
        assert r.messages == filled.messages
        return r.to_json()["transfer"]

    direct = restore(url)  # loopback: the default it always had
    assert direct["in_flight"] == 4 and direct["chunk_size"] == MiB
    assert direct["auto"] == ["restore_chunk", "in_flight"]

    far = restore(relay_50ms)
    assert far["rtt_ms"] >= 45  # the relay holds each byte 25 ms each way
    assert far["in_flight"] > 4
    assert far["in_flight"] == auto_in_flight(far["rtt_ms"] / 1000, MiB)

    pinned = restore(relay_50ms, TransferConfig(in_flight=3))  # a value the user gave is kept
    assert pinned["in_flight"] == 3 and pinned["auto"] == ["restore_chunk"]


def test_restore_chunk_above_max_payload_is_refused_before_any_byte(nats_server, tmp_path, keyring):
    url = nats_server.url
    archive = str(tmp_path / "archive")
    asyncio.run(fill_stream(url, messages=3000, consumers=False))
    backup_stream(BackupOptions(stream="ORDERS", url=archive, connect=ConnectOptions(servers=url), keys=keyring))
    asyncio.run(_delete(url, "ORDERS"))
    with pytest.raises(UsageError, match="max_payload"):
        restore_stream(
            RestoreOptions(
                url=archive,
                stream="ORDERS",
                connect=ConnectOptions(servers=url),
                keys=keyring,
                transfer=TransferConfig(restore_chunk=2 * MiB),
            )
        )

    async def names() -> list[str]:
        async with await connect(ConnectOptions(servers=url)) as js:
            return await js.stream_names()

    assert "ORDERS" not in asyncio.run(names())
