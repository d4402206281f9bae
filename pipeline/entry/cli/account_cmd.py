"""`jsarchive account backup|restore|seal|ls`: whole accounts, as natscli's `nats account backup|restore`."""

from __future__ import annotations

import asyncio

import click

from pipeline.archive.runs import StreamOutcome, resolve_run, resolve_shard, seal_run
from pipeline.archive.sets import list_sets
from pipeline.base.errors import AccountRunFailed, JsArchiveError, UsageError, setting
from pipeline.base.units import human_bytes
from pipeline.entry.cli.aliases import AliasGroup
from pipeline.entry.cli.at_option import at_option, exclusive, parse_at
from pipeline.entry.cli.common import (
    archive_options,
    cell,
    connect_options,
    connection_options,
    echo,
    emit_json,
    error_document,
    error_exit,
    handle_errors,
    key_options,
    key_ring,
    make_progress,
    output_options,
    push_warning,
    retention,
    sign_key,
    sign_key_option,
    signer_fingerprint,
    sink_options,
    storage_options,
    trust_options,
    trust_policy,
)
from pipeline.entry.cli.data_options import (
    backup_options,
    backup_options_of,
    restore_transfer,
    restore_transfer_options,
)
from pipeline.entry.metrics import RunObserver, account_report
from pipeline.jetstream.account import connection_account
from pipeline.jetstream.placement import RestoreTarget
from pipeline.ops.account_backup import AccountBackupOptions, AccountPlan, backup_account
from pipeline.ops.account_restore import ON_EXISTS, AccountRestoreOptions, restore_account


@click.group("account", cls=AliasGroup)
def account_group() -> None:
    """Back up and restore every stream of an account (KV and object-store buckets included)."""


def _failed(e: AccountRunFailed, key: str, as_json: bool) -> None:
    """A partly failed run: the per-stream result goes with the error, so a scheduler sees what did succeed."""
    if not as_json:
        raise e
    error_exit(e, as_json, {"ok": False, "error": error_document(e), key: e.result.to_json()})  # type: ignore[attr-defined]


def _print_plan(plan: AccountPlan) -> None:
    name = plan.account.get("name") or "(unknown)"
    echo(
        f"Account {name} on nats-server {plan.server_version}: {len(plan.streams)} stream(s) with "
        f"{plan.consumers} consumer(s), {plan.messages:,} messages, {human_bytes(plan.bytes)} → {plan.url}"
    )
    if plan.excluded:
        echo(f"  excluded by --include/--exclude: {', '.join(plan.excluded)}")
    if plan.missing:
        echo(f"  offline or missing, not backed up (--force): {', '.join(plan.missing)}")
    if plan.shard:
        again = " (resumed: the plan of an earlier attempt)" if plan.resumed else ""
        echo(f"  shard {plan.shard} of run {plan.run}: {len(plan.mine)} stream(s){again}")


def _print_outcome(o: StreamOutcome) -> None:
    if o.status == "backed_up":
        ratio = f"{o.bytes / o.stored_bytes:.2f}x" if o.stored_bytes else "-"
        echo(
            f"  {o.stream}: {o.messages:,} messages, {human_bytes(o.bytes)} → stored {human_bytes(o.stored_bytes)} "
            f"({ratio}, {o.snapshot_format}, {o.consumers} consumer(s), {o.seconds:.2f} s) "
            f"as {(o.manifest_id or '')[:12]}"
        )
    elif o.status == "done_before":
        echo(f"  {o.stream}: already backed up in this run as {(o.manifest_id or '')[:12]}")
    elif o.status == "skipped":
        echo(f"  {o.stream}: WARNING: {o.message}")
    else:
        echo(f"  {o.stream}: FAILED: {o.message}")


