"""Sizes and durations as people and natscli write them, and bytes written for people."""

from __future__ import annotations

import re

from pipeline.base.errors import UsageError


def parse_size(text: str) -> int:
    """``262144``, ``256KiB``, ``256KB``, ``256k``, ``1MiB``: units are powers of 1024, as natscli treats them."""
    m = _SIZE.match(str(text))
    if not m:
        raise UsageError(f"{text!r} is not a size (e.g. 262144, 256KiB, 1MiB)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float) -> float:
    """Seconds from a Go duration as natscli takes them (``5s``, ``500ms``, ``1m30s``, ``1h``) or plain seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip()
        try:
            seconds = float(s)
        except ValueError:
            pos, seconds = 0, 0.0
            for m in _DURATION_PART.finditer(s):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
                pos = m.end()
            if not s or pos != len(s):
                raise UsageError(f"{text!r} is not a duration (e.g. 5s, 500ms, 1m30s, 1h, or seconds)") from None
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise UsageError(f"{text!r} is not a positive duration")
    return seconds


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b?)\s*$", re.IGNORECASE)
