"""``backup.json`` byte for byte: Go's encoding/json as jsm.go applies it.

natscli writes ``json.MarshalIndent(map[string]any{"config": resp.Config, "state": resp.State}, "", "  ")`` where
``resp`` is jsm.go's typed ``api.JSApiStreamSnapshotResponse``. The server's JSON is therefore decoded into jsm.go's
``StreamConfig`` / ``StreamState`` structs and encoded again: keys come out in **jsm.go's struct field order** (not
the server's, which differs, e.g. ``max_msgs_per_subject`` before ``max_msgs``), jsm.go's ``omitempty`` rules decide
what is left out (``compression: "none"`` and ``allow_msg_ttl: false`` are), fields jsm.go lacks are dropped, and
Go's encoder escapes ``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\u003c`` etc. :func:`backup_json` reproduces that
from the config and state a manifest holds (see :data:`GO_STRUCTS`).
"""

from __future__ import annotations

import json
import re
from typing import Any

# jsm.go api.StreamConfig / StreamState and their nested structs (jsm.go v0.4.x, the version natscli 0.3 builds
# with), as (json key, omitempty, type). Types: "str", "int", "bool", "time" (time.Time, never omitted),
# "enum:<zero>" (an int-backed enum whose zero value encodes as <zero>, so omitempty drops exactly that value),
# "[]" (slice), "map" (Go sorts map keys), "*S" (pointer to struct S), "[]*S" / "[]S" (slice of structs), "S"
# (struct value: never omitted). ``allow_batched`` follows ``persist_mode`` as jsm.go added it for 2.14 servers.
GO_STRUCTS: dict[str, list[tuple[str, bool, str]]] = {
    "StreamConfig": [
        ("name", False, "str"),
        ("description", True, "str"),
        ("subjects", True, "[]"),
        ("retention", False, "enum:limits"),
        ("max_consumers", False, "int"),
        ("max_msgs_per_subject", False, "int"),
        ("max_msgs", False, "int"),
        ("max_bytes", False, "int"),
        ("max_age", False, "int"),
        ("max_msg_size", True, "int"),
        ("storage", False, "enum:file"),
        ("discard", False, "enum:old"),
        ("num_replicas", False, "int"),
        ("no_ack", True, "bool"),
        ("template_owner", True, "str"),
        ("duplicate_window", True, "int"),
        ("placement", True, "*Placement"),
        ("mirror", True, "*StreamSource"),
        ("sources", True, "[]*StreamSource"),
        ("compression", True, "enum:none"),
        ("subject_transform", True, "*SubjectTransformConfig"),
        ("republish", True, "*RePublish"),
        ("sealed", False, "bool"),
        ("deny_delete", False, "bool"),
        ("deny_purge", False, "bool"),
        ("allow_rollup_hdrs", False, "bool"),
        ("allow_direct", False, "bool"),
        ("mirror_direct", False, "bool"),
        ("discard_new_per_subject", True, "bool"),
        ("first_seq", True, "int"),
        ("metadata", True, "map"),
        ("allow_msg_ttl", True, "bool"),
        ("subject_delete_marker_ttl", True, "int"),
        ("consumer_limits", False, "StreamConsumerLimits"),
        ("allow_atomic", True, "bool"),
        ("allow_msg_counter", True, "bool"),
        ("allow_msg_schedules", True, "bool"),
        ("persist_mode", True, "enum:default"),
        ("allow_batched", True, "bool"),
    ],
    "StreamConsumerLimits": [("inactive_threshold", True, "int"), ("max_ack_pending", True, "int")],
    "Placement": [("cluster", True, "str"), ("tags", True, "[]"), ("preferred", True, "str")],
    "StreamSource": [
        ("name", False, "str"),
        ("opt_start_seq", True, "int"),
        ("opt_start_time", True, "*time"),
        ("filter_subject", True, "str"),
        ("external", True, "*ExternalStream"),
        ("subject_transforms", True, "[]SubjectTransformConfig"),
        ("consumer", True, "*StreamConsumerSource"),
    ],
    # Durable sourcing (nats-server 2.14): both fields omitempty.
    "StreamConsumerSource": [("name", True, "str"), ("deliver_subject", True, "str")],
    "ExternalStream": [("api", False, "str"), ("deliver", False, "str")],
    "SubjectTransformConfig": [("src", False, "str"), ("dest", False, "str")],
    "RePublish": [("src", True, "str"), ("dest", False, "str"), ("headers_only", True, "bool")],
    "StreamState": [
        ("messages", False, "int"),
        ("bytes", False, "int"),
        ("first_seq", False, "int"),
        ("first_ts", False, "time"),
        ("last_seq", False, "int"),
        ("last_ts", False, "time"),
        ("num_deleted", True, "int"),
        ("deleted", True, "[]"),
        ("num_subjects", True, "int"),
        ("subjects", True, "map"),
        ("lost", True, "*LostStreamData"),
        ("consumer_count", False, "int"),
    ],
    "LostStreamData": [("msgs", False, "[]"), ("bytes", False, "int")],
}
GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def _zero(typ: str) -> Any:
    if typ == "str":
        return ""
    if typ == "int":
        return 0
    if typ == "bool":
        return False
    if typ == "time":
        return GO_ZERO_TIME
    if typ.startswith("enum:"):
        return typ[5:]
    if typ in GO_STRUCTS:
        return _go_struct({}, typ)
    return None  # nil slice, map or pointer encodes as null


