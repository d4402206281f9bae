"""Recovery drills: restore an account backup set into a target cluster under names and subjects of its own, check
it against the manifests, measure recovery time (RTO) and backup age (RPO), and keep the evidence in the archive.

On servers >= 2.15 with V2 backups each stream is restored as ``<prefix><name>`` with every subject mapped under
``<subject-prefix>.`` (pipeline/format/rewrite.py), so a drill can run beside production without a name or subject clash
(G2, G3). Older servers cannot take a rewritten archive: the drill then restores under the original names and needs a
target deployment where those names are free, and the report says so.

The evidence report is canonical JSON under ``drills/<time>-<sha256 prefix>.json``, written even when the drill
fails; with an Ed25519 key a detached signature goes next to it as ``.sig``. Drill streams are deleted at the end
unless ``keep`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline import __version__
from pipeline.archive.chains import point_totals
from pipeline.archive.reader import open_manifest
from pipeline.archive.repository import Repository, storage_error
from pipeline.archive.retention import parse_created
from pipeline.archive.sets import load_member, load_set
from pipeline.archive.signing import load_private_key as _load_sign_key
from pipeline.archive.trust import TrustPolicy
from pipeline.base.errors import (
    ConflictError,
    IntegrityError,
    JsArchiveError,
    NotFoundError,
    UsageError,
    setting,
)
from pipeline.flows.restore import RestoreOptions, compare_state, restore_stream_async
from pipeline.format import manifest as mf
from pipeline.format import marks, objects
from pipeline.format.manifest import Manifest
from pipeline.format.sets import select_streams
from pipeline.format.snapshot import V2, format_for_version
from pipeline.jetstream.client import ConnectOptions, JetStream, ServerInfo, connect
from pipeline.jetstream.placement import RestoreTarget
from pipeline.keys.keyring import KeyRing
from sinks.base import SinkError, SinkOptions

REPORT_FORMAT = "jsarchive-drill-report"
REPORT_VERSION = 1
DRILLS = "drills/"
_NAME_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}")
_SUBJECT_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class DrillOptions:
    url: str
    set_id: str | None = None  # id or unique prefix; None: the newest set
    at: dt.datetime | None = None  # no set named: the newest finished at or before this (--at)
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    keys: KeyRing = field(default_factory=KeyRing)
    target: RestoreTarget = field(default_factory=lambda: RestoreTarget())  # where the streams land
    prefix: str = "DRILL_"
    subject_prefix: str | None = None  # default: the name prefix without trailing '_' / '-'
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    keep: bool = False
    sign_key: str | None = None  # Ed25519 private key, PEM (openssl genpkey -algorithm ed25519)
    parallel: int = 2
    wait: float = 120.0
    trust: TrustPolicy | None = None  # what each backup must prove before it is restored (pipeline/archive/trust.py)
    sink: SinkOptions = field(default_factory=SinkOptions)

    def subjects_under(self) -> str:
        return self.subject_prefix or self.prefix.rstrip("_-") or "DRILL"


@dataclass
class StreamCheck:
    stream: str
    drill_stream: str
    manifest_id: str
    backup_created: str
    rpo_s: float
    expected: dict
    got: dict = field(default_factory=dict)
    restore_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


@dataclass
class DrillResult:
    report: dict
    report_key: str | None
    signature_key: str | None
    removed: list[str]
    kept: list[str]

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "report_key": self.report_key,
            "signature_key": self.signature_key,
            "removed": self.removed,
            "kept": self.kept,
            "report": self.report,
        }


class DrillFailed(JsArchiveError):
    """The drill ran and its evidence says the recovery did not work; the report is in the archive."""

    exit_code = 1
    kind = "drill"

    def __init__(self, message: str, result: DrillResult, exit_code: int = 1) -> None:
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


def _expected(m: Manifest, body: dict, totals: tuple[int, int] | None = None) -> dict:
    """What the drill's restore must hold: the backup's counts, or for a restore point of a chain its path's
    (``totals``: pipeline.archive.chains.point_totals)."""
    s = m.summary
    consumers = {}
    for c in body.get("consumers") or []:
        name = c.get("name") or (c.get("config") or {}).get("durable_name")
        if name:
            consumers[str(name)] = int((c.get("ack_floor") or {}).get("stream_seq", 0) or 0)
    messages, last_seq = totals if totals is not None else (int(s.get("messages", 0)), int(s.get("last_seq", 0)))
    return {"messages": messages, "last_seq": last_seq, "consumers": consumers}


async def _observe(js: JetStream, stream: str) -> dict:
    info = await js.stream_info(stream) or {}
    st = info.get("state") or {}
    cl = info.get("cluster") or {}
    consumers = {
        str(c.get("name")): int((c.get("ack_floor") or {}).get("stream_seq", 0) or 0)
        for c in await js.consumers(stream)
    }
    return {
        "messages": int(st.get("messages", 0) or 0),
        "last_seq": int(st.get("last_seq", 0) or 0),
        "consumers": consumers,
        "cluster": cl.get("name"),
        "leader": cl.get("leader"),
        "replicas": 1 + len(cl.get("replicas") or []) if cl else 1,
        "subjects": list((info.get("config") or {}).get("subjects") or []),
        "config": info.get("config") or {},
    }


def _compare(check: StreamCheck, config: dict) -> None:
    want, got = check.expected, check.got
    # the restore's own rules (pipeline/flows/restore.py compare_state): loss is a problem; what the server is
    # documented to drop on a restore (expired TTLs, limits over a backup that holds superseded KV values, ...) is a
    # note

    try:
        check.notes += compare_state(check.stream, {k: want[k] for k in ("messages", "last_seq")}, got, config=config)
    except IntegrityError as e:
        check.problems.append(str(e))
    have = got.get("consumers") or {}
    for name, floor in sorted(want["consumers"].items()):
        if name not in have:
            check.problems.append(f"consumer {name} missing")
        elif have[name] < floor:
            check.problems.append(f"consumer {name}: ack floor {have[name]} below the backup's {floor}")
        elif have[name] > floor:
            # the consumer list is read just before the snapshot: acks in between move the floor forward
            check.notes.append(f"consumer {name}: ack floor {have[name]} (listed {floor} just before the snapshot)")
    extra = sorted(set(have) - set(want["consumers"]))
    if extra:
        check.problems.append(f"unexpected consumer(s) {', '.join(extra)}")


def sign_report(raw: bytes, key: object) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)  # type: ignore[attr-defined]
    return mf.canonical(
        {
            "algorithm": "ed25519",
            "public_key": base64.b64encode(pub).decode(),
            "report_sha256": hashlib.sha256(raw).hexdigest(),
            "signature": base64.b64encode(key.sign(raw)).decode(),  # type: ignore[attr-defined]
        }
    )


def verify_signature(raw: bytes, sig_raw: bytes, public_key_pem: bytes | None = None) -> str:
    """Check a detached report signature; returns the signer's public key (base64). With ``public_key_pem`` the
    signer must be that key, otherwise the signature only proves the report was not changed since it was signed."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

    try:
        sig = objects.parse_json(sig_raw, "the drill report's signature object", objects.MAX_SIGNATURE)
        pub = base64.b64decode(sig["public_key"], validate=True)
        signature = base64.b64decode(sig["signature"], validate=True)
        if sig.get("algorithm") != "ed25519":
            raise ValueError(f"algorithm {sig.get('algorithm')!r}")
    except (IntegrityError, ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"the drill report's signature object is malformed ({e})") from None
    if public_key_pem is not None:
        expected = load_pem_public_key(public_key_pem)
        if not isinstance(expected, Ed25519PublicKey):
            raise UsageError("the public key is not an Ed25519 key")
        if expected.public_bytes(Encoding.Raw, PublicFormat.Raw) != pub:
            raise IntegrityError("the drill report was signed by another key")
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(signature, raw)
    except (InvalidSignature, ValueError):
        raise IntegrityError("the drill report's signature does not match its content") from None
    return sig["public_key"]


