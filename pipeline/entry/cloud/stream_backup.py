"""The scheduled backup of one stream: started only if it fits the time budget, else deferred with the command
that runs it where time is not limited."""

from __future__ import annotations

import asyncio
import time

from pipeline.entry import metrics
from pipeline.entry.cloud.budget import TimeBudget
from pipeline.entry.cloud.connection import connect_options
from pipeline.entry.cloud.event import HandlerConfig
from pipeline.entry.cloud.options import backup_options
from pipeline.entry.cloud.report import Emit, Outcome
from pipeline.jetstream.client import ConnectOptions


async def _stream_size(opts: ConnectOptions, stream: str) -> int:
    from pipeline.base.errors import NotFoundError
    from pipeline.jetstream.client import connect

    async with await connect(opts) as js:
        info = await js.stream_info(stream)
    if info is None:
        raise NotFoundError(f"stream {stream!r} does not exist on the server")
    return int((info.get("state") or {}).get("bytes", 0))


def run_stream_backup(cfg: HandlerConfig, budget: TimeBudget, emit: Emit, run: str) -> Outcome:
    """Back up ``cfg.stream`` if the budget admits it; a deferred stream is a result that is not ok, not an error."""
    from pipeline.flows.backup import backup_stream

    env = cfg.env
    assert cfg.stream is not None
    connect = connect_options(env)
    started = time.time()
    size = asyncio.run(_stream_size(connect, cfg.stream))
    why = budget.admit(cfg.stream, size)
    if why:
        return _deferred(cfg, emit, run, started, why)
    res = backup_stream(backup_options(env, cfg.stream, cfg.url, connect))
    line = {**res.to_json(), "status": "backed_up"}
    emit(metrics.stream_line(cfg.operation, cfg.url, line, run=run))
    report = metrics.RunReport(
        cfg.operation,
        cfg.url,
        ok=True,
        started=started,
        seconds=time.time() - started,
        bytes=res.bytes,
        stored_bytes=res.stored_bytes,
        streams_ok=1,
        details={"stream": res.stream, "manifest_id": res.manifest_id},
    )
    return Outcome(report, {"ok": True, "operation": cfg.operation, "archive": cfg.url, "backup": res.to_json()})


def _deferred(cfg: HandlerConfig, emit: Emit, run: str, started: float, why: str) -> Outcome:
    assert cfg.stream is not None
    line = {"stream": cfg.stream, "status": "deferred", "bytes": 0, "message": why}
    emit(metrics.stream_line(cfg.operation, cfg.url, line, run=run))
    report = metrics.RunReport(
        cfg.operation, cfg.url, ok=False, started=started, seconds=time.time() - started, streams_deferred=1
    )
    report.error = why
    report.details["resume"] = f"jsarchive stream backup {cfg.stream} {cfg.url}"
    result = {
        "ok": False,
        "operation": cfg.operation,
        "archive": cfg.url,
        "stream": cfg.stream,
        "deferred": [cfg.stream],
        "message": why,
        "resume": {"command": report.details["resume"], "why": "run it where the time is not limited"},
    }
    return Outcome(report, result)
