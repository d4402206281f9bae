"""Back up every stream of an account into one set: ``jsarchive account backup`` (sets: pipeline/format/sets.py,
sharded runs: pipeline/archive/runs.py).

Semantics follow natscli's ``nats account backup``: KV (``KV_…``) and object-store (``OBJ_…``) buckets are ordinary
streams and included; streams whose info the server cannot give (offline, no quorum) stop the backup unless
``force``; memory streams on servers before 2.15 are warnings, failures only with ``critical_warnings``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from pipeline.archive.repository import Repository, storage_error
from pipeline.archive.runs import (
    RUN_ENV,
    RunIncomplete,
    Shard,
    StreamOutcome,
    check_run_id,
    done_records,
    now,
    record_outcome,
    record_plan,
    seal_run_in,
)
from pipeline.archive.sets import load_member
from pipeline.base.display import redact_servers
from pipeline.base.errors import (
    AccountRunFailed,
    JsArchiveError,
    NotFoundError,
    ServerRefused,
    UsageError,
    common_exit_code,
    setting,
)
from pipeline.base.progress import NoProgress, Progress
from pipeline.flows.backup import BackupOptions, BackupResult, backup_stream_async, check_store, check_writable
from pipeline.format.sets import build_set, select_streams, set_entry
from pipeline.format.snapshot import V2, format_for_version
from pipeline.jetstream.account import PlannedStream, account_identity, list_account
from pipeline.jetstream.client import (
    ServerInfo,
    connect,
)
from sinks import Retention, SinkError


@dataclass
class AccountBackupOptions:
    """Which of an account's streams to back up and how the run is split; ``each`` is what every stream's backup
    is taken with (connection, keys, archive, transfer knobs), its ``stream`` filled in per stream."""

    each: BackupOptions
    force: bool = False  # back up what can be listed even if some streams are offline or missing
    critical_warnings: bool = False  # warnings (memory streams on old servers, skipped streams) fail the run
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    parallel: int = 2  # streams backed up at once
    shard: Shard | None = None
    run: str | None = None  # required when sharded; shards of one run share it

    def stream_options(self, stream: str) -> BackupOptions:
        return replace(self.each, stream=stream)


@dataclass
class AccountPlan:
    """What a backup will do, known before the first byte moves (printed first, like natscli's summary)."""

    url: str
    account: dict
    server_version: str
    streams: list[PlannedStream]  # every selected stream of the account (the whole run when sharded)
    mine: list[str]  # the streams this process backs up (all of them unless sharded)
    missing: list[str]  # listed by the server without information (offline, no quorum); skipped with --force
    excluded: list[str]
    shard: str | None = None
    run: str | None = None
    resumed: bool = False  # this shard's plan was already recorded by an earlier attempt

    @property
    def messages(self) -> int:
        return sum(s.messages for s in self.streams)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.streams)

    @property
    def consumers(self) -> int:
        return sum(s.consumers for s in self.streams)

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(messages=self.messages, bytes=self.bytes, consumers=self.consumers)
        return d


@dataclass
class AccountBackupResult:
    url: str
    account: dict
    started: str
    finished: str
    streams: list[StreamOutcome]  # the streams this process handled, by name
    planned: int  # streams in the whole run
    warnings: list[str]
    set_id: str | None  # None until the run is sealed (or when it failed)
    run: str | None = None
    shard: str | None = None
    pending: list[str] = field(default_factory=list)  # sharded: streams of the run still without a backup
    seconds: float = 0.0

    @property
    def failed(self) -> list[StreamOutcome]:
        return [o for o in self.streams if o.status == "failed"]

    def to_json(self) -> dict:
        return {
            "url": self.url,
            "account": self.account,
            "started": self.started,
            "finished": self.finished,
            "set_id": self.set_id,
            "run": self.run,
            "shard": self.shard,
            "planned": self.planned,
            "streams": [o.to_json() for o in self.streams],
            "backed_up": sum(1 for o in self.streams if o.status in ("backed_up", "done_before")),
            "skipped": sum(1 for o in self.streams if o.status == "skipped"),
            "failed": [o.stream for o in self.failed],
            "deferred": [o.stream for o in self.streams if o.status == "deferred"],
            "warnings": self.warnings,
            "pending": self.pending,
            "messages": sum(o.messages for o in self.streams),
            "bytes": sum(o.bytes for o in self.streams),
            "stored_bytes": sum(o.stored_bytes for o in self.streams),
            "seconds": self.seconds,
        }


