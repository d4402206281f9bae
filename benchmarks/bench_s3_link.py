"""jsarchive backup to S3 against natscli's two steps over a rate-limited link instead of loopback.

bench_core.py runs moto on loopback, where an upload costs CPU rather than bandwidth and moto competes for the same
cores. A real backup host uploads over a network link, where what counts is the bytes on the wire (jsarchive sends
the zstd-compressed archive, the two-step sends the raw snapshot) and whether the snapshot overlaps the upload
(jsarchive streams; natscli snapshots to a file, then uploads it). So here moto runs in its own network namespace
behind a veth pair shaped with tbf to --link-mbit on both ends; the nats-server, jsarchive and boto3 stay in the
root namespace and reach the server over loopback, as a backup host next to its cluster would.

Measured: the link itself (raw TCP and one S3 PUT against the configured rate), the raw snapshot (the limit on the
NATS side), natscli's two steps (snapshot to a file, then boto3's managed multipart upload_file) and
`jsarchive stream backup ... s3://` with wall time, CPU per process (bench_core.CpuMeter), bytes on the wire (the
veth's counters) and the link floor: wire bytes / link rate.

Usage: python benchmarks/bench_s3_link.py [--gib 0.5] [--link-mbit 1000] [--probe-mb 128] [--json out.json]
                                          [--backup-args "--workers 4"]
Needs root (CAP_NET_ADMIN) and iproute2 (`ip`, `tc`); without them it exits 3 and measures nothing.
Everything it creates (namespace, veth, qdiscs, processes) is removed on exit, also on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_core import STREAM, CpuMeter, Moto, fill, raw_snapshot, run_cli, upload_file  # noqa: E402
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec  # noqa: E402

MOTO_PORT = 9000  # the namespace has its own port space: no clash possible
SINK_PORT = 9001
NO_NET_ADMIN = 3  # exit code when no shaped link can be made: no numbers rather than loopback ones


class NoNetAdmin(Exception):
    """`ip netns add` was refused (not root, no CAP_NET_ADMIN, or a sandbox without network namespaces)."""


# Counts what arrives on one TCP connection and answers with the count: the link's rate without S3 in the way.
SINK = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(60)
conn, _ = srv.accept()
conn.settimeout(60)
n = 0
while data := conn.recv(1 << 20):
    n += len(data)
conn.sendall(str(n).encode())
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


class Link:
    """A network namespace joined to the root one by a veth pair on a private /30, each end shaped to ``mbit``."""

    def __init__(self, mbit: float) -> None:
        self.mbit = mbit
        pid = os.getpid()
        self.ns, self.outer, self.inner = f"jsa-bench-{pid}", f"jsab{pid}r", f"jsab{pid}n"
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=30).stdout
        third = next(x % 256 for x in range(pid, pid + 256) if f" 10.231.{x % 256}." not in used)
        self.host_ip, self.ip = f"10.231.{third}.1", f"10.231.{third}.2"

    def up(self) -> None:
        try:
            sh("ip", "netns", "add", self.ns)
        except subprocess.CalledProcessError as e:
            self.ns = None  # nothing of ours to delete
            raise NoNetAdmin(e.stderr.decode().strip()) from None
        sh("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.outer)
        sh("ip", "link", "set", self.outer, "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.ip}/30", "dev", self.inner)
        sh("ip", "-n", self.ns, "link", "set", self.inner, "up")
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")  # moto's own readiness checks and clients use it
        # A token bucket of ~2 ms worth of bytes: small enough not to flatter short transfers, large enough for the
        # veth's 64 KiB GSO packets; a 50 ms queue is a realistic router buffer.
        burst = max(64 * 1024, int(self.mbit * 1e6 / 8 * 0.002))
        shape = ["root", "tbf", "rate", f"{self.mbit}mbit", "burst", str(burst), "latency", "50ms"]
        sh("tc", "qdisc", "replace", "dev", self.outer, *shape)
        sh("tc", "-n", self.ns, "qdisc", "replace", "dev", self.inner, *shape)

    def start(self, *argv: str) -> subprocess.Popen:
        # `ip netns exec` enters the namespace and execs argv: the PID is the program's own, to measure and stop.
        cmd = ["ip", "netns", "exec", self.ns, *argv]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def tx_bytes(self) -> int:
        """Bytes sent towards the object store so far, as the veth counts them (IP packets, headers included)."""
        return int(Path(f"/sys/class/net/{self.outer}/statistics/tx_bytes").read_text())

    def down(self) -> None:
        # Deleting the namespace removes its veth end and with it the pair; its processes must be gone first.
        if self.ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)
        if Path(f"/sys/class/net/{self.outer}").exists():
            subprocess.run(["ip", "link", "del", self.outer], capture_output=True, timeout=30)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def linked_moto(link: Link) -> Moto:
    """bench_core's Moto (credentials, client, stop by PID), serving from inside the link's namespace."""
    return Moto(host=link.ip, port=MOTO_PORT, launch=link.start)


def probe_tcp(link: Link, mb: int) -> float:
    """MB/s of one TCP connection sending ``mb`` MB across the link, counted until the far end has all of it."""
    sink = link.start(sys.executable, "-c", SINK, link.ip, str(SINK_PORT))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = socket.create_connection((link.ip, SINK_PORT), timeout=60)
                break
            except OSError:
                if sink.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("TCP sink did not start in the namespace") from None
                time.sleep(0.1)
        chunk = os.urandom(1 << 20)
        n = mb * 1_000_000 // len(chunk) * len(chunk)
        with conn:
            t = time.monotonic()
            for _ in range(n // len(chunk)):
                conn.sendall(chunk)
            conn.shutdown(socket.SHUT_WR)
            got = int(conn.recv(64))
            wall = time.monotonic() - t
        assert got == n, (got, n)
        return n / wall / 1e6
    finally:
        stop(sink)


def probe_put(moto: Moto, mb: int) -> float:
    """MB/s of one S3 PUT of ``mb`` MB: the link as one S3 request sees it, moto's own cost included."""
    client, body = moto.client(), os.urandom(mb * 1_000_000)
    t = time.monotonic()
    client.put_object(Bucket="bench", Key="probe", Body=body)
    wall = time.monotonic() - t
    client.delete_object(Bucket="bench", Key="probe")
    return len(body) / wall / 1e6


