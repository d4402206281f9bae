"""`jsarchive ls`: the backups in an archive, newest first."""

from __future__ import annotations

import click

from pipeline.base.errors import NotFoundError
from pipeline.base.units import human_bytes
from pipeline.entry.cli.common import archive_options, cell, echo, emit_json, handle_errors, sink_options
from pipeline.ops.listing import list_backups


def require_archive(url: str) -> None:
    """NotFoundError when ``url`` is a local path that does not exist. Listing a missing directory finds nothing,
    which would pass for an empty archive: a mistyped path must fail as `verify` does (exit 3), not report "no
    backups". Object stores need no check here: a missing bucket is already an error."""
    scheme, sep, _ = url.partition("://")
    if sep and scheme != "file":
        return
    from pipeline.archive.repository import Repository

    root = getattr(Repository.open(url).sink, "root", None)
    if root is not None and not root.exists():
        raise NotFoundError(f"no archive at {url}: {root} does not exist")


@click.command("ls")
@click.argument("url")
@click.option("--stream", help="only backups of this stream")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@archive_options
@handle_errors
def ls_cmd(url: str, stream: str | None, as_json: bool, **kw: object) -> None:
    """List the backups in the archive at URL, newest first, with the storage class and Object Lock of each data
    object (read with a HEAD)."""
    require_archive(url)
    rows = list_backups(url, stream, sink_options(kw, url=url))
    if as_json:
        emit_json({"ok": True, "backups": [r.to_json() for r in rows]})
        return
    if not rows:
        echo(f"no backups in {url}" + (f" for stream {stream}" if stream else ""), err=True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    columns = ("ID", "STREAM", "CREATED (UTC)", "MESSAGES", "SIZE", "STORED", "RATIO", "FORMAT", "ENCRYPTED")
    for col in (*columns, "CLASS", "LOCK", "RETAIN UNTIL", "ORIGIN", "CHAIN"):
        table.add_column(col, justify="right" if col in ("MESSAGES", "SIZE", "STORED", "RATIO") else "left")
    # Every cell is a Text: names and problems come from the archive and must not be read as rich markup.
    for r in rows:
        if r.problem and not r.snapshot_format:  # the ref's manifest is missing or invalid
            first = (r.manifest_id[:12], r.stream, r.created, "", "", "", "", "")
            table.add_row(*(cell(v) for v in first), cell(r.problem, "red"))
            continue
        first = (
            r.manifest_id[:12],
            r.stream,
            r.created.replace("T", " ")[:19],
            f"{r.messages:,}",
            human_bytes(r.bytes),
            human_bytes(r.stored_bytes),
            f"{r.ratio:.2f}",
            r.snapshot_format,
            "yes" if r.encrypted else "NO",
        )
        last = (
            (r.lock_mode or "") + (" +hold" if r.legal_hold else ""),
            (r.retain_until or "").replace("T", " ")[:19],
            r.origin or "",
            r.point,
        )
        storage = cell("data missing", "red") if r.problem else cell(r.storage_class or "")
        table.add_row(*(cell(v) for v in first), storage, *(cell(v) for v in last))
    Console(width=200).print(table)
