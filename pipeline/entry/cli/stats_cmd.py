"""`jsarchive stats`: what an archive holds, summed up (restic's stats)."""

from __future__ import annotations

import click

from pipeline.base.units import human_bytes
from pipeline.entry.cli.common import archive_options, cell, echo, emit_json, handle_errors, sink_options
from pipeline.entry.cli.ls_cmd import require_archive
from pipeline.ops.stats import ArchiveStats, archive_stats


@click.command("stats")
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@archive_options
@handle_errors
def stats_cmd(url: str, as_json: bool, **kw: object) -> None:
    """Sum up the archive at URL: backups, streams, logical and stored bytes, the oldest and newest backup,
    locked bytes, storage classes and sets (no key needed)."""
    require_archive(url)
    stats = archive_stats(url, sink_options(kw, url=url))
    if as_json:
        emit_json(stats.to_json())
        return
    _print(stats)


def _print(s: ArchiveStats) -> None:
    def line(label: str, value: object) -> None:
        echo(f"{label + ':':<16}{value}")

    line("archive", s.url)
    line("backups", f"{s.backups:,} of {s.streams:,} stream(s)" + (f", {s.sets:,} set(s)" if s.sets else ""))
    line("messages", f"{s.messages:,}")
    line("logical", human_bytes(s.bytes))
    line("stored", human_bytes(s.stored_bytes) + (f" ({s.ratio:.2f}:1)" if s.stored_bytes else ""))
    line("all objects", f"{human_bytes(s.object_bytes)} in {s.objects:,} object(s)")
    line("oldest", _time(s.oldest))
    line("newest", _time(s.newest))
    line("locked", f"{human_bytes(s.locked_bytes)} in {s.locked_backups:,} backup(s)")
    for name, c in sorted(s.storage_classes.items()):
        line(f"class {name or '?'}", f"{human_bytes(c.stored_bytes)} in {c.backups:,} backup(s)")
    for p in s.problems:
        echo(f"problem: {p}", err=True)
    if not s.per_stream:
        return
    from rich.console import Console
    from rich.table import Table

    echo()
    table = Table(box=None, pad_edge=False)
    for col in ("STREAM", "BACKUPS", "SIZE", "STORED", "OLDEST (UTC)", "NEWEST (UTC)"):
        table.add_column(col, justify="right" if col in ("BACKUPS", "SIZE", "STORED") else "left")
    for st in s.per_stream:
        values = (st.stream, f"{st.backups:,}", human_bytes(st.bytes), human_bytes(st.stored_bytes))
        table.add_row(*(cell(v) for v in (*values, _time(st.oldest), _time(st.newest))))
    Console(width=200).print(table)


def _time(created: str | None) -> str:
    return created.replace("T", " ")[:19] if created else "-"
