"""Restore one stream from the archive: manifest → key slots → prefetch blocks → verify → open → decode → send.

Preflight happens before the server sees a byte: the backup and its data object must exist with the manifest's
size, a key must open it, the stream name must be free, and the server must read the backup's snapshot format.
Blocks are fetched ahead in parallel (ranged reads), each checked against the manifest's stored hash, opened
(AEAD), decompressed and checked against its plaintext hash before its bytes are sent. After the server's final
answer we wait until the stream has a leader, its replicas are current and its consumers are back, then compare
its state with the manifest (both in :mod:`pipeline.flows.restore_checks`). Any failure after the server accepted
the restore deletes the partial stream.

A backup stored decoded (inner encoding ``natsarc``, see pipeline/format/payload.py) is re-framed on the way: its
NATSARC1 archive is sent Snappy-framed, which the server's restore reads like its own S2 output.

Rewrite mode (``--as``, ``--subject-map``, ``--subject``, ``--until-seq``, ``--until``; V2 backups onto servers
>= 2.15): the decoded archive is rewritten by :mod:`pipeline.format.rewrite` and sent Snappy-framed instead, with the
rewritten config and state in the request, and the final comparison uses the rewritten state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field, replace

from pipeline.archive.chains import ChainSource, open_chain
from pipeline.archive.reader import BlockReader, open_manifest
from pipeline.archive.repository import Repository
from pipeline.archive.trust import TrustPolicy
from pipeline.base.errors import (
    ConflictError,
    JsArchiveError,
    ServerRefused,
    UsageError,
    setting,
)
from pipeline.base.progress import NoProgress, Progress, ScaledAdvance
from pipeline.base.retry import attempts, until
from pipeline.base.transfer import TransferConfig, auto_in_flight, auto_restore_chunk
from pipeline.base.units import human_bytes
from pipeline.flows.restore_checks import archive_state, await_healthy, compare_state
from pipeline.flows.restore_chunks import restore_chunks
from pipeline.format import marks, payload
from pipeline.format.manifest import Manifest
from pipeline.format.rewrite import RewritePlan, RewriteSpec, SubjectMap, filters_overlap, plan_rewrite
from pipeline.format.snapshot import V2, format_for_version
from pipeline.jetstream.client import ConnectOptions, JetStream, ServerInfo, connect
from pipeline.jetstream.placement import RestoreTarget
from pipeline.jetstream.preflight import preflight_target
from pipeline.keys.keyring import KeyRing
from sinks import SinkOptions

__all__ = [
    "RestoreOptions",
    "RestoreResult",
    "archive_state",
    "compare_state",
    "restore_stream",
    "restore_stream_async",
]

_await_healthy = await_healthy  # its old name here, which tests/test_stream_kinds.py imports

REMOVE_LOOKS, REMOVE_PAUSE = 6, 0.5  # looks at a partial stream (and deletes of it), and the pause between them
ABSENT_LOOKS = 3  # a V2 server may create the stream a moment after an aborted upload: absent counts from this look
MARK_TRIES, MARK_PAUSE = 5, 0.5  # tries to set the mark to complete


@dataclass
class RestoreOptions:
    url: str
    stream: str
    backup: str | None = None  # manifest id or unique prefix; None: the newest backup of ``stream``
    at: dt.datetime | None = None  # no backup named: the newest created at or before this (--at)
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    keys: KeyRing = field(default_factory=KeyRing)
    target: RestoreTarget = field(default_factory=lambda: RestoreTarget())
    transfer: TransferConfig = field(default_factory=TransferConfig)
    wait: float = 120.0  # how long the restored stream may take to become healthy
    sink: SinkOptions = field(default_factory=SinkOptions)
    # Rewrite mode (V2 backups onto servers >= 2.15; see pipeline/format/rewrite.py): any of these set turns it on.
    new_name: str | None = None  # restore as this stream (--as)
    subject_map: list[str] = field(default_factory=list)  # "SRC=DST" subject mappings (--subject-map)
    subjects: list[str] = field(default_factory=list)  # keep only messages on these subjects (--subject)
    until_seq: int | None = None  # cut after this sequence (--until-seq)
    until_ns: int | None = None  # cut before this time, ns since the epoch (--until)
    restore_id: str | None = None  # this run's mark on the stream (pipeline/format/marks.py); None: a fresh one
    preflight: bool = (
        True  # the server's placeholder check first (pipeline/jetstream/preflight.py); False: a caller did it
    )
    # What the archive must prove (pipeline/archive/trust.py): None keeps the library's old leniency (an unencrypted
    # backup is restored with a warning, signatures are not looked at); the CLI always sets one.
    trust: TrustPolicy | None = None

    def rewrite_spec(self) -> RewriteSpec:
        return RewriteSpec(
            new_name=self.new_name,
            subject_map=SubjectMap.parse(self.subject_map),
            subjects=tuple(self.subjects),
            until_seq=self.until_seq,
            until_ns=self.until_ns,
        )


@dataclass
class RestoreResult:
    manifest_id: str
    stream: str
    server_version: str
    snapshot_format: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    num_deleted: int
    num_subjects: int
    consumers: list[str]
    cluster: str | None
    leader: str | None
    replicas: list[str]
    placement: dict | None
    num_replicas: int
    snapshot_bytes: int
    seconds: float
    warnings: list[str]
    restore_id: str = ""
    # what moved the bytes: {"rtt_ms", "chunk_size", "in_flight", "auto": the knobs sized from the round trip}
    transfer: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def restore_stream(opts: RestoreOptions, progress: Progress | None = None) -> RestoreResult:
    return asyncio.run(restore_stream_async(opts, progress))


def _chosen_backup(repo: Repository, opts: RestoreOptions) -> tuple[Manifest, list[str]]:
    """The backup to restore (named, as of ``opts.at``, or the newest), trusted before a key is asked or a byte
    read; and the warnings so far (newer backups passed over, a backup stored unencrypted)."""
    skipped: list[str] = []  # newer backups "latest" passed over, and why: shown as warnings
    eligible = (lambda x: opts.trust.manifest_problem(repo, x)) if opts.trust else None
    m = repo.backup_for(opts.stream, opts.backup, opts.at, eligible, skipped)
    if m.stream != opts.stream:
        raise UsageError(
            f"backup {m.id[:12]} is of stream {m.stream!r}, not {opts.stream!r}; to restore it under "
            f"another name, give its own stream name and {setting('as')} NEWNAME"
        )
    if opts.trust is not None:
        opts.trust.check_manifest(repo, m)
    plain = [] if m.encrypted else [f"backup {m.id[:12]} is not encrypted (it was made with --no-encrypt)"]
    return m, skipped + plain


def _chain_source(repo: Repository, m: Manifest, opts: RestoreOptions) -> ChainSource | None:
    """The merged chain to restore when ``m`` is a restore point of one (``--at`` then picks the point by capture
    time, ``--until-seq`` by sequence), else None."""
    at_ns = None
    if opts.at is not None and opts.backup is None:
        at = opts.at if opts.at.tzinfo else opts.at.replace(tzinfo=dt.timezone.utc)
        at_ns = int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1_000
    check = (lambda pm: opts.trust.check_manifest(repo, pm)) if opts.trust is not None else None
    return open_chain(
        repo,
        m,
        opts.keys,
        named=opts.backup is not None,
        until_seq=opts.until_seq,
        at_ns=at_ns,
        check=check,
        prefetch=opts.transfer.prefetch,
        workers=opts.transfer.workers,
    )


def _check_server_reads(m: Manifest, server: ServerInfo, rewrite: bool) -> None:
    """Refuse a target server that cannot read this backup's format, or cannot do a rewritten restore."""
    if format_for_version(server.version_tuple) == V2:
        return
    if m.snapshot_format == V2:
        raise ServerRefused(
            f"backup {m.id[:12]} was taken from nats-server {m.server.get('version', '?')} in snapshot format "
            f"V2, which nats-server {server.version} cannot read; restore it into a server of version 2.15 or later"
        )
    if rewrite:
        raise ServerRefused(
            f"nats-server {server.version} cannot do a partial or renamed restore: it needs 2.15 or later"
        )