def backup_account(
    opts: AccountBackupOptions,
    progress: Progress | None = None,
    *,
    on_plan: Callable[[AccountPlan], None] | None = None,
    on_stream: Callable[[StreamOutcome], None] | None = None,
    admit: Callable[[PlannedStream], str | None] | None = None,
) -> AccountBackupResult:
    return asyncio.run(backup_account_async(opts, progress, on_plan=on_plan, on_stream=on_stream, admit=admit))


async def backup_account_async(
    opts: AccountBackupOptions,
    progress: Progress | None = None,
    *,
    on_plan: Callable[[AccountPlan], None] | None = None,
    on_stream: Callable[[StreamOutcome], None] | None = None,
    admit: Callable[[PlannedStream], str | None] | None = None,
) -> AccountBackupResult:
    """Back up every selected stream of the account; write the set (or, sharded, this shard's run records).

    ``on_plan`` is called once the streams are listed, before any backup; ``on_stream`` as each stream ends.
    ``admit(stream)`` is asked just before each stream starts; a reason it returns *defers* the stream: it is not
    backed up, not recorded, and stays owed to the run, so a later attempt with the same run id (or the sharded
    job path) backs it up and seals the run. It needs a run id for that reason.
    Raises :class:`AccountRunFailed` (no set written) if any stream failed, naming them.
    """
    progress = progress or NoProgress()
    t0 = time.monotonic()
    started = now()
    if opts.parallel < 1:
        raise UsageError(f"{setting('parallel')} must be at least 1, not {opts.parallel}")
    run, shard = _run_and_shard(opts, deferring=admit is not None)
    repo = Repository.open(opts.each.url, opts.each.sink)
    check_writable(repo, opts.each.encrypt, opts.each.keys, opts.each.retention)
    plan, server, listed, warnings = await _plan(opts, repo, run, shard)
    options = {
        "consumers": opts.each.consumers,
        "check": opts.each.check,
        "include": list(opts.include),
        "exclude": list(opts.exclude),
    }
    done_before: dict[str, dict] = {}
    if shard is not None:
        assert run is not None
        warnings = _claim_shard(repo, plan, run, shard, options, warnings, opts.each.retention)
        done_before = done_records(repo, run)
    if on_plan is not None:
        on_plan(plan)

    outcomes: dict[str, StreamOutcome] = {}

    async def finished(o: StreamOutcome) -> None:
        outcomes[o.stream] = o
        if run is not None and shard is not None:
            # Off the event loop: a slow store must not delay the acks of snapshots still running.
            await asyncio.to_thread(record_outcome, repo, run, shard, o, opts.critical_warnings, opts.each.retention)
        if on_stream is not None:
            on_stream(o)

    by_name = {p.name: p for p in listed}
    for n in plan.mine:
        if n not in by_name:  # a resumed plan names a stream that was deleted since
            gone = f"stream {n!r} no longer exists"
            await finished(StreamOutcome(n, "failed", message=gone, error_kind="not_found", exit_code=3))
    mine = [by_name[n] for n in plan.mine if n in by_name]
    sem = asyncio.Semaphore(opts.parallel)
    old_server = format_for_version(server.version_tuple) != V2

    async def one(p: PlannedStream) -> None:
        o = _not_backed_up(p, done_before.get(p.name), old_server, server.version)
        if o is None:
            async with sem:
                why = admit(p) if admit is not None else None
                if why:
                    o = StreamOutcome(p.name, "deferred", message=why)
                else:
                    o = await _back_up(p, opts, progress.part())  # a bar of its own
        await finished(o)

    progress.start(f"account backup ({len(mine)} streams)", None)
    try:
        await asyncio.gather(*(one(p) for p in mine))
    except BaseException:
        progress.abort()
        raise
    progress.finish(what="streams")

    ordered = [outcomes[n] for n in sorted(outcomes)]
    warnings = sorted(set(warnings + [o.message for o in ordered if o.status == "skipped" and o.message]))
    result = AccountBackupResult(
        url=repo.url,
        account=plan.account,
        started=started,
        finished=now(),
        streams=ordered,
        planned=len(plan.streams),
        warnings=warnings,
        set_id=None,
        run=run,
        shard=shard.label if shard else None,
    )
    _raise_if_failed(result, plan.missing, opts.critical_warnings, t0)
    if run is None:
        result.set_id = _write_set(repo, result, plan.missing, options, opts.each.retention)
    else:
        # The last shard to finish finds the run complete and seals it; the others leave it to that one (or to
        # `jsarchive account seal`). This shard's own work is done either way, so sealing trouble is a warning.
        try:
            result.set_id = seal_run_in(repo, run, opts.each.retention).set_id
        except RunIncomplete as e:
            result.pending = e.missing
        except JsArchiveError as e:
            result.warnings.append(f"this shard finished but the run could not be sealed: {e}")
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _run_and_shard(opts: AccountBackupOptions, *, deferring: bool) -> tuple[str | None, Shard | None]:
    """The run id and shard this backup records under; (None, None) for a plain account backup."""
    run = check_run_id(opts.run) if opts.run else None
    shard = opts.shard
    if shard is not None and shard.count > 1 and run is None:
        raise UsageError(
            f"shard {shard.label} needs a run id shared by all shards of the run: pass {setting('run')} RUN-ID (or set "
            f"${RUN_ENV}); on Cloud Run and AWS Batch it is taken from the execution / array job id"
        )
    if run is None and shard is not None and shard.count == 1:
        shard = None  # the only shard of an unnamed run is simply the whole account
    if run is not None and shard is None:
        shard = Shard(0, 1, "--run")
    if deferring and run is None:
        raise UsageError("deferring streams needs a run id, so that a later attempt can finish and seal the run")
    return run, shard


