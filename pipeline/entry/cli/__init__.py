"""The `jsarchive` command line: thin over the library API (one module per command group)."""

from __future__ import annotations

import importlib

import click

from pipeline.entry.cli.common import root_connection_options

# name -> (module, attribute, short help): a command's module (and what it imports: nats-py, the cloud SDKs, the
# codecs) is loaded only when that command runs, so `--help` and a local `ls` start fast. The short help is the
# command's own (tests/test_cli.py checks they agree).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "stream": ("stream_cmd", "stream_group", "Back up and restore single streams."),
    "account": (
        "account_cmd",
        "account_group",
        "Back up and restore every stream of an account (KV and object-store buckets included).",
    ),
    "export": (
        "export_cmd",
        "export_cmd",
        "Write backup ID as a natscli backup directory DIR (backup.json + stream.tar.s2).",
    ),
    "import": (
        "export_cmd",
        "import_cmd",
        "Bring a natscli stream backup directory (or an account backup: a directory of them)...",
    ),
    "ls": (
        "ls_cmd",
        "ls_cmd",
        "List the backups in the archive at URL, newest first, with the storage class and Object...",
    ),
    "stats": (
        "stats_cmd",
        "stats_cmd",
        "Sum up the archive at URL: backups, streams, logical and stored bytes, the oldest and...",
    ),
    "show": (
        "show_cmd",
        "show_cmd",
        "Show backup ID in the archive at URL: its manifest's clear envelope (identity, server,...",
    ),
    "verify": (
        "verify_cmd",
        "verify_cmd",
        "Check backups in the archive at URL without restoring them: manifest hashes, data...",
    ),
    "prune": (
        "prune_cmd",
        "prune_cmd",
        "Delete the backups of each stream that the --keep-* policy does not keep (restic's...",
    ),
    "keygen": ("keygen_cmd", "keygen_cmd", "Create a key for encrypted backups."),
    "key": (
        "key_cmd",
        "key_group",
        "Key slots of existing backups: list them, add slots for new keys (manifests are never...",
    ),
    "thaw": (
        "thaw_cmd",
        "thaw_cmd",
        "Start restoring backup ID's data from cold storage so that `stream restore` can read it.",
    ),
    "dr": ("dr_cmd", "dr_group", "Disaster recovery: cluster health per stream and the recovery that heals it."),
    "drill": (
        "drill_cmd",
        "drill_cmd",
        "Restore account backup set SET_ID (default: the newest) from URL into a target cluster...",
    ),
    "drills": (
        "drill_cmd",
        "drills_cmd",
        "List the drill reports in the archive, newest first, with their signatures checked...",
    ),
    "inspect": (
        "inspect_cmd",
        "inspect_cmd",
        "Show what backup ID in the archive at URL holds: format, server version, messages,...",
    ),
    "cat": (
        "inspect_cmd",
        "cat_cmd",
        "Print the messages of backup ID in the archive at URL, oldest first, straight from the...",
    ),
    "demo": (
        "demo_cmd",
        "demo_cmd",
        "Fill a stream on an embedded nats-server, back it up into DIR, restore it into a second...",
    ),
}


class LazyGroup(click.Group):
    """The root group: subcommands imported on first use; the command list shows their stored short help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"pipeline.entry.cli.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, _, short) in COMMANDS.items()])


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from pipeline.entry.cli.version import version_text

    click.echo(version_text())
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version, whether the C decoders are in use, the supported nats-server versions, and exit.",
)
@root_connection_options
def main() -> None:
    """Archive NATS JetStream streams into object storage and restore them from it.

    \b
    Exit codes: 0 ok, 1 other failure, 2 bad usage, 3 not found, 4 integrity failure,
    5 no usable key, 6 conflict (already exists), 7 cannot connect, 8 refused by the server,
    9 transfer broke off, 10 archive permission denied, 11 data in cold storage (thaw first),
    12 the NATS server refused the credentials, 130 interrupted.

    \b
    The NATS connection flags (-s/--server, --user, --context, --timeout, --trace, ...) work before the
    subcommand too; a flag given after it wins.
    """