async def _first_checks(
    js: JetStream,
    opts: RestoreOptions,
    server: ServerInfo,
    target: str,
    config: dict,
    state: dict,
    early_preflight: bool,
) -> tuple[RestoreOptions, dict]:
    """The name check, the round trip and (``early_preflight``) the server's preflight, then the transfer sized
    from them: ``opts`` with its chunk and chunks in flight settled, and what was chosen (recorded in the result)."""
    chunk = opts.transfer.restore_chunk or auto_restore_chunk(server.max_payload)
    if chunk > server.max_payload:
        raise UsageError(
            f"{setting('chunk-size')} {chunk} is above the server's max_payload ({server.max_payload} bytes), "
            "which it refuses to take in one message; give a smaller one or leave it out"
        )
    # The three do not depend on each other: sent together they cost the round trips of the longest, not their sum.
    # A name in use still wins over a refused preflight (the placeholder has a name of its own and is deleted
    # either way).
    checks = [js.stream_info(target), js.rtt()]
    if early_preflight:
        checks.append(preflight_target(js, target, config, state))
    got = await asyncio.gather(*checks, return_exceptions=True)
    existing, rtt = got[0], got[1]
    if isinstance(existing, BaseException):
        raise existing
    if existing is not None:
        raise _exists_error(target, existing)
    if early_preflight and isinstance(got[2], BaseException):
        raise got[2]
    in_flight = opts.transfer.in_flight or auto_in_flight(rtt, chunk)
    tuned = {
        "rtt_ms": round(rtt * 1000, 2) if isinstance(rtt, float) else None,
        "chunk_size": chunk,
        "in_flight": in_flight,
        "auto": [k for k in ("restore_chunk", "in_flight") if not getattr(opts.transfer, k)],
    }
    return replace(opts, transfer=replace(opts.transfer, restore_chunk=chunk, in_flight=in_flight)), tuned