def run_drill(opts: DrillOptions) -> DrillResult:
    return asyncio.run(run_drill_async(opts))


async def run_drill_async(opts: DrillOptions) -> DrillResult:
    """Restore, check, measure, report, clean up. Raises :class:`DrillFailed` (after writing the report) when a
    stream could not be restored or does not match its backup."""
    started = _now()
    t0 = time.monotonic()
    under = _checked_subject_prefix(opts)
    sign_key = _load_sign_key(opts.sign_key) if opts.sign_key else None
    repo = Repository.open(opts.url, opts.sink)
    bset, manifests, bodies = _members(repo, opts)
    chosen = list(manifests)

    async with await connect(opts.connect) as js:
        server = js.server_info()
        rename = format_for_version(server.version_tuple) == V2 and all(
            m.snapshot_format == V2 for m in manifests.values()
        )
        drill_names = {n: (opts.prefix + n if rename else n) for n in chosen}
        await _check_names_free(js, server, drill_names, rename)
        checks = {
            n: StreamCheck(
                stream=n,
                drill_stream=drill_names[n],
                manifest_id=manifests[n].id,
                backup_created=manifests[n].created,
                rpo_s=round((started - parse_created(manifests[n].created)).total_seconds(), 1),
                expected=_expected(manifests[n], bodies[n], point_totals(repo, manifests[n])),
            )
            for n in chosen
        }
        created: dict[str, str] = {}  # drill stream -> the restore id it carries (only those are removed)
        failures: list[JsArchiveError] = []
        sem = asyncio.Semaphore(max(1, opts.parallel))

        async def one(name: str) -> None:
            async with sem:
                await _restore_and_check(js, opts, checks[name], rename, under, created, failures)

        await asyncio.gather(*(one(n) for n in chosen))
        rto = round(time.monotonic() - t0, 3)
        removed, kept = await _clean_up(js, created, opts.keep)

    finished = _now()
    results = [checks[n] for n in chosen]
    passed = all(c.ok for c in results)
    report = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "tool": {"name": "jsarchive", "version": __version__},
        "started": _iso(started),
        "finished": _iso(finished),
        "archive": repo.url,
        "set": {"id": bset.id, "finished": bset.finished, "account": bset.account.get("name")},
        "target": {
            "server_version": server.version,
            "server": server.name,
            **opts.target.to_json(),
        },
        "renamed": rename,
        "prefix": opts.prefix if rename else None,
        "subject_prefix": under if rename else None,
        "note": None if rename else "target cannot take renamed streams: restored under the original names",
        "rto_s": rto,
        "rpo_s": max(c.rpo_s for c in results),
        "streams": [c.to_json() for c in results],
        "removed": removed,
        "kept": kept,
        "passed": passed,
    }
    key, sig_key = _write_report(repo, report, started, sign_key)
    result = DrillResult(report, key, sig_key, removed, kept)
    if not passed:
        bad = [c for c in results if not c.ok]
        code = failures[0].exit_code if failures else 1
        raise DrillFailed(
            f"drill failed for {', '.join(c.stream for c in bad)}: {bad[0].problems[0]} (report {key})", result, code
        )
    return result


