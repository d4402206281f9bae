"""One exception family, each kind with the exit code a scheduler can act on (documented in the README)."""

from __future__ import annotations


class JsArchiveError(Exception):
    """Base class: ``str(err)`` is the one message shown to the user."""

    exit_code = 1
    kind = "error"


class UsageError(JsArchiveError):
    """Bad arguments or configuration detected before anything was touched."""

    exit_code = 2
    kind = "usage"


class NotFoundError(JsArchiveError):
    """A stream, backup or archive that was named does not exist."""

    exit_code = 3
    kind = "not_found"


class IntegrityError(JsArchiveError):
    """Stored bytes do not match what the manifest promises (flipped bit, truncation, tampering)."""

    exit_code = 4
    kind = "integrity"


class KeyUnavailable(JsArchiveError):
    """No configured key can open the backup, or no key was configured for a new one."""

    exit_code = 5
    kind = "key"


class ConflictError(JsArchiveError):
    """The target already exists (stream name in use, object already present)."""

    exit_code = 6
    kind = "conflict"


class ConnectionFailed(JsArchiveError):
    """The NATS server or the object store could not be reached."""

    exit_code = 7
    kind = "connection"


class ServerRefused(JsArchiveError):
    """The server refused the operation: placement, version, limits, permissions."""

    exit_code = 8
    kind = "server"


class TransferFailed(JsArchiveError):
    """The snapshot or restore transfer broke off midway (server stopped, timeout, sink failure)."""

    exit_code = 9
    kind = "transfer"


class PermissionDenied(JsArchiveError):
    """The archive's credentials may not do this (IAM, bucket policy, Object Lock)."""

    exit_code = 10
    kind = "permission"


class ColdStorage(JsArchiveError):
    """Backup data sits in a cold storage class and must be thawed before it can be read."""

    exit_code = 11
    kind = "cold"


class AuthFailed(JsArchiveError):
    """The NATS server refused the credentials (wrong token, password, nkey, JWT or seed; expired or revoked user).

    Apart from 7 (cannot connect): retrying will not help, fixing the credentials will."""

    exit_code = 12
    kind = "auth"


class Interrupted(JsArchiveError):
    exit_code = 130
    kind = "interrupted"


class AccountRunFailed(JsArchiveError):
    """Some streams of an account backup or restore failed; ``result`` says which and why.

    The exit code is the failed streams' own code when they all agree (e.g. 8 when only --critical-warnings turned
    memory-stream warnings into failures), else 1.
    """

    kind = "account"

    def __init__(self, message: str, result: object, exit_code: int) -> None:
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


def common_exit_code(codes: list[int]) -> int:
    return codes[0] if codes and all(c == codes[0] for c in codes) else 1
