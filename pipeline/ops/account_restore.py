"""Restore an account backup set into a cluster: ``jsarchive account restore``.

As natscli's ``nats account restore``, every name is checked on the target before anything is restored; with
``--on-exists replace`` a live stream is replaced only through :func:`pipeline.flows.replace.replace_stream`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.archive.reader import open_manifest
from pipeline.archive.repository import Repository
from pipeline.archive.sets import load_member, load_set
from pipeline.archive.trust import TrustPolicy
from pipeline.base.errors import (
    AccountRunFailed,
    ConflictError,
    JsArchiveError,
    ServerRefused,
    UsageError,
    common_exit_code,
    setting,
)
from pipeline.base.progress import NoProgress, Progress
from pipeline.base.transfer import TransferConfig
from pipeline.flows.replace import replace_stream
from pipeline.flows.restore import RestoreOptions, RestoreResult, restore_stream_async
from pipeline.format.manifest import Manifest
from pipeline.format.sets import BackupSet, select_streams
from pipeline.format.snapshot import V2, format_for_version
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.jetstream.placement import RestoreTarget
from pipeline.keys.keyring import KeyRing
from sinks import SinkOptions

ON_EXISTS = ("fail", "skip", "replace")


@dataclass
class AccountRestoreOptions:
    url: str
    set_id: str | None = None  # id or unique prefix; None: the newest set
    at: dt.datetime | None = None  # no set named: the newest finished at or before this (--at)
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    keys: KeyRing = field(default_factory=KeyRing)
    target: RestoreTarget = field(default_factory=lambda: RestoreTarget())  # where the streams land
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    on_exists: str = "fail"  # fail | skip | replace
    safety_backup: bool = True  # replace: back up each live stream (marked pre-restore) before deleting it
    sign_key: object | None = None  # signs the safety backups (pipeline.archive.signing)
    trust: TrustPolicy | None = None  # what each backup must prove before it is restored (pipeline/archive/trust.py)
    parallel: int = 2
    transfer: TransferConfig = field(default_factory=TransferConfig)
    wait: float = 120.0
    sink: SinkOptions = field(default_factory=SinkOptions)


@dataclass
class AccountRestoreResult:
    set_id: str
    url: str
    restored: list[RestoreResult]
    skipped: list[dict]  # {"stream", "reason"}
    failed: list[dict]  # {"stream", "kind", "exit_code", "message"}
    replaced: list[str]  # streams deleted on the target before being restored (--on-exists replace)
    seconds: float = 0.0
    safety_backups: dict[str, str] = field(default_factory=dict)  # replaced stream -> its pre-restore backup

    def to_json(self) -> dict:
        return {
            "set_id": self.set_id,
            "url": self.url,
            "restored": [r.to_json() for r in self.restored],
            "skipped": self.skipped,
            "failed": self.failed,
            "replaced": self.replaced,
            "safety_backups": self.safety_backups,
            "seconds": self.seconds,
        }


def restore_account(
    opts: AccountRestoreOptions,
    progress: Progress | None = None,
    *,
    on_stream: Callable[[str, str, str], None] | None = None,
) -> AccountRestoreResult:
    return asyncio.run(restore_account_async(opts, progress, on_stream=on_stream))


async def restore_account_async(
    opts: AccountRestoreOptions,
    progress: Progress | None = None,
    *,
    on_stream: Callable[[str, str, str], None] | None = None,
) -> AccountRestoreResult:
    """Restore the streams of a set, several at once. ``on_stream(stream, status, detail)`` as each one ends.

    Before anything is sent: every selected manifest is loaded and checked, its data object found, its key
    unwrapped, the target's version checked against the snapshot formats, and (``on_exists="fail"``, natscli's
    behaviour) every name checked to be free. Streams that fail later do not stop the others; the result lists
    them and :class:`AccountRunFailed` is raised at the end.
    """
    progress = progress or NoProgress()
    t0 = time.monotonic()
    _check_options(opts)
    repo = Repository.open(opts.url, opts.sink)
    bset = load_set(repo, opts.set_id, opts.at)
    label = f"set {bset.id[:12]}"
    manifests = _opened_members(repo, bset, label, opts)
    existing = await _target_names(opts, label, manifests)
    todo, to_replace, skipped = _against_target(list(manifests), existing, opts.on_exists)
    run = _Run(opts, manifests, to_replace, progress, on_stream or _nobody, asyncio.Semaphore(opts.parallel))
    for s in skipped:
        run.tell(s["stream"], "skipped", s["reason"])

    progress.start(f"account restore ({len(todo)} streams)", None)
    try:
        await asyncio.gather(*(run.one(n) for n in todo))
    except BaseException:
        progress.abort()
        raise
    progress.finish(what="streams")
    result = AccountRestoreResult(
        set_id=bset.id,
        url=repo.url,
        restored=sorted(run.restored, key=lambda r: r.stream),
        skipped=skipped,
        failed=sorted(run.failed, key=lambda f: f["stream"]),
        replaced=sorted(run.replaced),
        seconds=round(time.monotonic() - t0, 3),
        safety_backups=dict(sorted(run.safety.items())),
    )
    if run.failed:
        raise AccountRunFailed(
            f"restore of {len(run.failed)} of {len(todo)} stream(s) failed: "
            + ", ".join(f["stream"] for f in result.failed),
            result,
            common_exit_code([int(f["exit_code"]) for f in run.failed]),
        )
    return result


def _nobody(_stream: str, _status: str, _detail: str) -> None:
    pass


def _check_options(opts: AccountRestoreOptions) -> None:
    if opts.on_exists not in ON_EXISTS:
        raise UsageError(f"{setting('on-exists')} must be one of {', '.join(ON_EXISTS)}, not {opts.on_exists!r}")
    if opts.parallel < 1:
        raise UsageError(f"{setting('parallel')} must be at least 1, not {opts.parallel}")
    if opts.target.replicas is not None and opts.target.replicas < 1:
        raise UsageError(f"{setting('replicas')} must be at least 1, not {opts.target.replicas}")


def _opened_members(repo: Repository, bset: BackupSet, label: str, opts: AccountRestoreOptions) -> dict[str, Manifest]:
    """The selected streams' manifests, in the order chosen, each opened once with the given keys."""
    entries = {e["stream"]: e for e in bset.streams}
    chosen = select_streams(sorted(entries), opts.include, opts.exclude, what=label)
    manifests: dict[str, Manifest] = {}
    for name in chosen:
        m = load_member(repo, label, name, entries[name]["manifest_id"])
        open_manifest(repo, m, opts.keys, label=label)  # a missing key or object now, not after half the account
        manifests[name] = m
    return manifests


