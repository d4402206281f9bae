"""The options every backing-up command shares (`stream backup`, `account backup`), declared once, and the
restore transfer knobs (`stream restore`, `account restore`): each decorator has a builder that takes its values
out of click's keyword arguments, as in cli/common.py."""

from __future__ import annotations

from collections.abc import Callable

import click

from pipeline.base.transfer import TransferConfig
from pipeline.entry.cli.common import SIZE, connect_options, key_ring, retention, sign_key, sink_options
from pipeline.flows.backup import BackupOptions
from pipeline.format.compress import Compression


def _apply(f: Callable, opts: list[Callable]) -> Callable:
    for o in reversed(opts):
        f = o(f)
    return f


def backup_options(f: Callable) -> Callable:
    """What is snapshotted, how it is stored, and the transfer knobs of the write."""
    return _apply(
        f,
        [
            click.option(
                "--consumers/--no-consumers", default=True, show_default=True, help="include consumers and their state"
            ),
            click.option("--check", is_flag=True, help="have the server check message checksums first (V1 servers)"),
            click.option(
                "--chunk-size",
                type=SIZE,
                default=None,
                show_default="auto: 256KiB, 1MiB from 10 ms round trip",
                help="snapshot chunk size the server sends (1KiB–1MiB)",
            ),
            click.option(
                "--window-size",
                type=SIZE,
                default=None,
                show_default="auto: 16MiB, up to 32MiB for 2 × 1 Gbit/s × round trip",
                help="bytes the server may have unacknowledged (servers >= 2.12.5)",
            ),
            click.option("--compression", default="zstd:3", show_default=True, help="zstd, zstd:LEVEL (1-22) or none"),
            click.option(
                "--store",
                type=click.Choice(["snapshot", "decoded"]),
                default="snapshot",
                show_default=True,
                help="keep the snapshot as the server sent it (S2), or its decoded NATSARC1 archive: smaller under "
                "zstd, re-framed on restore; needs nats-server >= 2.15",
            ),
            click.option("--no-encrypt", is_flag=True, help="store unencrypted (recorded in the manifest)"),
            click.option(
                "--incremental",
                is_flag=True,
                help="store only the messages after the stream's newest restore point (a delta); a full backup "
                "starts the chain, and is taken instead when the stream was re-created or purged past it "
                "(nats-server >= 2.15)",
            ),
            click.option(
                "--full-every",
                type=click.IntRange(1),
                default=None,
                metavar="N",
                help="with --incremental: a full backup once the chain holds N restore points",
            ),
            click.option(
                "--block-size", type=SIZE, default=None, help="archive block size [8MiB, grown for large streams]"
            ),
            click.option(
                "--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="compress/seal threads"
            ),
            click.option(
                "--buffer-blocks",
                type=click.IntRange(0, 64),
                default=2,
                show_default=True,
                help="blocks buffered between NATS and the archive (memory ≈ (workers + buffer) × block size)",
            ),
        ],
    )


def backup_options_of(kw: dict, stream: str, url: str) -> BackupOptions:
    """The BackupOptions of this invocation (for an account backup, the ones every stream is backed up with:
    ``stream`` is then filled in per stream). Needs :func:`backup_options`, cli.common's connection, key, archive,
    storage and sign-key options."""
    storage_class = kw.pop("storage_class", None)
    return BackupOptions(
        stream=stream,
        url=url,
        connect=connect_options(kw),
        keys=key_ring(kw),
        encrypt=not kw.pop("no_encrypt"),
        compression=Compression.parse(kw.pop("compression")),
        store=kw.pop("store"),
        consumers=kw.pop("consumers"),
        check=kw.pop("check"),
        transfer=TransferConfig(
            snapshot_chunk=kw.pop("chunk_size"),
            snapshot_window=kw.pop("window_size"),
            block_size=kw.pop("block_size"),
            workers=kw.pop("workers"),
            buffer_blocks=kw.pop("buffer_blocks"),
        ),
        storage_class=storage_class.upper() if storage_class else None,
        retention=retention(kw),
        sink=sink_options(kw, kw.pop("sse_kms_key", None), url=url),
        sign_key=sign_key(kw),
        incremental=kw.pop("incremental"),
        full_every=kw.pop("full_every"),
    )


def restore_transfer_options(f: Callable) -> Callable:
    """--chunk-size and --in-flight of a restore."""
    return _apply(
        f,
        [
            click.option(
                "--chunk-size",
                type=SIZE,
                default=None,
                show_default="auto: 1MiB or the server's max_payload if smaller",
                help="restore chunk size (at most the server's max_payload)",
            ),
            click.option(
                "--in-flight",
                type=click.IntRange(1, 64),
                default=None,
                show_default="auto: 4 to 16, from the measured round trip",
                help="restore chunks sent before waiting for acknowledgements",
            ),
        ],
    )


def restore_transfer(kw: dict) -> TransferConfig:
    return TransferConfig(restore_chunk=kw.pop("chunk_size"), in_flight=kw.pop("in_flight"))
