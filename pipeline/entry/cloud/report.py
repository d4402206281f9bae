"""What a scheduled run reports, the way unattended runs need: the run summary line, CloudWatch EMF metrics in
Lambda, and a Pushgateway push when ``$JSARCHIVE_METRICS_PUSH`` is set (a failed push is a warning, never the
run's failure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.entry import metrics

Emit = Callable[[dict], None]  # writes one JSON log line


@dataclass
class Outcome:
    """What a job returns to :func:`~pipeline.entry.cloud.run.run_scheduled`: the result (as JSON) and its
    report."""

    report: metrics.RunReport
    result: dict


def report(run: metrics.RunReport, env: Mapping[str, str], emf: bool, emit: Emit) -> None:
    """Log the summary line of ``run``, its EMF document when ``emf``, and push its metrics if configured."""
    emit(metrics.summary_line(run))
    if emf:
        emit(metrics.emf_document(run, env.get("JSARCHIVE_METRICS_NAMESPACE") or metrics.EMF_NAMESPACE))
    url = (env.get("JSARCHIVE_METRICS_PUSH") or "").strip()
    if url:
        try:
            metrics.push(url, run)
        except metrics.MetricsPushFailed as e:
            emit({"severity": "WARNING", "event": "jsarchive.metrics_push", "message": str(e)})