async def _plan(
    opts: AccountBackupOptions, repo: Repository, run: str | None, shard: Shard | None
) -> tuple[AccountPlan, ServerInfo, list[PlannedStream], list[str]]:
    """List the account and choose its streams (before anything is written): the plan, the server, every stream
    listed, the warnings."""
    js = await connect(opts.each.connect)
    async with js:
        server = js.server_info()
        check_store(opts.each.store, server)  # before a plan or any backup is written
        account = await account_identity(js, opts.each.connect.resolved())
        listed, missing = await list_account(js)
    names = [p.name for p in listed]
    selected = select_streams(names + missing, opts.include, opts.exclude)
    chosen_missing = [n for n in missing if n in selected]
    warnings: list[str] = []
    if chosen_missing:
        listing = ", ".join(chosen_missing)
        if not opts.force:
            raise ServerRefused(
                f"the server lists stream(s) {listing} but cannot give their information (offline or without a "
                f"quorum); nothing was backed up. {setting('force')} backs up the others and records these as skipped"
            )
        warnings += [
            f"stream {n!r} was offline or missing when the account was listed; not backed up" for n in chosen_missing
        ]
    by_name = {p.name: p for p in listed}
    planned = [by_name[n] for n in selected if n in by_name]
    if not planned:
        raise NotFoundError(
            f"the account has no streams to back up ({redact_servers(opts.each.connect.resolved().servers)})"
        )
    plan = AccountPlan(
        url=repo.url,
        account=account,
        server_version=server.version,
        streams=planned,
        mine=[p.name for p in planned if shard is None or shard.owns(p.name)],
        missing=chosen_missing,
        excluded=sorted(set(names + missing) - set(selected)),
        shard=shard.label if shard else None,
        run=run,
    )
    return plan, server, listed, warnings


def _claim_shard(
    repo: Repository,
    plan: AccountPlan,
    run: str,
    shard: Shard,
    options: dict,
    warnings: list[str],
    retention: Retention | None,
) -> list[str]:
    """Record this shard's plan, or follow the one an earlier attempt recorded (it stays the run's truth)."""
    streams = [p.name for p in plan.streams]
    recorded = record_plan(repo, run, shard, plan.account, streams, plan.mine, options, warnings, retention)
    if recorded is None:
        return warnings
    plan.resumed = True
    plan.mine = list(recorded["mine"])
    return list(recorded.get("warnings") or [])


