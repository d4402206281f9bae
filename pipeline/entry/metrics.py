"""What an unattended run reports: one JSON log line per stream, a run summary, and metrics.

Three outlets, one :class:`RunReport`:

- **JSON log lines** (:func:`stream_line`, :func:`summary_line`): one object per line on stdout, with a
  ``severity`` field so Cloud Logging files them as structured entries and CloudWatch Logs Insights can query them.
- **CloudWatch embedded metric format** (:func:`emf_document`): one more log line that CloudWatch turns into
  metrics on its own, so a Lambda needs no ``cloudwatch:PutMetricData`` right and makes no extra call.
- **Prometheus Pushgateway** (:func:`push`, ``--metrics-push URL``): the text exposition format, pushed over HTTP.
  A successful run PUTs its whole group, ``jsarchive_last_success_timestamp_seconds`` included; a failed run POSTs,
  which replaces only the metrics it sends, so the last success time of the group survives the failure and an
  alert on its age fires when runs keep failing, not only when they stop.

No dependency beyond the standard library: the exposition format is small and fixed.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from pipeline.base.display import redact_url
from pipeline.base.errors import JsArchiveError

EMF_NAMESPACE = "jsarchive"
PUSH_TIMEOUT = 10.0
PUSH_JOB = "jsarchive"
EXPOSITION_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsPushFailed(JsArchiveError):
    """The Pushgateway could not be reached or refused the push (the run itself is not affected)."""

    kind = "metrics"


@dataclass
class RunReport:
    """The outcome of one run, as the log summary and the metrics show it."""

    operation: str  # "account-backup" | "stream-backup" | "prune" | "verify"
    archive: str
    ok: bool
    started: float  # Unix time
    seconds: float
    bytes: int = 0  # stream bytes backed up (the streams' own size)
    stored_bytes: int = 0  # bytes written to the archive
    streams_ok: int = 0
    streams_failed: int = 0
    streams_deferred: int = 0
    run: str | None = None
    shard: str | None = None
    set_id: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # operation-specific fields for the summary line

    @property
    def ratio(self) -> float:
        """Stream bytes per stored byte (2.0: the archive holds half the stream's size); 0 when nothing was stored."""
        return round(self.bytes / self.stored_bytes, 4) if self.stored_bytes else 0.0

    @property
    def finished(self) -> float:
        return self.started + self.seconds


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stream_line(operation: str, archive: str, outcome: Mapping[str, Any], *, run: str | None = None) -> dict:
    """The log line for one stream: its outcome (``StreamOutcome.to_json()`` or a backup result's fields)."""
    status = str(outcome.get("status", "backed_up"))
    stored = int(outcome.get("stored_bytes") or 0)
    nbytes = int(outcome.get("bytes") or 0)
    line = {
        "severity": "ERROR" if status == "failed" else "WARNING" if status in ("deferred", "skipped") else "INFO",
        "event": "jsarchive.stream",
        "operation": operation,
        "archive": archive,
        "run": run,
        "stream": outcome.get("stream"),
        "status": status,
        "manifest_id": outcome.get("manifest_id"),
        "messages": int(outcome.get("messages") or 0),
        "bytes": nbytes,
        "stored_bytes": stored,
        "ratio": round(nbytes / stored, 4) if stored else 0.0,
        "seconds": float(outcome.get("seconds") or 0.0),
    }
    if outcome.get("message"):
        line["message"] = outcome["message"]
    if outcome.get("error_kind"):
        line["error"] = {"kind": outcome.get("error_kind"), "exit_code": outcome.get("exit_code")}
    return line


def summary_line(report: RunReport) -> dict:
    """The run's summary log line."""
    line = {
        "severity": "INFO" if report.ok else "ERROR",
        "event": "jsarchive.run",
        "operation": report.operation,
        "archive": report.archive,
        "ok": report.ok,
        "run": report.run,
        "shard": report.shard,
        "set_id": report.set_id,
        "started": _iso(report.started),
        "finished": _iso(report.finished),
        "seconds": round(report.seconds, 3),
        "bytes": report.bytes,
        "stored_bytes": report.stored_bytes,
        "ratio": report.ratio,
        "streams_ok": report.streams_ok,
        "streams_failed": report.streams_failed,
        "streams_deferred": report.streams_deferred,
    }
    if report.error:
        line["message"] = report.error
    line.update(report.details)
    return line


def write_line(obj: Mapping[str, Any], out: TextIO | None = None) -> None:
    """One compact JSON object on one line: log collectors split on newlines."""
    stream = out or sys.stdout
    stream.write(json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")) + "\n")
    stream.flush()


# -- CloudWatch embedded metric format -----------------------------------------------------------------------------


# (name, unit, value) for every run; LastSuccess only when the run succeeded. Units are CloudWatch's names.
def _emf_metrics(report: RunReport) -> list[tuple[str, str, float]]:
    out = [
        ("Success", "Count", 1.0 if report.ok else 0.0),
        ("Duration", "Seconds", round(report.seconds, 3)),
        ("Bytes", "Bytes", float(report.bytes)),
        ("StoredBytes", "Bytes", float(report.stored_bytes)),
        ("CompressionRatio", "None", report.ratio),
        ("StreamsOk", "Count", float(report.streams_ok)),
        ("StreamsFailed", "Count", float(report.streams_failed)),
        ("StreamsDeferred", "Count", float(report.streams_deferred)),
    ]
    if report.ok:
        # The time of the last success as a value: a dashboard shows its age; the alarm uses Success.
        out.append(("LastSuccess", "Seconds", round(report.finished, 3)))
    return out


def emf_document(report: RunReport, namespace: str = EMF_NAMESPACE, *, timestamp_ms: int | None = None) -> dict:
    """A CloudWatch EMF log event: ``_aws.CloudWatchMetrics`` names the metrics; their values are top-level keys.

    Dimensions: ``Operation`` and ``Archive`` (one metric series per scheduled job, not per stream: per-stream
    series would cost a custom metric each). The summary fields ride along as properties for Logs Insights.
    """
    metrics = _emf_metrics(report)
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(timestamp_ms if timestamp_ms is not None else report.finished * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["Operation", "Archive"]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, unit, _ in metrics],
                }
            ],
        },
        "Operation": report.operation,
        "Archive": report.archive or "(not configured)",  # CloudWatch drops a metric with an empty dimension
        "event": "jsarchive.metrics",
        "run": report.run,
        "ok": report.ok,
    }
    for name, _, value in metrics:
        doc[name] = value
    return doc


