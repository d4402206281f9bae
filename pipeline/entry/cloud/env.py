"""Typed reads of the environment variables the cloud entry points take; a bad value is a :class:`ConfigError`
that names the variable."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pipeline.base.errors import JsArchiveError, UsageError
from pipeline.entry.cloud.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """``$name`` as true or false (1/0, yes/no, on/off too); unset: ``default``."""
    text = env.get(name)
    if text is None:
        return default
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"${name} is {text!r}; expected true or false")


def integer(env: Mapping[str, str], name: str, default: int) -> int:
    """``$name`` as an integer; unset or blank: ``default``."""
    text = env.get(name)
    if text is None or not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"${name} is {text!r}, not an integer") from None


def duration(env: Mapping[str, str], name: str) -> float | None:
    """natscli's meaning and format (a Go duration such as ``5s``, or seconds); None: the library's default."""
    from pipeline.base.units import parse_duration

    text = env.get(name)
    if text is None or not text.strip():
        return None
    try:
        return parse_duration(text)
    except JsArchiveError:
        raise ConfigError(f"${name} is {text!r}: give a duration such as 5s, 500ms or 1m30s") from None


def seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """``$name`` as a number of seconds, not negative; unset or blank: ``default``."""
    text = env.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"${name} is {text!r}, not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"${name} must not be negative ({text})")
    return value


def size(env: Mapping[str, str], name: str, default: int) -> int:
    """``$name`` as a size (``20MiB``, plain bytes), more than 0; unset or blank: ``default``."""
    text = env.get(name)
    if text is None or not text.strip():
        return default
    from pipeline.base.units import parse_size

    try:
        value = parse_size(text)
    except UsageError:
        raise ConfigError(f"${name} is {text!r}, not a size (e.g. 20MiB)") from None
    if value <= 0:
        raise ConfigError(f"${name} must be more than 0")
    return value


def items(value: object) -> list[str]:
    """Comma- or whitespace-separated text, or a JSON list from an event."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v for v in re.split(r"[\s,]+", str(value)) if v]


def required(env: Mapping[str, str], name: str, why: str) -> str:
    """``$name``, which must be set; ``why`` says what it is for."""
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigError(f"${name} is not set: {why}")
    return value
