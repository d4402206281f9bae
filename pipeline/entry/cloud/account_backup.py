"""The scheduled account backup: every stream the selection names, within the time budget; what does not fit is
deferred to a later attempt of the same run, which backs up what is still owed and seals the set."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pipeline.entry import metrics
from pipeline.entry.cloud import env as envvars
from pipeline.entry.cloud.budget import TimeBudget
from pipeline.entry.cloud.connection import connect_options
from pipeline.entry.cloud.errors import phrased
from pipeline.entry.cloud.event import HandlerConfig
from pipeline.entry.cloud.options import backup_options
from pipeline.entry.cloud.report import Emit, Outcome

if TYPE_CHECKING:
    from pipeline.archive.runs import StreamOutcome
    from pipeline.jetstream.account import PlannedStream


def run_account_backup(cfg: HandlerConfig, budget: TimeBudget, emit: Emit, run: str) -> Outcome:
    """Back up the account's streams as run ``run``; failed streams are reported, not raised (the caller raises
    once the metrics are out)."""
    from pipeline.base.errors import AccountRunFailed
    from pipeline.ops.account_backup import AccountBackupOptions, backup_account

    env = cfg.env
    opts = AccountBackupOptions(
        each=backup_options(env, "", cfg.url, connect_options(env)),
        force=envvars.flag(env, "JSARCHIVE_FORCE"),
        include=cfg.include,
        exclude=cfg.exclude,
        parallel=max(1, envvars.integer(env, "JSARCHIVE_PARALLEL", 2)),
        run=run,
    )
    started = time.time()

    def on_stream(o: StreamOutcome) -> None:
        if o.status == "backed_up":
            budget.observe(o.bytes, o.seconds)
        emit(metrics.stream_line(cfg.operation, cfg.url, o.to_json(), run=run))

    def admit(p: PlannedStream) -> str | None:
        return budget.admit(p.name, p.bytes)

    try:
        doc, error = backup_account(opts, on_stream=on_stream, admit=admit).to_json(), None
    except AccountRunFailed as e:
        # Reported like a success, with the failed streams; run_scheduled raises once the metrics are out.
        doc, error = e.result.to_json(), str(phrased(e))  # type: ignore[attr-defined]
    report = metrics.account_report(doc, ok=error is None, started=started, error=error)
    result = _result(cfg, run, doc, report)
    owed = sorted(set(doc.get("pending") or []) | set(doc.get("deferred") or []) | set(doc.get("failed") or []))
    if owed:
        result["resume"] = {
            "event": {"operation": cfg.operation, "run": run},
            "command": f"jsarchive account backup {cfg.url} --run {run}",
            "why": "the run is not sealed yet: a later attempt with the same run id backs up what is owed "
            f"({', '.join(owed)}) and writes the set",
        }
        report.details["resume"] = result["resume"]["command"]
    return Outcome(report, result)


def _result(cfg: HandlerConfig, run: str, doc: dict, report: metrics.RunReport) -> dict:
    return {
        "ok": report.ok,
        "operation": cfg.operation,
        "archive": cfg.url,
        "run": run,
        "set_id": doc.get("set_id"),
        "sealed": doc.get("set_id") is not None,
        "streams": {"ok": report.streams_ok, "failed": report.streams_failed, "deferred": report.streams_deferred},
        "deferred": doc.get("deferred") or [],
        "failed": doc.get("failed") or [],
        "pending": doc.get("pending") or [],
        "bytes": report.bytes,
        "stored_bytes": report.stored_bytes,
        "seconds": round(report.seconds, 3),
        "warnings": doc.get("warnings") or [],
    }
