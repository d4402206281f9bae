"""--limit-upload / --limit-download (issue 18 point 9): a token bucket around the sink, shared by every thread and
every sink of a process.

Timing is asserted only as a lower bound: a bucket of ``burst`` bytes refilled at ``rate`` lets at most
``burst + rate × seconds`` bytes through, so moving N bytes takes at least ``(N - burst) / rate`` seconds however
fast or slow the machine is.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import time
from pathlib import Path

import pytest

from pipeline.entry.handlers import ConfigError, _sink
from sinks import RetryingSink, SinkOptions, open_sink
from sinks.limits import LimitedSink, TokenBucket, shared_bucket
from sinks.local import LocalSink
from tests.streams import fill_stream
from tests.test_bad_input import cli_env, jsarchive

MiB = 1024 * 1024
PART = 256 * 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_bucket_lets_a_burst_through_then_holds_to_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, clock=clock, sleep=clock.sleep)
    assert bucket.take(100) == 0.0  # a full bucket: one second's worth at once
    assert bucket.take(50) == pytest.approx(0.5)
    assert bucket.take(300) == pytest.approx(3.0)  # more than the burst: borrowed, and waited for
    clock.now += 10.0  # idle time refills only up to the burst
    assert bucket.take(100) == 0.0
    assert bucket.take(1) == pytest.approx(0.01)
    assert bucket.take(0) == 0.0
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_no_limit_no_wrapper(tmp_path: Path) -> None:
    for options in (None, SinkOptions(), SinkOptions(limit_upload=0, limit_download=None)):
        sink = open_sink(str(tmp_path), options)
        assert isinstance(sink, RetryingSink) and isinstance(sink.inner, LocalSink)
    sink = open_sink(str(tmp_path), SinkOptions(limit_download=MiB))
    assert isinstance(sink, RetryingSink) and isinstance(sink.inner, LimitedSink)  # retries outside the limit
    assert isinstance(sink.inner.inner, LocalSink)
    assert sink.inner.upload is None and sink.inner.download is shared_bucket("download", MiB)
    assert sink.root == LocalSink(tmp_path).root  # the adapter's own attributes are still reachable


def _upload(url: str, options: SinkOptions, name: str, data: bytes) -> None:
    """One thread's share: its own sink (as each stream of an account backup opens one), a multipart object of
    several parts and a small object."""
    sink = open_sink(url, options)
    writer = sink.open_writer(f"data/{name}", part_size=PART)
    body, small = data[: len(data) - PART], data[len(data) - PART :]
    for i in range(0, len(body), PART):
        chunk = body[i : i + PART]
        writer.write_part(i // PART + 1, chunk, hashlib.sha256(chunk).digest())
    writer.complete()
    sink.put(f"small/{name}", small)


def test_upload_throughput_is_bounded_across_threads_and_sinks(tmp_path: Path) -> None:
    rate = 2 * MiB
    options = SinkOptions(limit_upload=rate)
    payloads = {f"t{i}": bytes([i]) * (5 * MiB // 4) for i in range(4)}
    total = sum(map(len, payloads.values()))
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda kv: _upload(str(tmp_path), options, *kv), payloads.items()))
    elapsed = time.monotonic() - t0
    burst = shared_bucket("upload", rate).burst
    assert elapsed >= (total - burst) / rate - 0.05, (elapsed, total, rate)
    reader = open_sink(str(tmp_path))
    for name, data in payloads.items():  # the wrapper passes the bytes on unchanged
        assert reader.get(f"data/{name}") + reader.get(f"small/{name}") == data


def test_download_throughput_is_bounded(tmp_path: Path) -> None:
    rate = 2 * MiB
    data = bytes(range(256)) * (3 * MiB // 256)
    open_sink(str(tmp_path)).put("data/x", data)
    sink = open_sink(str(tmp_path), SinkOptions(limit_download=rate))
    t0 = time.monotonic()
    whole = sink.get("data/x")
    ranges = [sink.get_range("data/x", off, PART) for off in range(0, 2 * MiB, PART)]
    elapsed = time.monotonic() - t0
    assert whole == data and b"".join(ranges) == data[: 2 * MiB]
    burst = shared_bucket("download", rate).burst
    assert elapsed >= (len(data) + 2 * MiB - burst) / rate - 0.05, elapsed
    assert sink.inner.upload is None  # only downloads are limited here


def test_handler_environment() -> None:
    opts = _sink({"JSARCHIVE_LIMIT_UPLOAD": "10MiB", "JSARCHIVE_LIMIT_DOWNLOAD": ""}, "./a")
    assert (opts.limit_upload, opts.limit_download) == (10 * MiB, None)
    with pytest.raises(ConfigError, match="JSARCHIVE_LIMIT_DOWNLOAD"):
        _sink({"JSARCHIVE_LIMIT_DOWNLOAD": "fast"}, "./a")


# -- the command line ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "extra_env"),
    [(["--limit-upload", "abc"], {}), (["--limit-download", "-1"], {}), ([], {"JSARCHIVE_LIMIT_UPLOAD": "1.5MiB"})],
)
def test_bad_rate_is_one_usage_error(tmp_path: Path, args: list[str], extra_env: dict[str, str]) -> None:
    env = {**cli_env(tmp_path), **extra_env}
    run = jsarchive("ls", tmp_path, *args, env=env)
    assert run.returncode == 2 and "Traceback" not in run.stderr and run.stdout == ""
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "is not a rate" in errors[0], run.stderr


def test_backup_and_verify_under_limits(nats_server, tmp_path: Path) -> None:
    """A real backup under an upload limit and a verify (every block read) under a download limit, given as a flag
    and as an environment variable: the archive is sound, and each run took at least as long as its data object
    needed at that rate (so the limit reached the sink)."""
    import asyncio

    asyncio.run(fill_stream(nats_server.url, "ORDERS", 2000))
    env = cli_env(tmp_path)
    archive, rate = tmp_path / "archive", 40 * 1024
    run = jsarchive(
        "stream", "backup", "ORDERS", archive, "-s", nats_server.url, "--no-encrypt", "--json", "--no-progress",
        "--limit-upload", "40KiB/s",
        env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    backup = json.loads(run.stdout)["backup"]
    stored = backup["stored_bytes"]
    assert stored > 2 * rate  # enough to be held back, past the one second's burst
    assert run.seconds >= (stored - rate) / rate
    run = jsarchive("verify", archive, "--json", "--no-progress", env={**env, "JSARCHIVE_LIMIT_DOWNLOAD": "40KiB"})
    assert run.returncode == 0, run.stderr
    assert [b["manifest_id"] for b in json.loads(run.stdout)["backups"]] == [backup["manifest_id"]]
    assert run.seconds >= (stored - rate) / rate


def test_a_limited_sink_passes_every_other_call_through(tmp_path: Path) -> None:
    """Only transfers are charged; metadata, deletes and unfinished uploads reach the store unchanged (the
    delegation LimitedSink inherits from sinks.base.SinkWrapper)."""
    sink = open_sink(str(tmp_path / "a"), SinkOptions(limit_upload=1 << 30, limit_download=1 << 30))
    limited = sink.inner
    assert isinstance(limited, LimitedSink) and limited.url == sink.url == limited.inner.url
    assert limited.capabilities == limited.inner.capabilities and limited.root == limited.inner.root
    limited.put("refs/x", b"1")
    assert limited.head("refs/x").size == 1 and [i.key for i in limited.list("refs/")] == ["refs/x"]
    w = limited.open_writer("data/y", part_size=1024)
    w.write_part(1, b"abc", hashlib.sha256(b"abc").digest())
    assert [u.key for u in limited.list_incomplete()] in ([""], ["data/y"])
    w.abort()
    assert limited.list_incomplete() == []
    limited.delete("refs/x")
    assert limited.head("refs/x") is None
    assert limited.retention_unsupported() == limited.inner.retention_unsupported() is not None