def _write_report(repo: Repository, report: dict, started: dt.datetime, sign_key: Any) -> tuple[str, str | None]:
    """Store the report (content-addressed under drills/) and its signature; their keys."""
    raw = mf.canonical(report)
    digest = hashlib.sha256(raw).hexdigest()
    key = f"{DRILLS}{started.strftime('%Y%m%dT%H%M%S.%fZ')}-{digest[:16]}.json"
    sig_key = None
    try:
        repo.put_small(key, raw)
        if sign_key is not None:
            sig_key = key[: -len(".json")] + ".sig"
            repo.put_small(sig_key, sign_report(raw, sign_key))
    except SinkError as e:
        passed = report["passed"]
        raise storage_error(e, f"the drill ran (passed: {passed}) but its report could not be written") from None
    return key, sig_key


def _checked_subject_prefix(opts: DrillOptions) -> str:
    """The subject prefix drill streams listen under, once the options are known to be usable."""
    if not _NAME_PREFIX.fullmatch(opts.prefix):
        raise UsageError(f"{setting('prefix')} {opts.prefix!r}: 1-32 letters, digits, '_' or '-'")
    under = opts.subjects_under()
    if not _SUBJECT_PREFIX.fullmatch(under):
        raise UsageError(f"{setting('subject-prefix')} {under!r}: dot-separated tokens of letters, digits, '_' or '-'")
    if not opts.target.moves:
        raise UsageError(
            f"a drill needs a target: {setting('cluster')} NAME or "
            f"{setting('tag')} TAG (it never defaults to production's)"
        )
    return under


def _members(repo: Repository, opts: DrillOptions) -> tuple[Any, dict[str, Manifest], dict[str, dict]]:
    """The set, and the chosen streams' manifests and opened bodies (every key and data check before any restore)."""
    bset = load_set(repo, opts.set_id, opts.at)
    label = f"set {bset.id[:12]}"
    entries = {e["stream"]: e for e in bset.streams}
    chosen = select_streams(sorted(entries), opts.include, opts.exclude, what=label)
    if not chosen:
        raise NotFoundError(f"{label} in {repo.url} holds no streams")
    manifests: dict[str, Manifest] = {}
    bodies: dict[str, dict] = {}
    for name in chosen:
        m = load_member(repo, label, name, entries[name]["manifest_id"])
        manifests[name], bodies[name] = m, open_manifest(repo, m, opts.keys, label=label).body
    return bset, manifests, bodies


