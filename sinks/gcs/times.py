"""RFC 3339 timestamps as the GCS JSON API writes and reads them."""

from __future__ import annotations

import datetime as dt
import re


def _parse_time(value: str | None) -> dt.datetime | None:
    """RFC 3339 as GCS writes it (``Z``, 0-9 fractional digits) on every supported Python."""
    if not value:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", value.strip())
    if not m:
        return None
    base, frac, zone = m.groups()
    stamp = dt.datetime.fromisoformat(base + (f".{(frac + '000000')[:6]}" if frac else ""))
    if zone in (None, "Z"):
        return stamp.replace(tzinfo=dt.timezone.utc)
    sign = 1 if zone[0] == "+" else -1
    offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return stamp.replace(tzinfo=dt.timezone(sign * offset))


def _format_time(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
