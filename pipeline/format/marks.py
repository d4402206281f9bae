"""The mark a restore puts on the stream it creates, so that only that restore may ever delete it.

A restore sends its stream config with these metadata keys (stream metadata exists from nats-server 2.10):

- ``jsarchive.restore.id``: a fresh random id of this restore run;
- ``jsarchive.restore.backup``: the manifest id of the backup being restored;
- ``jsarchive.restore.state``: ``in-progress`` while data is sent and checked, ``complete`` once the restored
  stream has been compared with the backup;
- ``jsarchive.restore.at``: when the restore started (UTC, ISO 8601), then when it completed.

Cleanup after a failure deletes a stream only if it carries this run's id (another restore that won a race for the
name, or a stream someone created meanwhile, is never touched). A stream left ``in-progress`` by a killed restore is
a *partial restore*: ``dr status`` reports it as such and the next restore names it with the command that removes
it. The completed mark stays on the stream as provenance ("restored from backup X at T"); a later backup of that
stream records it in its config like any other metadata, and a restore of that backup replaces it with its own.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

RESTORE_ID = "jsarchive.restore.id"
RESTORE_BACKUP = "jsarchive.restore.backup"
RESTORE_STATE = "jsarchive.restore.state"
RESTORE_AT = "jsarchive.restore.at"
KEYS = (RESTORE_ID, RESTORE_BACKUP, RESTORE_STATE, RESTORE_AT)

IN_PROGRESS = "in-progress"
COMPLETE = "complete"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_restore_id() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True)
class RestoreMark:
    restore_id: str
    backup: str
    state: str
    at: str

    @property
    def partial(self) -> bool:
        return self.state != COMPLETE

    def describe(self) -> str:
        if self.partial:
            return f"partial restore of backup {self.backup[:12]} (restore {self.restore_id}, started {self.at})"
        return f"restored from backup {self.backup[:12]} at {self.at}"


def stamp(config: dict, restore_id: str, backup: str, state: str = IN_PROGRESS) -> dict:
    """``config`` with this restore's mark in its metadata (a copy; other metadata is kept)."""
    cfg = dict(config)
    meta = {k: v for k, v in (cfg.get("metadata") or {}).items() if k not in KEYS}
    meta.update({RESTORE_ID: restore_id, RESTORE_BACKUP: backup, RESTORE_STATE: state, RESTORE_AT: _now()})
    cfg["metadata"] = meta
    return cfg


def mark_of(info_or_config: dict | None) -> RestoreMark | None:
    """The restore mark of a stream (its STREAM.INFO answer or its config), or None if it carries none."""
    if not isinstance(info_or_config, dict):
        return None
    cfg = info_or_config.get("config") if "config" in info_or_config else info_or_config
    meta = (cfg or {}).get("metadata") if isinstance(cfg, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get(RESTORE_ID), str):
        return None
    return RestoreMark(
        restore_id=meta[RESTORE_ID],
        backup=str(meta.get(RESTORE_BACKUP, "")),
        state=str(meta.get(RESTORE_STATE, "")),
        at=str(meta.get(RESTORE_AT, "")),
    )


def is_partial(info: dict | None) -> bool:
    """True for a stream a restore created and never finished (killed, or still running)."""
    mark = mark_of(info)
    return mark is not None and mark.partial


def carries(info: dict | None, restore_id: str) -> bool:
    """True if the stream carries the mark of restore ``restore_id`` (and so that restore may delete it)."""
    mark = mark_of(info)
    return mark is not None and mark.restore_id == restore_id
