"""The container image under Lambda: its entry hands over to the Lambda runtime interface client (awslambdaric),
which then calls the handler the function's command names."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

LAMBDA_HANDLER = "pipeline.entry.handlers.lambda_handler"


def under_lambda(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs as a Lambda function (the runtime API is set)."""
    return bool((os.environ if env is None else env).get("AWS_LAMBDA_RUNTIME_API"))


def exec_lambda_runtime(args: list[str]) -> None:
    """Replace this process with the Lambda runtime client; never returns."""
    # Lambda passes the image's CMD (or the function's image_config command) as arguments: a handler path.
    handler = args[0] if args and "." in args[0] and not args[0].startswith("-") else LAMBDA_HANDLER
    os.execv(sys.executable, [sys.executable, "-m", "awslambdaric", handler])
