"""`jsarchive demo`: back up and restore a stream between two embedded nats-servers."""

from __future__ import annotations

import asyncio
import sys

import click

from pipeline.base.errors import IntegrityError
from pipeline.entry.cli.common import emit_json, handle_errors, make_progress


@click.command("demo")
@click.option("--dir", "workdir", default="jsarchive-demo", show_default=True, help="where the archive and key go")
@click.option("--messages", type=click.IntRange(10, 10_000_000), default=5000, show_default=True)
@click.option("--no-progress", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def demo_cmd(workdir: str, messages: int, no_progress: bool, as_json: bool) -> None:
    """Fill a stream on an embedded nats-server, back it up into DIR, restore it into a second one, compare."""
    from pipeline.ops.demo import run_demo

    say = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    res = asyncio.run(run_demo(workdir, messages, make_progress(no_progress, as_json), say))
    if as_json:
        emit_json(
            {
                "ok": res.identical,
                "backup": res.backup.to_json(),
                "restore": res.restore.to_json(),
                "source": res.source,
                "target": res.target,
            }
        )
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"stream ORDERS: source vs restored (backup {res.backup.manifest_id[:12]})")
        for c in ("", "source", "restored", ""):
            t.add_column(c)
        for k, a, b in res.rows:
            t.add_row(k, a, b, "ok" if a == b else "[red]DIFFERENT[/red]")
        Console().print(t)
        click.echo(f"archive: {res.archive}   key: {res.key_file}")
        click.echo(f"try: jsarchive ls {res.archive}")
    if not res.identical:
        raise IntegrityError("the restored stream differs from the source")
    sys.stdout.flush()
