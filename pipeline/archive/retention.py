"""The retention policy engine: which backups of one stream a ``--keep-*`` policy keeps, and why.

Pure functions, no storage: :func:`apply_policy` takes ``(id, created)`` pairs and a :class:`Policy` and returns
one :class:`Decision` per backup. The semantics are restic's ``forget`` policy (``internal/restic/
snapshot_policy.go``), applied per stream, in UTC:

- Backups are taken newest first (ties: the greater id first).
- ``last N`` keeps the N newest backups.
- ``hourly/daily/weekly/monthly/yearly N`` keeps, for each of the last N periods (UTC hour, day, ISO week,
  month, year) that *have* backups, the newest backup in it. Periods without backups do not count. If there are
  fewer such periods than N, the oldest backup is kept as well (restic: "the history is kept as long as the
  counts allow").
- ``N = -1`` means unlimited: every period.
- ``within D`` keeps every backup created less than D before the newest backup (not before *now*: a schedule
  that stopped does not make prune delete everything). D is like restic's ``1y2m3d4h`` (``y`` years, ``m``
  months, ``w`` weeks, ``d`` days, ``h`` hours), calendar arithmetic for years and months. Backups dated in the
  future do not count as the newest.
- A backup is kept if any rule keeps it; each survivor carries the names of the rules that keep it.
- The empty policy keeps everything (reason ``"no policy"``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.base.errors import UsageError

UNLIMITED = -1
_DURATION = re.compile(r"(\d+)([ymwdh])")
_RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class Duration:
    """A restic-style duration: calendar years and months, then days and hours."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        """``30d``, ``12h``, ``2w``, ``1y6m``, ``1y2m3d4h``: ``m`` is months (as in restic), ``w`` seven days."""
        s = str(text).strip().lower()
        parts = _DURATION.findall(s)
        if not s or "".join(n + u for n, u in parts) != s:
            raise UsageError(
                f"{text!r} is not a duration: use numbers with y (years), m (months), w (weeks), d (days), "
                "h (hours), e.g. 30d, 12h, 1y6m"
            )
        d = {"y": 0, "m": 0, "w": 0, "d": 0, "h": 0}
        for n, u in parts:
            d[u] += int(n)
        return cls(years=d["y"], months=d["m"], days=d["d"] + 7 * d["w"], hours=d["h"])

    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def before(self, t: dt.datetime) -> dt.datetime:
        """``t`` minus this duration, normalised as Go's ``time.AddDate`` (Mar 31 minus 1 month is Mar 3)."""
        month0 = t.year * 12 + (t.month - 1) - self.years * 12 - self.months
        year, month = divmod(month0, 12)
        try:
            first = t.replace(year=year, month=month + 1, day=1)
            return first + dt.timedelta(days=t.day - 1 - self.days, hours=-self.hours)
        except (ValueError, OverflowError):
            return dt.datetime.min.replace(tzinfo=t.tzinfo)  # before year 1: everything is within

    def __str__(self) -> str:
        out = "".join(
            f"{n}{u}" for n, u in ((self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h")) if n
        )
        return out or "0h"


@dataclass(frozen=True)
class Policy:
    """How many backups of each kind to keep; 0 disables a rule, -1 means every period."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | None = None

    def __post_init__(self) -> None:
        for name in _RULES:
            n = getattr(self, name)
            if type(n) is not int or n < UNLIMITED:
                raise UsageError(f"--keep-{name} must be a count of 0 or more, or -1 for unlimited (got {n!r})")

    def empty(self) -> bool:
        return all(getattr(self, r) == 0 for r in _RULES) and (self.within is None or self.within.zero())

    def describe(self) -> str:
        parts = []
        for name in _RULES:
            n = getattr(self, name)
            if n:
                parts.append(f"{'all' if n == UNLIMITED else n} {name}")
        if self.within is not None and not self.within.zero():
            parts.append(f"everything within {self.within} of the newest")
        return "keep " + ", ".join(parts) if parts else "no policy: keep everything"

    def to_json(self) -> dict:
        d: dict = {r: getattr(self, r) for r in _RULES}
        d["within"] = str(self.within) if self.within is not None and not self.within.zero() else None
        return d


@dataclass(frozen=True)
class Item:
    """One backup as the policy sees it."""

    id: str
    created: dt.datetime  # timezone-aware


@dataclass
class Decision:
    id: str
    created: dt.datetime
    keep: bool
    reasons: list[str] = field(default_factory=list)  # the rules that keep it, e.g. ["last", "daily"]


def parse_created(text: str) -> dt.datetime:
    """A manifest's ``created`` (``2026-11-23T21:55:38.645728Z``) as an aware UTC datetime."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def _bucket(rule: str, t: dt.datetime) -> tuple[int, ...]:
    if rule == "hourly":
        return (t.year, t.month, t.day, t.hour)
    if rule == "daily":
        return (t.year, t.month, t.day)
    if rule == "weekly":
        iso = t.isocalendar()
        return (iso[0], iso[1])
    if rule == "monthly":
        return (t.year, t.month)
    return (t.year,)


def newest_first(items: Iterable[Item]) -> list[Item]:
    return sorted(items, key=lambda i: (i.created, i.id), reverse=True)


def apply_policy(items: Sequence[Item], policy: Policy, now: dt.datetime | None = None) -> list[Decision]:
    """One decision per item, newest first. ``now`` only matters for ``within``: backups after it are ignored
    when finding the newest backup (restic ignores snapshots dated in the future)."""
    ordered = newest_first(items)
    utc = [i.created.astimezone(dt.timezone.utc) for i in ordered]
    if policy.empty():
        return [Decision(i.id, i.created, True, ["no policy"]) for i in ordered]
    if not ordered:
        return []
    now = now or dt.datetime.now(dt.timezone.utc)
    past = [t for t in utc if t < now]
    cutoff = None
    if policy.within is not None and not policy.within.zero():
        # relative to the newest backup that is not in the future (restic: all of them if there is none)
        cutoff = policy.within.before(max(past)) if past else dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    counts = {r: getattr(policy, r) for r in _RULES}
    last_bucket: dict[str, object] = {r: None for r in _RULES}
    out = []
    for nr, (item, t) in enumerate(zip(ordered, utc, strict=True)):
        reasons = []
        if cutoff is not None and t > cutoff:
            reasons.append("within")
        for rule in _RULES:
            if counts[rule] == 0:
                continue
            value: object = nr if rule == "last" else _bucket(rule, t)
            if value != last_bucket[rule] or nr == len(ordered) - 1:
                last_bucket[rule] = value
                if counts[rule] > 0:
                    counts[rule] -= 1
                reasons.append(rule)
        out.append(Decision(item.id, item.created, bool(reasons), reasons))
    return out
