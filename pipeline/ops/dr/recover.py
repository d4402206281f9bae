"""dr recover: take the plan (peer-removes, waits, delete + restore), then judge the cluster again."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.base.errors import ConflictError, JsArchiveError, ServerRefused
from pipeline.base.retry import until, within
from pipeline.flows.replace import replace_stream
from pipeline.flows.restore import RestoreOptions, RestoreResult, restore_stream_async
from pipeline.format import marks
from pipeline.jetstream.client import PEER_REMOVE_IN_PROGRESS, JetStream, connect, err_code
from pipeline.ops.dr.gather import INFO_TIMEOUT, info_or_none
from pipeline.ops.dr.health import EMPTIED, HEALTHY, MISSING, PARTIAL_RESTORE, StreamHealth
from pipeline.ops.dr.judge import judge
from pipeline.ops.dr.options import RecoverOptions
from pipeline.ops.dr.placement import check_restores
from pipeline.ops.dr.plan import Action, RecoveryPlan, plan_recovery
from pipeline.ops.dr.status import StatusReport, status_async
from pipeline.ops.dr.view import connect_system

WAIT_POLL_PAUSE = 0.5  # between rounds of STREAM.INFO while replicas rebuild


@dataclass
class RecoveryResult:
    plan: RecoveryPlan
    final: StatusReport | None
    seconds: float

    @property
    def failed(self) -> list[Action]:
        return [a for a in self.plan.actions if a.outcome == "failed" or a.blocked]

    @property
    def ok(self) -> bool:
        return not self.failed and self.final is not None and self.final.healthy

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "seconds": self.seconds,
            "actions": [a.to_json() for a in self.plan.actions],
            "warnings": self.plan.warnings,
            "before": self.plan.status.to_json(),
            "after": self.final.to_json() if self.final else None,
        }


class RecoveryFailed(JsArchiveError):
    exit_code = 1
    kind = "recovery"

    def __init__(self, message: str, result: RecoveryResult, exit_code: int = 1) -> None:
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


def _placement(opts: RecoverOptions) -> str | None:
    return opts.target.describe()


async def plan_async(opts: RecoverOptions) -> RecoveryPlan:
    report = await status_async(opts)
    the_plan = plan_recovery(report, have_system=opts.system is not None, placement=_placement(opts))
    await asyncio.to_thread(check_restores, the_plan, opts)
    return the_plan


def plan(opts: RecoverOptions) -> RecoveryPlan:
    return asyncio.run(plan_async(opts))


async def peer_remove(sys_js: JetStream, server: str, deadline_s: float = 30.0) -> str:
    """``$JS.API.SERVER.REMOVE`` by name, as ``nats server cluster peer-remove``; one at a time (G12)."""

    async def once() -> str:
        resp = await sys_js.request(f"{sys_js.prefix}.SERVER.REMOVE", json.dumps({"peer": server}).encode(), 10.0)
        err = resp.get("error")
        if not err:
            if resp.get("success"):
                return "removed"
            raise ServerRefused(f"peer-remove {server}: unexpected answer {resp}")
        code = int(err.get("err_code", 0) or 0)
        if code == 10044:  # not a member (any more): already done
            return "was not a member any more"
        e = ServerRefused(f"peer-remove {server}: {err.get('description', err)} (error {code})")
        e.err_code = code  # type: ignore[attr-defined]
        raise e

    async for attempt in within(deadline_s, lambda e: err_code(e) == PEER_REMOVE_IN_PROGRESS):
        with attempt:
            return await once()
    raise AssertionError("unreachable: the policy re-raises the last error")


async def _wait_healthy(js: JetStream, streams: list[str], lost_after: float, wait: float) -> dict[str, StreamHealth]:
    """Each stream's health once all are healthy, or as last judged when ``wait`` seconds are up."""
    last: dict[str, StreamHealth] = {}
    todo = list(streams)

    async def judge_round() -> list[str]:
        for n in list(todo):
            h = judge(n, await info_or_none(js, n, tries=1), lost_after=lost_after)
            last[n] = h
            if h.verdict == HEALTHY:
                todo.remove(n)
        return todo

    await until(lambda left: not left, pause=WAIT_POLL_PAUSE, budget=wait)(judge_round)
    return last


async def _still_the_partial(js: JetStream, planned: StreamHealth) -> None:
    """Refuse to delete a partial restore that is not the one the plan saw: another restore took the name, it
    completed, or it is still being written (a running restore looks like a killed one, except that it grows)."""
    info = await js.stream_info(planned.stream, timeout=INFO_TIMEOUT)
    if info is None:
        return
    mark = marks.mark_of(info)
    want = (planned.mark or {}).get("restore_id")
    if mark is None or mark.restore_id != want or not mark.partial:
        now = mark.describe() if mark else "it carries no restore mark"
        raise ConflictError(
            f"stream {planned.stream!r} changed since the plan ({now}): not deleted; run dr recover again"
        )
    state = info.get("state") or {}
    seen = (int(state.get("messages", 0) or 0), int(state.get("last_seq", 0) or 0))
    if seen != (planned.messages, planned.last_seq):
        raise ConflictError(
            f"partial restore {planned.stream!r} is still being written ({seen[0]:,} messages, last_seq {seen[1]}; "
            f"{planned.messages:,} and {planned.last_seq} at the plan): a restore may be running, so it was not "
            "deleted; run dr recover again once it has ended"
        )