def bench(gib: float, mbit: float, probe_mb: int, workdir: Path, extra: list[str]) -> dict:
    link = Link(mbit)
    srv = EmbeddedServer(ServerSpec(name="bench", max_file_store="64GB"), workdir=workdir / "nats")
    moto = None
    try:
        link.up()
        moto = linked_moto(link)
        moto.client().create_bucket(Bucket="bench")
        rate = mbit * 1e6 / 8  # bytes per second
        tcp, put = probe_tcp(link, probe_mb), probe_put(moto, probe_mb)
        srv.start()
        srv.wait_ready()
        filled = asyncio.run(fill(srv.url, int(gib * 1024**3)))
        meter = CpuMeter(srv.proc.pid, moto.proc.pid)
        phases: dict[str, dict] = {}

        def measured(name: str, fn):  # noqa: ANN001, ANN202 - a phase: wall, CPU per process, bytes on the wire
            phases[name] = p = {}
            tx = link.tx_bytes()
            out = meter.measure(p, fn)
            wire = link.tx_bytes() - tx
            p.update(seconds=out["seconds"], wire_bytes=wire, link_floor=round(wire / rate, 3))
            p["wall_vs_link_floor"] = round(p["seconds"] / p["link_floor"], 2) if p["link_floor"] else None
            return out

        snap_file = workdir / "snapshot.s2"
        raw = measured("raw snapshot (limit)", lambda: asyncio.run(raw_snapshot(srv.url, None)))
        measured("natscli 1: snapshot to file", lambda: asyncio.run(raw_snapshot(srv.url, snap_file)))
        measured("natscli 2: upload_file", lambda: upload_file(moto, snap_file, "bench"))
        moto.client().delete_object(Bucket="bench", Key="natscli/stream.tar.s2")  # moto keeps objects in RAM
        snap_file.unlink()
        key = workdir / "bench.key"
        sh(sys.executable, "-m", "pipeline.entry.cli", "keygen", "-o", str(key))
        args = ["stream", "backup", STREAM, "s3://bench/jsarchive", "-s", srv.url, "-i", str(key)]
        args += ["--json", "--no-progress", "--s3-endpoint", moto.endpoint, *extra]
        backup = measured("jsarchive backup s3://", lambda: run_cli(args, moto.env()))
        b = backup.pop("result")["backup"]
        phases["jsarchive backup s3://"]["peak_rss_mib"] = backup["peak_rss_mib"]
        assert b["messages"] == filled["messages"], (b, filled)
        two_step = sum(phases[p]["seconds"] for p in ("natscli 1: snapshot to file", "natscli 2: upload_file"))
        # The best each could do on this machine: the two-step is a snapshot, then an upload held by the link or by
        # the CPU it needs; jsarchive overlaps them and is held by the slowest of the snapshot, the link and the CPU
        # (CpuMeter's floor: server, client and moto share these cores).
        up, jsa = phases["natscli 2: upload_file"], phases["jsarchive backup s3://"]
        two_step_best = raw["seconds"] + max(up["link_floor"], up["cpu_floor"])
        jsarchive_best = max(raw["seconds"], jsa["link_floor"], jsa["cpu_floor"])
        return {
            "gib": gib,
            "backup_args": extra,
            "stream": filled,
            "link": {
                "configured_mbit": mbit,
                "configured_mb_s": round(rate / 1e6, 1),
                "tcp_mb_s": round(tcp, 1),
                "s3_put_mb_s": round(put, 1),
                "probe_mb": probe_mb,
            },
            "snapshot_bytes": raw["bytes"],
            "stored_bytes": b["stored_bytes"],
            "stored_vs_snapshot": round(b["stored_bytes"] / raw["bytes"], 3),
            "two_step_seconds": round(two_step, 3),
            "jsarchive_seconds": backup["seconds"],
            "speedup_vs_two_step": round(two_step / backup["seconds"], 3),
            "two_step_best_seconds": round(two_step_best, 3),
            "jsarchive_best_seconds": round(jsarchive_best, 3),
            "best_speedup": round(two_step_best / jsarchive_best, 3),
            "jsarchive_peak_rss_mib": backup["peak_rss_mib"],
            "jsarchive_cpu_seconds": backup["cpu_seconds"],
            "phases": phases,
        }
    finally:
        if moto is not None:
            moto.stop()
        link.down()
        srv.cleanup()


