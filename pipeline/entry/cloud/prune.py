"""The scheduled prune: the ``$JSARCHIVE_KEEP_*`` policy applied to the archive, a dry run unless
``$JSARCHIVE_PRUNE_CONFIRM`` is true; each deleted or locked backup is a log line."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from pipeline.entry import metrics
from pipeline.entry.cloud import env as envvars
from pipeline.entry.cloud.errors import ConfigError
from pipeline.entry.cloud.event import HandlerConfig
from pipeline.entry.cloud.options import sink
from pipeline.entry.cloud.report import Emit, Outcome


def _policy(env: Mapping[str, str]) -> Any:
    from pipeline.archive.retention import Duration, Policy

    within = env.get("JSARCHIVE_KEEP_WITHIN") or None
    policy = Policy(
        last=envvars.integer(env, "JSARCHIVE_KEEP_LAST", 0),
        hourly=envvars.integer(env, "JSARCHIVE_KEEP_HOURLY", 0),
        daily=envvars.integer(env, "JSARCHIVE_KEEP_DAILY", 0),
        weekly=envvars.integer(env, "JSARCHIVE_KEEP_WEEKLY", 0),
        monthly=envvars.integer(env, "JSARCHIVE_KEEP_MONTHLY", 0),
        yearly=envvars.integer(env, "JSARCHIVE_KEEP_YEARLY", 0),
        within=Duration.parse(within) if within else None,
    )
    if policy.empty():
        raise ConfigError("prune needs a policy: set at least one $JSARCHIVE_KEEP_* variable")
    return policy


def run_prune(cfg: HandlerConfig, emit: Emit) -> Outcome:
    """Prune ``cfg.url`` (``cfg.stream`` only, when set)."""
    from pipeline.archive.retention import Duration
    from pipeline.ops.prune import DELETE, LOCKED, PruneOptions, prune

    env = cfg.env
    policy = _policy(env)
    now = dt.datetime.now(dt.timezone.utc)
    grace = now - Duration.parse(env.get("JSARCHIVE_PRUNE_GRACE") or "24h").before(now)
    started = time.time()
    rep = prune(
        PruneOptions(
            url=cfg.url,
            policy=policy,
            stream=cfg.stream,
            confirm=envvars.flag(env, "JSARCHIVE_PRUNE_CONFIRM"),
            grace=grace,
            prune_sets=envvars.flag(env, "JSARCHIVE_PRUNE_SETS"),
            sink=sink(env, cfg.url),
        )
    )
    for b in rep.backups:
        if b.action in (DELETE, LOCKED):
            emit(
                {
                    "severity": "ERROR" if b.error else "INFO",
                    "event": "jsarchive.prune",
                    "archive": cfg.url,
                    "stream": b.stream,
                    "manifest_id": b.manifest_id,
                    "created": b.created,
                    "action": b.action,
                    "deleted": b.deleted,
                    "stored_bytes": b.stored_bytes,
                    "message": b.error or "; ".join(b.warnings) or None,
                }
            )
    n, nbytes = rep.to_delete()
    doc = rep.to_json()
    report = metrics.RunReport(
        cfg.operation,
        cfg.url,
        ok=rep.ok,
        started=started,
        seconds=time.time() - started,
        streams_ok=len({b.stream for b in rep.backups}),
        error="; ".join(e["message"] for e in doc["errors"]) or None,
        details={"dry_run": rep.dry_run, "delete_backups": n, "delete_bytes": nbytes, "locked": len(rep.locked)},
    )
    result = {
        "ok": rep.ok,
        "operation": cfg.operation,
        "archive": cfg.url,
        "dry_run": rep.dry_run,
        "policy": rep.policy,
        "delete_backups": n,
        "delete_bytes": nbytes,
        "locked": len(rep.locked),
        "errors": doc["errors"],
        "warnings": rep.warnings,
    }
    return Outcome(report, result)