async def recover_async(opts: RecoverOptions, say: Callable[[str], None] = lambda _m: None) -> RecoveryResult:
    """Take the plan: peer-removes, wait for rebuilds, delete + restore from backups, verify; then status again."""
    t0 = time.monotonic()
    the_plan = await plan_async(opts)
    if the_plan.blocked:
        return RecoveryResult(the_plan, None, round(time.monotonic() - t0, 3))
    async with await connect(opts.connect) as js:
        await _peer_removes(_steps(the_plan, "peer-remove"), opts, say)
        for a in _steps(the_plan, "wait"):
            await _wait_step(js, a, opts, say)
        for a in _steps(the_plan, "restore"):
            health = next(s for s in the_plan.status.streams if s.stream == a.target)
            await _restore_step(js, a, health, opts, say)
    final = await status_async(opts)
    return RecoveryResult(the_plan, final, round(time.monotonic() - t0, 3))


def _steps(the_plan: RecoveryPlan, kind: str) -> list[Action]:
    return [a for a in the_plan.actions if a.kind == kind]


async def _peer_removes(steps: list[Action], opts: RecoverOptions, say: Callable[[str], None]) -> None:
    sys_js = await connect_system(opts.system)
    try:
        for a in steps:
            t = time.monotonic()
            try:
                assert sys_js is not None
                a.message = await peer_remove(sys_js, a.target)
                a.outcome = "done"
            except JsArchiveError as e:
                a.outcome, a.message = "failed", str(e)
            a.seconds = round(time.monotonic() - t, 3)
            say(f"peer-remove {a.target}: {a.outcome} {a.message}".rstrip())
    finally:
        if sys_js is not None:
            await sys_js.close()


async def _wait_step(js: JetStream, a: Action, opts: RecoverOptions, say: Callable[[str], None]) -> None:
    t = time.monotonic()
    names = [n.strip() for n in a.target.split(",")]
    final = await _wait_healthy(js, names, opts.lost_after, opts.wait)
    stuck = {n: h for n, h in final.items() if h.verdict != HEALTHY}
    a.outcome = "failed" if stuck else "done"
    a.message = "; ".join(f"{n}: {h.verdict} ({h.detail})" for n, h in stuck.items()) or "all current"
    a.seconds = round(time.monotonic() - t, 3)
    say(f"wait for {a.target}: {a.outcome} after {a.seconds:.1f} s")


async def _restore_step(
    js: JetStream, a: Action, health: StreamHealth, opts: RecoverOptions, say: Callable[[str], None]
) -> None:
    t = time.monotonic()
    try:
        r = await _restored(js, health, opts)
        a.outcome = "done"
        a.message = (
            f"{r.messages:,} messages, last_seq {r.last_seq}, {len(r.consumers)} consumer(s), "
            f"R{r.num_replicas} led by {r.leader}"
        )
    except JsArchiveError as e:
        a.outcome, a.message = "failed", str(e)
    a.seconds = round(time.monotonic() - t, 3)
    say(f"restore {a.target}: {a.outcome} {a.message}")


async def _restored(js: JetStream, health: StreamHealth, opts: RecoverOptions) -> RestoreResult:
    """Restore one stream of the plan from its backup, replacing what is left of it."""
    assert health.backup is not None and opts.url is not None
    ropts = RestoreOptions(
        url=opts.url,
        stream=health.stream,
        backup=health.backup.manifest_id,
        connect=opts.connect,
        keys=opts.keys,
        target=opts.target,
        wait=opts.wait,
        sink=opts.sink,
        trust=opts.trust,
    )
    if health.verdict == PARTIAL_RESTORE:
        await _still_the_partial(js, health)
    if health.verdict == MISSING and not health.listed:
        # a missing stream is not deleted: if one of that name appeared since the plan, the restore refuses
        return await restore_stream_async(ropts)
    # what is deleted is proven replaceable first (pipeline/flows/replace.py): the backup verified deep,
    # the target preflighted; an emptied stream still answers, so it is saved first as well
    live = health.verdict == EMPTIED
    out = await replace_stream(
        ropts,
        take_safety_backup=live and opts.safety_backup,
        live_snapshot_possible=live,
        no_backup_reason=None if live else f"{health.verdict}: no replica of it holds data to save",
        sign_key=opts.sign_key,
    )
    return out.restored


def recover(opts: RecoverOptions, say: Callable[[str], None] = lambda _m: None) -> RecoveryResult:
    return asyncio.run(recover_async(opts, say))
