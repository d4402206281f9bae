"""The scheduled verify: the latest backup of each stream, or all of them (``$JSARCHIVE_VERIFY``), optionally deep;
each checked backup is a log line."""

from __future__ import annotations

import time

from pipeline.entry import metrics
from pipeline.entry.cloud import env as envvars
from pipeline.entry.cloud.errors import ConfigError
from pipeline.entry.cloud.event import HandlerConfig
from pipeline.entry.cloud.options import key_ring, sink
from pipeline.entry.cloud.report import Emit, Outcome


def run_verify(cfg: HandlerConfig, emit: Emit) -> Outcome:
    """Verify ``cfg.url`` (``cfg.stream`` only, when set)."""
    from pipeline.archive.verify import FAILED, OK, VerifyOptions, verify_archive

    env = cfg.env
    what = (env.get("JSARCHIVE_VERIFY") or "latest").strip().lower()
    if what not in ("latest", "all"):
        raise ConfigError(f"$JSARCHIVE_VERIFY is {what!r}; expected latest or all")
    deep = envvars.flag(env, "JSARCHIVE_VERIFY_DEEP")
    started = time.time()
    rep = verify_archive(
        VerifyOptions(
            url=cfg.url,
            latest=what == "latest",
            all=what == "all",
            stream=cfg.stream,
            deep=deep,
            keys=key_ring(env, write=False),
            sink=sink(env, cfg.url),
        )
    )
    for b in rep.backups:
        emit(
            {
                "severity": "INFO" if b.status == OK else "ERROR",
                "event": "jsarchive.verify",
                "archive": cfg.url,
                "stream": b.stream,
                "manifest_id": b.manifest_id,
                "status": b.status,
                "deep": b.deep,
                "stored_bytes": b.stored_bytes,
                "message": "; ".join(b.problems) or None,
            }
        )
    doc = rep.to_json()
    report = metrics.RunReport(
        cfg.operation,
        cfg.url,
        ok=rep.ok,
        started=started,
        seconds=time.time() - started,
        stored_bytes=rep.bytes_read,
        streams_ok=sum(1 for b in rep.backups if b.status == OK),
        streams_failed=sum(1 for b in rep.backups if b.status == FAILED) + doc["unverified"],
        details={"deep": deep, "selection": rep.selection, "exit_code": rep.exit_code},
    )
    result = {
        "ok": rep.ok,
        "operation": cfg.operation,
        "archive": cfg.url,
        "exit_code": rep.exit_code,
        "checked": len(rep.backups),
        "failed": doc["failed"],
        "unverified": doc["unverified"],
        "bytes_read": rep.bytes_read,
        "warnings": rep.warnings,
    }
    return Outcome(report, result)
