"""`jsarchive prune`: apply a retention policy per stream and collect abandoned uploads (a dry run by default)."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

from pipeline.archive.retention import Duration, Policy
from pipeline.base.units import human_bytes
from pipeline.entry.cli.common import archive_options, echo, emit_json, handle_errors, sink_options
from pipeline.entry.cli.ls_cmd import require_archive
from pipeline.ops.prune import DELETE, KEEP, LOCKED, PruneOptions, PruneReport, prune

COUNT = click.IntRange(-1)


@click.command("prune")
@click.argument("url")
@click.option("--keep-last", type=COUNT, default=0, metavar="N", help="keep the N newest backups")
@click.option("--keep-hourly", type=COUNT, default=0, metavar="N", help="keep the newest backup of each of N hours")
@click.option("--keep-daily", type=COUNT, default=0, metavar="N", help="… of each of the last N days")
@click.option("--keep-weekly", type=COUNT, default=0, metavar="N", help="… of each of the last N ISO weeks")
@click.option("--keep-monthly", type=COUNT, default=0, metavar="N", help="… of each of the last N months")
@click.option("--keep-yearly", type=COUNT, default=0, metavar="N", help="… of each of the last N years")
@click.option(
    "--keep-within",
    metavar="DURATION",
    help="keep every backup younger than DURATION before the stream's newest (e.g. 30d, 12h, 1y6m; m = months)",
)
@click.option("--stream", help="apply the policy to this stream only (collects no leftovers)")
@click.option(
    "--grace",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="leftovers (data without a manifest, dangling refs, unfinished uploads) are collected only when older",
)
@click.option("--prune-sets", is_flag=True, help="let the policy delete members of account sets (and those sets)")
@click.option("--confirm", is_flag=True, help="really delete (without it: a dry run that only reports)")
@click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True, help="parallel requests")
@archive_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@handle_errors
def prune_cmd(
    url: str,
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    keep_yearly: int,
    keep_within: str | None,
    stream: str | None,
    grace: str,
    prune_sets: bool,
    confirm: bool,
    workers: int,
    as_json: bool,
    **kw: object,
) -> None:
    """Delete the backups of each stream that the --keep-* policy does not keep (restic's rules: each rule keeps
    the newest backup in each of its last N periods; a backup any rule keeps survives), and collect abandoned
    uploads. A DRY RUN unless --confirm. Never deletes an object under retention or legal hold; backups in an
    account set are kept unless --prune-sets."""
    policy = Policy(
        last=keep_last,
        hourly=keep_hourly,
        daily=keep_daily,
        weekly=keep_weekly,
        monthly=keep_monthly,
        yearly=keep_yearly,
        within=Duration.parse(keep_within) if keep_within else None,
    )
    require_archive(url)
    now = dt.datetime.now(dt.timezone.utc)
    grace_td = now - Duration.parse(grace).before(now)
    opts = PruneOptions(
        url=url,
        policy=policy,
        stream=stream,
        confirm=confirm,
        grace=grace_td,
        prune_sets=prune_sets,
        workers=workers,
        sink=sink_options(kw, url=url),
    )
    report = prune(opts, say=(lambda _m: None) if as_json else (lambda m: echo(m, err=True)))
    if as_json:
        emit_json(report.to_json())
    else:
        if not report.backups:
            echo(f"no backups in {url}" + (f" for stream {stream}" if stream else ""), err=True)
        _print(report)
    if report.exit_code:
        sys.exit(report.exit_code)


def _when(text: str | None) -> str:
    return (text or "").replace("T", " ")[:19]


def _print(r: PruneReport) -> None:
    """The plan per stream, then sets, leftover objects, locks, and the totals."""
    click.echo(f"{r.url}: {r.policy} (per stream, UTC)")
    streams: dict[str, list] = {}
    for b in r.backups:
        streams.setdefault(b.stream, []).append(b)
    for stream, plans in streams.items():
        _print_stream(stream, plans)
    for s in r.sets:
        if s.action != KEEP or s.pruned_members:
            click.echo(_set_line(s))
    for o in r.objects:
        click.echo(_object_line(o))
        for w in o.warnings:
            click.echo(f"  warning: {w}")
    if r.locked:
        click.echo(f"{len(r.locked)} object(s) under retention or legal hold were left alone:")
        for lk in r.locked:
            click.echo(f"  {lk.describe()}")
    for w in r.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(_totals(r))


def _failed(error: str | None) -> str:
    return f" -- FAILED: {error}" if error else ""


def _print_stream(stream: str, plans: list) -> None:
    n = {a: sum(1 for p in plans if p.action == a) for a in (KEEP, DELETE, LOCKED)}
    click.echo(f"stream {stream}: {len(plans)} backup(s): keep {n[KEEP]}, delete {n[DELETE]}, locked {n[LOCKED]}")
    for p in plans:
        if p.action == KEEP:
            why = "kept by " + ", ".join(p.reasons)
        elif p.action == LOCKED:
            why = "the policy drops it, but it is locked: " + "; ".join(lk.describe() for lk in p.locks)
        else:
            why = f"{human_bytes(p.stored_bytes)}{' in ' + p.storage_class if p.storage_class else ''}"
            why += ": deleted" if p.deleted else ""
        click.echo(f"  {p.action:<7} {p.manifest_id[:12]}  {_when(p.created)}  {why}{_failed(p.error)}")
        for w in p.warnings:
            click.echo(f"          warning: {w}")


def _set_line(s: Any) -> str:
    if s.action == LOCKED:
        why = "locked, so its members stay: " + "; ".join(lk.describe() for lk in s.locks)
    else:
        why = f"{len(s.pruned_members)} of its {s.members} backups go" + (": deleted" if s.deleted else "")
    return f"set {s.set_id[:12]} ({_when(s.finished)}): {s.action}, {why}{_failed(s.error)}"


def _object_line(o: Any) -> str:
    size = f", {human_bytes(o.size)}" if o.size is not None else ""
    state = o.action
    if o.action == LOCKED:
        state += ": " + "; ".join(lk.describe() for lk in o.locks)
    elif o.action == KEEP:
        state += f" ({o.reason})"
    elif o.deleted:
        state += "d"
    return f"{o.kind} {o.key} ({_when(o.modified)}{size}): {state}{_failed(o.error)}"


def _totals(r: PruneReport) -> str:
    n, nbytes = r.to_delete()
    if r.dry_run:
        leftovers = sum(1 for o in r.objects if o.action == DELETE)
        return (
            f"dry run: nothing was deleted; --confirm would delete {n} backup(s) ({human_bytes(nbytes)}), "
            f"{sum(1 for s in r.sets if s.action == DELETE)} set(s) and {leftovers} leftover(s)"
        )
    done = sum(1 for b in r.backups if b.deleted)
    return (
        f"deleted {done} backup(s), {sum(1 for s in r.sets if s.deleted)} set(s) and "
        f"{sum(1 for o in r.objects if o.deleted)} leftover(s) in {r.seconds:.1f} s"
        + (f"; {len(r.errors)} error(s)" if r.errors else "")
    )