async def _target_names(opts: AccountRestoreOptions, label: str, manifests: dict[str, Manifest]) -> set[str]:
    """The streams the target has, once it is known to read every selected backup's snapshot format."""
    js = await connect(opts.connect)
    async with js:
        server = js.server_info()
        if format_for_version(server.version_tuple) != V2:
            v2 = [n for n, m in manifests.items() if m.snapshot_format == V2]
            if v2:
                raise ServerRefused(
                    f"{label}: stream(s) {', '.join(v2)} were backed up in snapshot format V2 (nats-server 2.15 or "
                    f"later), which nats-server {server.version} cannot read; nothing was restored"
                )
        return set(await js.stream_names())


def _against_target(chosen: list[str], existing: set[str], on_exists: str) -> tuple[list[str], set[str], list[dict]]:
    """What ``on_exists`` makes of the names the target has: the streams to restore, those of them to replace,
    and those skipped (with why); or, with "fail", a refusal of them all."""
    clash = sorted(existing & set(chosen))
    if clash and on_exists == "fail":
        raise ConflictError(
            f"stream(s) {', '.join(clash)} already exist on the target; "
            f"nothing was restored ({setting('on-exists')} skip "
            f"leaves them and restores the rest, {setting('on-exists')} replace deletes and restores them)"
        )
    if on_exists == "skip":
        skipped = [{"stream": n, "reason": "exists on the target"} for n in clash]
        return [n for n in chosen if n not in clash], set(), skipped
    return list(chosen), set(clash) if on_exists == "replace" else set(), []


@dataclass
class _Run:
    """The restores of one account run, a few at once, and how each ended."""

    opts: AccountRestoreOptions
    manifests: dict[str, Manifest]
    to_replace: set[str]
    progress: Progress
    tell: Callable[[str, str, str], None]  # on_stream
    sem: asyncio.Semaphore
    restored: list[RestoreResult] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    safety: dict[str, str] = field(default_factory=dict)  # replaced stream -> its pre-restore backup

    async def one(self, name: str) -> None:
        async with self.sem:
            share = self.progress.part()  # a bar of its own
            try:
                r = await self._restore(name, share)
            except BaseException as e:
                share.abort()  # however far it got (a no-op if the restore said so itself)
                if not isinstance(e, JsArchiveError):
                    raise
                self.failed.append({"stream": name, "kind": e.kind, "exit_code": e.exit_code, "message": str(e)})
                self.tell(name, "failed", str(e))
                return
        self.restored.append(r)
        self.tell(name, "restored", f"{r.messages:,} messages, {len(r.consumers)} consumer(s), R{r.num_replicas}")

    async def _restore(self, name: str, share: Progress) -> RestoreResult:
        opts = self.opts
        ropts = RestoreOptions(
            url=opts.url,
            stream=name,
            backup=self.manifests[name].id,
            connect=opts.connect,
            keys=opts.keys,
            target=opts.target,
            transfer=opts.transfer,
            wait=opts.wait,
            sink=opts.sink,
            trust=opts.trust,
        )
        if name not in self.to_replace:
            return await restore_stream_async(ropts, share)
        # verified, preflighted and saved before the live stream is deleted (pipeline/flows/replace.py)
        out = await replace_stream(ropts, take_safety_backup=opts.safety_backup, progress=share, sign_key=opts.sign_key)
        self.replaced.append(name)
        if out.safety_backup:
            self.safety[name] = out.safety_backup
        return out.restored
