"""Backup and restore across a long link (25–100 ms round trip), against the limits of that link, in one run.

A disaster-recovery drill restores in another region, tens of milliseconds from the cluster or the bucket. There a
protocol that waits a round trip per chunk is capped at chunk / RTT, and a window of bytes in flight at window / RTT,
which loopback (bench_core.py) never shows. Per --rtt setting this measures, over the same link:
  link probe        one TCP connection through the link, and its ceiling: min(rate, window / RTT)
  raw snapshot      the best the server allows (1 MiB chunks, 32 MiB window), acked and discarded: the limit
  natscli snapshot  natscli's default request (the server's 128 KiB chunks, 8 MiB window)
  raw restore       the server's own snapshot bytes in 1 MiB chunks, 4 and 16 in flight: the best is the limit
  natscli restore   64 KiB chunks, stop-and-wait (jsm.go's pattern)
  jsarchive         `stream backup` / `stream restore` as whole processes (start-up included), to a local directory
                    and to S3 (moto, its traffic crossing the same kind of link)
with wall time, MB/s of snapshot bytes and CPU per process (bench_core.CpuMeter, plus the relay's own).

The link: the kernel's netem where it exists (`--link auto` tries it in a scratch network namespace, needs root);
without it, benchmarks/relay.py, a userspace relay on loopback that delays every byte by RTT / 2, paces it to
--link-mbit and allows --window-mib unacknowledged bytes per direction. Its limits (stated in the output too): no
slow start, congestion control or loss (the window is open from the first byte), and its CPU is spent on the same
cores as what it measures.

--rtt 0 is the relay without delay: with it in the list, every phase also shows how many round trips it waited for.

Usage: python benchmarks/bench_wan.py [--rtt 50] [--rtt 0,25,50,100] [--mib 64] [--link-mbit 1000] [--window-mib 8]
                                      [--link auto|relay|netem] [--loss PCT] [--json out.json] [--no-s3]
Exit codes: 2 bad option (--loss without netem), 3 --link netem where netem or network namespaces are unavailable.
Everything it starts (servers, relay, namespace, qdisc) is stopped by PID or deleted on exit, also on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_core import (  # noqa: E402
    STREAM,
    CpuMeter,
    Moto,
    _proc_cpu,
    delete,
    fill,
    raw_restore,
    raw_snapshot,
    run_cli,
    stream_config,
)
from benchmarks.bench_s3_link import NO_NET_ADMIN, sh, stop  # noqa: E402
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec  # noqa: E402

MiB = 1024 * 1024
BAD_OPTION = 2
RELAY = Path(__file__).resolve().parent / "relay.py"
RELAY_LIMITS = (
    "userspace relay on loopback: every byte held RTT/2 each way, paced to the rate, a fixed window of unacked "
    "bytes per direction; no slow start, no congestion control, no loss; its CPU shares the cores it measures"
)
NETEM_LIMITS = "netem on loopback in a private network namespace: kernel TCP (slow start, congestion control)"


class Relay:
    """benchmarks/relay.py in its own process: one listening port per target, stopped by its PID."""

    def __init__(self, rtt_ms: float, mbit: float, window_mib: float, targets: list[str]) -> None:
        cmd = [sys.executable, str(RELAY), "--delay-ms", str(rtt_ms / 2), "--rate-mbit", str(mbit)]
        cmd += ["--window-mib", str(window_mib)]
        for t in targets:
            cmd += ["--to", t]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError("the relay did not start")
        self.ports = json.loads(line)["ports"]

    def cpu(self) -> float:
        return _proc_cpu(self.proc.pid)

    def stop(self) -> None:
        stop(self.proc)


class Netem:
    """The same role as Relay, from the kernel: a netem qdisc on this namespace's loopback (``bench_wan`` re-runs
    itself inside a namespace of its own for that, so nothing outside it is delayed)."""

    def __init__(self, rtt_ms: float, mbit: float, loss: float, targets: list[str]) -> None:
        spec = ["delay", f"{rtt_ms / 2}ms", "limit", "100000"]
        if mbit:
            spec += ["rate", f"{mbit}mbit"]
        if loss:
            spec += ["loss", f"{loss}%"]
        sh("tc", "qdisc", "replace", "dev", "lo", "root", "netem", *spec)
        self.ports = [int(t.rpartition(":")[2]) for t in targets]

    def cpu(self) -> float:
        return 0.0

    def stop(self) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True, timeout=30)


def netem_works() -> bool:
    """Whether a netem qdisc can be added, tried on the loopback of a scratch namespace (needs root)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        return False
    ns = f"jsa-wan-probe-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True, timeout=30).returncode != 0:
        return False
    try:
        cmd = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class Sink:
    """Counts what arrives on one TCP connection and answers with the count: the link's rate without servers.

    A thread here rather than a process: the socket is listening before the relay exists, so there is no start-up
    to wait for."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(60)
        self.port = self.srv.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.srv.accept()
            with conn:
                n = 0
                while data := conn.recv(MiB):
                    n += len(data)
                conn.sendall(str(n).encode())

    def close(self) -> None:
        self.srv.close()


def probe(port: int, mb: int) -> float:
    """MB/s of one TCP connection sending ``mb`` MB through the link, until the far end has counted all of it."""
    chunk = os.urandom(MiB)
    n = mb * 1_000_000 // MiB * MiB
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        t = time.monotonic()
        for _ in range(n // MiB):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        got = int(conn.recv(64))
        wall = time.monotonic() - t
    assert got == n, (got, n)
    return n / wall / 1e6


def one_rtt(ctx: dict, rtt: float, args: argparse.Namespace) -> dict:
    srv, moto, snap, config, key, filled = (ctx[k] for k in ("srv", "moto", "snap", "config", "key", "filled"))
    sink = Sink()
    targets = [f"127.0.0.1:{srv.port}", f"127.0.0.1:{sink.port}"]
    if moto is not None:
        targets.append(moto.endpoint.removeprefix("http://"))
    if args.link == "netem":
        link = Netem(rtt, args.link_mbit, args.loss, targets)
    else:
        link = Relay(rtt, args.link_mbit, args.window_mib, targets)
    phases: dict[str, dict] = {}
    try:
        url = f"nats://127.0.0.1:{link.ports[0]}"
        tcp = probe(link.ports[1], args.probe_mb)
        s3_endpoint = f"http://127.0.0.1:{link.ports[2]}" if moto is not None else None
        meter = CpuMeter(srv.proc.pid, moto.proc.pid if moto else None)
        snap_bytes = snap.stat().st_size

        def measured(name: str, fn):  # noqa: ANN001, ANN202 - a phase: wall, MB/s, CPU per process and relay
            phases[name] = p = {}
            r0 = link.cpu()
            out = meter.measure(p, fn)
            p["relay_cpu"] = round(link.cpu() - r0, 2)
            p["seconds"] = out["seconds"]
            p["mb_s"] = round(snap_bytes / out["seconds"] / 1e6, 1)
            for k in ("cpu_seconds", "peak_rss_mib"):
                if k in out:
                    p[k] = out[k]
            return out

        common = ["-s", url, "-i", str(key), "--json", "--no-progress"]
        s3 = ["--s3-endpoint", s3_endpoint] if s3_endpoint else []
        env = moto.env() if moto else dict(os.environ)
        archive = ctx["workdir"] / f"archive-{rtt:g}"
        measured(
            "raw snapshot 1MiB/32MiB",
            lambda: asyncio.run(raw_snapshot(url, None, chunk_size=MiB, window_size=32 * MiB)),
        )
        measured(
            "natscli snapshot 128K/8MiB",
            lambda: asyncio.run(raw_snapshot(url, None, chunk_size=None, window_size=None)),
        )
        b = measured("jsarchive backup", lambda: run_cli(["stream", "backup", STREAM, str(archive), *common], env))
        assert b["result"]["backup"]["messages"] == filled["messages"], (b["result"], filled)
        s3_url = f"s3://bench/wan-{rtt:g}"
        if moto is not None:
            measured("jsarchive backup s3://", lambda: run_cli(["stream", "backup", STREAM, s3_url, *common, *s3], env))
        asyncio.run(delete(srv.url))  # housekeeping goes around the link
        for n in args.in_flight:
            measured(f"raw restore 1MiB x{n}", lambda n=n: asyncio.run(raw_restore(url, snap, MiB, n, config)))
        measured("natscli restore 64K x1", lambda: asyncio.run(raw_restore(url, snap, 64 * 1024, 1, config)))
        r = measured("jsarchive restore", lambda: run_cli(["stream", "restore", str(archive), STREAM, *common], env))
        assert r["result"]["restore"]["messages"] == filled["messages"], (r["result"], filled)
        phases["jsarchive restore"]["transfer"] = r["result"]["restore"].get("transfer")  # rtt_ms, in_flight chosen
        if moto is not None:
            asyncio.run(delete(srv.url))
            measured(
                "jsarchive restore s3://", lambda: run_cli(["stream", "restore", s3_url, STREAM, *common, *s3], env)
            )
        # the stream is back (restored by the last phase): the next setting snapshots it again
    finally:
        link.stop()
        sink.close()
    shutil.rmtree(ctx["workdir"] / f"archive-{rtt:g}", ignore_errors=True)
    rate = args.link_mbit * 1e6 / 8 if args.link_mbit else float("inf")
    window = args.window_mib * MiB if args.link == "relay" else float("inf")
    ceiling = min(rate, window / (rtt / 1000) if rtt else float("inf"))
    raw_rest = min(phases[f"raw restore 1MiB x{n}"]["seconds"] for n in args.in_flight)
    raw_snap = phases["raw snapshot 1MiB/32MiB"]["seconds"]

    def sec(name: str) -> float | None:
        return phases[name]["seconds"] if name in phases else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    return {
        "rtt_ms": rtt,
        "link": {
            "ceiling_mb_s": round(ceiling / 1e6, 1) if ceiling != float("inf") else None,
            "rate_mb_s": round(rate / 1e6, 1) if rate != float("inf") else None,
            "window_over_rtt_mb_s": round(window / (rtt / 1000) / 1e6, 1) if rtt and window != float("inf") else None,
            "tcp_probe_mb_s": round(tcp, 1),
            "probe_mb": args.probe_mb,
        },
        "best_raw_restore_seconds": raw_rest,
        "ratios": {
            "restore_speedup_vs_natscli": ratio(sec("natscli restore 64K x1"), sec("jsarchive restore")),
            "restore_vs_raw": ratio(sec("jsarchive restore"), raw_rest),
            "s3_restore_vs_raw": ratio(sec("jsarchive restore s3://"), raw_rest),
            "backup_vs_raw_snapshot": ratio(sec("jsarchive backup"), raw_snap),
            "s3_backup_vs_raw_snapshot": ratio(sec("jsarchive backup s3://"), raw_snap),
            "natscli_snapshot_vs_raw": ratio(sec("natscli snapshot 128K/8MiB"), raw_snap),
        },
        "phases": phases,
    }


def startup_seconds() -> float:
    """Wall time of `jsarchive --help`: what every whole-process figure pays before its first byte."""
    t = time.monotonic()
    subprocess.run([sys.executable, "-m", "pipeline.entry.cli", "--help"], check=True, capture_output=True, timeout=60)
    return round(time.monotonic() - t, 3)


def bench(args: argparse.Namespace, workdir: Path) -> dict:
    srv = EmbeddedServer(ServerSpec(name="bench", max_file_store="64GB"), workdir=workdir / "nats")
    moto = None
    try:
        srv.start()
        srv.wait_ready()
        if not args.no_s3:
            moto = Moto()
            moto.client().create_bucket(Bucket="bench")
        filled = asyncio.run(fill(srv.url, int(args.mib * MiB)))
        snap = workdir / "snapshot.s2"
        asyncio.run(raw_snapshot(srv.url, snap))  # the bytes every raw restore sends, taken on loopback
        key = workdir / "bench.key"
        sh(sys.executable, "-m", "pipeline.entry.cli", "keygen", "-o", str(key))
        ctx = {
            "srv": srv,
            "moto": moto,
            "snap": snap,
            "config": asyncio.run(stream_config(srv.url)),
            "key": key,
            "filled": filled,
            "workdir": workdir,
        }
        results = [one_rtt(ctx, rtt, args) for rtt in args.rtt]
        # With a 0 ms setting in the run (the relay, no delay), (wall - wall at 0 ms) / RTT is how many round
        # trips a phase waited for: what the link, not the work, costs it.
        base = next((res["phases"] for res in results if res["rtt_ms"] == 0), None)
        for res in results:
            for name, p in res["phases"].items() if base and res["rtt_ms"] else ():
                p["extra_round_trips"] = round((p["seconds"] - base[name]["seconds"]) / (res["rtt_ms"] / 1000), 1)
        startup = min(startup_seconds() for _ in range(3))
        return {
            "mib": args.mib,
            "server": srv.varz()["version"],
            "stream": filled,
            "snapshot_bytes": snap.stat().st_size,
            "jsarchive_startup_seconds": startup,
            "link": {
                "kind": args.link,
                "limits": NETEM_LIMITS if args.link == "netem" else RELAY_LIMITS,
                "rate_mbit": args.link_mbit,
                "window_mib": args.window_mib if args.link == "relay" else None,
                "loss_pct": args.loss,
            },
            "results": results,
        }
    finally:
        if moto is not None:
            moto.stop()
        srv.cleanup()


TARGETS = (  # the targets: (ratio, limit, "min" if it must be at least the limit)
    ("restore_speedup_vs_natscli", 30.0, "min"),
    ("restore_vs_raw", 1.25, "max"),
    ("backup_vs_raw_snapshot", 1.5, "max"),
)


def report(r: dict) -> None:
    ln = r["link"]
    print(
        f"stream {r['mib']} MiB, {r['stream']['messages']} msgs, snapshot {r['snapshot_bytes'] / 1e6:.1f} MB, "
        f"nats-server {r['server']}; link: {ln['kind']}, {ln['rate_mbit'] or 'unlimited'} Mbit/s, "
        f"window {ln['window_mib'] or 'kernel'} MiB, loss {ln['loss_pct']} %"
    )
    print(f"link model: {ln['limits']}")
    print(f"jsarchive start-up (--help, no link): {r['jsarchive_startup_seconds']} s, in every whole-process figure")
    head = ("wall s", "MB/s", "server", "client", "moto", "relay", "srv cores", "RSS MiB", "+RTTs")
    for res in r["results"]:
        k = res["link"]
        print(
            f"\nRTT {res['rtt_ms']:g} ms: ceiling {k['ceiling_mb_s']} MB/s (rate {k['rate_mb_s']}, window/RTT "
            f"{k['window_over_rtt_mb_s']}); one TCP connection measured {k['tcp_probe_mb_s']} MB/s"
        )
        print(f"  {'phase':28} " + " ".join(f"{h:>9}" for h in head))
        for name, p in res["phases"].items():
            row = (
                f"{p['seconds']:.2f}",
                p["mb_s"],
                p["server_cpu"],
                p["client_cpu"],
                p["store_cpu"],
                p["relay_cpu"],
                p["server_cores"],
                p.get("peak_rss_mib", "-"),
                p.get("extra_round_trips", "-"),
            )
            print(f"  {name:28} " + " ".join(f"{v:>9}" for v in row))
        if tuned := res["phases"].get("jsarchive restore", {}).get("transfer"):
            print(f"  jsarchive restore chose: {tuned}")
        ratios = res["ratios"]
        print("  " + ", ".join(f"{name} {v}" for name, v in ratios.items()))
        for name, limit, kind in TARGETS:
            v = ratios[name]
            ok = v is not None and (v >= limit if kind == "min" else v <= limit)
            print(f"  target {name} {'>=' if kind == 'min' else '<='} {limit}: {v} {'met' if ok else 'NOT met'}")


def rtt_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtt", type=rtt_list, default=[50.0], help='round trips in ms, e.g. "25,50,100" (default 50)')
    ap.add_argument("--mib", type=float, default=64, help="stream size in MiB (default 64)")
    ap.add_argument("--link-mbit", type=float, default=1000, help="link rate in Mbit/s each way, 0 = none (1000)")
    ap.add_argument("--window-mib", type=float, default=8, help="relay: unacked bytes per direction (default 8)")
    ap.add_argument("--link", choices=("auto", "relay", "netem"), default="auto", help="netem if it works (auto)")
    ap.add_argument("--loss", type=float, default=0.0, help="packet loss in %% (netem only)")
    ap.add_argument("--in-flight", type=lambda s: [int(x) for x in s.split(",")], default=[4, 16])
    ap.add_argument("--probe-mb", type=int, default=64, help="MB sent to measure the link (default 64)")
    ap.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) phases")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--workdir", help="where the server store, snapshot and archives go (default: a temp dir)")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)  # the re-run inside the namespace
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks tear everything down
    if not args.in_netns:
        if args.link in ("auto", "netem"):
            works = netem_works()
            if args.link == "netem" and not works:
                print("bench_wan: no netem (needs root, network namespaces and sch_netem)", file=sys.stderr)
                sys.exit(NO_NET_ADMIN)
            args.link = "netem" if works else "relay"
        if args.loss and args.link != "netem":
            print("bench_wan: --loss needs netem; the relay cannot lose packets", file=sys.stderr)
            sys.exit(BAD_OPTION)
        if args.link == "netem":
            sys.exit(rerun_in_netns())
    base = Path(args.workdir or tempfile.mkdtemp(prefix="jsarchive-bench-wan-"))
    wd = base / f"wan-{os.getpid()}"
    wd.mkdir(parents=True)
    try:
        result = bench(args, wd)
    finally:
        shutil.rmtree(wd if args.workdir else base, ignore_errors=True)
    report(result)
    out = {"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}, "result": result}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out["machine"]))


def rerun_in_netns() -> int:
    """Run this benchmark again inside a fresh network namespace, whose loopback netem may delay; delete it after."""
    ns = f"jsa-wan-{os.getpid()}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        argv, rest = [], iter(sys.argv[1:])
        for a in rest:
            if a == "--link":
                next(rest, None)
            elif not a.startswith("--link="):
                argv.append(a)
        child = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, *argv])
        try:
            return child.wait()
        finally:
            stop(child)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


if __name__ == "__main__":
    main()
