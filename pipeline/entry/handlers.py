"""Scheduled runs in the cloud, where deployments find them: the AWS Lambda handler, the Cloud Functions (2nd gen)
handlers and the container image's entry (docs/cloud.md).

The runs themselves live in :mod:`pipeline.entry.cloud`; this module keeps the names that Dockerfiles, function
configurations (``pipeline.entry.handlers.lambda_handler``, ``gcf_handler``, ``gcf_event_handler``) and
``python -m pipeline.entry.handlers`` use, and is the one place that joins the two front ends:

- :func:`main` (``python -m pipeline.entry.handlers``): the container image's entry. Under Lambda
  (``$AWS_LAMBDA_RUNTIME_API`` set) it starts the Lambda runtime client with :func:`lambda_handler`; anywhere else
  it is the ``jsarchive`` command line, which a Cloud Run job runs sharded by ``CLOUD_RUN_TASK_INDEX``.

Cloud SDKs and functions-framework are imported only where they are used.
"""

from __future__ import annotations

import sys

from pipeline.entry.cloud.aws_lambda import lambda_handler
from pipeline.entry.cloud.budget import TimeBudget
from pipeline.entry.cloud.connection import connect_options
from pipeline.entry.cloud.container import LAMBDA_HANDLER, exec_lambda_runtime, under_lambda
from pipeline.entry.cloud.errors import ConfigError, env_spelling, phrased
from pipeline.entry.cloud.event import OPERATIONS, HandlerConfig
from pipeline.entry.cloud.functions import gcf_event_handler, gcf_handler
from pipeline.entry.cloud.options import sink as _sink  # noqa: F401  (the name tests/test_limits.py uses)
from pipeline.entry.cloud.run import run_scheduled
from pipeline.entry.cloud.secrets import parse_credentials, read_secret_text

__all__ = [
    "LAMBDA_HANDLER",
    "OPERATIONS",
    "ConfigError",
    "HandlerConfig",
    "TimeBudget",
    "connect_options",
    "env_spelling",
    "gcf_event_handler",
    "gcf_handler",
    "lambda_handler",
    "main",
    "parse_credentials",
    "phrased",
    "read_secret_text",
    "run_scheduled",
]

if "functions_framework" in sys.modules:
    # Under functions-framework (which loads this module, or a main.py importing it): register the signature types.
    # Here rather than in pipeline.entry.cloud.functions because the framework loads this file afresh, while that
    # module may already have been imported. Elsewhere (Lambda, the CLI) the framework is neither imported nor
    # needed; its default type, http, fits gcf_handler anyway.
    import functions_framework as _ff

    gcf_handler = _ff.http(gcf_handler)
    gcf_event_handler = _ff.cloud_event(gcf_event_handler)


def main(argv: list[str] | None = None) -> None:
    """Lambda runtime client under Lambda, else the ``jsarchive`` CLI (a Cloud Run job's task, a shell, …)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if under_lambda():
        exec_lambda_runtime(args)
    from pipeline.entry.cli import main as cli

    cli(args=args, prog_name="jsarchive")


if __name__ == "__main__":
    main()