def report(r: dict) -> None:
    ln = r["link"]
    print(
        f"link {ln['configured_mbit']:g} Mbit/s = {ln['configured_mb_s']} MB/s configured; measured over "
        f"{ln['probe_mb']} MB: TCP {ln['tcp_mb_s']} MB/s, one S3 PUT to moto {ln['s3_put_mb_s']} MB/s"
    )
    print(
        f"stream {r['gib']} GiB, {r['stream']['messages']} msgs; snapshot {r['snapshot_bytes'] / 1e6:.1f} MB, "
        f"stored {r['stored_bytes'] / 1e6:.1f} MB ({r['stored_vs_snapshot']}x)"
    )
    head = ("wall s", "wire MB", "floor s", "wall/flr", "server", "client", "moto", "RSS MiB")
    print(f"  {'phase':30} " + " ".join(f"{h:>9}" for h in head))
    for name, p in r["phases"].items():
        row = (
            f"{p['seconds']:.2f}",
            f"{p['wire_bytes'] / 1e6:.1f}",
            f"{p['link_floor']:.2f}",
            p["wall_vs_link_floor"] or "-",
            p["server_cpu"],
            p["client_cpu"],
            p["store_cpu"],
            p.get("peak_rss_mib", "-"),
        )
        print(f"  {name:30} " + " ".join(f"{v:>9}" for v in row))
    jsarchive = shlex.join(["jsarchive", *r["backup_args"]])
    print(
        f"two-step {r['two_step_seconds']} s, {jsarchive} {r['jsarchive_seconds']} s: "
        f"speedup {r['speedup_vs_two_step']}x (CPU per process in seconds; floor = wire bytes / configured rate)"
    )
    print(
        f"at best here: two-step {r['two_step_best_seconds']} s (raw snapshot + upload's link or CPU floor), "
        f"jsarchive {r['jsarchive_best_seconds']} s (slowest of raw snapshot, link floor, CPU floor): "
        f"{r['best_speedup']}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=0.5, help="stream size in GiB (default 0.5)")
    ap.add_argument("--link-mbit", type=float, default=1000, help="link rate in Mbit/s, both ways (default 1000)")
    ap.add_argument("--probe-mb", type=int, default=128, help="MB sent to measure the link (default 128)")
    ap.add_argument("--backup-args", default="", help='more jsarchive backup options, e.g. "--workers 4"')
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--workdir", help="where the server store and snapshot go (default: a temp dir)")
    args = ap.parse_args()
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        print(f"bench_s3_link: no {' or '.join(missing)}: apt-get install iproute2", file=sys.stderr)
        sys.exit(NO_NET_ADMIN)
    # `timeout` sends SIGTERM: turn it into an exception so the finally blocks tear the link down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(args.workdir or tempfile.mkdtemp(prefix="jsarchive-bench-link-"))
    wd = base / f"link-{os.getpid()}"
    wd.mkdir(parents=True)
    try:
        result = bench(args.gib, args.link_mbit, args.probe_mb, wd, shlex.split(args.backup_args))
    except NoNetAdmin as e:
        print(f"bench_s3_link: cannot create a network namespace ({e}); needs root or CAP_NET_ADMIN", file=sys.stderr)
        sys.exit(NO_NET_ADMIN)
    finally:
        shutil.rmtree(wd if args.workdir else base, ignore_errors=True)
    report(result)
    out = {"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}, "result": result}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out["machine"]))


if __name__ == "__main__":
    main()
