"""`jsarchive inspect` and `jsarchive cat`: look inside a backup without a NATS server."""

from __future__ import annotations

import contextlib
import json
import os
import sys

import click

from pipeline.archive.inspect import InspectResult, inspect_backup, iter_messages, message_record
from pipeline.base.display import json_safe, safe
from pipeline.base.errors import Interrupted, JsArchiveError, UsageError
from pipeline.base.units import human_bytes
from pipeline.entry.cli.at_option import at_option, parse_at
from pipeline.entry.cli.common import (
    archive_options,
    echo,
    emit_json,
    error_document,
    handle_errors,
    key_options,
    key_ring,
    sink_options,
)
from pipeline.format.selection import MessageFilter, parse_seq_range, parse_time


def emit_json_line(obj: object) -> None:
    """One JSON value on one line, for JSON-lines output; control characters as \\u escapes (ensure_ascii)."""
    click.echo(json.dumps(obj, sort_keys=True, default=str))


@click.command("inspect")
@click.argument("url")
@click.argument("backup_id", metavar="ID")
@click.option(
    "--max-subjects",
    type=click.IntRange(0),
    default=50,
    show_default=True,
    help="subjects to list, most messages first (0: all; --json always lists all)",
)
@at_option()
@key_options(write=False)
@archive_options
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@handle_errors
def inspect_cmd(url: str, backup_id: str, max_subjects: int, at: str | None, as_json: bool, **kw: object) -> None:
    """Show what backup ID in the archive at URL holds: format, server version, messages, subjects, sequence
    and time range, consumers. Reads and checks the whole backup; no NATS server is needed.

    With --at TIME, ID is a stream name: its newest backup created at or before TIME is shown (none: exit 3)."""
    res = inspect_backup(url, backup_id, keys=key_ring(kw), sink=sink_options(kw, url=url), at=parse_at(at))
    if as_json:
        emit_json({"ok": True, "inspect": res.to_json()})
        return
    _print(res, max_subjects)


def _print(r: InspectResult, max_subjects: int) -> None:
    """The backup's snapshot, messages and config, then its subjects, consumers and files."""
    _print_summary(r)
    if r.counted:
        _print_subjects(r, max_subjects)
    _print_consumers(r)
    if r.members:
        echo(f"  files        {len(r.members)}")
        names = [safe(m.name) for m in r.members]
        width = max(len(n) for n in names)
        for name, m in zip(names, r.members, strict=True):
            echo(f"    {name:<{width}}  {human_bytes(m.size):>10}" + ("" if m.type == "file" else f"  ({m.type})"))
    if r.snapshot_format == "V2" and not r.complete:
        echo("  WARNING: the archive has no end marker")
    for w in r.warnings:
        echo(f"  warning: {w}", err=True)


def _print_summary(r: InspectResult) -> None:
    echo(f"Backup {r.manifest_id} of stream {r.stream}")
    echo(f"  created      {r.created}  ({'encrypted' if r.encrypted else 'NOT encrypted'})")
    kind = "NATSARC1 message archive" if r.snapshot_format == "V2" else "file-store tar"
    echo(
        f"  snapshot     {r.snapshot_format} ({kind}) from nats-server {r.server_version or '?'}; "
        f"{human_bytes(r.snapshot_bytes)} stored, {human_bytes(r.decoded_bytes)} decoded"
    )
    source = "" if r.counted else "  (stream state at backup time)"
    size = f", {human_bytes(r.message_bytes)} of headers and payloads" if r.counted else ""
    echo(f"  messages     {r.messages:,}{size}{source}")
    if r.messages:
        echo(f"  sequences    {r.first_seq}–{r.last_seq} ({r.deleted:,} deleted in between)")
    if r.first_time:
        echo(f"  time         {r.first_time} – {r.last_time}")
    cfg = r.config
    if cfg:
        subjects = ", ".join(cfg.get("subjects") or []) or "-"
        echo(
            f"  config       subjects {subjects}; {cfg.get('storage', '?')} storage, "
            f"{cfg.get('retention', '?')} retention, {cfg.get('num_replicas', 1)} replica(s)"
        )