@account_group.command("backup")
@click.argument("url")
@click.option("-f", "--force", is_flag=True, help="back up what can be listed even if some streams are offline")
@click.option("-w", "--critical-warnings", is_flag=True, help="warnings (e.g. memory streams on old servers) fail")
@click.option("--include", multiple=True, metavar="GLOB", help="only streams matching this glob (repeatable)")
@click.option("--exclude", multiple=True, metavar="GLOB", help="leave out streams matching this glob (repeatable)")
@click.option("--parallel", type=click.IntRange(1, 64), default=2, show_default=True, help="streams at once")
@click.option(
    "--shard",
    metavar="I/N",
    help="back up shard I (0-based) of N: a stable subset by stream-name hash "
    "[Cloud Run, AWS Batch array or Kubernetes indexed-job variables]",
)
@click.option(
    "--shard-count",
    type=click.IntRange(1, 100000),
    help="number of shards, where the platform gives only an index "
    "(Kubernetes: JOB_COMPLETION_INDEX) [$JSARCHIVE_SHARD_COUNT]",
)
@click.option(
    "--run",
    "run_id",
    metavar="RUN-ID",
    help="id shared by all shards of one run [$JSARCHIVE_RUN, Cloud Run execution, AWS Batch array job]",
)
@backup_options
@click.option(
    "--metrics-push",
    metavar="URL",
    envvar="JSARCHIVE_METRICS_PUSH",
    help="push the run's metrics to this Prometheus Pushgateway [$JSARCHIVE_METRICS_PUSH]",
)
@click.option("--log-json", is_flag=True, help="one JSON log line per stream and a run summary on stdout")
@sign_key_option
@storage_options
@key_options(write=True)
@archive_options
@connection_options
@output_options
@handle_errors
def backup_cmd(
    url: str,
    force: bool,
    critical_warnings: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    parallel: int,
    shard: str | None,
    shard_count: int | None,
    run_id: str | None,
    metrics_push: str | None,
    log_json: bool,
    no_progress: bool,
    as_json: bool,
    **kw: object,
) -> None:
    """Back up every stream of the account into the archive at URL and write one set for them.

    \b
    Sharded runs: each shard backs up the streams whose name hashes to it and records them under
    runs/RUN-ID/; the last shard to finish (or `jsarchive account seal URL --run RUN-ID`) writes the set.
    """
    shard_ = resolve_shard(shard, shard_count)
    sharded = shard_ is not None and shard_.count > 1
    opts = AccountBackupOptions(
        each=backup_options_of(kw, "", url),
        force=force,
        critical_warnings=critical_warnings,
        include=list(include),
        exclude=list(exclude),
        parallel=parallel,
        shard=shard_ if sharded or run_id else None,
        # Unsharded, the platform's execution id is not a reason to leave the sealing for later.
        run=resolve_run(run_id, platform=sharded),
    )
    if log_json and as_json:
        raise UsageError("--log-json and --json both write to stdout: choose one")
    observer = RunObserver("account-backup", url, push_to=metrics_push, log_json=log_json, warn=push_warning)
    observer.run = opts.run
    quiet = as_json or log_json
    try:
        res = backup_account(
            opts,
            make_progress(no_progress, as_json),
            on_plan=None if quiet else _print_plan,
            on_stream=observer.on_stream(None if quiet else _print_outcome),
        )
    except AccountRunFailed as e:
        observer.finish(account_report(e.result.to_json(), ok=False, started=observer.started, error=str(e)))  # type: ignore[attr-defined]
        _failed(e, "account", as_json)
        return
    except JsArchiveError as e:
        observer.failed(e)
        raise
    signed = _sign_set(url, res.set_id, opts.each.sign_key, opts.each.sink, opts.each.retention)
    observer.finish(account_report(res.to_json(), ok=True, started=observer.started))
    if log_json:
        return  # the summary line says it all
    if as_json:
        emit_json({"ok": True, "account": res.to_json(), **({"set_signature": signed} if signed else {})})
        return
    n = sum(1 for o in res.streams if o.status in ("backed_up", "done_before"))
    total = sum(o.stored_bytes for o in res.streams)
    if res.set_id:
        echo(
            f"Wrote set {res.set_id}: {n} stream(s) backed up, {human_bytes(total)} stored, {res.seconds:.2f} s"
            + (f" (run {res.run} sealed)" if res.run else "")
        )
    else:
        echo(
            f"Shard {res.shard} of run {res.run} done: {n} stream(s), {human_bytes(total)} stored, "
            f"{res.seconds:.2f} s; "
            f"{len(res.pending)} stream(s) of the run still pending. The last shard seals the run, or: "
            f"jsarchive account seal {url} --run {res.run}"
        )
    if opts.each.sign_key is not None:
        echo(f"  manifests{' and set' if signed else ''} signed by key {signer_fingerprint(opts.each.sign_key)[:16]}")
    for w in res.warnings:
        echo(f"  warning: {w}", err=True)