async def restore_stream_async(opts: RestoreOptions, progress: Progress | None = None) -> RestoreResult:
    progress = progress or NoProgress()
    started = time.monotonic()
    repo = Repository.open(opts.url, opts.sink)
    m, warnings = _chosen_backup(repo, opts)
    src = _open_source(repo, m, opts)
    warnings += src.notes
    req = _request(src, opts)
    spec = opts.rewrite_spec()
    target = spec.new_name or opts.stream
    _check_rewrite_format(m, src.mid, spec)

    js = await connect(opts.connect)
    async with js:
        server = js.server_info()
        two_pass = spec.active or src.chain is not None  # a merged chain is counted like a rewrite: pass 1, then 2
        _check_server_reads(m, server, two_pass)
        early_preflight = opts.preflight and not two_pass
        opts, tuned = await _first_checks(js, opts, server, target, req.config, req.state, early_preflight)
        if two_pass:
            warnings += await _plan(js, src, req, spec, opts, target)
        # the server's own "yes" to this placement, replicas and size before any byte goes out (exit 8 if not)
        if opts.preflight and not early_preflight:
            await preflight_target(js, target, req.config, req.state)
        restore_id = opts.restore_id or marks.new_restore_id()
        req.config = marks.stamp(req.config, restore_id, src.mid)
        upload = _Upload(progress)
        try:
            await _upload(js, target, src, req, opts, upload)
            expected = req.plan.expected_state() if req.plan else archive_state(src.body)
            info, state_warnings = await await_healthy(js, target, expected, req.expected_consumers, opts.wait)
            warnings += state_warnings
        except BaseException as e:
            if upload.accepted:
                note = await _remove_partial(js, target, restore_id)
                if isinstance(e, JsArchiveError):
                    raise type(e)(f"{e.template}; {note}") from None
            raise
        warnings += await _mark_complete(js, target, info, restore_id)
    result = _result(info, src.body, src.mid, target, server, m.snapshot_format, restore_id)
    result.seconds, result.warnings, result.transfer = round(time.monotonic() - started, 3), warnings, tuned
    return result


@dataclass
class _Source:
    """What a restore sends: one backup's blocks, or a chain's path merged into one archive (archive/chains.py)."""

    manifest: Manifest  # the backup chosen
    body: dict  # the config and state the request is made of
    mid: str  # the id restored from (a chain's: its restore point)
    encoding: str
    reader: BlockReader | ChainSource
    chain: ChainSource | None
    notes: list[str]  # warnings so far

    def summary(self) -> str:
        """What was read, for the bar's closing line."""
        if self.chain is not None:
            return f"{human_bytes(self.chain.stored_bytes)} read from {len(self.chain.opened)} restore point(s)"
        m = self.manifest
        return f"{human_bytes(m.data_size)} read from {len(m.envelope['blocks'])} block(s)"


def _open_source(repo: Repository, m: Manifest, opts: RestoreOptions) -> _Source:
    chain = _chain_source(repo, m, opts)
    if chain is not None:
        body = chain.state_from.body
        return _Source(m, body, chain.plan.point.id, payload.NATSARC, chain, chain, list(chain.plan.notes))
    opened = open_manifest(repo, m, opts.keys, prefetch=opts.transfer.prefetch, workers=opts.transfer.workers)
    return _Source(m, opened.body, m.id, opened.inner_encoding, opened.reader, None, [])


@dataclass
class _Request:
    """The restore request (config and state) and what the restored stream must show; a rewrite's plan if any."""

    config: dict
    state: dict
    expected_consumers: int
    plan: RewritePlan | None = None


def _request(src: _Source, opts: RestoreOptions) -> _Request:
    config = opts.target.apply(src.body["config"])
    config["name"] = opts.stream
    state = src.body.get("state") or {}
    expected_consumers = 0 if src.body["snapshot"].get("no_consumers") else int(state.get("consumer_count", 0))
    return _Request(config, state, expected_consumers)


