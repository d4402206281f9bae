"""The AWS Lambda entry: EventBridge Scheduler → Lambda; the invocation's remaining time is the run's budget, and
its metrics go to CloudWatch as EMF."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pipeline.entry.cloud.run import run_scheduled


def lambda_handler(event: Mapping[str, Any] | None, context: Any) -> dict:
    """AWS Lambda entry (EventBridge Scheduler → this). ``context``: the runtime's, for the remaining time."""
    return run_scheduled(
        event if isinstance(event, Mapping) else {},
        os.environ,
        remaining_ms=context.get_remaining_time_in_millis,
        request_id=getattr(context, "aws_request_id", None),
        emf=True,
    )