async def _check_names_free(js: JetStream, server: ServerInfo, drill_names: dict[str, str], rename: bool) -> None:
    clash = sorted(set(drill_names.values()) & set(await js.stream_names()))
    if not clash:
        return
    if rename:
        raise ConflictError(
            f"drill stream(s) {', '.join(clash)} already exist on "
            f"the target (left by a drill with {setting('keep')}?); "
            f"delete them or pick another {setting('prefix')}"
        )
    raise ConflictError(
        f"nats-server {server.version} (or V1 backups) cannot take renamed streams, so the drill restores "
        f"under the original names and needs a target deployment where they are free: "
        f"{', '.join(clash)} exist there"
    )


async def _restore_and_check(
    js: JetStream,
    opts: DrillOptions,
    c: StreamCheck,
    rename: bool,
    under: str,
    created: dict[str, str],
    failures: list[JsArchiveError],
) -> None:
    t = time.monotonic()
    try:
        r = await restore_stream_async(
            RestoreOptions(
                url=opts.url,
                stream=c.stream,
                backup=c.manifest_id,
                connect=opts.connect,
                keys=opts.keys,
                target=opts.target,
                wait=opts.wait,
                sink=opts.sink,
                trust=opts.trust,
                new_name=c.drill_stream if rename else None,
                subject_map=[f">={under}.>"] if rename else [],
            )
        )
        created[c.drill_stream] = r.restore_id
        c.got = await _observe(js, c.drill_stream)
        _compare(c, c.got.pop("config"))  # the config decides what may drop; the report keeps the rest
    except JsArchiveError as e:
        failures.append(e)
        c.problems.append(f"restore failed: {e}")
    c.restore_s = round(time.monotonic() - t, 3)


async def _clean_up(js: JetStream, created: dict[str, str], keep: bool) -> tuple[list[str], list[str]]:
    """Delete the drill streams this drill restored (by their mark); the rest are kept. (removed, kept)"""
    removed: list[str] = []
    kept: list[str] = []
    for n in sorted(created):
        if keep or not marks.carries(await js.stream_info(n), created[n]):
            kept.append(n)  # kept on request, or no longer the stream this drill restored: not ours to delete
        elif await js.delete_until_gone(n):
            removed.append(n)
        else:
            kept.append(n)
    return removed, kept


@dataclass
class ReportEntry:
    key: str
    started: str
    passed: bool | None
    rto_s: float | None
    rpo_s: float | None
    streams: int
    signature: str  # valid: <signer> | invalid: <why> | unsigned
    problem: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def list_reports(url: str, sink: SinkOptions | None = None, public_key_pem: bytes | None = None) -> list[ReportEntry]:
    """Every drill report in the archive, newest first, with its signature checked."""
    repo = Repository.open(url, sink)
    names = repo.object_names(DRILLS)
    sigs = {k for k in names if k.endswith(".sig")}
    out = []
    for k in sorted((k for k in names if k.endswith(".json")), reverse=True):
        try:
            raw = repo.get_small(k) or b""
            doc = objects.parse_json(raw, k, objects.MAX_SMALL)  # archive bytes: bounded before they are parsed
            if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
                raise ValueError("not a drill report")
        except (IntegrityError, ValueError) as e:
            out.append(ReportEntry(k, "", None, None, None, 0, "unsigned", problem=str(e)))
            continue
        sig_key = k[: -len(".json")] + ".sig"
        if sig_key in sigs:
            try:
                sig_raw = repo.get_small(sig_key, limit=objects.MAX_SIGNATURE) or b""
                signer = verify_signature(raw, sig_raw, public_key_pem)
                signature = f"valid: {signer}"
            except JsArchiveError as e:
                signature = f"invalid: {e}"
        else:
            signature = "unsigned"
        out.append(
            ReportEntry(
                k,
                str(doc.get("started", "")),
                bool(doc.get("passed")),
                doc.get("rto_s"),
                doc.get("rpo_s"),
                len(doc.get("streams") or []),
                signature,
            )
        )
    return out
