"""Make a cold backup readable again: RestoreObject on its data object, optionally waiting until it is done."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from pipeline.archive.repository import Repository, storage_error
from pipeline.base.errors import TransferFailed
from pipeline.base.retry import until_sync
from sinks import ObjectInfo, SinkError, SinkOptions

TIERS = ("Standard", "Bulk", "Expedited")


@dataclass
class ThawResult:
    manifest_id: str
    key: str
    storage_class: str | None
    status: str  # "started" | "ongoing" | "available"
    days: int
    tier: str

    def to_json(self) -> dict:
        return asdict(self)


def thaw_backup(
    url: str,
    backup: str,
    *,
    days: int = 7,
    tier: str = "Standard",
    wait: bool = False,
    wait_timeout: float = 48 * 3600,
    poll: float = 60.0,
    sink: SinkOptions | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> ThawResult:
    """Start thawing the data of ``backup`` (manifests and refs are never cold); with ``wait``, poll until readable."""
    repo = Repository.open(url, sink)
    m = repo.load_manifest(repo.resolve(backup))
    key = m.data_object
    try:
        status = repo.sink.thaw(key, days=days, tier=tier)
        head = repo.sink.head(key)
    except SinkError as e:
        raise storage_error(e, f"cannot thaw backup {m.id[:12]}") from None
    say(f"{repo.url}/{key} ({head.storage_class if head else '?'}): thaw {status}, {tier} tier, kept {days} days")
    if wait:
        status, head = _until_available(repo, m.id, key, (status, head), poll, wait_timeout, say)
    return ThawResult(m.id, key, head.storage_class if head else None, status, days, tier)


def _until_available(
    repo: Repository,
    mid: str,
    key: str,
    thawing: tuple[str, ObjectInfo | None],
    poll: float,
    wait_timeout: float,
    say: Callable[[str], None],
) -> tuple[str, ObjectInfo | None]:
    """Look at ``key`` every ``poll`` seconds until it is readable; TransferFailed after ``wait_timeout`` seconds.
    The thaw request's own answer (``thawing``) is the first look."""
    answers = iter([thawing])

    def look() -> tuple[str, ObjectInfo | None]:
        answer = next(answers, None)
        if answer is not None:
            return answer
        try:
            head = repo.sink.head(key)
        except SinkError as e:
            raise storage_error(e, f"cannot check backup {mid[:12]}") from None
        status = "available" if head is not None and not head.archived else (head.thaw or "ongoing")
        say(f"{key}: {status}")
        return status, head

    status, head = until_sync(lambda answer: answer[0] == "available", pause=poll, budget=wait_timeout)(look)
    if status != "available":
        raise TransferFailed(f"backup {mid[:12]} was still thawing after {wait_timeout:g} s")
    return status, head
