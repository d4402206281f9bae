"""Command groups with second names for some commands (natscli's `snapshot` for `backup`)."""

from __future__ import annotations

import click


class AliasGroup(click.Group):
    """A group where one command object can be registered under a second name (``add_command(cmd, "alias")``).

    The help lists the second name as "alias of NAME" rather than repeating the command's text, so a reader sees
    that the two are one command, not two that happen to look alike.
    """

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                commands.append((name, cmd))
        if not commands:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in commands)
        rows = [
            (name, f"alias of {cmd.name}" if cmd.name != name else cmd.get_short_help_str(limit))
            for name, cmd in commands
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
