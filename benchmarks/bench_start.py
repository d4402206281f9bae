"""Start-up time of the CLI against a bare interpreter (issue 18: `--help` and a local `ls` within ~4x).

Measures whole processes, each command --runs times (default 10), the commands interleaved round by round so a
change in the machine's load falls on all of them alike, after one warm-up run each:
  python -c pass         the interpreter of the same venv (site, the editable-install finder): the floor
  jsarchive --help       the root group and its stored command list
  jsarchive --version    the version and which C decoders are in use
  jsarchive ls DIR       a local archive of one small backup, made first by `jsarchive stream backup` from an
                         embedded nats-server 2.15

Reports the median wall time and the median CPU time (user + system, from wait4) of each, and both as a ratio to
`python -c pass`. Wall times depend on what else the machine runs; the CPU ratios much less.

Usage: python benchmarks/bench_start.py [--runs 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec  # noqa: E402

JSARCHIVE = str(Path(sys.executable).parent / "jsarchive")
STREAM = "ORDERS"
TARGET = 4.0  # the bound for --help and ls, as a multiple of `python -c pass`


async def _fill(url: str, messages: int) -> None:
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        await js.add_stream(StreamConfig(name=STREAM, subjects=["orders.>"]))
        for i in range(messages):
            await js.publish(f"orders.{i % 5}", json.dumps({"id": i, "item": f"sku-{i % 97}"}).encode())
    finally:
        await nc.close()


def make_archive(workdir: Path, env: dict[str, str]) -> Path:
    """A local archive holding one backup of a 1,000-message stream."""
    archive = workdir / "archive"
    with EmbeddedServer(ServerSpec(name="bench-start"), workdir=workdir / "nats") as srv:
        asyncio.run(_fill(srv.url, 1000))
        subprocess.run(
            [JSARCHIVE, "stream", "backup", STREAM, str(archive), "-s", srv.url, "--no-encrypt", "--no-progress"],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
    return archive


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one whole process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10, help="runs of each command (the median is reported)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_") and k != "JSARCHIVE_KEY"}
    workdir = Path(tempfile.mkdtemp(prefix="jsarchive-bench-start-"))
    try:
        archive = make_archive(workdir, env)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "jsarchive --help": [JSARCHIVE, "--help"],
            "jsarchive --version": [JSARCHIVE, "--version"],
            "jsarchive ls DIR": [JSARCHIVE, "ls", str(archive)],
        }
        for argv in commands.values():
            run_once(argv, env)  # warm the page cache and the .pyc files
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(run_once(argv, env))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    base_wall = statistics.median(w for w, _ in samples["python -c pass"])
    base_cpu = statistics.median(c for _, c in samples["python -c pass"])
    results = {}
    for name, runs in samples.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        results[name] = {
            "wall_ms": round(wall * 1000, 1),
            "cpu_ms": round(cpu * 1000, 1),
            "wall_vs_python": round(wall / base_wall, 2),
            "cpu_vs_python": round(cpu / base_cpu, 2),
        }
    print(f"{'command':24} {'wall ms':>9} {'x python':>9} {'CPU ms':>9} {'x python':>9}")
    for name, r in results.items():
        print(f"{name:24} {r['wall_ms']:9.1f} {r['wall_vs_python']:9.2f} {r['cpu_ms']:9.1f} {r['cpu_vs_python']:9.2f}")
    within = {n: results[n]["wall_vs_python"] <= TARGET for n in ("jsarchive --help", "jsarchive ls DIR")}
    print(f"within {TARGET:g}x python -c pass (wall): " + ", ".join(f"{n}: {ok}" for n, ok in within.items()))
    out = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load": os.getloadavg()},
        "runs": args.runs,
        "target_vs_python": TARGET,
        "results": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