# -- Prometheus text exposition and the Pushgateway -----------------------------------------------------------------


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(report: RunReport) -> str:
    """The run's metrics in the Prometheus text format (version 0.0.4)."""
    families: list[tuple[str, str, list[tuple[dict[str, str], float]]]] = [
        ("jsarchive_success", "1 if the last run succeeded, else 0", [({}, 1.0 if report.ok else 0.0)]),
        ("jsarchive_duration_seconds", "how long the last run took", [({}, report.seconds)]),
        ("jsarchive_bytes", "stream bytes the last run backed up", [({}, float(report.bytes))]),
        ("jsarchive_stored_bytes", "bytes the last run wrote to the archive", [({}, float(report.stored_bytes))]),
        ("jsarchive_compression_ratio", "stream bytes per stored byte in the last run", [({}, report.ratio)]),
        (
            "jsarchive_streams",
            "streams of the last run by outcome",
            [
                ({"status": "ok"}, float(report.streams_ok)),
                ({"status": "failed"}, float(report.streams_failed)),
                ({"status": "deferred"}, float(report.streams_deferred)),
            ],
        ),
        ("jsarchive_last_run_timestamp_seconds", "Unix time the last run ended", [({}, report.finished)]),
    ]
    if report.ok:
        last = ("jsarchive_last_success_timestamp_seconds", "Unix time the last successful run ended")
        families.append((*last, [({}, report.finished)]))
    lines = []
    for name, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {_fmt(value)}" if lab else f"{name} {_fmt(value)}")
    return "\n".join(lines) + "\n"


def _segment(name: str, value: str) -> str:
    """A grouping-key path segment; values with '/' (or empty ones) go base64url-encoded, as the Pushgateway asks."""
    if value and "/" not in value:
        return f"{name}/{urllib.parse.quote(value, safe='')}"
    return f"{name}@base64/{base64.urlsafe_b64encode(value.encode()).decode() or '='}"


