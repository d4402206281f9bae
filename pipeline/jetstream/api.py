"""One JetStream API request: its subject under the account's API prefix, its timeout (natscli's ``--timeout``), its
``--trace`` lines, and an error answer raised as the error it means (:mod:`pipeline.jetstream.api_errors`)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import nats.errors
from nats.aio.client import Client

from pipeline.base.display import redact_text, safe
from pipeline.base.errors import ConnectionFailed, ServerRefused, TransferFailed, setting
from pipeline.jetstream.api_errors import api_error

API_TIMEOUT = 10.0


TRACE_LIMIT = 2048


def _trace(direction: str, subject: str, body: bytes | str) -> None:
    """One line on stderr per API request or reply: credentials redacted, control characters escaped, cut short."""
    import sys

    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
    text = " ".join(text.split())
    if len(text) > TRACE_LIMIT:
        text = text[:TRACE_LIMIT] + f"… ({len(text)} characters)"
    print(f"jsarchive: trace: {direction} {safe(redact_text(subject))} {safe(redact_text(text))}", file=sys.stderr)


class ApiClient:
    """The request layer under :class:`pipeline.jetstream.client.JetStream` and its snapshot and restore protocols."""

    # natscli's --timeout: replaces API_TIMEOUT wherever a request waits the default (connect() sets it).
    api_timeout: float = API_TIMEOUT
    trace: bool = False  # --trace: each API request and reply on stderr

    def __init__(self, nc: Client, api_prefix: str = "$JS.API") -> None:
        self.nc = nc
        self.prefix = api_prefix

    async def request(self, subject: str, payload: bytes, timeout: float) -> dict:
        if timeout == API_TIMEOUT:
            timeout = self.api_timeout
        if self.trace:
            _trace(">>>", subject, payload)
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout)
            if self.trace:
                _trace("<<<", subject, msg.data)
        except nats.errors.NoRespondersError:
            if self.trace:
                _trace("<<<", subject, "(no responders)")
            raise ServerRefused(
                f"no JetStream responder for {subject}: JetStream is not enabled for this account, or the "
                f"{setting('js-domain')} / {setting('js-api-prefix')} is wrong"
            ) from None
        except nats.errors.TimeoutError:
            if self.trace:
                _trace("<<<", subject, f"(no answer within {timeout:g} s)")
            raise TransferFailed(f"no answer from the server within {timeout:g} s to {subject}") from None
        except nats.errors.ConnectionClosedError:
            raise ConnectionFailed("the connection to the NATS server was closed") from None
        try:
            return json.loads(msg.data) if msg.data else {}
        except json.JSONDecodeError:
            raise ServerRefused(f"the server answered {subject} with something that is not JSON") from None

    async def api(self, op: str, body: dict | None = None, *, stream: str = "", timeout: float = API_TIMEOUT) -> dict:
        payload = json.dumps(body).encode() if body is not None else b""
        resp = await self.request(f"{self.prefix}.{op}", payload, timeout)
        if "error" in resp:
            raise api_error(resp["error"], stream)
        return resp


async def unsubscribe_quietly(sub: Any) -> None:
    with contextlib.suppress(Exception):  # the connection may already be gone
        await sub.unsubscribe()
