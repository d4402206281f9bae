"""`jsarchive dr status` and `jsarchive dr recover`: which recovery path each stream needs, and taking it."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import click

from pipeline.base.errors import JsArchiveError, UsageError
from pipeline.entry.cli.common import (
    archive_options,
    cell,
    connect_options,
    connection_options,
    echo,
    emit_json,
    handle_errors,
    key_options,
    key_ring,
    restore_target,
    sign_key,
    sign_key_option,
    sink_options,
    trust_options,
    trust_policy,
)
from pipeline.jetstream.client import ConnectOptions
from pipeline.ops.dr import (
    LOST_AFTER,
    RecoverOptions,
    RecoveryFailed,
    RecoveryResult,
    StatusOptions,
    StatusReport,
    format_age,
    plan,
    recover,
    status,
)

_COLOURS = {
    "healthy": "green",
    "healing": "yellow",
    "needs-peer-remove": "yellow",
    "quorum-lost": "red",
    "lost": "red",
    "emptied": "red",
    "r1-lost": "red",
    "missing": "red",
    "partial-restore": "red",
}


def system_options(f: Callable) -> Callable:
    """The system account, for server liveness and peer-remove (natscli keeps it in a context of its own)."""
    opts = [
        click.option("--system-context", help="natscli context of the system account"),
        click.option("--system-user", help="system account user"),
        click.option("--system-password", envvar="JSARCHIVE_SYSTEM_PASSWORD", help="[$JSARCHIVE_SYSTEM_PASSWORD]"),
        click.option("--system-creds", help="system account credentials file"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def system_connect(kw: dict, app: ConnectOptions) -> ConnectOptions | None:
    """The system account's connection: its own credentials (flags, or its natscli context), and the app
    connection's servers and TLS flags unless that context names its own."""
    keys = ("system_context", "system_user", "system_password", "system_creds")
    ctx, user, password, creds = (kw.pop(k) for k in keys)
    if not (ctx or user or creds):
        if password:
            raise UsageError("--system-password needs --system-user")
        return None
    return dataclasses.replace(
        app,
        user=user,
        password=password,
        token=None,
        creds=creds,
        nkey=None,
        user_jwt=None,  # the app's --jwt/--seed are the app user's, never the system account's
        user_seed=None,
        context=ctx or app.context,
        name="jsarchive-sys",
    )


def common_dr_options(f: Callable) -> Callable:
    f = click.option("--json", "as_json", is_flag=True, help="print JSON")(f)
    f = click.option(
        "--lost-after",
        type=float,
        default=LOST_AFTER,
        show_default=True,
        help="seconds without contact before a replica counts as gone (without the system account)",
    )(f)
    f = click.option("--stream", "streams", multiple=True, help="only this stream (repeatable)")(f)
    f = click.option(
        "--ignore",
        "ignore",
        multiple=True,
        metavar="GLOB",
        help="leave out streams matching this glob, e.g. ones deleted on purpose that would be missing (repeatable)",
    )(f)
    f = click.option("--archive", "url", metavar="URL", help="archive whose newest backups are compared")(f)
    f = archive_options(f)
    f = system_options(f)
    return connection_options(f)


def _status_fields(kw: dict) -> dict:
    app = connect_options(kw)
    url = kw.pop("url")
    return {
        "connect": app,
        "system": system_connect(kw, app),
        "url": url,
        "sink": sink_options(kw, url=url or ""),
        "streams": list(kw.pop("streams")),
        "lost_after": kw.pop("lost_after"),
        "ignore": list(kw.pop("ignore")),
    }


