"""Which messages: times (RFC 3339 or a Go duration back from now), sequence ranges and subject filters.

Shared by the readers that select (``inspect``, ``cat``) and by partial restores (:mod:`pipeline.format.rewrite`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from pipeline.base.errors import UsageError
from pipeline.format.natsarc import Message

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$",
    re.IGNORECASE,
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}


def format_ns(ns: int) -> str:
    """RFC 3339 UTC time with nanoseconds, e.g. ``2026-11-23T22:22:40.803875621Z``."""
    secs, frac = divmod(ns, 1_000_000_000)
    t = _EPOCH + dt.timedelta(seconds=secs)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def parse_time(text: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch from an ISO 8601 date or time, or a duration ago.

    ``2026-11-23``, ``2026-11-23T22:22:40Z``, ``2026-11-23 22:22:40.123456789+01:00`` (no zone: UTC), or a
    duration before now such as ``90s``, ``15m``, ``1h30m``, ``2d``, ``1w``.
    """
    s = text.strip()
    if s and _DURATION_PART.sub("", s) == "" and _DURATION_PART.match(s):
        ago = sum(int(float(v) * _UNIT_NS[u]) for v, u in _DURATION_PART.findall(s))
        if now_ns is None:
            now = dt.datetime.now(dt.timezone.utc) - _EPOCH
            now_ns = (now.days * 86_400 + now.seconds) * 1_000_000_000 + now.microseconds * 1_000
        return now_ns - ago
    m = _ISO.match(s)
    if not m:
        raise UsageError(
            f"{text!r} is not a time: give an ISO 8601 date/time (2026-11-23T22:00:00Z) or a duration ago (2h)"
        )
    year, month, day, hour, minute, sec, frac, zone = m.groups()
    try:
        t = dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(sec or 0))
    except ValueError as e:
        raise UsageError(f"{text!r} is not a valid time: {e}") from None
    offset = 0
    if zone and zone.upper() != "Z":
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + (int(digits[2:4]) * 60 if len(digits) > 2 else 0)
        if zone[0] == "-":
            offset = -offset
    delta = t.replace(tzinfo=dt.timezone.utc) - _EPOCH
    secs = delta.days * 86_400 + delta.seconds - offset
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def parse_datetime(text: str, now_ns: int | None = None) -> dt.datetime:
    """:func:`parse_time` as an aware UTC datetime, to the microsecond (rounded down: archive times have no more)."""
    ns = parse_time(text, now_ns)
    try:
        return _EPOCH + dt.timedelta(microseconds=ns // 1_000)
    except OverflowError:
        raise UsageError(f"{text!r} is not a valid time: out of range") from None


def parse_seq_range(text: str) -> tuple[int | None, int | None]:
    """``A-B`` (inclusive), ``A-`` (from A), ``-B`` (up to B) or ``A`` (just A)."""
    m = re.fullmatch(r"\s*(\d*)\s*(-?)\s*(\d*)\s*", text or "")
    if not m or not (m.group(1) or m.group(3)) or (not m.group(2) and m.group(3)):
        raise UsageError(f"{text!r} is not a sequence range: use A-B, A-, -B or A")
    first = int(m.group(1)) if m.group(1) else None
    last = int(m.group(3)) if m.group(3) else (first if not m.group(2) else None)
    if first is not None and last is not None and first > last:
        raise UsageError(f"sequence range {text!r} is empty: {first} > {last}")
    return first, last


def check_subject_filter(pattern: str) -> list[str]:
    """The tokens of a subject filter, which may use ``*`` (one token) and ``>`` (one or more, last only)."""
    tokens = pattern.split(".")
    if not pattern or any(not t for t in tokens) or any(c.isspace() for c in pattern):
        raise UsageError(f"{pattern!r} is not a valid subject filter")
    if ">" in tokens[:-1]:
        raise UsageError(f"subject filter {pattern!r}: '>' may only be the last token")
    return tokens


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` one or more."""
    ptoks = pattern.split(".")
    stoks = subject.split(".")
    for i, p in enumerate(ptoks):
        if p == ">":
            return len(stoks) > i
        if i >= len(stoks) or (p != "*" and p != stoks[i]):
            return False
    return len(stoks) == len(ptoks)


@dataclass
class MessageFilter:
    """Which messages :func:`iter_messages` yields; every given condition must hold."""

    subjects: tuple[str, ...] = ()  # any of these NATS subject filters
    since: int | None = None  # ns since the epoch, inclusive
    until: int | None = None  # ns since the epoch, exclusive
    first_seq: int | None = None  # inclusive
    last_seq: int | None = None  # inclusive
    _cache: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.subjects = tuple(self.subjects)
        for p in self.subjects:
            check_subject_filter(p)

    def subject_ok(self, subject: str) -> bool:
        if not self.subjects:
            return True
        hit = self._cache.get(subject)
        if hit is None:
            hit = any(subject_matches(p, subject) for p in self.subjects)
            if len(self._cache) < 100_000:
                self._cache[subject] = hit
        return hit

    def matches(self, m: Message) -> bool:
        return (
            (self.first_seq is None or m.sequence >= self.first_seq)
            and (self.last_seq is None or m.sequence <= self.last_seq)
            and (self.since is None or m.timestamp >= self.since)
            and (self.until is None or m.timestamp < self.until)
            and self.subject_ok(m.subject)
        )