def _print_subjects(r: InspectResult, max_subjects: int) -> None:
    echo(f"  subjects     {len(r.subjects):,}")
    shown = sorted(r.subjects, key=lambda s: (-s.messages, s.subject))
    if max_subjects:
        shown = shown[:max_subjects]
    # aligned on the escaped names, as they will be printed
    names = [safe(s.subject) for s in shown]
    width = max((len(n) for n in names), default=0)
    for name, s in zip(names, shown, strict=True):
        echo(f"    {name:<{width}}  {s.messages:>12,}  {human_bytes(s.bytes):>10}")
    if len(shown) < len(r.subjects):
        echo(f"    … and {len(r.subjects) - len(shown):,} more (--max-subjects 0 or --json for all)")


def _print_consumers(r: InspectResult) -> None:
    echo(f"  consumers    {len(r.consumers)}")
    for c in r.consumers:
        what = [("durable" if c.durable else "ephemeral"), f"ack {c.ack_policy or '?'}"]
        what.append(f"filter {', '.join(c.filter_subjects)}" if c.filter_subjects else "all subjects")
        echo(f"    {c.name}: {'; '.join(what)}")
        p = c.position
        if p is None:
            echo("      state unreadable")
            continue
        echo(
            f"      delivered {p.delivered_consumer_seq} (stream {p.delivered_stream_seq}), ack floor "
            f"{p.ack_floor_consumer_seq} (stream {p.ack_floor_stream_seq}), {p.ack_pending} awaiting ack, "
            f"{p.redelivered} redelivered"
        )


@click.command("cat")
@click.argument("url")
@click.argument("backup_id", metavar="ID")
@click.option(
    "--subject",
    "subjects",
    multiple=True,
    metavar="FILTER",
    help="only subjects matching this filter (NATS wildcards * and >; repeatable: any of them)",
)
@click.option("--since", metavar="TIME", help="only messages at or after TIME (ISO 8601, or a duration ago: 2h)")
@click.option("--until", metavar="TIME", help="only messages before TIME (ISO 8601, or a duration ago)")
@click.option("--seq", "seq_range", metavar="A-B", help="only sequences A to B (inclusive; A-, -B or A also work)")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "raw"]),
    default="jsonl",
    show_default=True,
    help="jsonl: one JSON object a message (subject, sequence, time, headers, payload as UTF-8 or base64); "
    "raw: each payload as is, followed by a newline",
)
@key_options(write=False)
@archive_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="print JSON lines: one object a message, as --format jsonl; a failure is one last line with ok false",
)
@handle_errors
def cat_cmd(
    url: str,
    backup_id: str,
    subjects: tuple[str, ...],
    since: str | None,
    until: str | None,
    seq_range: str | None,
    fmt: str,
    as_json: bool,
    **kw: object,
) -> None:
    """Print the messages of backup ID in the archive at URL, oldest first, straight from the archive (no NATS
    server). Needs a V2 backup (taken from nats-server 2.15 or later)."""
    if as_json:
        try:
            if fmt == "raw":
                raise UsageError("--json prints JSON lines: it cannot be combined with --format raw")
            _cat(url, backup_id, subjects, since, until, seq_range, "jsonl", kw)
            return
        except KeyboardInterrupt:
            err: JsArchiveError = Interrupted("interrupted")
        except JsArchiveError as e:
            err = e
        # Lines may already be out: the error is one more line, so the output stays JSON lines to the end.
        emit_json_line({"ok": False, "error": error_document(err)})
        echo(f"jsarchive: error: {err}", err=True)
        sys.exit(err.exit_code)
    _cat(url, backup_id, subjects, since, until, seq_range, fmt, kw)


def _cat(
    url: str,
    backup_id: str,
    subjects: tuple[str, ...],
    since: str | None,
    until: str | None,
    seq_range: str | None,
    fmt: str,
    kw: dict,
) -> None:
    first, last = parse_seq_range(seq_range) if seq_range else (None, None)
    flt = MessageFilter(
        subjects=subjects,
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        first_seq=first,
        last_seq=last,
    )
    out = sys.stdout.buffer
    messages = iter_messages(url, backup_id, keys=key_ring(kw), filter=flt, sink=sink_options(kw, url=url))
    try:
        for msg in messages:
            if fmt == "raw":
                out.write(msg.data)
                out.write(b"\n")
            else:
                # json_safe: the same JSON value, but DEL, C1 controls and bidi overrides in subjects, headers
                # or text payloads written as \u escapes, so the lines can go to a terminal; raw stays raw.
                line = json_safe(json.dumps(message_record(msg), ensure_ascii=False))
                out.write(line.encode("utf-8") + b"\n")
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        messages.close()
        with contextlib.suppress(OSError, ValueError):  # not a real file (e.g. under a test runner)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