def print_status(report: StatusReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    view = report.cluster
    # server and stream names come from the cluster and the archive: cells and lines are escaped, never markup
    if view.system and view.meta_leader is None:
        console.print(cell(f"standalone JetStream server: {', '.join(view.alive)} (no meta group)"))
    elif view.system:
        gone = ", ".join(view.gone) or "none"
        console.print(
            cell(f"meta group: {len(view.members)} servers, leader {view.meta_leader}, "),
            cell(f"lost: {gone}", "red" if view.gone else "green"),
            sep="",
        )
    else:
        console.print("server liveness not checked (no --system-* credentials): judged from replicas' last contact")
    if report.ignored:
        console.print(cell(f"ignored (--ignore): {', '.join(report.ignored)}"))
    for w in report.warnings:
        console.print(cell("warning:", "yellow"), cell(w))
    table = Table(box=None, pad_edge=False)
    cols = ["STREAM", "R", "LEADER", "CURRENT", "LAGGING", "GONE", "MESSAGES", "LAST SEQ", "VERDICT"]
    if report.archive:
        cols += ["NEWEST BACKUP", "AGE", "BACKUP LAST SEQ"]
    cols.append("DETAIL")
    for c in cols:
        table.add_column(c, justify="right" if c in ("R", "MESSAGES", "LAST SEQ", "AGE", "BACKUP LAST SEQ") else "left")
    for s in report.streams:
        by = {k: ", ".join(p.name for p in s.peers if p.state == k) for k in ("current", "lagging", "gone")}
        row = [
            cell(s.stream),
            cell(s.replicas or "?"),
            cell(s.leader or "-"),
            cell(by["current"]),
            cell(by["lagging"]),
            cell(by["gone"]),
            cell(f"{s.messages:,}" if s.messages is not None else "?"),
            cell(s.last_seq if s.last_seq is not None else "?"),
            cell(s.verdict, _COLOURS[s.verdict]),
        ]
        if report.archive:
            b = s.backup
            row += (
                [cell(b.manifest_id[:12]), cell(format_age(b.age_s)), cell(b.last_seq)]
                if b
                else [cell("none", "red"), cell(""), cell("")]
            )
        row.append(cell(s.detail))
        table.add_row(*row)
    console.print(table)


@click.group("dr")
def dr_group() -> None:
    """Disaster recovery: cluster health per stream and the recovery that heals it."""


@dr_group.command("status")
@common_dr_options
@handle_errors
def status_cmd(as_json: bool, **kw: object) -> None:
    """One row per stream: replicas, leader, peers that are current / lagging / gone, and a verdict.

    \b
    healthy            every replica current
    healing            replicas rebuilding or a leader being elected
    needs-peer-remove  replicas on lost servers: peer-remove them (dr recover)
    quorum-lost        a survivor exists; peer-remove recovers what it holds
    lost               no replica answers: restore required
    emptied            present but empty while the latest backup has messages: restore required
    r1-lost            R1 stream on a lost server: restore required
    missing            not in the cluster, but the archive says it should be
                       (--archive): restore required
    partial-restore    a jsarchive restore created it and never finished:
                       delete and restore again

    \b
    With --archive, a stream the cluster lacks is missing if it is a member
    of the archive's newest account backup set, or if its newest backup is
    newer than the start of that set (every backed-up stream when there are
    no sets). --ignore GLOB leaves out streams deleted on purpose.

    Exit code 0 when everything is healthy, 1 otherwise.
    """
    report = status(StatusOptions(**_status_fields(kw)))
    if as_json:
        emit_json({"ok": report.healthy, **report.to_json()})
    else:
        print_status(report)
    raise SystemExit(0 if report.healthy else 1)


@dr_group.command("recover")
@common_dr_options
@key_options(write=False)
@click.option("--cluster", help="restore lost streams into this cluster [their backed-up placement]")
@click.option("--tag", "tags", multiple=True, help="restore lost streams onto servers with this tag (repeatable)")
@click.option("--replicas", type=click.IntRange(1, 5), help="replicas of restored streams [as backed up]")
@click.option("--wait", type=float, default=120.0, show_default=True, help="seconds each rebuild or restore may take")
@click.option(
    "--no-safety-backup",
    is_flag=True,
    help="do not back up a live (emptied) stream, marked pre-restore, before deleting it to restore it",
)
@sign_key_option
@trust_options
@click.option("--yes", is_flag=True, help="take the plan (without it, only print it)")
@handle_errors
def recover_cmd(as_json: bool, yes: bool, **kw: object) -> None:
    """Print the recovery plan; with --yes, take it: peer-remove lost servers one at a time through the system
    account, wait for replicas to rebuild, delete and restore lost or emptied streams from their latest backups
    (--archive), restore missing ones, delete and redo partial restores, and verify each.

    Before anything is done, each restore's backup is opened (it needs the key, -i) and, with the system account,
    its placement (the backed-up one, or --cluster/--tag/--replicas) is checked against the live servers' cluster
    names and tags: a step no live server can take is blocked (exit 2) and names the flag that fixes it."""
    fields = _status_fields(kw)
    keys = key_ring(kw)
    opts = RecoverOptions(
        **fields,
        keys=keys,
        trust=trust_policy(kw, keys),
        safety_backup=not kw.pop("no_safety_backup"),
        sign_key=sign_key(kw),
        target=restore_target(kw),
        wait=kw.pop("wait"),
    )
    if not yes:
        p = plan(opts)
        if as_json:
            emit_json({"ok": not p.blocked, "applied": False, **p.to_json()})
        else:
            print_status(p.status)
            _print_actions(p.actions, "plan (nothing done; --yes takes it)", p.warnings)
        raise SystemExit(2 if p.blocked else 0)

    result = recover(opts, say=(lambda _m: None) if as_json else (lambda m: echo(m, err=True)))
    error = recovery_error(result)
    if as_json:
        # one document: the steps taken and, when it failed, why (a second error document would break `jq .ok`)
        doc: dict = {"applied": True, **result.to_json()}
        if error is not None:
            doc["error"] = {"kind": error.kind, "exit_code": error.exit_code, "message": str(error)}
        emit_json(doc)
    else:
        _print_actions(result.plan.actions, "recovery", result.plan.warnings)
        if result.final is not None:
            print_status(result.final)
    if error is None:
        return
    if not as_json:
        raise error
    echo(f"jsarchive: error: {error}", err=True)
    sys.exit(error.exit_code)


def recovery_error(result: RecoveryResult) -> JsArchiveError | None:
    """Why a recovery did not end healthy: a blocked plan (nothing was done, exit 2) or a failed step (exit 1)."""
    if result.plan.blocked:
        return UsageError(
            "nothing was done: " + "; ".join(f"{a.kind} {a.target} {a.blocked}" for a in result.plan.blocked)
        )
    if not result.ok:
        what = "; ".join(f"{a.kind} {a.target}: {a.message}" for a in result.failed) or "streams are still not healthy"
        return RecoveryFailed(f"recovery incomplete: {what}", result)
    return None


def _print_actions(actions: list, title: str, warnings: list[str] | None = None) -> None:
    for w in warnings or []:
        echo(f"warning: {w}")
    if not actions:
        echo(f"{title}: nothing to do")
        return
    echo(f"{title}:")
    for i, a in enumerate(actions, 1):
        state = a.outcome if a.outcome != "planned" else ""
        line = f"  {i}. {a.kind} {a.target}: {a.detail}"
        if a.blocked:
            line += f"  [BLOCKED: {a.blocked}]"
        elif state:
            line += f"  [{state}{', ' + a.message if a.message else ''}; {a.seconds:.1f} s]"
        echo(line)
