"""Speed of the S2 decoders (pipeline.format.s2) on a real nats-server snapshot, in MB/s of decoded output.

Fills a stream on an embedded nats-server (2.15, or --server-version 2.14.6 for a V1 tar), takes a raw snapshot
(about --snapshot-mb MB as sent, the default 50) and decodes it, fed in 256 KiB chunks as a backup's blocks
would be:

  c              the C accelerator with CRC-32C checks (what inspect/cat use when it is built)
  c-no-crc       the C block decoder alone
  python         the pure-Python reference decoder with CRC-32C checks
  python-no-crc  the pure-Python block decoder alone
  archive        C decoder + NATSARC1 parsing into messages (V2 only): what `jsarchive cat` costs per message

Usage: python benchmarks/bench_s2.py [--snapshot-mb 50] [--snapshot FILE] [--keep FILE] [--runs 3] [--json out]
--snapshot reuses a saved snapshot (from --keep) instead of starting a server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
from nats.js.api import StreamConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.format import natsarc, s2  # noqa: E402
from pipeline.jetstream.client import ConnectOptions, connect  # noqa: E402
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec  # noqa: E402
from tests.servers import server_binary  # noqa: E402

STREAM = "EVENTS"
COUNTRIES = ("DE", "US", "FR", "JP", "BR", "IN", "GB", "CA", "AU", "NL")
WORDS = ("checkout", "login", "logout", "view", "search", "add_to_cart", "refund", "signup")
FEED = 256 * 1024


def event(rng: random.Random, i: int) -> bytes:
    """~700 bytes of JSON with unique ids: compresses about 2x under S2, like real telemetry."""
    ev = {
        "id": f"{rng.getrandbits(128):032x}",
        "seq": i,
        "type": rng.choice(WORDS),
        "user": f"u{rng.randrange(2_000_000):07d}",
        "country": rng.choice(COUNTRIES),
        "amount": round(rng.expovariate(1 / 80), 2),
        "items": [{"sku": f"SKU-{rng.randrange(50_000):05d}", "qty": rng.randrange(1, 5)} for _ in range(3)],
        "trace": f"{rng.getrandbits(256):064x}",
        "note": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(10, 40))),
    }
    return json.dumps(ev, separators=(",", ":")).encode()


async def fill_and_snapshot(url: str, snapshot_mb: float) -> bytes:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=60)
    await js.add_stream(StreamConfig(name=STREAM, subjects=["events.>"]))
    rng = random.Random(42)
    target = int(snapshot_mb * 1e6 * 2.1)  # logical bytes; the snapshot is about half of it
    sent = i = 0
    futs = []
    while sent < target:
        i += 1
        data = event(rng, i)
        sent += len(data)
        futs.append(await js.publish_async(f"events.{COUNTRIES[i % len(COUNTRIES)]}", data, headers={"N": str(i)}))
        if len(futs) >= 4000:
            await asyncio.gather(*futs)
            futs.clear()
    await asyncio.gather(*futs)
    await nc.close()
    buf = bytearray()

    async def on_chunk(c: bytes) -> None:
        buf.extend(c)

    async with await connect(ConnectOptions(servers=url)) as jsa:
        await jsa.snapshot(STREAM, on_chunk)
    return bytes(buf)


def feed(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for off in range(0, len(data), FEED):
        yield view[off : off + FEED]


def best_of(runs: int, fn: Callable[[], int]) -> tuple[float, int]:
    best, out = float("inf"), 0
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def decode_all(data: bytes, accelerated: bool, verify_crc: bool) -> int:
    return sum(len(b) for b in s2.iter_decode(feed(data), accelerated=accelerated, verify_crc=verify_crc))


def parse_archive(data: bytes) -> int:
    reader = natsarc.ArchiveReader(s2.iter_decode(feed(data), accelerated=True))
    return sum(1 for _ in reader.messages())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot-mb", type=float, default=50.0, help="approximate snapshot size to create")
    ap.add_argument("--server-version", default=None, help="nats-server version (default: the installed 2.15.x)")
    ap.add_argument("--snapshot", type=Path, help="decode this saved snapshot instead of making one")
    ap.add_argument("--keep", type=Path, help="save the snapshot here")
    ap.add_argument("--runs", type=int, default=3, help="runs per C measurement (best is reported)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    if args.snapshot:
        data = args.snapshot.read_bytes()
        version = "?"
    else:
        with tempfile.TemporaryDirectory(prefix="bench-s2-") as tmp:
            spec = ServerSpec(name="bench", binary=server_binary(args.server_version), max_file_store="8GB")
            with EmbeddedServer(spec, workdir=Path(tmp) / "nats") as srv:
                version = srv.varz()["version"]
                data = asyncio.run(fill_and_snapshot(srv.url, args.snapshot_mb))
    if args.keep:
        args.keep.write_bytes(data)
    decoded = s2.decompress(data, accelerated=s2.ACCELERATED)
    fmt = "V2" if decoded.startswith(natsarc.MAGIC) else "V1"
    results: dict = {
        "server": version,
        "format": fmt,
        "snapshot_bytes": len(data),
        "decoded_bytes": len(decoded),
        "ratio": round(len(decoded) / len(data), 3),
        "accelerator": s2._c is not None,
        "decoders": {},
    }
    del decoded
    mb = results["decoded_bytes"] / 1e6
    cases: list[tuple[str, Callable[[], int], int]] = []
    if s2._c is not None:
        cases += [
            ("c", lambda: decode_all(data, True, True), args.runs),
            ("c-no-crc", lambda: decode_all(data, True, False), args.runs),
        ]
    cases += [
        ("python", lambda: decode_all(data, False, True), 1),
        ("python-no-crc", lambda: decode_all(data, False, False), 1),
    ]
    if fmt == "V2" and s2._c is not None:
        cases.append(("archive", lambda: parse_archive(data), 1))
    for name, fn, runs in cases:
        secs, out = best_of(runs, fn)
        row = {"seconds": round(secs, 3), "MB_per_s": round(mb / secs, 1)}
        if name == "archive":
            row["messages"] = out
            row["messages_per_s"] = round(out / secs)
        else:
            assert out == results["decoded_bytes"], (name, out)
        results["decoders"][name] = row
        print(f"{name:>14}: {row['MB_per_s']:8.1f} MB/s decoded ({secs:.2f} s)", flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
