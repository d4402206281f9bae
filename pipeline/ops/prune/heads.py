"""What a HEAD of an object says before prune deletes it: a lock (retention or legal hold) that keeps it, and
whether deleting it now is billed for the rest of its storage class's minimum duration. HEADs are made once per
key, several at a time."""

from __future__ import annotations

import concurrent.futures
import datetime as dt

from pipeline.archive.repository import Repository, storage_error
from pipeline.ops.prune.report import Lock, _iso
from sinks import ObjectInfo, SinkError

# Minimum storage durations in days: deleting earlier is billed as if the object had stayed that long.
MIN_STORAGE_DAYS = {
    "STANDARD_IA": 30,
    "ONEZONE_IA": 30,
    "GLACIER_IR": 90,
    "GLACIER": 90,
    "DEEP_ARCHIVE": 180,
    "NEARLINE": 30,
    "COLDLINE": 90,
    "ARCHIVE": 365,
}


def _lock_of(info: ObjectInfo | None, clock: dt.datetime) -> Lock | None:
    r = info.retention if info is not None else None
    if r is None or not (r.legal_hold or r.until > clock):
        return None
    return Lock(info.key, r.mode, _iso(r.until) if r.mode else None, r.legal_hold)


def _cold_warning(info: ObjectInfo | None, now: dt.datetime) -> str | None:
    if info is None or info.modified is None:
        return None
    days = MIN_STORAGE_DAYS.get((info.storage_class or "").upper())
    if days is None:
        return None
    age = now - info.modified
    if age >= dt.timedelta(days=days):
        return None
    early = dt.timedelta(days=days) - age
    return (
        f"{info.key} is in {info.storage_class}, which has a minimum storage duration of {days} days; it is "
        f"{age.days} days old, so deleting it now is billed as {early.days + (1 if early.seconds else 0)} more days"
    )


class _Heads:
    """HEAD each key at most once, several at a time."""

    def __init__(self, repo: Repository, pool: concurrent.futures.Executor) -> None:
        self.repo = repo
        self.pool = pool
        self.cache: dict[str, ObjectInfo | None] = {}

    def fetch(self, keys: list[str]) -> None:
        todo = [k for k in dict.fromkeys(keys) if k not in self.cache]

        def one(key: str) -> ObjectInfo | None:
            try:
                return self.repo.sink.head(key)
            except SinkError as e:
                raise storage_error(e, f"cannot check {key} before deleting it") from None

        for key, info in zip(todo, self.pool.map(one, todo), strict=True):
            self.cache[key] = info

    def __getitem__(self, key: str) -> ObjectInfo | None:
        return self.cache[key]
