"""`jsarchive keygen`: a new age identity (default) or raw 256-bit key."""

from __future__ import annotations

import os
from pathlib import Path

import click

from pipeline.base.errors import ConflictError
from pipeline.entry.cli.common import emit_json, handle_errors
from pipeline.keys.keyring import generate_identity, generate_raw_key


@click.command("keygen")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write the secret to this file (mode 600)")
@click.option("--raw", is_flag=True, help="a raw 256-bit key (for --key-file / $JSARCHIVE_KEY) instead of age")
@click.option("--json", "as_json", is_flag=True, help="print JSON (the public recipient only, with -o)")
@handle_errors
def keygen_cmd(output: str | None, raw: bool, as_json: bool) -> None:
    """Create a key for encrypted backups.

    The default is an age X25519 identity: pass the file with --identity to back up and restore, or give only
    its public recipient (age1…) with --recipient to hosts that must write backups but never read them.

    With -o the secret goes to FILE and stdout holds only the public key (nothing for --raw), so
    `PUB=$(jsarchive keygen -o backup.key)` captures it; without -o stdout is the key file itself.
    """
    if raw:
        secret, public = generate_raw_key() + "\n", None
    else:
        ident, public = generate_identity()
        secret = f"# created by jsarchive keygen\n# public key: {public}\n{ident}\n"
    if output:
        path = Path(output)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConflictError(f"{path} already exists; keys are never overwritten") from None
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        if as_json:
            emit_json({"ok": True, "file": str(path), "type": "raw" if raw else "age", "recipient": public})
        else:
            # stdout is the public key alone, so `PUB=$(jsarchive keygen -o k)` captures it; the rest is for a person
            what = "raw key (no public key)" if raw else "age identity; its public key (for --recipient) on stdout"
            click.echo(f"wrote {what} to {path}", err=True)
            if public:
                click.echo(public)
        return
    if as_json:
        emit_json(
            {
                "ok": True,
                "type": "raw" if raw else "age",
                "secret": secret.strip().splitlines()[-1],
                "recipient": public,
            }
        )
        return
    if public:
        click.echo(f"public key: {public}", err=True)
    click.echo(secret, nl=False)
