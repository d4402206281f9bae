"""`jsarchive stream backup` and `jsarchive stream restore`."""

from __future__ import annotations

import click

from pipeline.base.errors import JsArchiveError, setting
from pipeline.base.units import human_bytes, parse_duration
from pipeline.entry.cli.aliases import AliasGroup
from pipeline.entry.cli.at_option import at_option, exclusive, parse_at
from pipeline.entry.cli.common import (
    archive_options,
    connect_options,
    connection_options,
    echo,
    emit_json,
    handle_errors,
    key_options,
    key_ring,
    make_progress,
    output_options,
    push_warning,
    restore_target,
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
from pipeline.entry.metrics import RunObserver, stream_report
from pipeline.flows.backup import backup_stream
from pipeline.flows.restore import RestoreOptions, restore_stream
from pipeline.ops.follow import LEASE_BUCKET, FollowOptions, follow


@click.group("stream", cls=AliasGroup)
def stream_group() -> None:
    """Back up and restore single streams."""


@stream_group.command("backup")
@click.argument("stream")
@click.argument("url")
@backup_options
@click.option(
    "--metrics-push",
    metavar="URL",
    envvar="JSARCHIVE_METRICS_PUSH",
    help="push the run's metrics to this Prometheus Pushgateway [$JSARCHIVE_METRICS_PUSH]",
)
@sign_key_option
@storage_options
@key_options(write=True)
@archive_options
@connection_options
@output_options
@handle_errors
def backup_cmd(
    stream: str,
    url: str,
    metrics_push: str | None,
    no_progress: bool,
    as_json: bool,
    **kw: object,
) -> None:
    """Back up STREAM into the archive at URL (a directory, file://, s3:// or gs://)."""
    opts = backup_options_of(kw, stream, url)
    observer = RunObserver("stream-backup", url, push_to=metrics_push, grouping={"stream": stream}, warn=push_warning)
    try:
        res = backup_stream(opts, make_progress(no_progress, as_json))
    except JsArchiveError as e:
        observer.failed(e)
        raise
    observer.finish(stream_report(res.to_json(), archive=url, started=observer.started))
    if as_json:
        fp = signer_fingerprint(opts.sign_key) if opts.sign_key is not None else None
        signed = {"signature": f"signatures/{res.manifest_id}/{fp}"} if fp else {}
        emit_json({"ok": True, "backup": res.to_json(), **signed})
        return
    echo(f"Backed up stream {res.stream} as {res.manifest_id}")
    if res.chain is not None and res.chain.get("parent"):
        echo(
            f"  delta after {res.chain['parent'][:12]}: sequences {res.chain['first_seq']}-{res.chain['last_seq']} "
            f"(chain {res.chain['id'][:12]})"
        )
    elif res.full_reason:
        echo(f"  full backup: {res.full_reason}")
    echo(
        f"  {res.messages:,} messages, {human_bytes(res.bytes)} in the stream; snapshot "
        f"{human_bytes(res.received_bytes)} ({res.snapshot_format}, nats-server {res.server_version})"
    )
    # stored/stream first (how much of the stream the archive holds), then the compression ratio stream:stored
    ratio = (
        f", {res.stored_bytes / res.bytes:.2f}× of the stream ({res.bytes / res.stored_bytes:.2f}:1)"
        if res.bytes and res.stored_bytes
        else ""
    )
    echo(
        f"  stored {human_bytes(res.stored_bytes)} in {res.blocks} block(s){ratio}; "
        f"{res.consumers} consumer(s); {res.seconds:.2f} s"
    )
    if opts.store == "decoded":
        echo(f"  stored decoded: the snapshot's NATSARC1 archive, {human_bytes(res.snapshot_bytes)} before zstd")
    echo("  encrypted for " + "; ".join(res.key_slots) if res.encrypted else "  NOT encrypted (--no-encrypt)")
    if opts.sign_key is not None:
        echo(f"  signed by key {signer_fingerprint(opts.sign_key)[:16]}")


stream_group.add_command(backup_cmd, "snapshot")  # natscli's name for it


@stream_group.command("follow")
@click.argument("stream")
@click.argument("url")
@backup_options
@click.option(
    "--segment-interval",
    default="10s",
    show_default=True,
    metavar="DURATION",
    help="commit a segment (a delta) this often: the recovery point objective",
)
@click.option("--segments", type=click.IntRange(1), default=None, help="stop after N committed segments")
@click.option("--lease-bucket", default=LEASE_BUCKET, show_default=True, help="KV bucket of the one-follower lease")
@click.option("--lease-ttl", default="30s", show_default=True, metavar="DURATION", help="lease time to live")
@sign_key_option
@storage_options
@key_options(write=True)
@archive_options
@connection_options
@output_options
@handle_errors
def follow_cmd(
    stream: str,
    url: str,
    segment_interval: str,
    segments: int | None,
    lease_bucket: str,
    lease_ttl: str,
    no_progress: bool,
    as_json: bool,
    **kw: object,
) -> None:
    """Archive STREAM continuously into URL: a delta every --segment-interval until SIGTERM (nats-server >= 2.15).

    Resumes from the archive's newest restore point; one follower per stream (a lease in a KV bucket)."""
    opts = FollowOptions(
        each=backup_options_of(kw, stream, url),
        interval=parse_duration(segment_interval),
        segments=segments,
        lease_bucket=lease_bucket,
        lease_ttl=parse_duration(lease_ttl),
    )
    report = follow(opts, say=(lambda _m: None) if as_json else echo)
    if as_json:
        emit_json({"ok": True, "follow": report.to_json()})
        return
    echo(
        f"Stopped following {stream} ({report.stopped_by}): {report.segments} segment(s), "
        f"{report.messages:,} message(s) in deltas, committed up to sequence {report.last_seq}"
    )


@stream_group.command("restore")
@click.argument("url")
@click.argument("stream")
@click.option("--backup", "backup_id", metavar="ID", help="backup id or unique prefix [newest backup of STREAM]")
@at_option()
@click.option("--cluster", help="place the stream in this cluster (replaces the backed-up placement)")
@click.option("--tag", "tags", multiple=True, help="place the stream on servers with this tag (repeatable)")
@click.option("--replicas", type=click.IntRange(1, 5), help="number of replicas [as backed up]")
@restore_transfer_options
@click.option(
    "--wait",
    "wait",
    type=float,
    default=120.0,
    show_default=True,
    help="seconds the restored stream may take to have a leader, current replicas and its consumers",
)
@click.option(
    "--as", "new_name", metavar="NEWNAME", help="restore under this stream name (V2 backups, servers >= 2.15)"
)
@click.option(
    "--subject-map",
    "subject_map",
    multiple=True,
    metavar="SRC=DST",
    help="rewrite subjects of messages, the stream and its consumers, e.g. 'ORDERS.>=DRILL.ORDERS.>' (repeatable)",
)
@click.option(
    "--subject",
    "subjects",
    multiple=True,
    metavar="FILTER",
    help="keep only messages on these subjects (before mapping; repeatable); the rest become deletes",
)
@click.option("--until-seq", type=click.IntRange(1), help="keep messages up to this sequence; cut the rest")
@click.option("--until", "until", metavar="TIME", help="keep messages before TIME (ISO 8601 or a duration ago: 2h)")
@trust_options
@key_options(write=False)
@archive_options
@connection_options
@output_options
@handle_errors
def restore_cmd(
    url: str,
    stream: str,
    backup_id: str | None,
    at: str | None,
    wait: float,
    new_name: str | None,
    subject_map: tuple[str, ...],
    subjects: tuple[str, ...],
    until_seq: int | None,
    until: str | None,
    no_progress: bool,
    as_json: bool,
    **kw: object,
) -> None:
    """Restore STREAM from the archive at URL into the connected server or cluster.

    --as, --subject-map, --subject, --until-seq and --until restore a rewritten copy (V2 backups onto
    nats-server >= 2.15): renamed, with mapped subjects, filtered or cut. Sequences are kept.

    Without --backup the newest backup by its manifest's created time is restored (ref names are only a hint),
    with --at TIME the newest created at or before TIME (none: exit 3). With a key configured an unencrypted
    backup is refused (--allow-unencrypted), with --trust-key one not signed by a trusted key (exit 4); "latest"
    and --at pass over newer backups that are refused and say so.
    """
    from pipeline.format.selection import parse_time

    exclusive(at, backup_id, f"{setting('backup')} ID")
    keys = key_ring(kw)
    opts = RestoreOptions(
        url=url,
        stream=stream,
        backup=backup_id,
        at=parse_at(at),
        connect=connect_options(kw),
        keys=keys,
        trust=trust_policy(kw, keys),
        target=restore_target(kw),
        transfer=restore_transfer(kw),
        wait=wait,
        sink=sink_options(kw, url=url),
        new_name=new_name,
        subject_map=list(subject_map),
        subjects=list(subjects),
        until_seq=until_seq,
        until_ns=parse_time(until) if until else None,
    )
    res = restore_stream(opts, make_progress(no_progress, as_json))
    if as_json:
        emit_json({"ok": True, "restore": res.to_json()})
        return
    echo(f"Restored stream {res.stream} from backup {res.manifest_id[:12]} in {res.seconds:.2f} s")
    echo(
        f"  {res.messages:,} messages, {human_bytes(res.bytes)}, sequences {res.first_seq}–{res.last_seq}; "
        f"consumers: {', '.join(res.consumers) or 'none'}"
    )
    where = f"cluster {res.cluster}, leader {res.leader}" if res.cluster else "standalone server"
    echo(f"  R{res.num_replicas} on {where}" + (f", replicas {', '.join(res.replicas)}" if res.replicas else ""))
    for w in res.warnings:
        echo(f"  warning: {w}", err=True)
