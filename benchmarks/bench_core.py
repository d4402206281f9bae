"""Backup and restore of one large stream against the physical limit, in one run.

Measures on an embedded nats-server 2.15:
  raw snapshot      a minimal client that acks and discards (the limit for backup)
  jsarchive backup  to a local archive, zstd:3, encrypted (subprocess: wall, CPU, peak RSS)
  raw restore       the server's own snapshot bytes in 1 MiB chunks, 4 in flight (the limit for restore)
  natscli-style     the same bytes in 64 KiB chunks, stop-and-wait
  jsarchive restore from the local archive (subprocess: wall, CPU, peak RSS)
  --store decoded   the same backup and restore storing the decoded NATSARC1 archive instead of the S2 stream:
                    stored size against the default (a ratio, unaffected by a busy machine), wall, CPU, peak RSS
  codec CPU cost    single-thread CPU seconds of each stage on the server's own snapshot: zstd:3 on the S2 bytes
                    (the default path) against the C S2 decoder plus zstd:3 on the decoded archive (--store decoded)
  S3 (moto):        jsarchive backup to s3:// against natscli's two steps (snapshot to a file, then boto3's
                    managed multipart upload_file)

Usage: python benchmarks/bench_core.py [--gib 1.0] [--gib 0.25 ...] [--json out.json] [--no-s3]
Peak RSS is compared across sizes to show it does not grow with the stream. Wall times depend on what else the
machine is doing; stored sizes and ratios do not, and the codec figures are CPU time of one thread.
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
import urllib.request
from pathlib import Path

import nats
from nats.js.api import StreamConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.jetstream.client import ConnectOptions, connect  # noqa: E402
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec, free_port  # noqa: E402

STREAM = "EVENTS"
WORDS = ("checkout", "login", "logout", "view", "search", "add_to_cart", "refund", "signup", "rate", "share")
COUNTRIES = ("DE", "US", "FR", "JP", "BR", "IN", "GB", "CA", "AU", "NL", "SE", "ES", "IT", "MX", "KR")


PATHS = ("/cart", "/checkout", "/search", "/product/{}", "/account", "/orders/{}", "/help/{}", "/api/v2/items/{}")


def event(rng: random.Random, i: int, t0: float) -> bytes:
    """A 0.5–1 KiB JSON event with unique ids, timestamps and free-form fields; no padding (it flatters ratios)."""
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
        "path": rng.choice(PATHS).format(rng.randrange(1_000_000)),
        "referrer": f"https://{rng.choice(WORDS)}.example/{rng.getrandbits(40):010x}",
        "latency_ms": round(rng.lognormvariate(3, 1), 3),
        "ip": f"{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
    }
    return json.dumps(ev, separators=(",", ":")).encode()


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


async def raw_snapshot(url: str, out: Path | None, **opts: int | None) -> dict:
    """``opts`` go to JetStream.snapshot (chunk_size, window_size: bench_wan compares natscli's with the best)."""
    async with await connect(ConnectOptions(servers=url)) as js:
        f = open(out, "wb") if out else None  # noqa: SIM115
        n = 0

        async def sink(chunk: bytes) -> None:
            nonlocal n
            n += len(chunk)
            if f:
                f.write(chunk)

        t = time.monotonic()
        await js.snapshot(STREAM, sink, **opts)
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


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a live process has used so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Where a phase's CPU went: the nats-server, this process and its children (jsarchive, boto3), the object
    store emulator. On a machine with ``cpus`` cores no phase can finish faster than their sum / cpus: that
    *CPU floor* is the physical limit when the work, not waiting, is what takes the time."""

    def __init__(self, server_pid: int, store_pid: int | None = None) -> None:
        self.server_pid, self.store_pid = server_pid, store_pid

    def measure(self, phase: dict, fn) -> dict:  # noqa: ANN001 - any zero-argument callable
        import resource

        s0, st0 = _proc_cpu(self.server_pid), _proc_cpu(self.store_pid)
        me0, ch0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.monotonic()
        out = fn()
        wall = time.monotonic() - t
        me1, ch1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        client = sum(b.ru_utime + b.ru_stime - (a.ru_utime + a.ru_stime) for a, b in ((me0, me1), (ch0, ch1)))
        cpu = {
            "server_cpu": round(_proc_cpu(self.server_pid) - s0, 2),
            "client_cpu": round(client, 2),
            "store_cpu": round(_proc_cpu(self.store_pid) - st0, 2),
        }
        floor = sum(cpu.values()) / (os.cpu_count() or 1)
        phase.update(
            cpu,
            cpu_floor=round(floor, 3),
            wall_vs_floor=round(wall / floor, 2) if floor else None,
            # the server restores on one thread: ~1.0 here means that thread, not the client, sets the pace
            server_cores=round(cpu["server_cpu"] / wall, 2) if wall else None,
        )
        return out


class Moto:
    """moto's S3 server in its own process, stopped by its PID (it holds objects in RAM: keep streams moderate).

    ``launch`` starts the process from the command line (default: a plain Popen); the link benchmark passes one
    that starts it inside a network namespace."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, launch=None) -> None:  # noqa: ANN001
        port = port or free_port()
        self.endpoint = f"http://{host}:{port}"
        cmd = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
        if launch is None:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            self.proc = launch(*cmd)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).read()
                return
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto did not start at {self.endpoint}") from None
                time.sleep(0.1)

    CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}

    def env(self) -> dict:
        return {**os.environ, **self.CREDS, "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def upload_file(moto: Moto, path: Path, bucket: str) -> dict:
    """natscli's second step: upload the snapshot file with boto3's managed (multipart, threaded) transfer."""
    client = moto.client()
    t = time.monotonic()
    client.upload_file(str(path), bucket, "natscli/stream.tar.s2")
    return {"seconds": round(time.monotonic() - t, 3)}


def run_cli(args: list[str], env: dict) -> dict:
    """Run jsarchive as a child; wall time, CPU seconds and peak RSS (from wait4, exact, no polling)."""
    t = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.entry.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = b"", b""
    try:
        _, status, ru = os.wait4(proc.pid, 0)
    except BaseException:  # interrupted: do not leave jsarchive running against a server that is going away
        proc.kill()
        proc.wait()
        raise
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


def codec_speeds(snap: Path, block: int = 8 * 1024 * 1024, level: int = 3) -> dict:
    """CPU seconds (this thread only, so other processes barely matter) of each stage on a real snapshot.

    Default path: zstd on the S2 bytes, cut into ``block``-byte blocks. Decoded path: the C S2 decoder (CRC-32C
    checked, as a backup does) fed 256 KiB chunks, then zstd on the archive in ``block``-byte blocks.
    """
    import zstandard

    from pipeline.format import s2

    cz = zstandard.ZstdCompressor(level=level, write_content_size=True)

    def timed(fn, *args):  # noqa: ANN001, ANN202 - a stopwatch
        t = time.thread_time()
        out = fn(*args)
        return out, time.thread_time() - t

    s2_in = s2_out = 0
    t_zstd_s2 = 0.0
    with open(snap, "rb") as f:
        while data := f.read(block):
            frame, dt = timed(cz.compress, data)
            s2_in, s2_out, t_zstd_s2 = s2_in + len(data), s2_out + len(frame), t_zstd_s2 + dt
    decoder = s2.FramedDecoder(accelerated=True)
    buf = bytearray()
    dec_in = dec_out = 0
    t_decode = t_zstd_dec = 0.0

    def compress_decoded(piece: bytes) -> None:
        nonlocal dec_in, dec_out, t_zstd_dec
        frame, dt = timed(cz.compress, piece)
        dec_in, dec_out, t_zstd_dec = dec_in + len(piece), dec_out + len(frame), t_zstd_dec + dt

    with open(snap, "rb") as f:
        while chunk := f.read(256 * 1024):
            blocks, dt = timed(lambda c: list(decoder.feed(c)), chunk)
            t_decode += dt
            for b in blocks:
                buf += b
                while len(buf) >= block:
                    compress_decoded(bytes(buf[:block]))
                    del buf[:block]
    decoder.finish()
    if buf:
        compress_decoded(bytes(buf))
    mb = 1e6
    return {
        "snapshot_mb": round(s2_in / mb, 1),
        "decoded_mb": round(dec_in / mb, 1),
        "zstd_level": level,
        "zstd_on_s2_mb_s": round(s2_in / t_zstd_s2 / mb, 1),
        "s2_decode_out_mb_s": round(dec_in / t_decode / mb, 1),
        "s2_decode_in_mb_s": round(s2_in / t_decode / mb, 1),
        "zstd_on_decoded_mb_s": round(dec_in / t_zstd_dec / mb, 1),
        "zstd_ratio_s2": round(s2_in / s2_out, 3),
        "zstd_ratio_decoded": round(dec_in / dec_out, 3),
        "stored_decoded_vs_s2": round(dec_out / s2_out, 3),
        # per core, in snapshot bytes as the server sends them: what bounds a backup's throughput
        "default_path_snapshot_mb_s": round(s2_in / t_zstd_s2 / mb, 1),
        "decoded_path_snapshot_mb_s": round(s2_in / (t_decode + t_zstd_dec) / mb, 1),
        "cpu_seconds": {
            "zstd_s2": round(t_zstd_s2, 3),
            "s2_decode": round(t_decode, 3),
            "zstd_decoded": round(t_zstd_dec, 3),
        },
    }


async def stream_config(url: str) -> dict:
    async with await connect(ConnectOptions(servers=url)) as js:
        info = await js.stream_info(STREAM)
        return info["config"]


async def delete(url: str) -> None:
    async with await connect(ConnectOptions(servers=url)) as js:
        await js.delete_stream(STREAM)


def bench(gib: float, workdir: Path, with_s3: bool) -> dict:
    srv = EmbeddedServer(ServerSpec(name="bench", max_file_store="64GB"), workdir=workdir / "nats")
    srv.start()
    moto = Moto() if with_s3 else None
    try:
        srv.wait_ready()
        version = srv.varz()["version"]
        filled = asyncio.run(fill(srv.url, int(gib * 1024**3)))
        config = asyncio.run(stream_config(srv.url))
        meter = CpuMeter(srv.proc.pid, moto.proc.pid if moto else None)
        cpu: dict[str, dict] = {}

        def measured(name: str, fn):  # noqa: ANN001, ANN202
            cpu[name] = {}
            out = meter.measure(cpu[name], fn)
            cpu[name]["seconds"] = out["seconds"] if isinstance(out, dict) and "seconds" in out else None
            return out

        snap_file = workdir / "snapshot.s2"
        raw_snap = measured("raw snapshot", lambda: asyncio.run(raw_snapshot(srv.url, None)))
        # natscli step 1, and the bytes to restore
        snap_to_file = measured("snapshot to file", lambda: asyncio.run(raw_snapshot(srv.url, snap_file)))
        key = workdir / "bench.key"
        subprocess.run(
            [sys.executable, "-m", "pipeline.entry.cli", "keygen", "-o", str(key)], check=True, capture_output=True
        )
        common = ["-s", srv.url, "-i", str(key), "--json", "--no-progress"]
        archive = workdir / "archive"
        backup = measured(
            "jsarchive backup", lambda: run_cli(["stream", "backup", STREAM, str(archive), *common], dict(os.environ))
        )
        decoded_archive = workdir / "archive-decoded"
        decoded_backup = measured(
            "backup --store decoded",
            lambda: run_cli(
                ["stream", "backup", STREAM, str(decoded_archive), *common, "--store", "decoded"], dict(os.environ)
            ),
        )
        codec = codec_speeds(snap_file)
        s3: dict = {}
        if moto is not None:
            moto.client().create_bucket(Bucket="bench")
            s3_backup = measured(
                "jsarchive backup s3",
                lambda: run_cli(
                    ["stream", "backup", STREAM, "s3://bench/jsarchive", *common, "--s3-endpoint", moto.endpoint],
                    moto.env(),
                ),
            )
            s3_backup.pop("result")
            upload = measured("upload_file (2nd step)", lambda: upload_file(moto, snap_file, "bench"))
            two_step = round(snap_to_file["seconds"] + upload["seconds"], 3)
            s3 = {
                "s3_backup": s3_backup,
                "two_step_upload": upload,
                "two_step_seconds": two_step,
                "s3_speedup_vs_two_step": round(two_step / s3_backup["seconds"], 3),
            }
        asyncio.run(delete(srv.url))
        raw_rest = measured(
            "raw restore 1MiBx4", lambda: asyncio.run(raw_restore(srv.url, snap_file, 1 << 20, 4, config))
        )
        natscli_rest = measured(
            "restore 64KiB stop-and-wait", lambda: asyncio.run(raw_restore(srv.url, snap_file, 64 << 10, 1, config))
        )
        restore = measured(
            "jsarchive restore", lambda: run_cli(["stream", "restore", str(archive), STREAM, *common], dict(os.environ))
        )
        asyncio.run(delete(srv.url))
        decoded_restore = measured(
            "restore of --store decoded",
            lambda: run_cli(["stream", "restore", str(decoded_archive), STREAM, *common], dict(os.environ)),
        )
        b = backup.pop("result")["backup"]
        r = restore.pop("result")["restore"]
        db = decoded_backup.pop("result")["backup"]
        dr = decoded_restore.pop("result")["restore"]
        assert r["messages"] == dr["messages"] == filled["messages"], (r["messages"], dr["messages"], filled)
        assert db["inner_encoding"] == "natsarc" and b["inner_encoding"] == "s2-stream"
        return {
            "gib": gib,
            "server": version,
            "stream": filled,
            "snapshot_bytes": raw_snap["bytes"],
            "raw_snapshot": raw_snap,
            "snapshot_to_file": snap_to_file,
            "backup": backup,
            "stored_bytes": b["stored_bytes"],
            "ratio_vs_stream": round(filled["bytes"] / b["stored_bytes"], 3),
            "raw_restore": raw_rest,
            "natscli_restore": natscli_rest,
            "restore": restore,
            "backup_vs_raw": round(backup["seconds"] / raw_snap["seconds"], 3),
            "restore_vs_raw": round(restore["seconds"] / raw_rest["seconds"], 3),
            "restore_speedup_vs_natscli": round(natscli_rest["seconds"] / restore["seconds"], 3),
            "decoded": {
                "backup": decoded_backup,
                "restore": decoded_restore,
                "archive_bytes": db["snapshot_bytes"],  # the decoded NATSARC1 archive that was stored
                "stored_bytes": db["stored_bytes"],
                "stored_vs_default": round(db["stored_bytes"] / b["stored_bytes"], 4),
                "ratio_vs_stream": round(filled["bytes"] / db["stored_bytes"], 3),
                "backup_vs_default": round(decoded_backup["seconds"] / backup["seconds"], 3),
                "restore_vs_default": round(decoded_restore["seconds"] / restore["seconds"], 3),
            },
            "codec": codec,
            "cpu": cpu,
            **s3,
        }
    finally:
        if moto is not None:
            moto.stop()
        srv.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, action="append", help="stream size(s) in GiB (default 0.25 and 1)")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--workdir", help="where the server store, snapshot and archive go (default: a temp dir)")
    ap.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) scenarios")
    args = ap.parse_args()
    results = []
    for gib in args.gib or [0.25, 1.0]:
        wd = Path(args.workdir or tempfile.mkdtemp(prefix="jsarchive-bench-")) / f"{gib}gib"
        wd.mkdir(parents=True, exist_ok=True)
        try:
            results.append(bench(gib, wd, not args.no_s3))
        finally:
            shutil.rmtree(wd, ignore_errors=True)
    cols = (
        "GiB",
        "msgs",
        "snap MB",
        "raw snap s",
        "backup s",
        "x raw",
        "RSS MiB",
        "raw rest s",
        "64K s",
        "restore s",
        "x raw",
        "vs 64K",
        "RSS MiB",
        "S3 s",
        "2-step s",
        "vs 2step",
        "S3 RSS",
        "dec bkp s",
        "dec RSS",
        "dec MB",
        "dec/snap",
        "dec rst s",
    )
    print(" ".join(f"{c:>10}" for c in cols))
    for r in results:
        s3 = r.get("s3_backup") or {}
        row = (
            r["gib"],
            r["stream"]["messages"],
            round(r["snapshot_bytes"] / 1e6),
            r["raw_snapshot"]["seconds"],
            r["backup"]["seconds"],
            r["backup_vs_raw"],
            r["backup"]["peak_rss_mib"],
            r["raw_restore"]["seconds"],
            r["natscli_restore"]["seconds"],
            r["restore"]["seconds"],
            r["restore_vs_raw"],
            r["restore_speedup_vs_natscli"],
            r["restore"]["peak_rss_mib"],
            s3.get("seconds", "-"),
            r.get("two_step_seconds", "-"),
            r.get("s3_speedup_vs_two_step", "-"),
            s3.get("peak_rss_mib", "-"),
            r["decoded"]["backup"]["seconds"],
            r["decoded"]["backup"]["peak_rss_mib"],
            round(r["decoded"]["stored_bytes"] / 1e6),
            r["decoded"]["stored_vs_default"],
            r["decoded"]["restore"]["seconds"],
        )
        print(" ".join(f"{v:>10}" for v in row))
        print("codec (single-thread CPU):", json.dumps(r["codec"]))
        print(f"CPU accounting, {r['gib']} GiB ({os.cpu_count()} cores; floor = all CPU seconds / cores):")
        head = ("wall s", "server", "client", "store", "floor s", "wall/floor", "srv cores")
        print(f"  {'phase':28} " + " ".join(f"{h:>10}" for h in head))
        for phase, c in r["cpu"].items():
            print(
                f"  {phase:28} {c['seconds'] or 0:10.2f} {c['server_cpu']:10.2f} {c['client_cpu']:10.2f} "
                f"{c['store_cpu']:10.2f} {c['cpu_floor']:10.2f} {c['wall_vs_floor'] or 0:10.2f} "
                f"{c['server_cores'] or 0:10.2f}"
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
