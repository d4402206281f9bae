"""One scheduled run, whichever platform triggered it: the configured job, its log lines and metrics, and the
error a platform must see to count a failed invocation and retry it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from pipeline.base.errors import JsArchiveError
from pipeline.entry import metrics
from pipeline.entry.cloud.account_backup import run_account_backup
from pipeline.entry.cloud.budget import TimeBudget, budget_for
from pipeline.entry.cloud.drill import run_drill
from pipeline.entry.cloud.errors import phrased
from pipeline.entry.cloud.event import HandlerConfig, default_run, operation_of
from pipeline.entry.cloud.prune import run_prune
from pipeline.entry.cloud.report import Emit, Outcome, report
from pipeline.entry.cloud.stream_backup import run_stream_backup
from pipeline.entry.cloud.verify import run_verify

Job = Callable[[HandlerConfig, TimeBudget, Emit, str], Outcome]
JOBS: dict[str, Job] = {
    "account-backup": run_account_backup,
    "stream-backup": run_stream_backup,
    "prune": lambda cfg, _budget, emit, _run: run_prune(cfg, emit),
    "verify": lambda cfg, _budget, emit, _run: run_verify(cfg, emit),
    "drill": lambda cfg, _budget, emit, _run: run_drill(cfg, emit),
}
CHECKS = ("prune", "verify", "drill")  # the jobs whose findings fail the run


def run_scheduled(
    event: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    *,
    remaining_ms: Callable[[], float] | None = None,
    request_id: str | None = None,
    emf: bool = False,
    out: TextIO | None = None,
) -> dict:
    """Run the configured operation once; log, emit metrics, push them; return the result as JSON.

    Raises the run's error (:class:`~pipeline.entry.cloud.errors.ConfigError`, a connection failure, failed streams
    as :class:`~pipeline.base.errors.AccountRunFailed`, …) after reporting it, so the platform counts a failed
    invocation and retries it. Deferred streams are not an error: the result says which and how the run is finished.
    """
    env = os.environ if env is None else env
    event = dict(event or {})
    emit: Emit = lambda obj: metrics.write_line(obj, out)  # noqa: E731
    started = time.time()
    archive = (env.get("JSARCHIVE_URL") or "").strip()
    try:
        cfg = HandlerConfig.load(env, event)
        budget = budget_for(env, remaining_ms)
        run = cfg.run or default_run(event, request_id)
        outcome = JOBS[cfg.operation](cfg, budget, emit, run)
    except JsArchiveError as e:
        report(metrics.failure_report(operation_of(event, env), archive, started, phrased(e)), env, emf, emit)
        raise
    if cfg.operation.endswith("backup"):
        outcome.report.run = outcome.report.run or run
    report(outcome.report, env, emf, emit)
    _raise_failure(cfg, outcome, run)
    return outcome.result


def _raise_failure(cfg: HandlerConfig, outcome: Outcome, run: str) -> None:
    """The error of a run that finished with failed streams or findings (its result is already reported)."""
    failed = outcome.result.get("failed")
    if cfg.operation == "account-backup" and failed:
        from pipeline.base.errors import AccountRunFailed

        raise AccountRunFailed(
            f"backup of {len(failed)} stream(s) failed: {', '.join(failed)}; the run {run} stays open: a retry "
            "with the same run id backs up what is owed",
            outcome.result,
            1,
        )
    if cfg.operation in CHECKS and not outcome.result["ok"]:
        err = JsArchiveError(f"{cfg.operation} of {cfg.url} found problems: {json.dumps(outcome.result)[:2000]}")
        err.exit_code = int(outcome.result.get("exit_code") or 1)
        raise err