def _check_rewrite_format(m: Manifest, mid: str, spec: RewriteSpec) -> None:
    if spec.active and m.snapshot_format != V2:
        raise UsageError(
            f"backup {mid[:12]} is in snapshot format {m.snapshot_format}: "
            f"{setting('as')}, {setting('subject-map')}, {setting('subject')}, "
            f"{setting('until-seq')} and {setting('until')} need a V2 backup (taken from nats-server 2.15 or later)"
        )


async def _plan(
    js: JetStream, src: _Source, req: _Request, spec: RewriteSpec, opts: RestoreOptions, target: str
) -> list[str]:
    """Pass 1 of a two-pass restore: the rewritten request in ``req``; the notes on what a rewrite leaves out."""
    plan = await asyncio.to_thread(plan_rewrite, payload.decoded(src.reader.blocks(), src.encoding), req.config, spec)
    req.config, req.state, req.expected_consumers, req.plan = plan.config, plan.state, len(plan.consumers), plan
    if not spec.active:
        return []
    await _check_subjects_free(js, target, opts.stream, plan)
    return _rewrite_notes(plan)


@dataclass
class _Upload:
    """The bar of one upload, and whether the server accepted the request (from then on a partial stream may exist)."""

    progress: Progress
    accepted: bool = False


async def _upload(js: JetStream, target: str, src: _Source, req: _Request, opts: RestoreOptions, up: _Upload) -> None:
    plan, progress = req.plan, up.progress
    sent_all = False
    # The bar counts the stream's bytes (as natscli's): the bytes sent, scaled by the stream's size over the
    # bytes there are to send, so that it moves evenly and ends on the stream's size. Unlike a snapshot's,
    # this whole send is known before it starts (a rewritten one's is not: it counts the bytes sent).
    on_sent = ScaledAdvance(progress)

    def on_accepted() -> None:
        up.accepted = True
        # Only now: a refused request (placement, name in use) prints nothing but its error.
        wire = None if plan else payload.server_stream_size((n for n, _ in src.reader.plain), src.encoding)
        total = int((plan.state if plan else src.manifest.summary).get("bytes") or 0) or None
        if wire and total:
            on_sent.factor = total / wire
        progress.start(f"restore {target}", total)

    try:
        await js.restore(
            target,
            {"config": req.config, "state": req.state},
            restore_chunks(src.reader, src.encoding, plan, opts.transfer),
            in_flight=opts.transfer.in_flight,
            on_sent=on_sent,
            on_accepted=on_accepted,
        )
        sent_all = True
    except ServerRefused as e:
        if getattr(e, "err_code", 0) == 10005:
            raise _with_request(e, req.config) from None
        raise
    finally:
        if up.accepted and sent_all:
            progress.finish(src.summary(), what="stream")
        elif up.accepted:
            progress.abort()


def _result(
    info: dict, body: dict, mid: str, target: str, server: ServerInfo, snapshot_format: str, restore_id: str
) -> RestoreResult:
    """The restored stream as its server reports it once healthy."""
    st = info.get("state") or {}
    cl = info.get("cluster") or {}
    cfg = info.get("config") or {}
    return RestoreResult(
        manifest_id=mid,
        stream=target,
        server_version=server.version,
        snapshot_format=snapshot_format,
        messages=int(st.get("messages", 0)),
        bytes=int(st.get("bytes", 0)),
        first_seq=int(st.get("first_seq", 0)),
        last_seq=int(st.get("last_seq", 0)),
        num_deleted=int(st.get("num_deleted", 0) or 0),
        num_subjects=int(st.get("num_subjects", 0) or 0),
        consumers=sorted(info.get("_consumers", [])),
        cluster=cl.get("name"),
        leader=cl.get("leader"),
        replicas=[r.get("name") for r in cl.get("replicas") or []],
        placement=cfg.get("placement"),
        num_replicas=int(cfg.get("num_replicas", 1) or 1),
        snapshot_bytes=int(body["snapshot"].get("bytes") or 0),
        seconds=0.0,
        warnings=[],
        restore_id=restore_id,
    )


def _with_request(e: ServerRefused, config: dict) -> ServerRefused:
    """A placement refusal (10005) with what was asked for, the one thing the server's message leaves out."""
    asked = {"placement": config.get("placement"), "replicas": config.get("num_replicas", 1)}
    return ServerRefused(f"{e.template}; requested {json.dumps(asked)}")


