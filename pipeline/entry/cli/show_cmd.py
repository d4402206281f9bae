"""`jsarchive show`: everything a backup's manifest says, its objects' state, and its body with a key."""

from __future__ import annotations

import json

import click

from pipeline.base.units import human_bytes
from pipeline.entry.cli.common import (
    archive_options,
    echo,
    emit_json,
    handle_errors,
    key_options,
    key_ring,
    sink_options,
)
from pipeline.format.payload import NATSARC, S2_STREAM
from pipeline.ops.listing import BackupDetails, show_backup

STORED_AS = {S2_STREAM: "the S2 stream as sent", NATSARC: "the decoded NATSARC1 archive, re-framed on restore"}


@click.command("show")
@click.argument("url")
@click.argument("backup_id", metavar="ID")
@click.option("--blocks", "show_blocks", is_flag=True, help="also list the block table (--json always does)")
@key_options(write=False)
@archive_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@handle_errors
def show_cmd(url: str, backup_id: str, show_blocks: bool, as_json: bool, **kw: object) -> None:
    """Show backup ID in the archive at URL: its manifest's clear envelope (identity, server, sizes, blocks, key
    slots without their wrapped keys), its data object (storage class, lock), the refs and sets naming it, and,
    with a key (-i / --key-file), the sealed body: stream config and state, consumers, compression, timings."""
    d = show_backup(url, backup_id, key_ring(kw), sink_options(kw, url=url))
    if as_json:
        emit_json({"ok": True, "backup": d.to_json()})
        return
    _print(d, show_blocks)


def _print(d: BackupDetails, show_blocks: bool) -> None:
    """The backup as sections: the clear envelope, its data object, key slots, refs and sets, the sealed body."""
    echo(f"Backup {d.manifest_id}")
    _print_identity(d.envelope)
    _print_data(d)
    _print_encryption(d)
    env = d.envelope
    if env.get("origin"):
        echo(f"  origin         {json.dumps(env['origin'], sort_keys=True)}")
    echo(f"  refs           {', '.join(d.refs) if d.refs else 'none (not listed by `jsarchive ls`)'}")
    if d.sets:
        echo(f"  in sets        {', '.join(x[:12] for x in d.sets)}")
    if show_blocks:
        echo("  blocks         offset, length, sha256")
        for off, n, sha in env.get("blocks") or []:
            echo(f"                 {off:>12} {n:>10} {sha}")
    if d.body is None:
        echo(f"  body           {d.body_note}")
        return
    if d.body_note:
        echo(f"  note           {d.body_note}")
    _print_body(d.body)


def _print_identity(env: dict) -> None:
    s = env.get("summary") or {}
    srv = env.get("server") or {}
    echo(f"  backup id      {env.get('backup_id')}")
    echo(f"  stream         {env.get('stream')}")
    echo(f"  created        {env.get('created')}")
    tool = env.get("tool") or {}
    echo(f"  written by     {tool.get('name', '?')} {tool.get('version', '?')} (format v{env.get('version')})")
    where = ", ".join(x for x in (srv.get("name"), f"cluster {srv['cluster']}" if srv.get("cluster") else None) if x)
    level = srv.get("api_level")
    echo(
        f"  server         nats-server {srv.get('version') or '?'}{f' ({where})' if where else ''}, "
        f"API level {level if level is not None else '?'}"
    )
    echo(f"  snapshot       {env.get('snapshot_format')}, {human_bytes(int(s.get('snapshot_bytes', 0)))}")
    echo(
        f"  stream state   {int(s.get('messages', 0)):,} messages, {human_bytes(int(s.get('bytes', 0)))}, sequences "
        f"{s.get('first_seq', '?')}–{s.get('last_seq', '?')}, {s.get('consumers', 0)} consumer(s), "
        f"{s.get('storage', '?')} storage, R{s.get('replicas', '?')}"
    )


def _print_data(d: BackupDetails) -> None:
    data = d.envelope.get("data") or {}
    blocks = d.envelope.get("blocks") or []
    echo(
        f"  data           {data.get('key')}: {human_bytes(int(data.get('size', 0)))} in {len(blocks)} block(s) "
        f"of {human_bytes(int(data.get('block_size', 0)))}"
    )
    obj = d.data_object
    if obj is None:
        echo("                 MISSING from the archive")
        return
    lock = ""
    if obj["lock_mode"] or obj["legal_hold"]:
        lock = f", {obj['lock_mode'] or ''}{' until ' + obj['retain_until'] if obj['retain_until'] else ''}"
        lock += " + legal hold" if obj["legal_hold"] else ""
    cold = " (archived: thaw before reading)" if obj["archived"] else ""
    echo(f"                 {obj['storage_class'] or '?'}{cold}, {human_bytes(obj['size'])} stored{lock}")


def _slot_label(slot: dict, hidden: tuple[str, ...]) -> str:
    return ", ".join(f"{k} {v}" for k, v in slot.items() if k not in hidden) or "-"


def _print_encryption(d: BackupDetails) -> None:
    enc = d.envelope.get("encryption") or {}
    if enc.get("scheme") == "none":
        echo("  encryption     NONE")
    else:
        echo(f"  encryption     {enc.get('scheme')}, {len(d.key_slots)} key slot(s):")
        for slot in d.key_slots:
            echo(f"                 {slot.get('type')}: {_slot_label(slot, ('type', 'wrapped_bytes'))}")
    for extra in d.added_slots:
        label = _slot_label(extra, ("type", "object"))
        echo(f"                 {extra.get('type', 'INVALID')}: {label} (added: {extra['object']})")


def _print_body(b: dict) -> None:
    comp = b.get("compression") or {}
    snap = b.get("snapshot") or {}
    timings = b.get("timings") or {}
    echo(f"  compression    {comp.get('algorithm')} level {comp.get('level')}")
    stored = STORED_AS.get(str(snap.get("inner_encoding")), "")
    if snap.get("received_bytes") is not None:
        stored += f", {human_bytes(int(snap['received_bytes']))} as the server sent it"
    echo(
        f"  snapshot       {snap.get('inner_encoding')}{f' ({stored})' if stored else ''}, {snap.get('chunks')} "
        f"chunks, consumers {'excluded' if snap.get('no_consumers') else 'included'}, took "
        f"{timings.get('seconds', '?')} s"
    )
    consumers = [c.get("name") or (c.get("config") or {}).get("durable_name") for c in b.get("consumers") or []]
    echo(f"  consumers      {', '.join(str(c) for c in consumers) if consumers else 'none'}")
    echo("  config         " + json.dumps(b.get("config") or {}, sort_keys=True))
    echo("  state          " + json.dumps(b.get("state") or {}, sort_keys=True))
