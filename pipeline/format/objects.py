"""The one gate every small archive object passes before anything trusts it.

Anyone who can write to the bucket (or the archive directory) can plant an object, so a reader treats manifests,
refs, sets, key-slot objects, run records and an imported ``backup.json`` as hostile until checked here:

- **size first**: at most ``limit + 1`` bytes are ever read (a ranged read), so a planted 10 GB "manifest" costs
  ``limit`` bytes of memory, not 10 GB;
- **shape before parsing**: nesting depth and number lengths are checked by a linear scan that does not recurse,
  because ``json.loads`` recurses once per level (200,000 ``[`` raise RecursionError) and ints of more than 4300
  digits raise a ValueError that is not a JSONDecodeError;
- **strict types**: objects where objects are expected, ints that are not bools or floats, strings, hex ids.

Every violation is an :class:`~pipeline.base.errors.IntegrityError` (exit 4) that names the object. The limits are
listed in docs/format.md ("Limits readers enforce").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pipeline.base.errors import IntegrityError

KiB = 1024
MiB = 1024 * KiB

# A manifest of 10,000 blocks is about 1 MiB; 64 MiB leaves room for huge stream configs and many key slots.
MAX_MANIFEST = 64 * MiB
MAX_REF = 4 * KiB  # 64 hex digits and a newline
MAX_SET = 64 * MiB  # about 500 bytes per stream: over 100,000 streams
MAX_KEYSLOT = 64 * KiB  # one wrapped 32-byte key and its public names
MAX_RUN_RECORD = 1 * MiB  # a plan lists every stream name of the account
MAX_BACKUP_JSON = 16 * MiB  # natscli's config + state of one stream
MAX_SIGNATURE = 4 * KiB  # signatures/<id>/<fingerprint>, drills/<report>.sig: a key, a signature, their names
MAX_SMALL = MAX_MANIFEST  # any other small object read through Repository.get_small
MAX_DEPTH = 64  # our own objects nest at most 6 levels; stream configs a few more
MAX_NUMBER_DIGITS = 100  # JSON numbers in these objects are at most 20 digits (uint64)
FIRST_READ = 256 * KiB  # most objects are read in one request of this size

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# A JSON string, unrolled so the regex engine never backtracks: in valid JSON every '"' outside a string opens one.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_LONG_NUMBER = re.compile(rb"[0-9]{%d,}" % (MAX_NUMBER_DIGITS + 1))
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_FOLD = bytes.maketrans(b"{}", b"[]")


class Invalid(ValueError):
    """A field of an object has the wrong type or value; the message names the field."""


class TooLarge(IntegrityError):
    """An object is larger than its kind may be: it was never read whole."""


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n // KiB} KiB" if n % KiB == 0 else f"{n} bytes"


def read_capped(sink: Any, key: str, limit: int) -> bytes:
    """``key``'s bytes, reading at most ``limit + 1`` of them; :class:`TooLarge` if there are more.

    Storage errors (``sinks.SinkError``, e.g. ObjectNotFound) are raised as they are, for the caller to map.
    """
    first = min(limit + 1, FIRST_READ)
    raw = sink.get_range(key, 0, first)
    if len(raw) == first:
        # Only large objects get a second read: a read of limit + 1 bytes allocates that much up front in some sinks.
        raw += sink.get_range(key, first, limit + 1 - first)
    if len(raw) > limit:
        raise TooLarge(
            f"{key} in {sink.url} is larger than {_size(limit)}, the most a reader accepts for it: it was not read"
        )
    return raw


def check_shape(raw: bytes, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``max_depth`` or holding a number longer than MAX_NUMBER_DIGITS, in linear
    time and without recursion. Other syntax errors are left to the parser."""
    outside = _STRING.sub(b'""', raw)
    if _LONG_NUMBER.search(outside):
        raise IntegrityError(f"{what} holds a number of more than {MAX_NUMBER_DIGITS} digits: not a valid object")
    # Only depth matters here, not which kind of bracket: fold '{' '}' into '[' ']' (the parser catches mismatches).
    brackets = outside.translate(_FOLD, _NOT_BRACKET)
    # Each pass removes the innermost pairs, and a pair survives a pass only if it still holds one, so what
    # survives p passes is nested deeper than p. When no pair is left but brackets are (unbalanced JSON), the
    # parser would still descend through the unclosed '[': p plus their number bounds how deep.
    passes = 0
    while brackets and passes <= max_depth:
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break
        brackets, passes = shorter, passes + 1
    if passes + brackets.count(b"[") > max_depth:
        raise IntegrityError(f"{what} nests deeper than {max_depth} levels: not a valid object")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        # Two readers (or two JSON libraries) could each see a different value for the same field.
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise Invalid(f"field {k!r} appears twice")
            seen.add(k)
    return out


