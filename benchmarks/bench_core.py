"""Backup and restore of one large stream against the physical limit, in one run.

Measures on an embedded nats-server 2.15:
  raw snapshot      a minimal client that acks and discards (the limit for backup)
  jsarchive backup  to a local archive, zstd:3, encrypted (subprocess: wall, CPU, peak RSS)
  raw restore       the server's own snapshot bytes in 1 MiB chunks, 4 in flight (the limit for restore)
  natscli-style     the same bytes in 64 KiB chunks, stop-and-wait
  jsarchive restore from the local archive (subprocess: wall, CPU, peak RSS)

Usage: python benchmarks/bench_core.py [--gib 1.0] [--gib 0.25 ...] [--json out.json]
Peak RSS is compared across sizes to show it does not grow with the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StreamConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.embedded import EmbeddedServer, ServerSpec  # noqa: E402
from pipeline.jetstream import ConnectOptions, connect  # noqa: E402

STREAM = "EVENTS"
WORDS = ("checkout", "login", "logout", "view", "search", "add_to_cart", "refund", "signup", "rate", "share")
COUNTRIES = ("DE", "US", "FR", "JP", "BR", "IN", "GB", "CA", "AU", "NL", "SE", "ES", "IT", "MX", "KR")


def event(rng: random.Random, i: int, t0: float) -> bytes:
    """~1 KiB JSON event with unique ids and timestamps: compresses like real telemetry, not like a repeated pool."""
    ev = {
        "id": f"{rng.getrandbits(128):032x}",
        "seq": i,
        "ts": f"{t0 + i * 0.000731:.6f}",
        "type": rng.choice(WORDS),
        "user": f"u{rng.randrange(2_000_000):07d}",
        "session": f"{rng.getrandbits(64):016x}",
        "country": rng.choice(COUNTRIES),
        "amount": round(rng.expovariate(1 / 80), 2),
        "items": [
            {
                "sku": f"SKU-{rng.randrange(50_000):05d}",
                "qty": rng.randrange(1, 5),
                "price": round(rng.uniform(1, 300), 2),
            }
            for _ in range(rng.randrange(1, 6))
        ],
        "ua": f"Mozilla/5.0 (X11; Linux x86_64) Chrome/{rng.randrange(90, 140)}.0.{rng.randrange(9999)}",
        "trace": f"{rng.getrandbits(256):064x}",
    }
    body = json.dumps(ev, separators=(",", ":"))
    return (body + " " * max(0, 1000 - len(body))).encode()[: max(1000, len(body))]


async def fill(url: str, target_bytes: int) -> dict:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=60)
    await js.add_stream(StreamConfig(name=STREAM, subjects=["events.>"]))
    rng = random.Random(42)
    t0 = time.time()
    i = 0
    sent = 0
    futs = []
    while sent < target_bytes:
        i += 1
        data = event(rng, i, t0)
        sent += len(data)
        futs.append(await js.publish_async(f"events.{COUNTRIES[i % len(COUNTRIES)]}", data))
        if len(futs) >= 4000:
            await asyncio.gather(*futs)
            futs.clear()
    await asyncio.gather(*futs)
    info = await js.stream_info(STREAM)
    await nc.close()
    return {"messages": info.state.messages, "bytes": info.state.bytes, "seconds": round(time.time() - t0, 1)}


async def raw_snapshot(url: str, out: Path | None) -> dict:
    async with await connect(ConnectOptions(servers=url)) as js:
        f = open(out, "wb") if out else None  # noqa: SIM115
        n = 0

        async def sink(chunk: bytes) -> None:
            nonlocal n
            n += len(chunk)
            if f:
                f.write(chunk)

        t = time.monotonic()
        await js.snapshot(STREAM, sink)
        wall = time.monotonic() - t
        if f:
            f.close()
        return {"seconds": round(wall, 3), "bytes": n}


async def raw_restore(url: str, snap: Path, chunk: int, in_flight: int, config: dict) -> dict:
    async def chunks():
        with open(snap, "rb") as f:
            while data := f.read(chunk):
                yield data

    async with await connect(ConnectOptions(servers=url)) as js:
        t = time.monotonic()
        await js.restore(STREAM, {"config": config}, chunks(), in_flight=in_flight)
        wall = time.monotonic() - t
        await js.delete_stream(STREAM)
        return {"seconds": round(wall, 3), "chunk": chunk, "in_flight": in_flight}


def run_cli(args: list[str], env: dict) -> dict:
    """Run jsarchive as a child; wall time, CPU seconds and peak RSS (from wait4, exact, no polling)."""
    t = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.__main__", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = b"", b""
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"jsarchive {' '.join(args)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {
        "seconds": round(wall, 3),
        "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 2),
        "peak_rss_mib": round(ru.ru_maxrss / 1024, 1),
        "result": json.loads(out),
    }


async def stream_config(url: str) -> dict:
    async with await connect(ConnectOptions(servers=url)) as js:
        info = await js.stream_info(STREAM)
        return info["config"]


async def delete(url: str) -> None:
    async with await connect(ConnectOptions(servers=url)) as js:
        await js.delete_stream(STREAM)


def bench(gib: float, workdir: Path) -> dict:
    srv = EmbeddedServer(ServerSpec(name="bench", max_file_store="64GB"), workdir=workdir / "nats")
    srv.start()
    try:
        srv.wait_ready()
        version = srv.varz()["version"]
        filled = asyncio.run(fill(srv.url, int(gib * 1024**3)))
        config = asyncio.run(stream_config(srv.url))
        snap_file = workdir / "snapshot.s2"
        asyncio.run(raw_snapshot(srv.url, snap_file))  # the server's own bytes, for the raw restore
        raw_snap = asyncio.run(raw_snapshot(srv.url, None))
        key = workdir / "bench.key"
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli.__main__", "keygen", "-o", str(key)], check=True, capture_output=True
        )
        env = dict(os.environ)
        archive = workdir / "archive"
        backup = run_cli(
            ["stream", "backup", STREAM, str(archive), "-s", srv.url, "-i", str(key), "--json", "--no-progress"], env
        )
        asyncio.run(delete(srv.url))
        raw_rest = asyncio.run(raw_restore(srv.url, snap_file, 1024 * 1024, 4, config))
        natscli_rest = asyncio.run(raw_restore(srv.url, snap_file, 64 * 1024, 1, config))
        restore = run_cli(
            ["stream", "restore", str(archive), STREAM, "-s", srv.url, "-i", str(key), "--json", "--no-progress"], env
        )
        b = backup.pop("result")["backup"]
        r = restore.pop("result")["restore"]
        assert r["messages"] == filled["messages"], (r["messages"], filled)
        return {
            "gib": gib,
            "server": version,
            "stream": filled,
            "snapshot_bytes": raw_snap["bytes"],
            "raw_snapshot": raw_snap,
            "backup": backup,
            "stored_bytes": b["stored_bytes"],
            "ratio_vs_stream": round(filled["bytes"] / b["stored_bytes"], 3),
            "raw_restore": raw_rest,
            "natscli_restore": natscli_rest,
            "restore": restore,
            "backup_vs_raw": round(backup["seconds"] / raw_snap["seconds"], 3),
            "restore_vs_raw": round(restore["seconds"] / raw_rest["seconds"], 3),
            "restore_speedup_vs_natscli": round(natscli_rest["seconds"] / restore["seconds"], 3),
        }
    finally:
        srv.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, action="append", help="stream size(s) in GiB (default 0.25 and 1)")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--workdir", help="where the server store, snapshot and archive go (default: a temp dir)")
    args = ap.parse_args()
    sizes = args.gib or [0.25, 1.0]
    results = []
    for gib in sizes:
        wd = Path(args.workdir or tempfile.mkdtemp(prefix="jsarchive-bench-")) / f"{gib}gib"
        wd.mkdir(parents=True, exist_ok=True)
        try:
            results.append(bench(gib, wd))
        finally:
            shutil.rmtree(wd, ignore_errors=True)
    print(
        f"{'GiB':>5} {'msgs':>9} {'snap MB':>8} {'raw snap s':>10} {'backup s':>9} {'ratio':>6} {'RSS MiB':>8} "
        f"{'raw rest s':>10} {'64K s':>7} {'restore s':>9} {'ratio':>6} {'RSS MiB':>8} {'stored MB':>9}"
    )
    for r in results:
        print(
            f"{r['gib']:>5} {r['stream']['messages']:>9} {r['snapshot_bytes'] / 1e6:>8.0f} "
            f"{r['raw_snapshot']['seconds']:>10.2f} {r['backup']['seconds']:>9.2f} {r['backup_vs_raw']:>6.2f} "
            f"{r['backup']['peak_rss_mib']:>8.0f} {r['raw_restore']['seconds']:>10.2f} "
            f"{r['natscli_restore']['seconds']:>7.2f} {r['restore']['seconds']:>9.2f} {r['restore_vs_raw']:>6.2f} "
            f"{r['restore']['peak_rss_mib']:>8.0f} {r['stored_bytes'] / 1e6:>9.0f}"
        )
    out = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load": os.getloadavg()},
        "results": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out["machine"]))


if __name__ == "__main__":
    main()
