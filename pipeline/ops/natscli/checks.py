"""What import accepts in a ``backup.json``: a stream name the server and the archive can use, and the config and
state fields that import, the manifest summary and later restores read, each of the right type."""

from __future__ import annotations

import re

from pipeline.format import objects

# What a stream name may not hold: nats-server's isValidName (whitespace, '.', '*', '>'), the path separators its
# stream create refuses, and control characters. The name becomes a path in the archive (refs/<name>/...).
_BAD_NAME_CHARS = re.compile(r"[\s.*>/\\\x00-\x1f\x7f]")
MAX_STREAM_NAME = 255  # nats-server's JSMaxNameLen
_ENUMS = {
    "retention": ("limits", "interest", "workqueue"),
    "discard": ("old", "new"),
    "storage": ("file", "memory"),
    "compression": ("none", "s2"),
}
_LIMITS = ("max_consumers", "max_msgs_per_subject", "max_msgs", "max_bytes", "max_msg_size")  # -1: unlimited
_NON_NEGATIVE = ("max_age", "duplicate_window", "subject_delete_marker_ttl", "first_seq")  # nanoseconds, a seq
_FLAGS = (
    "no_ack",
    "sealed",
    "deny_delete",
    "deny_purge",
    "allow_rollup_hdrs",
    "allow_direct",
    "mirror_direct",
    "discard_new_per_subject",
    "allow_msg_ttl",
    "allow_atomic",
    "allow_msg_counter",
    "allow_msg_schedules",
    "allow_batched",
)
_STATE_COUNTS = ("messages", "bytes", "first_seq", "last_seq", "num_deleted", "num_subjects", "consumer_count")


def _boolean(v: object, name: str) -> bool:
    if not isinstance(v, bool):
        raise objects.Invalid(f"{name} is not true or false")
    return v


def _strings(v: object, name: str) -> list:
    items = objects.array(v, name)
    for i, item in enumerate(items):
        objects.string(item, f"{name}[{i}]", nonempty=True)
    return items


def _source(v: object, name: str) -> None:
    src = objects.obj(v, name)
    objects.string(src.get("name"), f"{name}.name", nonempty=True)
    objects.optional(src, "filter_subject", objects.string, name)
    objects.optional(src, "opt_start_seq", objects.integer, name)
    if src.get("consumer") is not None:
        consumer = objects.obj(src["consumer"], f"{name}.consumer")
        for f in ("name", "deliver_subject"):
            objects.optional(consumer, f, objects.string, f"{name}.consumer")


def check_stream_name(name: object, what: str) -> str:
    """A stream name the server accepts and the archive can use as a path component."""
    name = objects.string(name, what, nonempty=True)
    if len(name) > MAX_STREAM_NAME:
        raise objects.Invalid(f"{what} is {len(name)} characters long; a stream name has at most {MAX_STREAM_NAME}")
    if bad := _BAD_NAME_CHARS.search(name):
        raise objects.Invalid(f"{what} {name!r} holds {bad.group()!r}, which no stream name may hold")
    return name


def check_backup_config(config: dict) -> None:
    """The config fields that import, the manifest summary and later restores read, strictly typed where present.
    Fields jsm.go does not know are left alone: a newer server's config is kept, not judged."""
    check_stream_name(config.get("name"), "config.name")
    for f in ("description", "template_owner", "persist_mode"):
        objects.optional(config, f, objects.string, "config")
    objects.optional(config, "subjects", _strings, "config")
    for f, allowed in _ENUMS.items():
        if config.get(f) is not None and config[f] not in allowed:
            raise objects.Invalid(f"config.{f} is {config[f]!r}, not one of {', '.join(allowed)}")
    if config.get("num_replicas") is not None:
        objects.integer(config["num_replicas"], "config.num_replicas", 1)
    for f in _LIMITS:
        objects.optional(config, f, lambda v, n: objects.integer(v, n, -1), "config")
    for f in _NON_NEGATIVE:
        objects.optional(config, f, objects.integer, "config")
    for f in _FLAGS:
        objects.optional(config, f, _boolean, "config")
    if config.get("placement") is not None:
        placement = objects.obj(config["placement"], "config.placement")
        for f in ("cluster", "preferred"):
            objects.optional(placement, f, objects.string, "config.placement")
        objects.optional(placement, "tags", _strings, "config.placement")
    objects.optional(config, "mirror", _source, "config")
    for i, src in enumerate(objects.array(config.get("sources") or [], "config.sources")):
        _source(src, f"config.sources[{i}]")
    if config.get("metadata") is not None:
        for k, v in objects.obj(config["metadata"], "config.metadata").items():
            objects.string(v, f"config.metadata[{k!r}]")
    for f in ("subject_transform", "republish", "consumer_limits"):
        objects.optional(config, f, objects.obj, "config")
    if config.get("consumer_limits") is not None:
        for f in ("inactive_threshold", "max_ack_pending"):
            objects.optional(config["consumer_limits"], f, objects.integer, "config.consumer_limits")


def check_backup_state(state: dict) -> None:
    """The state fields recorded in the manifest (its summary counts) and compared after a restore."""
    for f in _STATE_COUNTS:
        objects.optional(state, f, objects.integer, "state")
    for f in ("first_ts", "last_ts"):
        objects.optional(state, f, objects.string, "state")
    for i, seq in enumerate(objects.array(state.get("deleted") or [], "state.deleted")):
        objects.integer(seq, f"state.deleted[{i}]")
    if state.get("subjects") is not None:
        for k, v in objects.obj(state["subjects"], "state.subjects").items():
            objects.integer(v, f"state.subjects[{k!r}]")
    objects.optional(state, "lost", objects.obj, "state")
