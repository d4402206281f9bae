"""`jsarchive key list` and `jsarchive key add-slot`: the key slots of existing backups."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from pipeline.entry.cli.common import (
    archive_options,
    echo,
    emit_json,
    handle_errors,
    kms_endpoint_option,
    kms_key_options,
    sink_options,
)
from pipeline.keys.keyring import KeyRing
from pipeline.ops.keyslots import AddSlotOptions, SlotInfo, add_slots, list_slots


@click.group("key")
def key_group() -> None:
    """Key slots of existing backups: list them, add slots for new keys (manifests are never rewritten)."""


def _public(s: SlotInfo) -> str:
    where = "manifest" if s.source == "manifest" else f"added ({s.object})"
    extra = f", region {s.region}" if s.region else ""
    extra += f", version {s.key_version.rsplit('/', 1)[-1]}" if s.key_version else ""
    ident = s.recipient or s.key_id or s.key_name or ""
    return f"  {s.type:<8} {ident}{extra}  [{where}]"


@key_group.command("list")
@click.argument("url")
@click.argument("backup_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@archive_options
@handle_errors
def list_cmd(url: str, backup_id: str, as_json: bool, **kw: object) -> None:
    """List the key slots of backup ID in the archive at URL: type and public key identifier, never secrets.

    No key is needed. Slots added with `key add-slot` are listed after the manifest's own; added slot objects
    that are invalid (altered, or made for another backup) are listed as such and never used.
    """
    res = list_slots(url, backup_id, sink=sink_options(kw, url=url))
    if as_json:
        emit_json({"ok": True, "key_slots": res.to_json()})
        return
    echo(f"backup {res.manifest_id} (stream {res.stream}, {res.created})")
    if not res.encrypted:
        echo("  not encrypted (made with --no-encrypt): no key slots")
    for s in res.slots:
        echo(_public(s))
    for bad in res.invalid:
        echo(f"  INVALID  {bad.object}: {bad.problem}")


def _unlock_kms_options(f: Callable) -> Callable:
    for o in reversed(kms_key_options(write=False, prefix="unlock-")):
        f = o(f)
    return f


@key_group.command("add-slot")
@click.argument("url")
@click.argument("backup_ids", metavar="[ID]...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="every backup in the archive")
@click.option("--stream", "streams", multiple=True, help="with --all: only backups of this stream (repeatable)")
@click.option("--recipient", "-r", "recipients", multiple=True, metavar="AGE1…", help="new slot: age recipient")
@click.option(
    "--recipients-file", "-R", "recipients_files", multiple=True, metavar="FILE", help="new slots: recipients file"
)
@click.option("--key-file", "key_files", multiple=True, metavar="FILE", help="new slot: raw 256-bit key file")
@click.option(
    "--kms-key", "kms_keys", multiple=True, metavar="ARN|ALIAS|ID", help="new slot: AWS KMS key (needs kms:Encrypt)"
)
@click.option(
    "--gcp-kms-key",
    "gcp_kms_keys",
    multiple=True,
    metavar="projects/…/cryptoKeys/K",
    help="new slot: Google Cloud KMS key (needs cryptoKeyEncrypter)",
)
@click.option("--identity", "-i", "identity_files", multiple=True, metavar="FILE", help="unlock: age identity file")
@click.option(
    "--unlock-key-file",
    "unlock_key_files",
    multiple=True,
    metavar="FILE",
    help="unlock: raw key file (and $JSARCHIVE_KEY)",
)
@_unlock_kms_options
@kms_endpoint_option
@archive_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@handle_errors
def add_slot_cmd(
    url: str,
    backup_ids: tuple[str, ...],
    all_: bool,
    streams: tuple[str, ...],
    as_json: bool,
    **kw: object,
) -> None:
    """Add key slots to backups ID... (or --all) in the archive at URL.

    \b
    The data key is unwrapped with a key that already opens the backup (unlock: -i/--identity,
    --unlock-key-file, $JSARCHIVE_KEY, --unlock-kms-key, --unlock-gcp-kms-key, --use-kms-slots), checked against
    the backup, and wrapped for each new key (--recipient, --recipients-file, --key-file, --kms-key,
    --gcp-kms-key). Each new slot is a separate immutable object keyslots/<manifest-id>/<sha256>; manifests are
    never rewritten. Slots a backup already has are not added again. Old slots keep working: adding a slot grants
    access, it revokes none.
    """
    profile = kw.get("profile")
    endpoint = kw.pop("kms_endpoint", None)
    unlock = KeyRing.load(
        identity_files=list(kw.pop("identity_files")),
        key_files=list(kw.pop("unlock_key_files")),
        kms_keys=list(kw.pop("unlock_kms_keys")),
        gcp_kms_keys=list(kw.pop("unlock_gcp_kms_keys")),
        kms_endpoint=endpoint,
        aws_profile=profile,
        use_kms_slots=bool(kw.pop("use_kms_slots")),
    )
    new = KeyRing.load(
        recipients=list(kw.pop("recipients")),
        recipients_files=list(kw.pop("recipients_files")),
        key_files=list(kw.pop("key_files")),
        kms_keys=list(kw.pop("kms_keys")),
        gcp_kms_keys=list(kw.pop("gcp_kms_keys")),
        use_env=False,
        kms_endpoint=endpoint,
        aws_profile=profile,
    )
    res = add_slots(
        AddSlotOptions(
            url=url,
            unlock=unlock,
            new=new,
            backups=list(backup_ids),
            all=all_,
            streams=list(streams),
            sink=sink_options(kw, url=url),
        )
    )
    failed = res.failed
    if as_json:
        emit_json({"ok": not failed, "key_slots": res.to_json()})
    else:
        for b in res.backups:
            head = f"backup {b.manifest_id[:12]} ({b.stream}, {b.created})"
            if b.error:
                echo(f"{head}: FAILED: {b.error['message']}", err=True)
                continue
            if b.skipped:
                echo(f"{head}: skipped, {b.skipped}")
                continue
            added = "; ".join(f"{s.description} as {s.object}" for s in b.added) or "nothing new"
            echo(f"{head}: added {added}")
            for p in b.present:
                echo(f"  already has {p}")
        if not res.backups:
            echo(f"no backups in {url}" + (f" of {', '.join(streams)}" if streams else ""), err=True)
    if failed:
        codes = {b.error["exit_code"] for b in failed}
        if not as_json:
            echo(f"jsarchive: error: {len(failed)} of {len(res.backups)} backups got no new slot", err=True)
        sys.exit(codes.pop() if len(codes) == 1 else 1)