def grouping_key(report: RunReport, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Which group a run's metrics replace: one per operation and archive (and shard, stream when given)."""
    key = {"operation": report.operation, "archive": report.archive}
    if report.shard and not report.shard.endswith("/1"):  # "0/1": a run-based but unsharded run, one group
        key["shard"] = report.shard
    key.update(extra or {})
    return key


def push_url(base: str, job: str, grouping: Mapping[str, str]) -> str:
    base = base.rstrip("/")
    path = "/metrics/" + "/".join([_segment("job", job), *(_segment(k, v) for k, v in grouping.items())])
    return base + path


def push(
    url: str,
    report: RunReport,
    *,
    job: str = PUSH_JOB,
    grouping: Mapping[str, str] | None = None,
    timeout: float = PUSH_TIMEOUT,
) -> str:
    """Push the run's metrics to the Pushgateway at ``url``; return the URL pushed to.

    PUT on success (the group is replaced), POST on failure (only the metrics sent are replaced, so the group's
    ``jsarchive_last_success_timestamp_seconds`` stays). Credentials in the URL (``https://user:pw@host``) become
    basic authentication.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MetricsPushFailed(f"--metrics-push {redact_url(url)!r} is not an http(s) URL of a Pushgateway")
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    target = push_url(base, job, grouping if grouping is not None else grouping_key(report))
    req = urllib.request.Request(
        target,
        data=exposition(report).encode("utf-8"),
        method="PUT" if report.ok else "POST",
        headers={"Content-Type": EXPOSITION_TYPE},
    )
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    where = f"{parts.scheme}://{netloc}"  # never the credentials
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            if resp.status not in (200, 202):
                raise MetricsPushFailed(f"the Pushgateway at {where} answered HTTP {resp.status} to the push")
    except urllib.error.HTTPError as e:
        body = e.read()[:200].decode("utf-8", "replace").strip()
        raise MetricsPushFailed(
            f"the Pushgateway at {where} refused the push: HTTP {e.code}" + (f" ({body})" if body else "")
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise MetricsPushFailed(f"cannot push metrics to {where}: {reason}") from None
    return target


# -- reports from the library's results -----------------------------------------------------------------------------


def account_report(result_json: Mapping[str, Any], *, ok: bool, started: float, error: str | None = None) -> RunReport:
    """A report from ``AccountBackupResult.to_json()`` (also what ``AccountRunFailed.result`` holds)."""
    streams = result_json.get("streams") or []
    n_ok = sum(1 for o in streams if o.get("status") in ("backed_up", "done_before"))
    n_failed = sum(1 for o in streams if o.get("status") == "failed")
    n_deferred = sum(1 for o in streams if o.get("status") == "deferred")
    return RunReport(
        operation="account-backup",
        archive=str(result_json.get("url")),
        # A deferred stream leaves the run unsealed: not a success until a later attempt finishes it.
        ok=ok and n_failed == 0 and n_deferred == 0,
        started=started,
        seconds=float(result_json.get("seconds") or (time.time() - started)),
        bytes=int(result_json.get("bytes") or 0),
        stored_bytes=int(result_json.get("stored_bytes") or 0),
        streams_ok=n_ok,
        streams_failed=n_failed,
        streams_deferred=n_deferred,
        run=result_json.get("run"),
        shard=result_json.get("shard"),
        set_id=result_json.get("set_id"),
        error=error,
        details={
            "planned": result_json.get("planned"),
            "pending": list(result_json.get("pending") or []),
            "deferred": list(result_json.get("deferred") or []),
            "failed": list(result_json.get("failed") or []),
            "skipped": [o.get("stream") for o in streams if o.get("status") == "skipped"],
            "warnings": list(result_json.get("warnings") or []),
        },
    )


def stream_report(result_json: Mapping[str, Any], *, archive: str, started: float) -> RunReport:
    """A report from ``BackupResult.to_json()`` (one stream backed up into ``archive``)."""
    return RunReport(
        operation="stream-backup",
        archive=archive,
        ok=True,
        started=started,
        seconds=float(result_json.get("seconds") or (time.time() - started)),
        bytes=int(result_json.get("bytes") or 0),
        stored_bytes=int(result_json.get("stored_bytes") or 0),
        streams_ok=1,
        details={"stream": result_json.get("stream"), "manifest_id": result_json.get("manifest_id")},
    )


def failure_report(operation: str, archive: str, started: float, error: BaseException) -> RunReport:
    """A run that ended before it had any stream results (bad configuration, no connection, …)."""
    details: dict[str, Any] = {}
    if isinstance(error, JsArchiveError):
        details["error"] = {"kind": error.kind, "exit_code": error.exit_code}
    return RunReport(
        operation=operation,
        archive=archive,
        ok=False,
        started=started,
        seconds=time.time() - started,
        error=str(error) or type(error).__name__,
        details=details,
    )


class RunObserver:
    """The CLI's side of it: per-stream and summary lines (``--log-json``) and the push (``--metrics-push``).

    A push that fails is a warning on stderr, never the run's failure: the backup itself is done (or has its own
    error), and the missing metric is what the alert on ``jsarchive_last_success_timestamp_seconds`` is for.
    """

    def __init__(
        self,
        operation: str,
        archive: str,
        *,
        push_to: str | None = None,
        log_json: bool = False,
        grouping: Mapping[str, str] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.operation = operation
        self.archive = archive
        self.push_to = push_to
        self.log_json = log_json
        self.grouping = dict(grouping or {})
        self.started = time.time()
        self._warn = warn or (lambda m: print(f"jsarchive: warning: {m}", file=sys.stderr))
        self.run: str | None = None

    def stream(self, outcome: Mapping[str, Any]) -> None:
        if self.log_json:
            write_line(stream_line(self.operation, self.archive, outcome, run=self.run))

    def on_stream(self, inner: Callable[[Any], None] | None = None) -> Callable[[Any], None]:
        """A callback for ``backup_account(on_stream=…)``: logs the outcome, then calls ``inner`` (if any)."""

        def callback(outcome: Any) -> None:
            self.stream(outcome.to_json())
            if inner is not None:
                inner(outcome)

        return callback

    def finish(self, report: RunReport) -> None:
        if self.log_json:
            write_line(summary_line(report))
        if self.push_to:
            try:
                push(self.push_to, report, grouping=grouping_key(report, self.grouping))
            except MetricsPushFailed as e:
                self._warn(str(e))

    def failed(self, error: BaseException) -> None:
        self.finish(failure_report(self.operation, self.archive, self.started, error))