def _no_constant(name: str) -> Any:
    raise Invalid(f"{name} is not a JSON number")


def parse_json(raw: bytes, what: str, limit: int) -> Any:
    """Strict JSON of at most ``limit`` bytes: UTF-8, no duplicate fields, no NaN/Infinity, shape-checked first."""
    if len(raw) > limit:
        raise TooLarge(f"{what} is larger than {_size(limit)}, the most a reader accepts for it")
    check_shape(raw, what)
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise IntegrityError(f"{what} is not UTF-8 JSON") from None
    except Invalid as e:
        raise IntegrityError(f"{what} is not valid: {e}") from None
    except ValueError as e:  # JSONDecodeError, and int() of a too-long number
        raise IntegrityError(f"{what} is not JSON ({e})") from None
    except RecursionError:  # unreachable after check_shape; kept so no input can end in a traceback
        raise IntegrityError(f"{what} nests too deeply") from None


# -- strict field checks (raise Invalid naming the field) ------------------------------------------------------


def obj(v: object, name: str) -> dict:
    if not isinstance(v, dict):
        raise Invalid(f"{name} is not an object")
    return v


def array(v: object, name: str) -> list:
    if not isinstance(v, list):
        raise Invalid(f"{name} is not an array")
    return v


def integer(v: object, name: str, minimum: int | None = 0) -> int:
    """A JSON integer: not a bool, float or numeric string; at least ``minimum`` unless that is None."""
    if type(v) is not int:
        raise Invalid(f"{name} is not an integer")
    if minimum is not None and v < minimum:
        raise Invalid(f"{name} is {v}, less than {minimum}")
    return v


def string(v: object, name: str, nonempty: bool = False) -> str:
    if not isinstance(v, str) or (nonempty and not v):
        raise Invalid(f"{name} is not a{' non-empty' if nonempty else ''} string")
    return v


def hex_id(v: object, name: str, digits: int = 64) -> str:
    pattern = _HEX64 if digits == 64 else _HEX32 if digits == 32 else re.compile(f"[0-9a-f]{{{digits}}}")
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise Invalid(f"{name} is not {digits} lowercase hex digits")
    return v


def optional(d: dict, field: str, check: Callable[[object, str], Any], name: str) -> None:
    """``d[field]`` passes ``check`` if it is present and not null."""
    if d.get(field) is not None:
        check(d[field], f"{name}.{field}")


def ints(d: object, name: str, fields: tuple[str, ...]) -> None:
    """The named fields of object ``d`` are integers (of any sign) where present: readers int() them, and
    ``int(None)`` is a TypeError, so null is no more an integer here than "12" is."""
    d = obj(d, name)
    for f in fields:
        if f in d:
            integer(d[f], f"{name}.{f}", None)


# -- the objects -------------------------------------------------------------------------------------------------

_SLOT_STRINGS = ("recipient", "key_id", "region", "key_name", "key_version")


def key_slot(v: object, name: str) -> dict:
    """A key slot object (docs/format.md §7.4): ``type`` and ``wrapped`` strings, the public names strings."""
    s = obj(v, name)
    string(s.get("type"), f"{name}.type", nonempty=True)
    string(s.get("wrapped"), f"{name}.wrapped")
    for f in _SLOT_STRINGS:
        optional(s, f, string, name)
    return s


