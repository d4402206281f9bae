"""`jsarchive export` and `jsarchive import`: natscli backup directories out of and into the archive."""

from __future__ import annotations

import datetime as dt
from functools import partial

import click

from pipeline.base.transfer import TransferConfig
from pipeline.base.units import human_bytes
from pipeline.entry.cli.at_option import at_option, parse_at
from pipeline.entry.cli.common import (
    SIZE,
    archive_options,
    echo,
    emit_json,
    handle_errors,
    key_options,
    key_ring,
    make_progress,
    output_options,
    retention,
    sign_key,
    sign_key_option,
    signer_fingerprint,
    sink_options,
    storage_options,
    trust_options,
    trust_policy,
)
from pipeline.format.compress import Compression
from pipeline.ops.natscli import ExportOptions, ImportOptions, export_backup, import_directory


@click.command("export")
@click.argument("url")
@click.argument("backup_id", metavar="ID")
@click.argument("directory", metavar="DIR")
@at_option()
@trust_options
@key_options(write=False)
@archive_options
@output_options
@handle_errors
def export_cmd(
    url: str, backup_id: str, directory: str, at: str | None, no_progress: bool, as_json: bool, **kw: object
) -> None:
    """Write backup ID as a natscli backup directory DIR (backup.json + stream.tar.s2).

    With --at TIME, ID is a stream name: its newest backup created at or before TIME is written (none: exit 3).

    ID may also be an account set: DIR then holds one such directory per stream, as `nats account backup`
    writes it. DIR must not exist (or be empty); nothing appears there unless the whole export succeeded.
    With a key configured an unencrypted backup is refused (--allow-unencrypted), with --trust-key anything not
    signed by a trusted key (exit 4).
    """
    when = parse_at(at)
    keys = key_ring(kw)
    sink = sink_options(kw, url=url)
    backup_id = _trusted_id(url, backup_id, sink, trust_policy(kw, keys), when)
    res = export_backup(
        ExportOptions(url=url, backup=backup_id, directory=directory, keys=keys, sink=sink),
        make_progress(no_progress, as_json),
    )
    for w in res.warnings:  # stderr in both modes: the export succeeded, but natscli will not restore everything
        echo(f"warning: {w}", err=True)
    if as_json:
        emit_json({"ok": True, "export": res.to_json()})
        return
    what = f"backup {res.id[:12]}" if res.kind == "stream" else f"set {res.id[:12]} ({len(res.streams)} streams)"
    echo(f"Exported {what} to {res.directory} in {res.seconds:.2f} s")
    for s in res.streams:
        echo(f"  {s.stream}: {human_bytes(s.snapshot_bytes)} stream.tar.s2 ({s.snapshot_format}) in {s.directory}")


@click.command("import")
@click.argument("directory", metavar="DIR")
@click.argument("url")
@click.option(
    "--consumers/--no-consumers",
    default=None,
    help="not needed: whether the natscli backup included consumers is read from the snapshot; given, it must agree",
)
@click.option("--compression", default="zstd:3", show_default=True, help="zstd, zstd:LEVEL (1-22) or none")
@click.option("--no-encrypt", is_flag=True, help="store the import unencrypted (recorded in the manifest)")
@click.option("--block-size", type=SIZE, default=None, help="archive block size [8MiB, grown for large files]")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="compress/seal threads")
@sign_key_option
@storage_options
@key_options(write=True)
@archive_options
@output_options
@handle_errors
def import_cmd(
    directory: str,
    url: str,
    consumers: bool | None,
    compression: str,
    no_encrypt: bool,
    block_size: int | None,
    workers: int,
    storage_class: str | None,
    sse_kms_key: str | None,
    no_progress: bool,
    as_json: bool,
    **kw: object,
) -> None:
    """Bring a natscli stream backup directory (or an account backup: a directory of them) into the archive at URL.

    Every stream becomes an ordinary encrypted backup whose manifest records that it was imported; an account
    directory also gets a set, so `jsarchive account restore` can restore it as a whole.
    """
    key = sign_key(kw)
    sink, lock = sink_options(kw, sse_kms_key, url=url), retention(kw)
    res = import_directory(
        ImportOptions(
            directory=directory,
            url=url,
            keys=key_ring(kw),
            encrypt=not no_encrypt,
            compression=Compression.parse(compression),
            consumers=consumers,
            transfer=TransferConfig(block_size=block_size, workers=workers),
            storage_class=storage_class.upper() if storage_class else None,
            retention=lock,
            sink=sink,
            sign_key=key,
        ),
        make_progress(no_progress, as_json),
    )
    if key is not None and res.set_id:
        from pipeline.archive.repository import Repository
        from pipeline.archive.signing import sign

        sign(Repository.open(url, sink), "set", res.set_id, key, lock)  # its manifests were signed as committed
    if as_json:
        emit_json({"ok": True, "import": res.to_json()})
        return
    echo(f"Imported {len(res.streams)} stream(s) from {res.directory} in {res.seconds:.2f} s")
    for b in res.streams:
        echo(
            f"  {b.stream}: {b.messages:,} messages, snapshot {human_bytes(b.snapshot_bytes)} ({b.snapshot_format}) "
            f"→ stored {human_bytes(b.stored_bytes)} as {b.manifest_id}"
        )
    if res.set_id:
        echo(f"  set {res.set_id}")
    if key is not None:
        echo(f"  signed by key {signer_fingerprint(key)[:16]}")


def _trusted_id(url: str, ident: str, sink: object, policy: object, at: dt.datetime | None = None) -> str:
    """The full id of the backup or set to export, once the trust policy accepts it (and every member of a set);
    with ``at``, ``ident`` is a stream and this is its newest backup at or before ``at`` the policy accepts."""
    from pipeline.archive.repository import Repository
    from pipeline.archive.trust import preflight_set
    from pipeline.ops.natscli import resolve_backup_or_set

    repo = Repository.open(url, sink)  # type: ignore[arg-type]
    if at is not None:
        skipped: list[str] = []
        full = repo.newest_at(ident, at, partial(policy.manifest_problem, repo), skipped).id  # type: ignore[attr-defined]
        for w in skipped:  # the refused newer ones, as restore names them
            echo(f"warning: {w}", err=True)
        return full
    kind, full = resolve_backup_or_set(repo, ident)
    if kind == "manifest":
        policy.check_manifest(repo, repo.load_manifest(full))  # type: ignore[attr-defined]
    else:
        preflight_set(repo, full, [], [], policy)  # type: ignore[arg-type]
    return full
