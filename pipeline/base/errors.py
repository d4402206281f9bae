"""One exception family, each kind with the exit code a scheduler can act on (documented in the README).

Errors are structured: a ``kind`` and exit code, an optional ``subject`` (the stream, backup or object it is about)
and a message in which every user setting is a :func:`setting` reference rather than a spelled-out flag. Each front
end phrases those references in its own terms (:meth:`JsArchiveError.phrased`): the CLI as ``--force``, the cloud
functions as ``$JSARCHIVE_FORCE``. ``str(err)`` is the CLI's phrasing, the project's documented vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SETTING = re.compile("\x1f([a-z0-9-]+)(?:=([^\x1f]*))?\x1f")

Spelling = Callable[[str, "str | None"], str]


def setting(name: str, value: object = None) -> str:
    """A reference to a user setting inside an error message, by its CLI name without dashes (``"force"``,
    ``"store"`` with value ``"decoded"``); :meth:`JsArchiveError.phrased` spells it for the reader's front end."""
    return f"\x1f{name}={value}\x1f" if value is not None else f"\x1f{name}\x1f"


def cli_spelling(name: str, value: str | None) -> str:
    return f"--{name} {value}" if value is not None else f"--{name}"


def phrase(text: str, spell: Spelling = cli_spelling) -> str:
    """``text`` with its setting references spelled by ``spell``."""
    return _SETTING.sub(lambda m: spell(m.group(1), m.group(2)), text)


def settings_named(text: str) -> list[str]:
    """The settings a message refers to, in order (CLI names without dashes)."""
    return [m.group(1) for m in _SETTING.finditer(text)]


class JsArchiveError(Exception):
    """Base class: ``str(err)`` is the one message shown to the user (settings spelled as CLI flags)."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str = "", *, subject: str | None = None) -> None:
        super().__init__(message)
        self.subject = subject

    @property
    def template(self) -> str:
        """The message with its setting references unspelled."""
        return str(self.args[0]) if self.args else ""

    def phrased(self, spell: Spelling) -> str:
        return phrase(self.template, spell)

    def __str__(self) -> str:
        return self.phrased(cli_spelling)

    def to_json(self, spell: Spelling = cli_spelling) -> dict:
        doc: dict = {"kind": self.kind, "exit_code": self.exit_code, "message": self.phrased(spell)}
        if self.subject is not None:
            doc["subject"] = self.subject
        if names := settings_named(self.template):
            doc["settings"] = names
        return doc


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