_STATE_INTS = ("messages", "bytes", "first_seq", "last_seq", "num_deleted", "num_subjects", "consumer_count")
_SUMMARY_INTS = ("messages", "first_seq", "last_seq", "bytes", "consumers", "snapshot_bytes", "replicas")
_HELD_INTS = ("messages", "first_seq", "last_seq", "consumers")


def manifest_envelope(env: object) -> dict:
    """The clear envelope's fields that readers use (docs/format.md §4), strictly typed."""
    env = obj(env, "the manifest")
    backup_id = hex_id(env.get("backup_id"), "backup_id", 32)
    for f in ("stream", "created", "snapshot_format"):
        string(env.get(f), f, nonempty=f == "stream")
    data = obj(env.get("data"), "data")
    if data.get("key") != f"data/{backup_id}":
        raise Invalid("data.key is not data/<backup_id>")
    integer(data.get("size"), "data.size")
    optional(data, "block_size", integer, "data")
    for i, b in enumerate(array(env.get("blocks"), "blocks")):
        if not isinstance(b, list) or len(b) != 3:
            raise Invalid(f"blocks[{i}] is not [offset, length, sha256]")
        integer(b[0], f"blocks[{i}] offset")
        integer(b[1], f"blocks[{i}] length")
        hex_id(b[2], f"blocks[{i}] sha256")
    enc = obj(env.get("encryption"), "encryption")
    string(enc.get("scheme"), "encryption.scheme")
    for i, s in enumerate(array(enc.get("key_slots", []), "encryption.key_slots")):
        key_slot(s, f"encryption.key_slots[{i}]")
    for f in ("summary", "server", "tool", "origin"):
        optional(env, f, obj, "manifest")
    if env.get("summary") is not None:
        ints(env["summary"], "summary", _SUMMARY_INTS)
    if "body" not in env:
        raise Invalid("body is missing")
    return env


def clear_body(body: object, blocks: int) -> dict:
    """An unencrypted manifest's body (docs/format.md §5): what restore, verify, inspect and export index."""
    body = obj(body, "body")
    obj(body.get("config"), "body.config")
    for f in ("state", "held", "point", "timings"):
        optional(body, f, obj, "body")
    if body.get("state") is not None:
        ints(body["state"], "body.state", _STATE_INTS)
    if body.get("held") is not None:
        ints(body["held"], "body.held", _HELD_INTS)
    optional(body, "consumers", array, "body")
    for i, c in enumerate(body.get("consumers") or []):
        obj(c, f"body.consumers[{i}]")
    snap = obj(body.get("snapshot"), "body.snapshot")
    integer(snap.get("bytes"), "body.snapshot.bytes")
    for f in ("format", "inner_encoding"):
        optional(snap, f, string, "body.snapshot")
    optional(snap, "received_bytes", integer, "body.snapshot")
    comp = obj(body.get("compression"), "body.compression")
    if comp.get("algorithm") not in ("zstd", "none"):
        raise Invalid("body.compression.algorithm is neither zstd nor none")
    optional(comp, "level", lambda v, n: integer(v, n, None), "body.compression")
    plain = array(body.get("plain_blocks"), "body.plain_blocks")
    if len(plain) != blocks:
        raise Invalid(f"body.plain_blocks has {len(plain)} entries for {blocks} blocks")
    for i, p in enumerate(plain):
        if not isinstance(p, list) or len(p) != 2:
            raise Invalid(f"body.plain_blocks[{i}] is not [length, sha256]")
        integer(p[0], f"body.plain_blocks[{i}] length")
        hex_id(p[1], f"body.plain_blocks[{i}] sha256")
    return body


_SET_ENTRY_INTS = ("messages", "bytes", "stored_bytes", "consumers", "replicas")