def _sign_set(url: str, set_id: str | None, key: object, sink: object, retention_: object) -> str | None:
    """Sign a set just written (its manifests were signed as they were committed); the signature's key."""
    if key is None or not set_id:
        return None
    from pipeline.archive.repository import Repository
    from pipeline.archive.signing import sign

    return sign(Repository.open(url, sink), "set", set_id, key, retention_)  # type: ignore[arg-type]


account_group.add_command(backup_cmd, "snapshot")  # natscli's name for it


@account_group.command("restore")
@click.argument("url")
@click.argument("set_id", metavar="[SET-ID]", required=False)
@click.option("--latest", is_flag=True, help="restore the newest set (the default without SET-ID)")
@at_option("set")
@click.option("--cluster", help="place every stream in this cluster (replaces the backed-up placement)")
@click.option("--tag", "tags", multiple=True, help="place every stream on servers with this tag (repeatable)")
@click.option("--replicas", type=click.IntRange(1, 5), help="number of replicas for every stream [as backed up]")
@click.option("--include", multiple=True, metavar="GLOB", help="only streams matching this glob (repeatable)")
@click.option("--exclude", multiple=True, metavar="GLOB", help="leave out streams matching this glob (repeatable)")
@click.option(
    "--on-exists",
    type=click.Choice(ON_EXISTS),
    default="fail",
    show_default=True,
    help="a stream already on the target: fail before restoring anything (natscli), skip it, or delete and restore it",
)
@click.option(
    "--no-safety-backup",
    is_flag=True,
    help="--on-exists replace: do not back up each live stream (marked pre-restore) before deleting it",
)
@sign_key_option
@click.option("--parallel", type=click.IntRange(1, 64), default=2, show_default=True, help="streams at once")
@restore_transfer_options
@click.option("--wait", type=float, default=120.0, show_default=True, help="seconds each stream may take to be healthy")
@click.option(
    "--allow-other-account",
    is_flag=True,
    help="restore a set recorded for another account than the one this connection is in (refused otherwise)",
)
@trust_options
@key_options(write=False)
@archive_options
@connection_options
@output_options
@handle_errors
def restore_cmd(
    url: str,
    set_id: str | None,
    latest: bool,
    at: str | None,
    cluster: str | None,
    tags: tuple[str, ...],
    replicas: int | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    on_exists: str,
    no_safety_backup: bool,
    parallel: int,
    wait: float,
    allow_other_account: bool,
    no_progress: bool,
    as_json: bool,
    **kw: object,
) -> None:
    """Restore the streams of an account backup set (SET-ID, or the newest) into the connected cluster.

    --at TIME restores the newest set finished at or before TIME instead (none: exit 3).

    \b
    Before anything is sent: with a key configured every selected backup must be encrypted (or
    --allow-unencrypted), with --trust-key the set and every backup must be signed by a trusted key (exit 4),
    and the set must be recorded for the account this connection is in (or --allow-other-account; exit 2)."""
    from pipeline.archive.repository import Repository
    from pipeline.archive.trust import preflight_set

    if set_id and latest:
        raise UsageError("give a SET-ID or --latest, not both")
    exclusive(at, set_id, "a SET-ID")
    exclusive(at, latest, setting("latest"))
    when = parse_at(at)
    keys = key_ring(kw)
    policy = trust_policy(kw, keys)
    connect = connect_options(kw)
    sink = sink_options(kw, url=url)
    bset, notes = preflight_set(
        Repository.open(url, sink),
        set_id,
        list(include),
        list(exclude),
        policy,
        account_here=lambda: asyncio.run(connection_account(connect)),
        allow_other_account=allow_other_account,
        at=when,
    )
    for w in notes:
        echo(f"  warning: {w}", err=True)
    opts = AccountRestoreOptions(
        url=url,
        set_id=bset.id,  # pinned: the set checked above, whatever is added to the archive meanwhile
        trust=policy,
        connect=connect,
        keys=keys,
        target=RestoreTarget(cluster, tuple(tags), replicas),
        include=list(include),
        exclude=list(exclude),
        on_exists=on_exists,
        safety_backup=not no_safety_backup,
        sign_key=sign_key(kw),
        parallel=parallel,
        transfer=restore_transfer(kw),
        wait=wait,
        sink=sink,
    )

    def line(stream: str, status: str, detail: str) -> None:
        echo(f"  {stream}: {status.upper() if status == 'failed' else status}: {detail}")

    try:
        res = restore_account(opts, make_progress(no_progress, as_json), on_stream=None if as_json else line)
    except AccountRunFailed as e:
        if not as_json:
            r = e.result
            echo(
                f"Set {r.set_id[:12]}: {len(r.restored)} restored, {len(r.skipped)} skipped, {len(r.failed)} failed"  # type: ignore[attr-defined]
            )
        _failed(e, "restore", as_json)
        return
    if as_json:
        emit_json({"ok": True, "restore": res.to_json()})
        return
    echo(
        f"Set {res.set_id[:12]}: {len(res.restored)} restored"
        + (f" ({len(res.replaced)} replaced)" if res.replaced else "")
        + f", {len(res.skipped)} skipped, {len(res.failed)} failed in {res.seconds:.2f} s"
    )
    for stream, saved in res.safety_backups.items():
        echo(f"  {stream}: the replaced live stream was saved first as backup {saved[:12]} (pre-restore)")
    for r in res.restored:
        for w in r.warnings:
            echo(f"  warning: {r.stream}: {w}", err=True)


