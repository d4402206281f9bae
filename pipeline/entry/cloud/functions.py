"""The Google Cloud Functions (2nd gen) entries, through functions-framework: an HTTP handler (Cloud Scheduler's
HTTP target) and a CloudEvent handler (a Pub/Sub message from Cloud Scheduler).

Secrets arrive as ``$JSARCHIVE_NATS_CREDENTIALS`` (Secret Manager, injected by the platform) and the time limit is
``$JSARCHIVE_TIME_LIMIT``. functions-framework registers the signature types where it loads the handlers
(pipeline/entry/handlers.py); nothing here imports it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any

from pipeline.base.errors import JsArchiveError
from pipeline.entry.cloud.errors import ConfigError
from pipeline.entry.cloud.run import run_scheduled


def _gcf_response(fn: Callable[[], dict]) -> tuple[str, int, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    try:
        return json.dumps(fn(), default=str), 200, headers
    except JsArchiveError as e:
        # 500: Cloud Scheduler counts the attempt as failed and retries per its policy, resuming the same run.
        body = {"ok": False, "error": {"kind": e.kind, "exit_code": e.exit_code, "message": str(e)}}
        if getattr(e, "result", None) is not None:
            body["result"] = e.result  # type: ignore[attr-defined]
        return json.dumps(body, default=str), 500, headers


def gcf_handler(request: Any) -> tuple[str, int, dict[str, str]]:
    """Cloud Functions HTTP entry (Cloud Scheduler HTTP target with an OIDC token). The JSON body is the event."""
    event = request.get_json(silent=True) or {}
    execution = request.headers.get("Function-Execution-Id") or request.headers.get("X-Cloud-Trace-Context")
    return _gcf_response(lambda: run_scheduled(event, os.environ, request_id=execution))


def gcf_event_handler(cloud_event: Any) -> None:
    """Cloud Functions CloudEvent entry (a Pub/Sub message from Cloud Scheduler; its data is the event as JSON)."""
    data = cloud_event.data or {}
    raw = (data.get("message") or {}).get("data") if isinstance(data, dict) else None
    try:
        event = json.loads(base64.b64decode(raw)) if raw else {}
    except (ValueError, TypeError):
        raise ConfigError("the Pub/Sub message data is not base64-encoded JSON") from None
    if not isinstance(event, dict):
        raise ConfigError("the Pub/Sub message data is JSON but not an object")
    run_scheduled(event, os.environ, request_id=cloud_event["id"])
