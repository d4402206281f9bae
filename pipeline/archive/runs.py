"""Sharded account runs: which shard backs up which stream, and the records a run leaves under ``runs/<run-id>/``.

A run can be split over machines with ``--shard INDEX/COUNT``: each shard backs up the streams whose stable hash
falls to it and leaves small immutable records (its plan, then one record per finished stream). Whoever finds the run
complete (the last shard, or ``jsarchive account seal``) writes the set. The set of a run is computed from those
immutable records alone, so two sealers racing write the same bytes under the same name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from pipeline import __version__
from pipeline.archive.repository import RUNS, Repository, storage_error
from pipeline.archive.sets import load_member
from pipeline.base.errors import IntegrityError, NotFoundError, UsageError, setting
from pipeline.format import manifest as mf
from pipeline.format import objects
from pipeline.format.sets import build_set, set_entry
from sinks import Retention, SinkError, SinkOptions

PLAN_FORMAT = "jsarchive.run-plan"
DONE_FORMAT = "jsarchive.run-stream"
FAILURE_FORMAT = "jsarchive.run-failure"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PLAN_LEAF = re.compile(r"(\d+)-of-(\d+)")


# Environment variables naming a shard's count where the platform gives only an index (Kubernetes indexed jobs).
RECORD_VERSION = 1  # of the plan, done and failure records
SHARD_COUNT_ENV = "JSARCHIVE_SHARD_COUNT"


RUN_ENV = "JSARCHIVE_RUN"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def leaf_time() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


class RunIncomplete(NotFoundError):
    """A sharded run cannot be sealed yet: some of its streams have no backup (exit code 3)."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


def shard_of(stream: str, count: int) -> int:
    """The shard (0-based) that owns ``stream`` among ``count``: the same on every machine and in every run.

    SHA-256 of the UTF-8 name, first 8 bytes as a big-endian integer, modulo ``count``. It depends only on the
    name, not on how many streams exist or in which order the server lists them, so shards that list the account
    a few seconds apart still agree on who owns what.
    """
    return int.from_bytes(hashlib.sha256(stream.encode("utf-8")).digest()[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based, as every job engine numbers its tasks
    count: int
    source: str = "--shard"  # where it came from, for messages

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"shard count must be at least 1, not {self.count} (from {self.source})")
        if not 0 <= self.index < self.count:
            raise UsageError(
                f"shard {self.index}/{self.count} (from {self.source}) is out of range: with {self.count} shard(s) "
                f"the index runs from 0 to {self.count - 1}"
            )

    @classmethod
    def parse(cls, text: str, source: str = "--shard") -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not m:
            raise UsageError(f"{source} {text!r} is not INDEX/COUNT (e.g. 0/4; indexes start at 0)")
        return cls(int(m.group(1)), int(m.group(2)), source)

    def owns(self, stream: str) -> bool:
        return shard_of(stream, self.count) == self.index

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def leaf(self) -> str:
        return f"{self.index}-of-{self.count}"


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name)
    if text is None or text.strip() == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"${name} is {text!r}, not an integer") from None


def resolve_shard(
    shard: str | None, shard_count: int | None = None, env: Mapping[str, str] | None = None
) -> Shard | None:
    """The shard of this process: ``--shard I/N``, else the job engine's variables, else None (not sharded).

    - Cloud Run jobs: ``CLOUD_RUN_TASK_INDEX`` / ``CLOUD_RUN_TASK_COUNT``.
    - AWS Batch array jobs: ``AWS_BATCH_JOB_ARRAY_INDEX`` / ``AWS_BATCH_JOB_ARRAY_SIZE``.
    - Kubernetes indexed jobs: ``JOB_COMPLETION_INDEX``; Kubernetes does not expose the completion count, so it
      must come from ``shard_count`` (``--shard-count``) or ``$JSARCHIVE_SHARD_COUNT``.

    An explicit ``shard_count`` wins over the platform's count.
    """
    env = os.environ if env is None else env
    if shard:
        parsed = Shard.parse(shard)
        if shard_count is not None and shard_count != parsed.count:
            raise UsageError(f"{setting('shard')} {shard} and {setting('shard-count')} {shard_count} disagree")
        return parsed
    count = shard_count if shard_count is not None else _env_int(env, SHARD_COUNT_ENV)
    for index_var, count_var in (
        ("CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_COUNT"),
        ("AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ARRAY_SIZE"),
        ("JOB_COMPLETION_INDEX", None),
    ):
        index = _env_int(env, index_var)
        if index is None:
            continue
        n = count if count is not None else (_env_int(env, count_var) if count_var else None)
        if n is None:
            raise UsageError(
                f"${index_var} is set but the number of shards is not: pass {setting('shard-count')} N or set "
                f"${SHARD_COUNT_ENV} (or {setting('shard')} INDEX/COUNT)"
            )
        return Shard(index, n, f"${index_var}")
    if count is not None:
        raise UsageError(
            f"{setting('shard-count')} needs a shard index: "
            f"{setting('shard')} INDEX/COUNT or a job engine's index variable"
        )
    return None