@account_group.command("seal")
@click.argument("url")
@click.option("--run", "run_id", required=True, metavar="RUN-ID", help="the run whose shards have all finished")
@sign_key_option
@storage_options
@archive_options
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@handle_errors
def seal_cmd(
    url: str, run_id: str, as_json: bool, storage_class: str | None, sse_kms_key: str | None, **kw: object
) -> None:
    """Write the set of a sharded run once every shard is done; otherwise list the streams still missing.

    Needs no key: the set is built from the run's records and the manifests' clear envelopes.
    """
    key = sign_key(kw)
    sink, lock = sink_options(kw, sse_kms_key, url=url), retention(kw)
    res = seal_run(url, run_id, sink, lock)
    signed = _sign_set(url, res.set_id, key, sink, lock)
    if as_json:
        emit_json({"ok": True, "seal": res.to_json(), **({"set_signature": signed} if signed else {})})
        return
    echo(
        f"Sealed run {res.run} ({res.shards} shard(s)) as set {res.set_id}: {len(res.streams)} stream(s)"
        + (f", {len(res.skipped)} skipped" if res.skipped else "")
    )
    if signed:
        echo(f"  set signed by key {signer_fingerprint(key)[:16]}")
    for w in res.warnings:
        echo(f"  warning: {w}", err=True)


@account_group.command("ls")
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@archive_options
@handle_errors
def ls_cmd(url: str, as_json: bool, **kw: object) -> None:
    """List the account backup sets in the archive at URL, newest first."""
    rows = list_sets(url, sink_options(kw, url=url))
    if as_json:
        emit_json({"ok": True, "sets": rows})
        return
    if not rows:
        echo(f"no account backup sets in {url}", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("SET", "ACCOUNT", "FINISHED (UTC)", "STREAMS", "MESSAGES", "SIZE", "STORED", "RUN"):
        table.add_column(col, justify="right" if col in ("STREAMS", "MESSAGES", "SIZE", "STORED") else "left")
    for r in rows:
        values = (
            r["set_id"][:12],
            str(r["account"] or ("(natscli import)" if r["origin"] else "")),
            r["finished"].replace("T", " ")[:19],
            str(r["streams"]) + (f" (+{r['skipped']} skipped)" if r["skipped"] else ""),
            f"{r['messages']:,}",
            human_bytes(r["bytes"]),
            human_bytes(r["stored_bytes"]),
            r["run"] or "",
        )
        table.add_row(*(cell(v) for v in values))  # account names and run ids come from the set: no markup
    Console(width=200).print(table)