def _not_backed_up(p: PlannedStream, done: dict | None, old_server: bool, version: str) -> StreamOutcome | None:
    """The outcome of a stream that is not backed up now (done by an earlier attempt, or a memory stream the
    server cannot snapshot); None for a stream to back up."""
    if done is not None:
        return StreamOutcome(
            p.name,
            "done_before" if done.get("manifest_id") else "skipped",
            manifest_id=done.get("manifest_id"),
            message=done.get("skipped") or "backed up by an earlier attempt of this shard",
        )
    if p.storage == "memory" and old_server:
        # natscli: a warning, not a failure, unless --critical-warnings (ErrMemoryStreamNotSupported).
        return StreamOutcome(
            p.name,
            "skipped",
            message=f"backup of memory stream {p.name!r} skipped: snapshots of memory streams need "
            f"nats-server 2.15 or later (the server is {version})",
            error_kind="server",
            exit_code=ServerRefused.exit_code,
        )
    return None


async def _back_up(p: PlannedStream, opts: AccountBackupOptions, progress: Progress) -> StreamOutcome:
    s0 = time.monotonic()
    try:
        res: BackupResult = await backup_stream_async(opts.stream_options(p.name), progress)
    except BaseException as e:
        progress.abort()  # however far it got (a no-op if the backup said so itself)
        if not isinstance(e, JsArchiveError):
            raise
        return StreamOutcome(
            p.name,
            "failed",
            seconds=round(time.monotonic() - s0, 3),
            message=str(e),
            error_kind=e.kind,
            exit_code=e.exit_code,
        )
    return StreamOutcome(
        p.name,
        "backed_up",
        manifest_id=res.manifest_id,
        messages=res.messages,
        bytes=res.bytes,
        stored_bytes=res.stored_bytes,
        consumers=res.consumers,
        snapshot_format=res.snapshot_format,
        seconds=res.seconds,
    )


def _raise_if_failed(result: AccountBackupResult, missing: list[str], critical: bool, t0: float) -> None:
    """AccountRunFailed (no set written) naming every failed stream; with ``critical`` warnings count too."""
    ordered = result.streams
    failed = [(o.stream, o.exit_code or 1) for o in ordered if o.status == "failed"]
    if critical:
        # natscli -w: every warning is a failure (memory streams on old servers, streams skipped with --force).
        failed += [(o.stream, o.exit_code or ServerRefused.exit_code) for o in ordered if o.status == "skipped"]
        failed += [(n, ServerRefused.exit_code) for n in missing]
    if not failed:
        return
    result.seconds = round(time.monotonic() - t0, 3)
    names = ", ".join(sorted({n for n, _ in failed}))
    raise AccountRunFailed(
        f"backup of {len(failed)} of {len(ordered) + len(missing)} stream(s) failed"
        + (f" (warnings count as failures with {setting('critical-warnings')})" if critical else "")
        + f": {names}; "
        + (
            f"re-run the shard with the same {setting('run')} {result.run} to retry them"
            if result.run
            else "no set was written"
        ),
        result,
        common_exit_code([c for _, c in failed]),
    )


def _write_set(
    repo: Repository, result: AccountBackupResult, missing: list[str], options: dict, retention: Retention | None
) -> str:
    """The set of an unsharded backup, written once every stream's manifest exists: its id."""
    ordered = result.streams
    entries = [
        set_entry(load_member(repo, "this account backup", o.stream, o.manifest_id)) for o in ordered if o.manifest_id
    ]
    raw = build_set(
        account=result.account,
        started=result.started,
        finished=result.finished,
        entries=entries,
        skipped=[{"stream": o.stream, "reason": o.message or ""} for o in ordered if o.status == "skipped"]
        + [{"stream": n, "reason": "offline or missing when listed"} for n in missing],
        warnings=result.warnings,
        options=options,
    )
    try:
        return repo.write_set(raw, retention)
    except SinkError as e:
        raise storage_error(e, f"every stream was backed up but the set could not be written to {repo.url}") from None