def resolve_run(run: str | None, env: Mapping[str, str] | None = None, *, platform: bool = True) -> str | None:
    """The run id: ``run`` (``--run``), else ``$JSARCHIVE_RUN``, else (``platform``) the job engine's execution id.

    Cloud Run: ``CLOUD_RUN_EXECUTION`` (shared by all tasks of one execution). AWS Batch: the parent of an array
    child's ``AWS_BATCH_JOB_ID`` (``<parent>:<index>``). Kubernetes has no such variable: pass ``--run``. Callers
    pass ``platform=False`` for unsharded runs, so a one-task job writes its set directly.
    """
    env = os.environ if env is None else env
    candidates = [run, env.get(RUN_ENV)]
    if platform:
        candidates.append(env.get("CLOUD_RUN_EXECUTION"))
        batch = env.get("AWS_BATCH_JOB_ID")
        if batch and env.get("AWS_BATCH_JOB_ARRAY_INDEX") is not None:
            candidates.append(batch.split(":", 1)[0])
    for c in candidates:
        if c:
            return check_run_id(c)
    return None


def check_run_id(run: str) -> str:
    if not _RUN_ID.fullmatch(run):
        raise UsageError(
            f"run id {run!r} is not valid: 1-128 characters of letters, digits, '.', '_' and '-', starting with a "
            "letter or digit"
        )
    return run


@dataclass
class StreamOutcome:
    stream: str
    # "backed_up" | "done_before" (an earlier attempt of this shard) | "skipped" (warning) | "failed" | "deferred"
    # (left for a later attempt of the run: see backup_account_async's ``admit``)
    status: str
    manifest_id: str | None = None
    messages: int = 0
    bytes: int = 0
    stored_bytes: int = 0
    consumers: int = 0
    snapshot_format: str | None = None
    seconds: float = 0.0
    message: str | None = None  # the warning or the error
    error_kind: str | None = None
    exit_code: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def plan_key(run: str, shard: Shard) -> str:
    return f"{RUNS}{run}/plan/{shard.leaf}"


def done_key(run: str, stream: str) -> str:
    return f"{RUNS}{run}/done/{stream}"


def put_json(repo: Repository, key: str, doc: dict, retention: Retention | None) -> bool:
    try:
        return repo.put_small(key, mf.canonical(doc), retention)
    except SinkError as e:
        raise storage_error(e, f"cannot write {key} to {repo.url}") from None


def get_json(repo: Repository, key: str) -> dict | None:
    raw = repo.get_small(key, objects.MAX_RUN_RECORD)
    if raw is None:
        return None
    doc = objects.parse_json(raw, f"{key} in {repo.url}", objects.MAX_RUN_RECORD)
    try:
        return objects.run_record(doc)
    except objects.Invalid as e:
        raise IntegrityError(f"{key} in {repo.url} is not a valid run record: {e}") from None


