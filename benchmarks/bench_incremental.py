"""Incremental backup and point-in-time restore against full ones, in the same run (issue 17).

A stream of --gib of ~0.7 KiB JSON events on an embedded nats-server 2.15 and a local archive:
  full          `stream backup --incremental` of the stream (the base of a chain)
  +1 %          --pct more messages published, then `stream backup --incremental` (a delta)
  full again    `stream backup` of the grown stream (no chain): the reference for the delta
  restore       the grown stream restored from its chain (base + delta, merged) and from the full backup

Reported: wall time, CPU and stored bytes of each, and the ratios the issue sets: delta wall ≤ 5 % of a full backup
of the same stream (each CLI run's process start, measured as `--version`, taken off both), delta stored ≤ 2 %,
chain restore ≥ 0.9 × a full restore.

Usage: python benchmarks/bench_incremental.py [--gib 0.25] [--pct 1] [--json out.json]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_core import COUNTRIES, STREAM, delete, event, fill, run_cli  # noqa: E402
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec  # noqa: E402


async def grow(url: str, messages: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=60)
    rng, t0, futs = random.Random(7), time.time(), []
    for i in range(messages):
        futs.append(await js.publish_async(f"events.{COUNTRIES[i % len(COUNTRIES)]}", event(rng, i, t0)))
        if len(futs) >= 4000:
            await asyncio.gather(*futs)
            futs.clear()
    await asyncio.gather(*futs)
    await nc.close()


def process_start(env: dict) -> float:
    """The fastest of three `jsarchive --version` runs: what every CLI run pays before it does any work."""
    best = float("inf")
    for _ in range(3):
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "pipeline.entry.cli", "--version"], env=env, capture_output=True)
        best = min(best, time.monotonic() - t)
    return round(best, 3)


def bench(gib: float, pct: float, workdir: Path) -> dict:
    archive, full_archive = workdir / "chain", workdir / "full"
    spec = ServerSpec(name="bench-incremental", max_file_store=int(gib * 3 * 2**30) + 2**30)
    with EmbeddedServer(spec, workdir=workdir / "nats") as srv:
        env = dict(os.environ, NATS_URL=srv.url)
        filled = asyncio.run(fill(srv.url, int(gib * 2**30)))
        common = ["--no-encrypt", "--no-progress", "--json"]
        start = process_start(env)
        base = run_cli(["stream", "backup", STREAM, str(archive), "--incremental", *common], env)
        asyncio.run(grow(srv.url, max(1, int(filled["messages"] * pct / 100))))
        delta = run_cli(["stream", "backup", STREAM, str(archive), "--incremental", *common], env)
        full = run_cli(["stream", "backup", STREAM, str(full_archive), *common], env)
        asyncio.run(delete(srv.url))
        quiet = ["--allow-unencrypted", "--no-progress", "--json"]
        chain_restore = run_cli(["stream", "restore", str(archive), STREAM, *quiet], env)
        asyncio.run(delete(srv.url))
        full_restore = run_cli(["stream", "restore", str(full_archive), STREAM, *quiet], env)
    d, f = delta["result"]["backup"], full["result"]["backup"]
    return {
        "stream": filled,
        "pct_new": pct,
        "process_start_s": start,
        "base": {k: base[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib")},
        "delta": {
            **{k: delta[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib")},
            "messages": d["messages"],
            "stored_bytes": d["stored_bytes"],
        },
        "full": {
            **{k: full[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib")},
            "stored_bytes": f["stored_bytes"],
        },
        "chain_restore": {k: chain_restore[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib")},
        "full_restore": {k: full_restore[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib")},
        "ratios": {
            "delta_wall_vs_full": round((delta["seconds"] - start) / (full["seconds"] - start), 4),
            "delta_stored_vs_full": round(d["stored_bytes"] / f["stored_bytes"], 4),
            "chain_restore_speed_vs_full": round(full_restore["seconds"] / chain_restore["seconds"], 3),
        },
        "targets": {"delta_wall_vs_full": 0.05, "delta_stored_vs_full": 0.02, "chain_restore_speed_vs_full": 0.9},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gib", type=float, default=0.25)
    ap.add_argument("--pct", type=float, default=1.0)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="jsarchive-bench-incr-"))
    try:
        out = bench(args.gib, args.pct, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)


if __name__ == "__main__":
    main()
