"""The `jsarchive` command line: thin over the library API (one module per command group)."""

from __future__ import annotations

import click

from pipeline import __version__
from pipeline.cli.account_cmd import account_group
from pipeline.cli.common import root_connection_options
from pipeline.cli.demo_cmd import demo_cmd
from pipeline.cli.dr_cmd import dr_group
from pipeline.cli.drill_cmd import drill_cmd, drills_cmd
from pipeline.cli.export_cmd import export_cmd, import_cmd
from pipeline.cli.inspect_cmd import cat_cmd, inspect_cmd
from pipeline.cli.key_cmd import key_group
from pipeline.cli.keygen_cmd import keygen_cmd
from pipeline.cli.ls_cmd import ls_cmd
from pipeline.cli.prune_cmd import prune_cmd
from pipeline.cli.show_cmd import show_cmd
from pipeline.cli.stream_cmd import stream_group
from pipeline.cli.thaw_cmd import thaw_cmd
from pipeline.cli.verify_cmd import verify_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="jsarchive")
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


main.add_command(stream_group)
main.add_command(account_group)
main.add_command(export_cmd)
main.add_command(import_cmd)
main.add_command(ls_cmd)
main.add_command(show_cmd)
main.add_command(verify_cmd)
main.add_command(prune_cmd)
main.add_command(keygen_cmd)
main.add_command(key_group)
main.add_command(thaw_cmd)
main.add_command(dr_group)
main.add_command(drill_cmd)
main.add_command(drills_cmd)
main.add_command(inspect_cmd)
main.add_command(cat_cmd)
main.add_command(demo_cmd)
