"""`jsarchive drill` (restore a set beside production, check it, keep the evidence) and `jsarchive drills`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.base.errors import UsageError, setting
from pipeline.entry.cli.at_option import at_option, exclusive, parse_at
from pipeline.entry.cli.common import (
    archive_options,
    connect_options,
    connection_options,
    echo,
    emit_json,
    handle_errors,
    key_options,
    key_ring,
    restore_target,
    sink_options,
    trust_options,
    trust_policy,
)
from pipeline.ops.drill import DrillFailed, DrillOptions, DrillResult, list_reports, run_drill


@click.command("drill")
@click.argument("url")
@click.argument("set_id", required=False)
@click.option("--latest", is_flag=True, help="the newest set (the default without SET_ID)")
@at_option("set")
@click.option("--cluster", help="target cluster")
@click.option("--tag", "tags", multiple=True, help="target servers' tag (repeatable)")
@click.option("--replicas", type=click.IntRange(1, 5), help="replicas of the drill streams [as backed up]")
@click.option("--prefix", default="DRILL_", show_default=True, help="drill stream names: PREFIX + name")
@click.option("--subject-prefix", help="drill subjects: SUBJECT_PREFIX.<subject> [--prefix without trailing _]")
@click.option("--include", multiple=True, help="only streams matching this glob (repeatable)")
@click.option("--exclude", multiple=True, help="skip streams matching this glob (repeatable)")
@click.option("--keep", is_flag=True, help="leave the drill streams on the target")
@click.option("--sign-key", type=click.Path(dir_okay=False), help="Ed25519 private key (PEM) to sign the report")
@click.option("--parallel", type=click.IntRange(1, 16), default=2, show_default=True, help="streams restored at once")
@click.option("--wait", type=float, default=120.0, show_default=True, help="seconds a stream may take to be healthy")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@connection_options
@trust_options
@key_options(write=False)
@archive_options
@handle_errors
def drill_cmd(url: str, set_id: str | None, latest: bool, at: str | None, as_json: bool, **kw: object) -> None:
    """Restore account backup set SET_ID (default: the newest) from URL into a target cluster under prefixed names
    with rewritten subjects, check message counts, last sequences and consumer ack floors against the manifests,
    measure RTO and RPO, write an evidence report into the archive under drills/ (signed with --sign-key), and
    remove the drill streams unless --keep. --at TIME drills the newest set finished at or before TIME.

    Servers before 2.15 cannot take renamed streams: there the drill restores under the original names and needs a
    target deployment where they are free.

    With a key configured every selected backup must be encrypted (or --allow-unencrypted); with --trust-key the
    set and every backup must be signed by a trusted key (exit 4, checked before the target is touched)."""
    from pipeline.archive.repository import Repository
    from pipeline.archive.trust import preflight_set

    if set_id and latest:
        raise UsageError("give a SET_ID or --latest, not both")
    exclusive(at, set_id, "a SET_ID")
    exclusive(at, latest, setting("latest"))
    when = parse_at(at)
    keys = key_ring(kw)
    policy = trust_policy(kw, keys)
    sink = sink_options(kw, url=url)
    include, exclude = list(kw.pop("include")), list(kw.pop("exclude"))
    # A drill's evidence is only worth something if what it restored is what the policy accepts.
    bset, notes = preflight_set(Repository.open(url, sink), set_id, include, exclude, policy, at=when)
    for w in notes:
        echo(f"warning: {w}", err=True)
    opts = DrillOptions(
        url=url,
        set_id=bset.id,
        connect=connect_options(kw),
        keys=keys,
        trust=policy,
        target=restore_target(kw),
        prefix=kw.pop("prefix"),
        subject_prefix=kw.pop("subject_prefix"),
        include=include,
        exclude=exclude,
        keep=kw.pop("keep"),
        sign_key=kw.pop("sign_key"),
        parallel=kw.pop("parallel"),
        wait=kw.pop("wait"),
        sink=sink,
    )
    try:
        result = run_drill(opts)
    except DrillFailed as e:
        # the evidence is the output; the error line follows it on stderr
        if as_json:
            emit_json({"ok": False, **e.result.to_json(), "error": {"kind": e.kind, "exit_code": e.exit_code}})
            echo(f"jsarchive: error: {e}", err=True)
            raise SystemExit(e.exit_code) from None
        _show(e.result, as_json)
        raise
    _show(result, as_json)


def _show(result: DrillResult, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": result.passed, **result.to_json()})
        return
    r = result.report
    echo(
        f"drill {'PASSED' if result.passed else 'FAILED'}: set {r['set']['id'][:12]} into "
        f"{r['target']['cluster'] or ','.join(r['target']['tags'])} (nats-server {r['target']['server_version']}), "
        f"RTO {r['rto_s']:.1f} s, RPO {r['rpo_s']:.0f} s"
    )
    for s in r["streams"]:
        status = "ok" if s["ok"] else "FAILED: " + "; ".join(s["problems"])
        echo(
            f"  {s['stream']} -> {s['drill_stream']}: {s['got'].get('messages', 0):,} messages, "
            f"last_seq {s['got'].get('last_seq', 0)}, {len(s['got'].get('consumers') or {})} consumer(s), "
            f"{s['restore_s']:.1f} s: {status}"
        )
    if r["note"]:
        echo(f"  note: {r['note']}")
    echo(f"report: {result.report_key}" + (f" (signed: {result.signature_key})" if result.signature_key else ""))
    if result.kept:
        echo(f"kept on the target: {', '.join(result.kept)}")


@click.command("drills")
@click.argument("url")
@click.option(
    "--public-key", type=click.Path(exists=True, dir_okay=False), help="Ed25519 public key (PEM) of the signer"
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@archive_options
@handle_errors
def drills_cmd(url: str, public_key: str | None, as_json: bool, **kw: object) -> None:
    """List the drill reports in the archive, newest first, with their signatures checked (against --public-key
    when given). Exit code 4 if a signature is invalid."""
    pem = Path(public_key).read_bytes() if public_key else None
    rows = list_reports(url, sink_options(kw, url=url), pem)
    bad = [r for r in rows if r.signature.startswith("invalid") or r.problem]
    if as_json:
        emit_json({"ok": not bad, "reports": [r.to_json() for r in rows]})
    else:
        if not rows:
            echo(f"no drill reports in {url}", err=True)
        for r in rows:
            verdict = "?" if r.passed is None else ("passed" if r.passed else "FAILED")
            rto = f"RTO {r.rto_s:.1f} s" if r.rto_s is not None else ""
            rpo = f"RPO {r.rpo_s:.0f} s" if r.rpo_s is not None else ""
            echo(f"{r.key}  {r.started[:19]}  {verdict:6}  {r.streams} stream(s)  {rto}  {rpo}  {r.signature}")
    if bad:
        raise SystemExit(4)