def backup_set(doc: object) -> dict:
    """A set's fields beyond the ones docs/format.md §12 makes authoritative, typed so summaries cannot crash."""
    doc = obj(doc, "the set")
    for i, e in enumerate(array(doc.get("streams"), "streams")):
        e = obj(e, f"streams[{i}]")
        string(e.get("stream"), f"streams[{i}].stream", nonempty=True)
        hex_id(e.get("manifest_id"), f"streams[{i}].manifest_id")
        ints(e, f"streams[{i}]", _SET_ENTRY_INTS)
        for f in ("backup_id", "created", "snapshot_format", "storage"):
            optional(e, f, string, f"streams[{i}]")
    for f in ("started", "finished"):
        string(doc.get(f), f)
    optional(doc, "run", string, "set")
    optional(doc, "shards", lambda v, n: integer(v, n, 1), "set")
    for f in ("account", "origin", "options", "tool"):
        optional(doc, f, obj, "set")
    if doc.get("account") is not None:
        optional(doc["account"], "name", string, "account")
    if doc.get("origin") is not None:
        optional(doc["origin"], "type", string, "origin")
    for i, s in enumerate(array(doc.get("skipped") or [], "skipped")):
        string(obj(s, f"skipped[{i}]").get("stream"), f"skipped[{i}].stream")
    for i, w in enumerate(array(doc.get("warnings") or [], "warnings")):
        string(w, f"warnings[{i}]")
    return doc


def keyslot_object(doc: object) -> dict:
    """An added key-slot object (docs/format.md §7.5), before its ids are compared with the backup's."""
    doc = obj(doc, "the key-slot object")
    string(doc.get("format"), "format")
    integer(doc.get("version"), "version")
    hex_id(doc.get("backup_id"), "backup_id", 32)
    hex_id(doc.get("manifest_id"), "manifest_id")
    key_slot(doc.get("slot"), "slot")
    return doc


def _strings(v: object, name: str) -> None:
    for i, s in enumerate(array(v, name)):
        string(s, f"{name}[{i}]")


def _shard(v: object, name: str) -> None:
    s = obj(v, name)
    count = integer(s.get("count"), f"{name}.count", 1)
    index = integer(s.get("index"), f"{name}.index")
    if index >= count:
        raise Invalid(f"{name}.index {index} is not below its count {count}")


RUN_PLAN = "jsarchive.run-plan"
RUN_STREAM = "jsarchive.run-stream"
RUN_FAILURE = "jsarchive.run-failure"


def run_record(doc: object) -> dict:
    """A ``runs/<run>/…`` record (docs/format.md §13), typed by its ``format``; unknown formats pass as objects
    (the reader that expects a kind checks ``format`` itself)."""
    doc = obj(doc, "the run record")
    fmt = doc.get("format")
    if fmt not in (RUN_PLAN, RUN_STREAM, RUN_FAILURE):
        return doc
    integer(doc.get("version"), "version")
    string(doc.get("run"), "run")
    _shard(doc.get("shard"), "shard")
    if fmt == RUN_PLAN:
        string(doc.get("created"), "created")
        _strings(doc.get("streams"), "streams")
        _strings(doc.get("mine"), "mine")
        optional(doc, "warnings", _strings, "plan")
        for f in ("account", "options", "tool"):
            optional(doc, f, obj, "plan")
    elif fmt == RUN_STREAM:
        string(doc.get("stream"), "stream", nonempty=True)
        string(doc.get("finished"), "finished")
        optional(doc, "manifest_id", hex_id, "record")
        optional(doc, "skipped", string, "record")
        optional(doc, "warnings", _strings, "record")
    else:
        string(doc.get("stream"), "stream", nonempty=True)
        err = obj(doc.get("error"), "error")
        optional(err, "message", string, "error")
    return doc


def ref_target(raw: bytes) -> str:
    """The manifest id a ref holds: 64 hex digits, surrounding whitespace allowed (docs/format.md §1)."""
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise Invalid("it is not ASCII") from None
    return hex_id(text, "its content")
