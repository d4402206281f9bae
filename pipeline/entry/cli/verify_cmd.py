"""`jsarchive verify`: check stored bytes, sizes, refs and sets without restoring (and, with --deep, the payload)."""

from __future__ import annotations

import sys
from typing import Any

import click

from pipeline.archive.verify import FAILED, OK, VerifyOptions, VerifyReport, verify_archive
from pipeline.base.units import human_bytes
from pipeline.entry.cli.common import (
    archive_options,
    echo,
    emit_json,
    handle_errors,
    key_options,
    key_ring,
    make_progress,
    output_options,
    sink_options,
    trust_key_option,
    trusted_keys,
)


@click.command("verify")
@click.argument("url")
@click.argument("backup_id", metavar="[ID]", required=False)
@click.option("--latest", is_flag=True, help="the newest backup of each stream (or of --stream)")
@click.option("--all", "all_", is_flag=True, help="every backup, ref and set (the default)")
@click.option("--stream", help="only backups (and refs) of this stream")
@click.option("--deep", is_flag=True, help="also decrypt, decompress and parse every block (needs a key if encrypted)")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="parallel ranged reads")
@trust_key_option
@key_options(write=False)
@archive_options
@output_options
@handle_errors
def verify_cmd(
    url: str,
    backup_id: str | None,
    latest: bool,
    all_: bool,
    stream: str | None,
    deep: bool,
    workers: int,
    as_json: bool,
    no_progress: bool,
    **kw: object,
) -> None:
    """Check backups in the archive at URL without restoring them: manifest hashes, data object sizes, every
    block's stored SHA-256 (no key needed), and that refs and sets point at existing manifests.

    \b
    --deep also opens every block, checks its plaintext hash and parses the snapshot to its end.
    Each backup and set shows who signed it; with --trust-key one not signed by a trusted key FAILS.
    A ref whose name's time is not its manifest's created time FAILS (ref names are not authenticated).
    Exit code: 0 all OK, 4 anything FAILED; otherwise why something stayed UNVERIFIED
    (5 no key for --deep, 7 unreachable, 10 access denied, 11 data in cold storage)."""
    opts = VerifyOptions(
        url=url,
        backup=backup_id,
        latest=latest,
        all=all_,
        stream=stream,
        deep=deep,
        keys=key_ring(kw),
        workers=workers,
        sink=sink_options(kw, url=url),
        trust_keys=trusted_keys(kw),
    )
    report = verify_archive(opts, make_progress(no_progress, as_json))
    if as_json:
        emit_json(report.to_json())
    else:
        _print(report)
    if report.exit_code:
        sys.exit(report.exit_code)


def _print(r: VerifyReport) -> None:
    """Each backup with its problems and notes, the broken links, the link counts, then the totals."""
    for b in r.backups:
        _print_backup(b)
    bad = [link for link in r.links if not link.ok]
    for link in bad:
        echo(f"{FAILED:<10}  {link.kind} {link.key}" + (f"; {link.signature}" if link.signature else ""))
        for p in link.problems:
            echo(f"            {p}")
    refs = [x for x in r.links if x.kind == "ref"]
    sets = [x for x in r.links if x.kind == "set"]
    if refs or sets:
        echo(f"refs: {sum(x.ok for x in refs)} of {len(refs)} OK; sets: {sum(x.ok for x in sets)} of {len(sets)} OK")
    for w in r.warnings:
        echo(f"warning: {w}", err=True)
    echo(_totals(r, len(bad)))


def _print_backup(b: Any) -> None:
    what = f"{b.stream or '?'}  {(b.created or '').replace('T', ' ')[:19]}"
    size = f"{b.blocks_checked}/{b.blocks} blocks, {human_bytes(b.stored_bytes)}"
    if b.deep:
        size += f", deep: {human_bytes(b.snapshot_bytes or 0)} decoded"
        if b.messages is not None:
            size += f", {b.messages:,} messages"
    echo(f"{b.status:<10}  {b.manifest_id[:12]}  {what}  {size}" + (f"; {b.signature}" if b.signature else ""))
    for p in b.problems:
        echo(f"            {p}")
    for n in b.notes:
        echo(f"            note: {n}")


def _totals(r: VerifyReport, broken: int) -> str:
    counts = {s: sum(1 for b in r.backups if b.status == s) for s in (OK, FAILED, "UNVERIFIED")}
    rate = f"{human_bytes(r.rate)}/s" if r.seconds else "-"
    return (
        f"{len(r.backups)} backup(s): {counts[OK]} OK, {counts[FAILED]} FAILED, {counts['UNVERIFIED']} UNVERIFIED"
        f"{', ' + str(broken) + ' broken ref/set link(s)' if broken else ''}; {human_bytes(r.bytes_read)} read in "
        f"{r.seconds:.1f} s ({rate})" + ("" if r.deep else "; keyless check (add --deep to decode)")
    )
