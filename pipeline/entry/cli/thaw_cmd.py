"""`jsarchive thaw`: make a backup in GLACIER / DEEP_ARCHIVE readable again."""

from __future__ import annotations

import click

from pipeline.entry.cli.common import archive_options, echo, emit_json, handle_errors, sink_options
from pipeline.ops.thaw import TIERS, thaw_backup


@click.command("thaw")
@click.argument("url")
@click.argument("backup_id", metavar="ID")
@click.option(
    "--tier",
    type=click.Choice(TIERS, case_sensitive=False),
    default="Standard",
    show_default=True,
    help="retrieval speed and cost (S3 Glacier tiers)",
)
@click.option(
    "--days", type=click.IntRange(1, 3650), default=7, show_default=True, help="how long the thawed copy stays readable"
)
@click.option("--wait", is_flag=True, help="wait until the data can be read (hours for Standard/Bulk)")
@click.option("--poll", type=float, default=60.0, show_default=True, help="seconds between checks with --wait")
@click.option("--wait-timeout", type=float, default=48 * 3600, show_default=True, help="give up after this long")
@archive_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@handle_errors
def thaw_cmd(
    url: str,
    backup_id: str,
    tier: str,
    days: int,
    wait: bool,
    poll: float,
    wait_timeout: float,
    as_json: bool,
    **kw: object,
) -> None:
    """Start restoring backup ID's data from cold storage so that `stream restore` can read it."""
    tier = next(t for t in TIERS if t.lower() == tier.lower())
    res = thaw_backup(
        url,
        backup_id,
        days=days,
        tier=tier,
        wait=wait,
        wait_timeout=wait_timeout,
        poll=poll,
        sink=sink_options(kw, url=url),
        say=lambda m: echo(m, err=True),
    )
    if as_json:
        emit_json({"ok": True, "thaw": res.to_json()})
    elif res.status == "available":
        echo(f"backup {res.manifest_id[:12]} is readable now")
    else:
        echo(
            f"backup {res.manifest_id[:12]}: thaw {res.status}; run `jsarchive thaw {url} "
            f"{res.manifest_id[:12]} --wait` or try the restore later"
        )