def record_plan(
    repo: Repository,
    run: str,
    shard: Shard,
    account: dict,
    streams: list[str],
    mine: list[str],
    options: dict,
    warnings: list[str],
    retention: Retention | None,
) -> dict | None:
    """Write this shard's plan (``streams`` of ``account``, ``mine`` its share); if an earlier attempt wrote one,
    return that one instead (it stays the truth)."""
    for key in repo.object_names(f"{RUNS}{run}/plan/"):
        m = _PLAN_LEAF.fullmatch(key.rpartition("/")[2])
        if m and int(m.group(2)) != shard.count:
            raise UsageError(
                f"run {run} was started with {m.group(2)} shards ({key}); this shard says {shard.label}. Use the "
                f"same shard count on every shard, or a new {setting('run')}"
            )
    key = plan_key(run, shard)
    existing = get_json(repo, key)
    if existing is not None:
        return existing
    doc = {
        "format": PLAN_FORMAT,
        "version": RECORD_VERSION,
        "run": run,
        "shard": {"index": shard.index, "count": shard.count},
        "created": now(),
        "tool": {"name": "jsarchive", "version": __version__},
        "account": account,
        "options": options,
        "streams": streams,
        "mine": mine,
        "warnings": sorted(warnings),
    }
    if not put_json(repo, key, doc, retention):
        return get_json(repo, key)  # a concurrent attempt of this shard won the race: follow its plan
    return None


def done_records(repo: Repository, run: str) -> dict[str, dict]:
    prefix = f"{RUNS}{run}/done/"
    out = {}
    for key in repo.object_names(prefix):
        doc = get_json(repo, key)
        if doc is not None and doc.get("format") == DONE_FORMAT:
            out[key[len(prefix) :]] = doc
    return out


def record_outcome(
    repo: Repository, run: str, shard: Shard, o: StreamOutcome, critical: bool, retention: Retention | None
) -> None:
    """A finished stream's record: ``done/<stream>`` on success (or a warning), ``failed/…`` otherwise."""
    if o.status in ("done_before", "deferred"):
        return
    shard_doc = {"index": shard.index, "count": shard.count}
    if o.status == "backed_up" or (o.status == "skipped" and not critical):
        put_json(
            repo,
            done_key(run, o.stream),
            {
                "format": DONE_FORMAT,
                "version": RECORD_VERSION,
                "run": run,
                "stream": o.stream,
                "shard": shard_doc,
                "finished": now(),
                "manifest_id": o.manifest_id,
                "skipped": o.message if o.status == "skipped" else None,
                "warnings": [],
            },
            retention,
        )
        return
    put_json(
        repo,
        f"{RUNS}{run}/failed/{o.stream}/{leaf_time()}-{os.urandom(4).hex()}",
        {
            "format": FAILURE_FORMAT,
            "version": RECORD_VERSION,
            "run": run,
            "stream": o.stream,
            "shard": shard_doc,
            "time": now(),
            "error": {"kind": o.error_kind, "exit_code": o.exit_code, "message": o.message},
        },
        retention,
    )


@dataclass
class SealResult:
    set_id: str
    run: str
    shards: int
    streams: list[str]
    skipped: list[str]
    warnings: list[str]
    started: str
    finished: str

    def to_json(self) -> dict:
        return asdict(self)


def seal_run(url: str, run: str, sink: SinkOptions | None = None, retention: Retention | None = None) -> SealResult:
    """Write the set of sharded run ``run`` if every shard has reported every stream; else :class:`RunIncomplete`."""
    return seal_run_in(Repository.open(url, sink), check_run_id(run), retention)


def seal_run_in(repo: Repository, run: str, retention: Retention | None = None) -> SealResult:
    plans, count = _read_plans(repo, run)
    done = done_records(repo, run)
    expected, warnings = _check_complete(repo, run, plans, count, done)
    entries, skipped = [], []
    for s in sorted(expected):
        d = done[s]
        if d.get("manifest_id"):
            entries.append(set_entry(load_member(repo, f"run {run}", s, str(d["manifest_id"]))))
        else:
            skipped.append({"stream": s, "reason": str(d.get("skipped") or "")})
            if d.get("skipped"):
                warnings.append(str(d["skipped"]))
        warnings += d.get("warnings") or []
    first = plans[min(plans)]
    started = min(str(p.get("created", "")) for p in plans.values())
    finished = max([str(done[s].get("finished", "")) for s in expected] or [started])
    raw = build_set(
        account=first.get("account") or {},
        started=started,
        finished=finished,
        entries=entries,
        skipped=skipped,
        warnings=warnings,
        options=first.get("options") or {},
        run=run,
        shards=count,
        tool=first.get("tool"),
    )
    try:
        set_id = repo.write_set(raw, retention)
    except SinkError as e:
        raise storage_error(e, f"cannot write the set of run {run} to {repo.url}") from None
    doc = json.loads(raw)
    return SealResult(
        set_id=set_id,
        run=run,
        shards=count,
        streams=[e["stream"] for e in doc["streams"]],
        skipped=[e["stream"] for e in doc["skipped"]],
        warnings=doc["warnings"],
        started=started,
        finished=finished,
    )