def _exists_error(target: str, info: dict) -> ConflictError:
    mark = marks.mark_of(info)
    if mark is not None and mark.partial:
        return ConflictError(
            f"stream {target!r} on the target is a {mark.describe()} that never finished (killed, or still "
            f"running elsewhere); nothing was touched. If no restore is running, remove it with "
            f"`nats stream rm {target} -f` and restore again"
        )
    return ConflictError(f"stream {target!r} already exists on the target server; delete it first or restore elsewhere")


def _rewrite_notes(plan: RewritePlan) -> list[str]:
    spec = plan.spec
    notes = []
    if spec.subjects or spec.until_seq is not None or spec.until_ns is not None:
        notes.append(
            f"partial restore: {plan.messages} messages up to sequence {plan.cut}, {plan.dropped} left out "
            "(as deletes: sequences are kept)"
        )
    return notes


async def _check_subjects_free(js: JetStream, target: str, original: str, plan: RewritePlan) -> None:
    """The server does not check subject overlap on restore: refuse subjects another stream already listens on."""
    mine = list(plan.config.get("subjects") or [])
    for name in await js.stream_names():
        if name == target:
            continue
        info = await js.stream_info(name)
        theirs = list(((info or {}).get("config") or {}).get("subjects") or [])
        clash = next(((a, b) for a in mine for b in theirs if filters_overlap(a, b)), None)
        if clash:
            hint = (
                f" (map them with {setting('subject-map')}, e.g. 'ORDERS.>=DRILL.ORDERS.>')" if name == original else ""
            )
            raise ConflictError(
                f"stream {target!r} would listen on {clash[0]!r}, which overlaps {clash[1]!r} of existing stream "
                f"{name!r}{hint}"
            )


async def _remove_partial(js: JetStream, stream: str, restore_id: str) -> str:
    """Delete what this restore created, and nothing else: the stream must carry this run's mark.

    Another restore that won the race for the name, or a stream someone created meanwhile, carries no mark or
    another run's, and is left alone. A V2 server may create the stream a moment after an aborted upload, so an
    absent stream is looked for again before we conclude nothing was left.
    """
    looks = 0

    async def step() -> str | None:
        """Look, and delete the stream if it is ours: what became of it, or None to look again."""
        nonlocal looks
        looks += 1
        info = await js.stream_info(stream, timeout=5.0)
        if info is None:
            return await _nothing_left(js, stream) if looks >= ABSENT_LOOKS else None
        if not marks.carries(info, restore_id):
            mark = marks.mark_of(info)
            whose = f"it is a {mark.describe()}" if mark else "it carries no jsarchive restore mark"
            return f"stream {stream!r} exists but was not created by this restore ({whose}): left untouched"
        await js.delete_stream(stream, timeout=10.0)
        return None

    try:
        note = await until(lambda n: n is not None, pause=REMOVE_PAUSE, tries=REMOVE_LOOKS)(step)
    except JsArchiveError as e:
        return f"the partial stream {stream!r} could not be deleted ({e}): delete it by hand"
    return (
        note or f"the partial stream {stream!r} could not be deleted: delete it by hand (`nats stream rm {stream} -f`)"
    )


async def _nothing_left(js: JetStream, stream: str) -> str:
    if stream in await js.stream_names():
        # a cluster keeps an aborted restore's assignment listed for a while (seen ~60 s on 2.15.1):
        # no data, but not provably ours any more, so it is named rather than deleted
        return (
            f"no partial stream holds data, but the server still lists {stream!r} (the aborted "
            f"restore's assignment; it clears itself, or `nats stream rm {stream} -f`)"
        )
    return "no partial stream was left on the server"


async def _mark_complete(js: JetStream, stream: str, info: dict, restore_id: str) -> list[str]:
    """Turn this run's mark into provenance ("restored from backup X at T"); a warning if the server refuses."""
    cfg = info.get("config") or {}
    mark = marks.mark_of(cfg)
    if mark is None or mark.restore_id != restore_id:
        return [f"stream {stream!r} does not carry this restore's mark (the server dropped its metadata)"]
    done = marks.stamp(cfg, restore_id, mark.backup, marks.COMPLETE)
    try:
        await attempts(MARK_TRIES, _api_failed, pause=MARK_PAUSE)(js.update_stream, done, timeout=10.0)
        return []
    except JsArchiveError as e:
        last = e
    return [
        f"stream {stream!r} is restored and checked, but its mark could not be set to complete ({last}); "
        f"`dr status` will call it a partial restore until its metadata {marks.RESTORE_STATE} is {marks.COMPLETE!r}"
    ]


def _api_failed(e: BaseException) -> bool:
    return isinstance(e, JsArchiveError)
