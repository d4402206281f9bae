"""The server's own answer, before any byte is sent, to "can you hold this stream here?".

A restore request is accepted before the stream is created, so a placement the target cannot meet (no suitable
peers, replicas on a standalone server, account or server limits) used to surface only after every chunk was sent
(exit 9). :func:`preflight_target` instead creates a throwaway placeholder stream with the restore's storage,
replicas, placement and byte reservation, and deletes it again: a refusal is a :class:`ServerRefused` (exit 8)
before anything else happens. Every restore runs it; a replace runs it before deleting the live stream too.
"""

from __future__ import annotations

import contextlib
import secrets

from pipeline.base.errors import JsArchiveError, ServerRefused, setting
from pipeline.jetstream.client import JetStream

PLACEHOLDER_PREFIX = "JSARCHIVE_PREFLIGHT_"
SUBJECTS_OVERLAP = 10065


def placeholder_config(config: dict, state: dict) -> tuple[str, dict]:
    """A throwaway stream placed and sized like the restore: its name and config."""
    token = secrets.token_hex(6).upper()
    name = PLACEHOLDER_PREFIX + token
    cfg: dict = {
        "name": name,
        "subjects": [f"_jsarchive.preflight.{token}"],
        "storage": config.get("storage", "file"),
        "num_replicas": int(config.get("num_replicas", 1) or 1),
        "retention": "limits",
        "metadata": {"jsarchive.preflight": "1"},
    }
    if config.get("placement"):
        cfg["placement"] = config["placement"]
    reserve = int(config.get("max_bytes", -1) or -1)
    if reserve <= 0:
        reserve = int(state.get("bytes", 0) or 0)
    if reserve > 0:
        cfg["max_bytes"] = reserve
    return name, cfg


async def preflight_target(js: JetStream, stream: str, config: dict, state: dict, *, live: bool = False) -> None:
    """Show the target accepts a stream placed like the restore (exit 8 if not). ``live``: a live stream of that
    name exists and is about to be replaced — the error says it was not touched."""
    name, cfg = placeholder_config(config, state)
    try:
        await js.create_stream(cfg, timeout=30.0)
    except JsArchiveError as e:
        if getattr(e, "err_code", 0) == SUBJECTS_OVERLAP:
            return  # a catch-all stream owns every subject, the placeholder's too: this says nothing about placement
        asked = {k: cfg[k] for k in ("storage", "num_replicas", "placement", "max_bytes") if k in cfg}
        raise ServerRefused(
            f"the target refused a stream placed like the restore of {stream!r} ({asked}): {e}; "
            + (f"live stream {stream!r} was not touched" if live else "nothing was sent")
            + f" (check {setting('cluster')}, {setting('tag')} and {setting('replicas')})"
        ) from None
    finally:
        # the placeholder is ours (its name is random): delete it whatever happened
        with contextlib.suppress(JsArchiveError):
            await js.delete_until_gone(name, 30.0)