def _read_plans(repo: Repository, run: str) -> tuple[dict[int, dict], int]:
    """Every shard's recorded plan by shard index, and the shard count they agree on."""
    prefix = f"{RUNS}{run}/"
    plans: dict[int, dict] = {}
    count = None
    for key in repo.object_names(f"{prefix}plan/"):
        m = _PLAN_LEAF.fullmatch(key.rpartition("/")[2])
        if not m:
            continue
        doc = get_json(repo, key)
        if doc is None or doc.get("format") != PLAN_FORMAT:
            raise IntegrityError(f"{key} in {repo.url} is not a run plan")
        index, n = int(m.group(1)), int(m.group(2))
        if count is not None and n != count:
            raise IntegrityError(f"run {run} has plans for {count} and for {n} shards in {repo.url}")
        count = n
        plans[index] = doc
    if count is None:
        raise NotFoundError(f"no run {run!r} in {repo.url} (no shard has recorded a plan under {prefix}plan/)")
    return plans, count


def _check_complete(
    repo: Repository, run: str, plans: dict[int, dict], count: int, done: dict[str, dict]
) -> tuple[dict[str, int], list[str]]:
    """The streams the run owes (stream -> shard) and the plans' warnings; RunIncomplete while any lacks a backup."""
    listed_by_any = sorted({s for p in plans.values() for s in p.get("streams") or []})
    expected = {s: index for index, p in plans.items() for s in p.get("mine") or []}
    warnings = [w for p in plans.values() for w in p.get("warnings") or []]
    warnings += _not_listed_by_owner(plans, count, listed_by_any, expected)
    absent_shards = [i for i in range(count) if i not in plans]
    # A shard that never started: the other shards' full lists say which streams it owes.
    missing = [s for s in listed_by_any if shard_of(s, count) in absent_shards]
    missing += [s for s in expected if s not in done]
    if missing or absent_shards:
        # A shard that has not recorded its plan blocks the seal even if no other shard's list gives it a stream:
        # its own listing might.
        raise _incomplete(repo, run, count, sorted(set(missing)), absent_shards)
    return expected, warnings


def _not_listed_by_owner(
    plans: dict[int, dict], count: int, listed_by_any: list[str], expected: dict[str, int]
) -> list[str]:
    """Warnings for the streams a shard listed that the shard owning them (which did start) did not."""
    return [
        f"stream {s!r} was listed by another shard but not by shard {owner}/{count}, which owns it; it is "
        "not in this set (created or deleted while the run started?)"
        for s in listed_by_any
        if (owner := shard_of(s, count)) in plans and s not in expected
    ]


def _incomplete(repo: Repository, run: str, count: int, missing: list[str], absent_shards: list[int]) -> RunIncomplete:
    why = []
    if absent_shards:
        why.append("shard(s) " + ", ".join(f"{i}/{count}" for i in absent_shards) + " have not started")
    why += [f"{s}: {msg}" for s, msg in last_failures(repo, run, missing).items()]
    return RunIncomplete(
        f"run {run} is not complete, no set was written: {len(missing)} stream(s) have no backup yet"
        + (f": {', '.join(missing)}" if missing else "")
        + (f" ({'; '.join(why)})" if why else ""),
        missing,
    )


def last_failures(repo: Repository, run: str, streams: list[str]) -> dict[str, str]:
    out = {}
    for s in streams:
        names = repo.object_names(f"{RUNS}{run}/failed/{s}/")
        if names:
            doc = get_json(repo, names[-1]) or {}  # leaves start with a UTC time: the last is the newest
            out[s] = str((doc.get("error") or {}).get("message") or "failed")
    return out