def _is_empty(value: Any, typ: str) -> bool:
    """Go's omitempty: false, 0, "", nil and empty slices/maps; an enum at its zero value; never a struct."""
    if value is None:
        return typ != "time" and typ not in GO_STRUCTS
    if typ.startswith("enum:"):
        return value in ("", typ[5:])
    if typ in GO_STRUCTS or typ == "time":
        return False
    if isinstance(value, bool):
        return value is False
    if isinstance(value, (int, str, list, dict)):
        return not value
    return False


def _go_value(value: Any, typ: str) -> Any:
    if value is None:
        return _zero(typ)
    if typ in GO_STRUCTS and isinstance(value, dict):
        return _go_struct(value, typ)
    if typ.startswith("*") and typ[1:] in GO_STRUCTS and isinstance(value, dict):
        return _go_struct(value, typ[1:])
    if typ.startswith("[]") and typ[2:].lstrip("*") in GO_STRUCTS and isinstance(value, list):
        return [_go_value(v, typ[2:].lstrip("*")) for v in value]
    if typ == "map" and isinstance(value, dict):
        return {k: value[k] for k in sorted(value)}  # Go encodes map keys sorted
    if typ.startswith("enum:") and value == "":
        return typ[5:]
    return value


def _go_struct(obj: dict, struct: str) -> dict:
    """``obj`` as jsm.go would re-encode it: struct field order, omitempty, zero values for absent fields.

    Keys jsm.go does not know are kept (after the known ones, sorted) rather than dropped as natscli would: they
    are config a newer server sent, and a restore from the exported directory should not lose it.
    """
    out: dict = {}
    for key, omitempty, typ in GO_STRUCTS[struct]:
        value = obj.get(key)
        if omitempty and _is_empty(value, typ):
            continue
        out[key] = _go_value(value, typ)
    known = {k for k, _, _ in GO_STRUCTS[struct]}
    for key in sorted(k for k in obj if k not in known):
        out[key] = obj[key]
    return out


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def go_marshal_indent(obj: Any) -> bytes:
    """``json.MarshalIndent(obj, "", "  ")`` for already-ordered dicts: Go's layout and its HTML-safe escaping."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, separators=(",", ": "), allow_nan=False)
    # These characters occur only inside strings in JSON text, so replacing them everywhere is exact. Go writes
    # control characters as \b \f \n \r \t or \u00xx (lowercase), as Python does.
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    text = _LONE_SURROGATE.sub("\ufffd", text)  # Go replaces invalid UTF-8 with U+FFFD
    return text.encode("utf-8")


def backup_json(config: dict, state: dict) -> bytes:
    """The bytes natscli writes as ``backup.json`` for a snapshot whose response had ``config`` and ``state``."""
    return go_marshal_indent({"config": _go_struct(config, "StreamConfig"), "state": _go_struct(state, "StreamState")})
