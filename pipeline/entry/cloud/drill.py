"""The scheduled recovery drill (pipeline/ops/drill.py) into the cluster ``$NATS_URL`` reaches: the evidence goes to
drills/, each drilled stream is a log line."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pipeline.entry import metrics
from pipeline.entry.cloud import env as envvars
from pipeline.entry.cloud.connection import connect_options
from pipeline.entry.cloud.errors import ConfigError, phrased
from pipeline.entry.cloud.event import HandlerConfig
from pipeline.entry.cloud.options import key_ring, sink
from pipeline.entry.cloud.report import Emit, Outcome
from pipeline.jetstream.placement import RestoreTarget


def _drill_options(cfg: HandlerConfig) -> Any:
    from pipeline.archive.trust import TrustPolicy
    from pipeline.ops.drill import DrillOptions

    env: Mapping[str, str] = cfg.env
    cluster = env.get("JSARCHIVE_DRILL_CLUSTER") or None
    tags = envvars.items(env.get("JSARCHIVE_DRILL_TAGS"))
    if not (cluster or tags):
        raise ConfigError("drill needs a target: set $JSARCHIVE_DRILL_CLUSTER or $JSARCHIVE_DRILL_TAGS")
    keys = key_ring(env, write=False)
    return DrillOptions(
        url=cfg.url,
        set_id=env.get("JSARCHIVE_DRILL_SET") or None,
        connect=connect_options(env),
        keys=keys,
        # as the CLI: with a key configured, an unencrypted (possibly planted) backup is refused
        trust=TrustPolicy.of(keys, allow_unencrypted=env.get("JSARCHIVE_ALLOW_UNENCRYPTED", "") not in ("", "0")),
        target=RestoreTarget(cluster, tuple(tags)),
        prefix=env.get("JSARCHIVE_DRILL_PREFIX") or "DRILL_",
        include=cfg.include,
        exclude=cfg.exclude,
        sign_key=env.get("JSARCHIVE_DRILL_SIGN_KEY_FILE") or None,
        sink=sink(env, cfg.url),
    )


def run_drill(cfg: HandlerConfig, emit: Emit) -> Outcome:
    """Drill the archive's latest set (or ``$JSARCHIVE_DRILL_SET``); a failed drill is a result that is not ok."""
    from pipeline.ops.drill import DrillFailed
    from pipeline.ops.drill import run_drill as drill

    started = time.time()
    opts = _drill_options(cfg)
    try:
        res = drill(opts)
        error = None
    except DrillFailed as e:
        res, error = e.result, str(phrased(e))
    rep = res.report
    for st in rep["streams"]:
        emit(
            {
                "severity": "INFO" if st["ok"] else "ERROR",
                "event": "jsarchive.drill",
                "archive": cfg.url,
                "stream": st["stream"],
                "drill_stream": st["drill_stream"],
                "manifest_id": st["manifest_id"],
                "ok": st["ok"],
                "rpo_s": st["rpo_s"],
                "restore_s": st["restore_s"],
                "message": "; ".join(st["problems"]) or None,
            }
        )
    report = metrics.RunReport(
        cfg.operation,
        cfg.url,
        ok=res.passed,
        started=started,
        seconds=time.time() - started,
        streams_ok=sum(1 for st in rep["streams"] if st["ok"]),
        streams_failed=sum(1 for st in rep["streams"] if not st["ok"]),
        error=error,
        details={"rto_s": rep["rto_s"], "rpo_s": rep["rpo_s"], "report": res.report_key},
    )
    result = {
        "ok": res.passed,
        "operation": cfg.operation,
        "archive": cfg.url,
        "report_key": res.report_key,
        "rto_s": rep["rto_s"],
        "rpo_s": rep["rpo_s"],
        "failed": [st["stream"] for st in rep["streams"] if not st["ok"]],
    }
    return Outcome(report, result)
