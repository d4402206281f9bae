"""The triggering event and the run it names: which fields a trigger may set, checked against the environment, and
the run id that stays the same across retries of one trigger."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.entry.cloud import env as envvars
from pipeline.entry.cloud.errors import ConfigError

OPERATIONS = ("account-backup", "stream-backup", "prune", "verify", "drill")
EVENT_FIELDS = ("operation", "run", "stream", "include", "exclude")  # what a trigger's payload may choose
# EventBridge rule events carry their envelope; the handler ignores it (and uses its id for the run).
TRIGGER_FIELDS = ("version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail")


def operation_of(event: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The operation the event, else ``$JSARCHIVE_OPERATION``, names (account-backup when neither does)."""
    return str(event.get("operation") or env.get("JSARCHIVE_OPERATION") or "account-backup")


@dataclass
class HandlerConfig:
    operation: str
    url: str
    run: str | None
    stream: str | None
    include: list[str]
    exclude: list[str]
    env: Mapping[str, str] = field(repr=False)

    @classmethod
    def load(cls, env: Mapping[str, str], event: Mapping[str, Any]) -> HandlerConfig:
        extra = sorted(k for k in event if k not in EVENT_FIELDS and k not in TRIGGER_FIELDS)
        if extra:
            raise ConfigError(
                f"the event has field(s) {', '.join(extra)} the handler does not take; "
                f"it takes {', '.join(EVENT_FIELDS)} (the rest comes from the environment)"
            )
        operation = operation_of(event, env)
        if operation not in OPERATIONS:
            raise ConfigError(f"operation {operation!r} is not one of {', '.join(OPERATIONS)}")
        url = envvars.required(
            env, "JSARCHIVE_URL", "the archive URL (s3://bucket/prefix, gs://bucket/prefix or a path)"
        )
        stream = str(event.get("stream") or env.get("JSARCHIVE_STREAM") or "") or None
        if operation == "stream-backup" and not stream:
            raise ConfigError("stream-backup needs the stream: set $JSARCHIVE_STREAM or the event's stream field")
        include = envvars.items(event.get("include") if "include" in event else env.get("JSARCHIVE_INCLUDE"))
        exclude = envvars.items(event.get("exclude") if "exclude" in event else env.get("JSARCHIVE_EXCLUDE"))
        run = event.get("run")
        return cls(operation, url, run_id(str(run)) if run else None, stream, include, exclude, env)


def run_id(text: str) -> str:
    """A valid run id from a trigger-provided one (a scheduler's execution id or time may hold ':' and such)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:128]
    if not cleaned:
        raise ConfigError(f"run id {text!r} has no usable characters")
    return cleaned


def default_run(event: Mapping[str, Any], request_id: str | None) -> str:
    """Stable across retries of one trigger: EventBridge's event id, else the invocation's request id.

    Lambda retries an asynchronous invocation with the same request id, so a retry resumes the run.
    """
    if event.get("id") and event.get("source"):
        return run_id(f"sched-{event['id']}")
    if request_id:
        return run_id(f"run-{request_id}")
    return run_id(f"run-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}")
