"""JetStream API error answers: mapped to errors a person understands, and the typed predicates retries ask."""

from __future__ import annotations

import nats.errors

from pipeline.base.errors import (
    ConflictError,
    JsArchiveError,
    NotFoundError,
    ServerRefused,
    TransferFailed,
    UsageError,
    setting,
)

# err_code → (exception class, message template). {desc} is the server's description, {stream} the stream.
_ERRORS: dict[int, tuple[type[JsArchiveError], str]] = {
    10059: (NotFoundError, "stream {stream!r} does not exist on the server"),
    10130: (
        ConflictError,
        "stream {stream!r} already exists on the target server; delete it first or pick another target",
    ),
    10005: (
        ServerRefused,
        f"the target cannot place stream {{stream!r}}: {{desc}}. Check "
        f"{setting('cluster')}, {setting('tag')} and {setting('replicas')} against the "
        "target's cluster names, server tags and number of servers",
    ),
    10056: (UsageError, "the stream name in the restore request does not match its config: {desc}"),
    10062: (TransferFailed, "the server could not restore stream {stream!r}: {desc}"),
    10064: (ServerRefused, "the server could not snapshot stream {stream!r}: {desc}"),
    10015: (UsageError, "the server rejected the snapshot inbox: {desc}"),
    10185: (ServerRefused, "the server's JetStream API level is too low for this request: {desc}"),
    10047: (ServerRefused, "the server has too little storage for stream {stream!r}: {desc}"),
    10023: (ServerRefused, "the account's JetStream limits do not allow stream {stream!r}: {desc}"),
    10039: (ServerRefused, "JetStream is not enabled for this account: {desc}"),
    10076: (ServerRefused, "JetStream is not enabled on the server: {desc}"),
    10008: (ServerRefused, "JetStream is temporarily unavailable (no meta leader?): {desc}"),
    10128: (UsageError, "stream name {stream!r} is not valid: {desc}"),
}


class ApiError(JsArchiveError):
    """A JetStream API error response that no specific mapping covered."""

    def __init__(self, message: str, code: int = 0, err_code: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code


JS_CLUSTER_NOT_AVAILABLE = 10008  # no meta leader (yet): an election after a server loss
PEER_REMOVE_IN_PROGRESS = 10202  # another membership change is still being applied


def err_code(e: BaseException) -> int:
    """The JetStream error code an error was made from (0 for errors that did not come from an API answer)."""
    return int(getattr(e, "err_code", 0) or 0)


def meta_unavailable(e: BaseException) -> bool:
    """The meta group cannot answer yet (no answer, or no leader): worth asking again during an election."""
    return isinstance(e, TransferFailed) or err_code(e) == JS_CLUSTER_NOT_AVAILABLE


def api_error(err: dict, stream: str = "") -> JsArchiveError:
    code = int(err.get("code", 0) or 0)
    err_code = int(err.get("err_code", 0) or 0)
    desc = str(err.get("description", "")).strip() or f"error {code}"
    if err_code == 10064 and "no impl" in desc:
        return ServerRefused(
            f"stream {stream!r} uses memory storage, which this server cannot snapshot: servers before "
            f"nats-server 2.15 only snapshot file-storage streams ({desc}, error 10064)"
        )
    if err_code == 10064 and "in progress" in desc:
        return ConflictError(
            f"another snapshot of stream {stream!r} is still running on the server; wait for it to end ({desc})"
        )
    cls, template = _ERRORS.get(err_code, (ServerRefused, "the server refused the request for {stream!r}: {desc}"))
    e = cls(template.format(stream=stream, desc=desc) + f" (error {err_code or code})")
    e.err_code = err_code  # type: ignore[attr-defined]
    return e


def no_responders(e: BaseException) -> bool:
    """Nobody subscribes to the subject (yet): a request that nobody received, safe to send again."""
    return isinstance(e, nats.errors.NoRespondersError)
