"""Whole accounts: every stream of an account into one *set*, a set back into a cluster, and runs split into shards.

A **set** (``sets/<sha256>``) is the commit point of an account backup, the way a manifest is for one stream: it is
written only after every stream's manifest exists, names them all by manifest id, and is named by the SHA-256 of its
own canonical bytes. It stays in the clear (like a manifest's envelope it holds only names, ids and counts), so the
step that writes it needs no key and an auditor can follow it to every stored byte.

A run can be split over machines with ``--shard INDEX/COUNT``: each shard backs up the streams whose stable hash
falls to it and leaves small immutable records under ``runs/<run-id>/`` (its plan, then one record per finished
stream). Whoever finds the run complete (the last shard, or ``jsarchive account seal``) writes the set. The set of a
run is computed from those immutable records alone, so two sealers racing write the same bytes under the same name.

Semantics follow natscli's ``nats account backup|restore``: KV (``KV_…``) and object-store (``OBJ_…``) buckets are
ordinary streams and included; streams whose info the server cannot give (offline, no quorum) stop the backup unless
``force``; memory streams on servers before 2.15 are warnings, failures only with ``critical_warnings``; and a
restore checks every name on the target before it restores anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

from pipeline import __version__
from pipeline.archive.reader import open_manifest
from pipeline.archive.repository import RUNS, Repository, storage_error
from pipeline.archive.trust import TrustPolicy
from pipeline.base.display import redact_servers
from pipeline.base.errors import (
    ConflictError,
    IntegrityError,
    JsArchiveError,
    NotFoundError,
    ServerRefused,
    UsageError,
)
from pipeline.base.progress import NoProgress, Progress
from pipeline.flows.backup import BackupOptions, BackupResult, backup_stream_async, check_store, check_writable
from pipeline.flows.replace import replace_stream
from pipeline.flows.restore import RestoreOptions, RestoreResult, restore_stream_async
from pipeline.format import manifest as mf
from pipeline.format import objects
from pipeline.format.compress import Compression
from pipeline.format.manifest import Manifest
from pipeline.format.snapshot import V2, format_for_version
from pipeline.jetstream.client import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_WINDOW_SIZE,
    RESTORE_CHUNK_SIZE,
    RESTORE_IN_FLIGHT,
    ConnectOptions,
    JetStream,
    connect,
)
from pipeline.keys.keyring import KeyRing
from sinks import Retention, SinkError, SinkOptions

SET_FORMAT = "jsarchive.set"
PLAN_FORMAT = "jsarchive.run-plan"
DONE_FORMAT = "jsarchive.run-stream"
FAILURE_FORMAT = "jsarchive.run-failure"
VERSION = 1
ON_EXISTS = ("fail", "skip", "replace")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PLAN_LEAF = re.compile(r"(\d+)-of-(\d+)")
# Environment variables naming a shard's count where the platform gives only an index (Kubernetes indexed jobs).
SHARD_COUNT_ENV = "JSARCHIVE_SHARD_COUNT"
RUN_ENV = "JSARCHIVE_RUN"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _leaf_time() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


# -- errors ------------------------------------------------------------------------------------------------------


class AccountRunFailed(JsArchiveError):
    """Some streams of an account backup or restore failed; ``result`` says which and why.

    The exit code is the failed streams' own code when they all agree (e.g. 8 when only --critical-warnings turned
    memory-stream warnings into failures), else 1.
    """

    kind = "account"

    def __init__(self, message: str, result: object, exit_code: int) -> None:
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


class RunIncomplete(NotFoundError):
    """A sharded run cannot be sealed yet: some of its streams have no backup (exit code 3)."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


def _common_exit_code(codes: list[int]) -> int:
    return codes[0] if codes and all(c == codes[0] for c in codes) else 1


# -- stream selection and shards ---------------------------------------------------------------------------------


def select_streams(names: list[str], include: list[str], exclude: list[str], *, what: str = "account") -> list[str]:
    """The names matching any ``include`` glob (all if none) and no ``exclude`` glob, sorted.

    Every ``include`` pattern must match something: a pattern that matches nothing is almost always a typo, and a
    silent empty backup is worse than an error.
    """
    for pattern in include:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise UsageError(f"--include {pattern!r} matches none of the {len(names)} streams of the {what}")
    chosen = [n for n in names if not include or any(fnmatch.fnmatchcase(n, p) for p in include)]
    chosen = [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    if not chosen and names:
        raise UsageError(f"--include/--exclude leave none of the {len(names)} streams of the {what}")
    return sorted(chosen)


def shard_of(stream: str, count: int) -> int:
    """The shard (0-based) that owns ``stream`` among ``count``: the same on every machine and in every run.

    SHA-256 of the UTF-8 name, first 8 bytes as a big-endian integer, modulo ``count``. It depends only on the
    name, not on how many streams exist or in which order the server lists them, so shards that list the account
    a few seconds apart still agree on who owns what.
    """
    return int.from_bytes(hashlib.sha256(stream.encode("utf-8")).digest()[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based, as every job engine numbers its tasks
    count: int
    source: str = "--shard"  # where it came from, for messages

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"shard count must be at least 1, not {self.count} (from {self.source})")
        if not 0 <= self.index < self.count:
            raise UsageError(
                f"shard {self.index}/{self.count} (from {self.source}) is out of range: with {self.count} shard(s) "
                f"the index runs from 0 to {self.count - 1}"
            )

    @classmethod
    def parse(cls, text: str, source: str = "--shard") -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not m:
            raise UsageError(f"{source} {text!r} is not INDEX/COUNT (e.g. 0/4; indexes start at 0)")
        return cls(int(m.group(1)), int(m.group(2)), source)

    def owns(self, stream: str) -> bool:
        return shard_of(stream, self.count) == self.index

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def leaf(self) -> str:
        return f"{self.index}-of-{self.count}"


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name)
    if text is None or text.strip() == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"${name} is {text!r}, not an integer") from None


def resolve_shard(
    shard: str | None, shard_count: int | None = None, env: Mapping[str, str] | None = None
) -> Shard | None:
    """The shard of this process: ``--shard I/N``, else the job engine's variables, else None (not sharded).

    - Cloud Run jobs: ``CLOUD_RUN_TASK_INDEX`` / ``CLOUD_RUN_TASK_COUNT``.
    - AWS Batch array jobs: ``AWS_BATCH_JOB_ARRAY_INDEX`` / ``AWS_BATCH_JOB_ARRAY_SIZE``.
    - Kubernetes indexed jobs: ``JOB_COMPLETION_INDEX``; Kubernetes does not expose the completion count, so it
      must come from ``shard_count`` (``--shard-count``) or ``$JSARCHIVE_SHARD_COUNT``.

    An explicit ``shard_count`` wins over the platform's count.
    """
    env = os.environ if env is None else env
    if shard:
        parsed = Shard.parse(shard)
        if shard_count is not None and shard_count != parsed.count:
            raise UsageError(f"--shard {shard} and --shard-count {shard_count} disagree")
        return parsed
    count = shard_count if shard_count is not None else _env_int(env, SHARD_COUNT_ENV)
    for index_var, count_var in (
        ("CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_COUNT"),
        ("AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ARRAY_SIZE"),
        ("JOB_COMPLETION_INDEX", None),
    ):
        index = _env_int(env, index_var)
        if index is None:
            continue
        n = count if count is not None else (_env_int(env, count_var) if count_var else None)
        if n is None:
            raise UsageError(
                f"${index_var} is set but the number of shards is not: pass --shard-count N or set "
                f"${SHARD_COUNT_ENV} (or --shard INDEX/COUNT)"
            )
        return Shard(index, n, f"${index_var}")
    if count is not None:
        raise UsageError("--shard-count needs a shard index: --shard INDEX/COUNT or a job engine's index variable")
    return None


def resolve_run(run: str | None, env: Mapping[str, str] | None = None, *, platform: bool = True) -> str | None:
    """The run id: ``run`` (``--run``), else ``$JSARCHIVE_RUN``, else (``platform``) the job engine's execution id.

    Cloud Run: ``CLOUD_RUN_EXECUTION`` (shared by all tasks of one execution). AWS Batch: the parent of an array
    child's ``AWS_BATCH_JOB_ID`` (``<parent>:<index>``). Kubernetes has no such variable: pass ``--run``. Callers
    pass ``platform=False`` for unsharded runs, so a one-task job writes its set directly.
    """
    env = os.environ if env is None else env
    candidates = [run, env.get(RUN_ENV)]
    if platform:
        candidates.append(env.get("CLOUD_RUN_EXECUTION"))
        batch = env.get("AWS_BATCH_JOB_ID")
        if batch and env.get("AWS_BATCH_JOB_ARRAY_INDEX") is not None:
            candidates.append(batch.split(":", 1)[0])
    for c in candidates:
        if c:
            return check_run_id(c)
    return None


def check_run_id(run: str) -> str:
    if not _RUN_ID.fullmatch(run):
        raise UsageError(
            f"run id {run!r} is not valid: 1-128 characters of letters, digits, '.', '_' and '-', starting with a "
            "letter or digit"
        )
    return run


# -- sets --------------------------------------------------------------------------------------------------------


@dataclass
class BackupSet:
    """A parsed, validated set object."""

    id: str
    raw: bytes
    doc: dict

    @property
    def streams(self) -> list[dict]:
        return self.doc["streams"]

    @property
    def finished(self) -> str:
        return self.doc["finished"]

    @property
    def account(self) -> dict:
        return self.doc.get("account") or {}

    def summary(self) -> dict:
        s = self.streams
        return {
            "set_id": self.id,
            "account": self.account.get("name"),
            "run": self.doc.get("run"),
            "shards": self.doc.get("shards", 1),
            "started": self.doc["started"],
            "finished": self.finished,
            "streams": len(s),
            "skipped": len(self.doc.get("skipped") or []),
            "messages": sum(int(e.get("messages", 0)) for e in s),
            "bytes": sum(int(e.get("bytes", 0)) for e in s),
            "stored_bytes": sum(int(e.get("stored_bytes", 0)) for e in s),
            "warnings": len(self.doc.get("warnings") or []),
            "origin": (self.doc.get("origin") or {}).get("type"),
        }


def parse_set(raw: bytes, set_id: str) -> BackupSet:
    """Validate set bytes stored under ``sets/<set_id>`` (the hash was checked by Repository.load_set)."""

    def bad(why: str) -> IntegrityError:
        return IntegrityError(f"set {set_id[:12]} is not a valid jsarchive set: {why}")

    if len(raw) > objects.MAX_SET:
        raise bad(f"larger than {objects.MAX_SET // objects.MiB} MiB")
    doc = objects.parse_json(raw, f"set {set_id[:12]} (sets/{set_id})", objects.MAX_SET)
    if not isinstance(doc, dict) or doc.get("format") != SET_FORMAT:
        raise bad("wrong or missing format field")
    if type(doc.get("version")) is not int or doc["version"] != VERSION:
        raise bad(f"format version {doc.get('version')!r}; this jsarchive reads version {VERSION}")
    streams = doc.get("streams")
    if not isinstance(streams, list):
        raise bad("no stream list")
    seen = set()
    for e in streams:
        if not isinstance(e, dict) or not isinstance(e.get("stream"), str) or not e["stream"]:
            raise bad("a stream entry without a name")
        if not isinstance(e.get("manifest_id"), str) or not _HEX64.fullmatch(e["manifest_id"]):
            raise bad(f"stream {e['stream']!r} has no valid manifest id")
        if e["stream"] in seen:
            raise bad(f"stream {e['stream']!r} is listed twice")
        seen.add(e["stream"])
    for name in ("started", "finished"):
        if not isinstance(doc.get(name), str):
            raise bad(f"no {name} time")
    try:
        objects.backup_set(doc)  # the informational fields too, so summaries and listings cannot crash on them
    except objects.Invalid as e:
        raise bad(str(e)) from None
    return BackupSet(id=set_id, raw=raw, doc=doc)


def load_set(repo: Repository, set_id: str | None) -> BackupSet:
    """A set by id or unique prefix, or the newest set (by ``finished``) when ``set_id`` is None."""
    if set_id:
        sid = repo.resolve_set(set_id)
        return parse_set(repo.load_set(sid), sid)
    sets = list_sets_in(repo)
    if not sets:
        raise NotFoundError(f"no account backup sets in {repo.url}")
    return sets[0]


def list_sets_in(repo: Repository) -> list[BackupSet]:
    """Every valid set, newest first (by ``finished``, then id)."""
    out = [parse_set(repo.load_set(sid), sid) for sid in repo.list_sets()]
    out.sort(key=lambda s: (s.finished, s.id), reverse=True)
    return out


def list_sets(url: str, sink: SinkOptions | None = None) -> list[dict]:
    """Summaries of every set in the archive at ``url``, newest first (no key needed)."""
    return [s.summary() for s in list_sets_in(Repository.open(url, sink))]


def set_entry(m: Manifest) -> dict:
    """A set's line for one stream, from the manifest's clear envelope (so sealing needs no key)."""
    s = m.summary
    return {
        "stream": m.stream,
        "manifest_id": m.id,
        "backup_id": m.backup_id,
        "created": m.created,
        "snapshot_format": m.snapshot_format,
        "messages": int(s.get("messages", 0)),
        "bytes": int(s.get("bytes", 0)),
        "stored_bytes": m.data_size,
        "consumers": int(s.get("consumers", 0)),
        "storage": str(s.get("storage", "file")),
        "replicas": int(s.get("replicas", 1)),
        "encrypted": m.encrypted,
    }


def build_set(
    *,
    account: dict,
    started: str,
    finished: str,
    entries: list[dict],
    skipped: list[dict],
    warnings: list[str],
    options: dict,
    run: str | None = None,
    shards: int = 1,
    tool: dict | None = None,
    origin: dict | None = None,
) -> bytes:
    """Canonical set bytes (the same encoding as manifests, docs/format.md §3.1)."""
    doc = {
        "format": SET_FORMAT,
        "version": VERSION,
        "account": account,
        "run": run,
        "shards": shards,
        "started": started,
        "finished": finished,
        "tool": tool or {"name": "jsarchive", "version": __version__},
        "options": options,
        "streams": sorted(entries, key=lambda e: e["stream"]),
        "skipped": sorted(skipped, key=lambda e: e["stream"]),
        "warnings": sorted(set(warnings)),
    }
    if origin is not None:
        doc["origin"] = origin
    return mf.canonical(doc)


def load_member(repo: Repository, set_label: str, stream: str, manifest_id: str) -> Manifest:
    try:
        m = repo.load_manifest(manifest_id)
    except NotFoundError:
        raise NotFoundError(
            f"{set_label} lists stream {stream!r} with backup {manifest_id[:12]}, whose manifest is missing from "
            f"{repo.url}"
        ) from None
    if m.stream != stream:
        raise IntegrityError(
            f"{set_label} lists backup {manifest_id[:12]} as stream {stream!r}, but it is a backup of {m.stream!r}"
        )
    return m


# -- the account on the server -----------------------------------------------------------------------------------


@dataclass
class PlannedStream:
    name: str
    storage: str
    replicas: int
    messages: int
    bytes: int
    consumers: int

    def to_json(self) -> dict:
        return asdict(self)


async def account_identity(js: JetStream, connect_opts: ConnectOptions) -> dict:
    """Which account this is: its name (from ``$SYS.REQ.USER.INFO``, answered for any user) and the server."""
    name = None
    try:
        msg = await js.nc.request("$SYS.REQ.USER.INFO", b"", timeout=2.0)
        data = json.loads(msg.data or b"{}").get("data") or {}
        name = data.get("account_name") or data.get("account")
    except Exception:  # noqa: BLE001 - old servers or restricted users: the name is informational only
        name = None
    server = js.server_info()
    return {
        "name": name,
        "domain": connect_opts.js_domain,
        "server": {"version": server.version, "name": server.name, "cluster": server.cluster},
    }


async def list_account(js: JetStream) -> tuple[list[PlannedStream], list[str]]:
    """Every stream with its size, plus the streams the server lists but cannot describe (offline, no quorum)."""
    out: list[PlannedStream] = []
    missing: set[str] = set()
    offset = 0
    while True:
        resp = await js.api("STREAM.LIST", {"offset": offset}, timeout=30.0)
        page = resp.get("streams") or []
        for info in page:
            cfg = info.get("config") or {}
            st = info.get("state") or {}
            out.append(
                PlannedStream(
                    name=str(cfg.get("name")),
                    storage=str(cfg.get("storage", "file")),
                    replicas=int(cfg.get("num_replicas", 1) or 1),
                    messages=int(st.get("messages", 0)),
                    bytes=int(st.get("bytes", 0)),
                    consumers=int(st.get("consumer_count", 0)),
                )
            )
        missing.update(resp.get("missing") or [])
        missing.update((resp.get("offline") or {}).keys())  # 2.11+: name → reason
        offset += len(page)
        if not page or offset >= int(resp.get("total", 0)):
            break
    known = {p.name for p in out}
    return sorted(out, key=lambda p: p.name), sorted(missing - known)


# -- account backup -----------------------------------------------------------------------------------------------


@dataclass
class AccountBackupOptions:
    url: str
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    keys: KeyRing = field(default_factory=KeyRing)
    consumers: bool = True
    check: bool = False
    force: bool = False  # back up what can be listed even if some streams are offline or missing
    critical_warnings: bool = False  # warnings (memory streams on old servers, skipped streams) fail the run
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    parallel: int = 2  # streams backed up at once
    shard: Shard | None = None
    run: str | None = None  # required when sharded; shards of one run share it
    # passed to every stream's BackupOptions
    encrypt: bool = True
    compression: Compression = field(default_factory=Compression)
    store: str = "snapshot"  # or "decoded" (V2 servers): see BackupOptions.store
    chunk_size: int | None = DEFAULT_CHUNK_SIZE
    window_size: int | None = DEFAULT_WINDOW_SIZE
    block_size: int | None = None
    workers: int = 2
    buffer_blocks: int = 2
    storage_class: str | None = None
    retention: Retention | None = None
    sink: SinkOptions = field(default_factory=SinkOptions)
    sign_key: object | None = (
        None  # Ed25519 private key (pipeline.archive.signing): signs every manifest (the CLI the set)
    )

    def stream_options(self, stream: str) -> BackupOptions:
        return BackupOptions(
            stream=stream,
            url=self.url,
            connect=self.connect,
            keys=self.keys,
            encrypt=self.encrypt,
            compression=self.compression,
            store=self.store,
            consumers=self.consumers,
            check=self.check,
            chunk_size=self.chunk_size,
            window_size=self.window_size,
            block_size=self.block_size,
            workers=self.workers,
            buffer_blocks=self.buffer_blocks,
            storage_class=self.storage_class,
            retention=self.retention,
            sink=self.sink,
            sign_key=self.sign_key,
        )


@dataclass
class AccountPlan:
    """What a backup will do, known before the first byte moves (printed first, like natscli's summary)."""

    url: str
    account: dict
    server_version: str
    streams: list[PlannedStream]  # every selected stream of the account (the whole run when sharded)
    mine: list[str]  # the streams this process backs up (all of them unless sharded)
    missing: list[str]  # listed by the server without information (offline, no quorum); skipped with --force
    excluded: list[str]
    shard: str | None = None
    run: str | None = None
    resumed: bool = False  # this shard's plan was already recorded by an earlier attempt

    @property
    def messages(self) -> int:
        return sum(s.messages for s in self.streams)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.streams)

    @property
    def consumers(self) -> int:
        return sum(s.consumers for s in self.streams)

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(messages=self.messages, bytes=self.bytes, consumers=self.consumers)
        return d


@dataclass
class StreamOutcome:
    stream: str
    # "backed_up" | "done_before" (an earlier attempt of this shard) | "skipped" (warning) | "failed" | "deferred"
    # (left for a later attempt of the run: see backup_account_async's ``admit``)
    status: str
    manifest_id: str | None = None
    messages: int = 0
    bytes: int = 0
    stored_bytes: int = 0
    consumers: int = 0
    snapshot_format: str | None = None
    seconds: float = 0.0
    message: str | None = None  # the warning or the error
    error_kind: str | None = None
    exit_code: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class AccountBackupResult:
    url: str
    account: dict
    started: str
    finished: str
    streams: list[StreamOutcome]  # the streams this process handled, by name
    planned: int  # streams in the whole run
    warnings: list[str]
    set_id: str | None  # None until the run is sealed (or when it failed)
    run: str | None = None
    shard: str | None = None
    pending: list[str] = field(default_factory=list)  # sharded: streams of the run still without a backup
    seconds: float = 0.0

    @property
    def failed(self) -> list[StreamOutcome]:
        return [o for o in self.streams if o.status == "failed"]

    def to_json(self) -> dict:
        return {
            "url": self.url,
            "account": self.account,
            "started": self.started,
            "finished": self.finished,
            "set_id": self.set_id,
            "run": self.run,
            "shard": self.shard,
            "planned": self.planned,
            "streams": [o.to_json() for o in self.streams],
            "backed_up": sum(1 for o in self.streams if o.status in ("backed_up", "done_before")),
            "skipped": sum(1 for o in self.streams if o.status == "skipped"),
            "failed": [o.stream for o in self.failed],
            "deferred": [o.stream for o in self.streams if o.status == "deferred"],
            "warnings": self.warnings,
            "pending": self.pending,
            "messages": sum(o.messages for o in self.streams),
            "bytes": sum(o.bytes for o in self.streams),
            "stored_bytes": sum(o.stored_bytes for o in self.streams),
            "seconds": self.seconds,
        }


class _Share:
    """One stream's view of the account's progress: its bytes add to the account's bar, start/finish are not its."""

    def __init__(self, outer: Progress) -> None:
        self.outer = outer

    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        self.outer.advance(nbytes)

    def finish(self) -> None:
        pass

    def log(self, message: str) -> None:
        self.outer.log(message)


def backup_account(
    opts: AccountBackupOptions,
    progress: Progress | None = None,
    *,
    on_plan: Callable[[AccountPlan], None] | None = None,
    on_stream: Callable[[StreamOutcome], None] | None = None,
    admit: Callable[[PlannedStream], str | None] | None = None,
) -> AccountBackupResult:
    return asyncio.run(backup_account_async(opts, progress, on_plan=on_plan, on_stream=on_stream, admit=admit))


async def backup_account_async(
    opts: AccountBackupOptions,
    progress: Progress | None = None,
    *,
    on_plan: Callable[[AccountPlan], None] | None = None,
    on_stream: Callable[[StreamOutcome], None] | None = None,
    admit: Callable[[PlannedStream], str | None] | None = None,
) -> AccountBackupResult:
    """Back up every selected stream of the account; write the set (or, sharded, this shard's run records).

    ``on_plan`` is called once the streams are listed, before any backup; ``on_stream`` as each stream ends.
    ``admit(stream)`` is asked just before each stream starts; a reason it returns *defers* the stream: it is not
    backed up, not recorded, and stays owed to the run, so a later attempt with the same run id (or the sharded
    job path) backs it up and seals the run. It needs a run id for that reason.
    Raises :class:`AccountRunFailed` (no set written) if any stream failed, naming them.
    """
    progress = progress or NoProgress()
    t0 = time.monotonic()
    started = _now()
    if opts.parallel < 1:
        raise UsageError(f"--parallel must be at least 1, not {opts.parallel}")
    run = check_run_id(opts.run) if opts.run else None
    shard = opts.shard
    if shard is not None and shard.count > 1 and run is None:
        raise UsageError(
            f"shard {shard.label} needs a run id shared by all shards of the run: pass --run RUN-ID (or set "
            f"${RUN_ENV}); on Cloud Run and AWS Batch it is taken from the execution / array job id"
        )
    if run is None and shard is not None and shard.count == 1:
        shard = None  # the only shard of an unnamed run is simply the whole account
    if run is not None and shard is None:
        shard = Shard(0, 1, "--run")
    if admit is not None and run is None:
        raise UsageError("deferring streams needs a run id, so that a later attempt can finish and seal the run")
    repo = Repository.open(opts.url, opts.sink)
    check_writable(repo, opts.encrypt, opts.keys, opts.retention)

    js = await connect(opts.connect)
    async with js:
        server = js.server_info()
        check_store(opts.store, server)  # before a plan or any backup is written
        account = await account_identity(js, opts.connect.resolved())
        listed, missing = await list_account(js)
    names = [p.name for p in listed]
    selected = select_streams(names + missing, opts.include, opts.exclude)
    chosen_missing = [n for n in missing if n in selected]
    warnings: list[str] = []
    if chosen_missing:
        listing = ", ".join(chosen_missing)
        if not opts.force:
            raise ServerRefused(
                f"the server lists stream(s) {listing} but cannot give their information (offline or without a "
                "quorum); nothing was backed up. --force backs up the others and records these as skipped"
            )
        warnings += [
            f"stream {n!r} was offline or missing when the account was listed; not backed up" for n in chosen_missing
        ]
    by_name = {p.name: p for p in listed}
    planned = [by_name[n] for n in selected if n in by_name]
    if not planned:
        raise NotFoundError(
            f"the account has no streams to back up ({redact_servers(opts.connect.resolved().servers)})"
        )
    plan = AccountPlan(
        url=repo.url,
        account=account,
        server_version=server.version,
        streams=planned,
        mine=[p.name for p in planned],
        missing=chosen_missing,
        excluded=sorted(set(names + missing) - set(selected)),
        shard=shard.label if shard else None,
        run=run,
    )
    options = {
        "consumers": opts.consumers,
        "check": opts.check,
        "include": list(opts.include),
        "exclude": list(opts.exclude),
    }
    done_before: dict[str, dict] = {}
    if shard is not None:
        assert run is not None
        plan.mine = [p.name for p in planned if shard.owns(p.name)]
        recorded = _record_plan(repo, run, shard, plan, options, warnings, opts.retention)
        if recorded is not None:  # an earlier attempt of this shard: its plan is the run's truth
            plan.resumed = True
            plan.mine = list(recorded["mine"])
            warnings = list(recorded.get("warnings") or [])
        done_before = _done_records(repo, run)
    if on_plan is not None:
        on_plan(plan)

    outcomes: dict[str, StreamOutcome] = {}
    sem = asyncio.Semaphore(opts.parallel)
    share = _Share(progress)
    old_server = format_for_version(server.version_tuple) != V2

    async def finished(o: StreamOutcome) -> None:
        outcomes[o.stream] = o
        if run is not None and shard is not None:
            # Off the event loop: a slow store must not delay the acks of snapshots still running.
            await asyncio.to_thread(_record_outcome, repo, run, shard, o, opts.critical_warnings, opts.retention)
        if on_stream is not None:
            on_stream(o)

    async def one(p: PlannedStream) -> None:
        if p.name in done_before:
            d = done_before[p.name]
            await finished(
                StreamOutcome(
                    p.name,
                    "done_before" if d.get("manifest_id") else "skipped",
                    manifest_id=d.get("manifest_id"),
                    message=d.get("skipped") or "backed up by an earlier attempt of this shard",
                )
            )
            return
        if p.storage == "memory" and old_server:
            # natscli: a warning, not a failure, unless --critical-warnings (ErrMemoryStreamNotSupported).
            await finished(
                StreamOutcome(
                    p.name,
                    "skipped",
                    message=f"backup of memory stream {p.name!r} skipped: snapshots of memory streams need "
                    f"nats-server 2.15 or later (the server is {server.version})",
                    error_kind="server",
                    exit_code=ServerRefused.exit_code,
                )
            )
            return
        async with sem:
            why = admit(p) if admit is not None else None
            if why:
                await finished(StreamOutcome(p.name, "deferred", message=why))
                return
            progress.log(f"backup {p.name}: started ({p.messages:,} messages)")
            s0 = time.monotonic()
            try:
                res: BackupResult = await backup_stream_async(opts.stream_options(p.name), share)
            except JsArchiveError as e:
                await finished(
                    StreamOutcome(
                        p.name,
                        "failed",
                        seconds=round(time.monotonic() - s0, 3),
                        message=str(e),
                        error_kind=e.kind,
                        exit_code=e.exit_code,
                    )
                )
                return
        await finished(
            StreamOutcome(
                p.name,
                "backed_up",
                manifest_id=res.manifest_id,
                messages=res.messages,
                bytes=res.bytes,
                stored_bytes=res.stored_bytes,
                consumers=res.consumers,
                snapshot_format=res.snapshot_format,
                seconds=res.seconds,
            )
        )

    mine = [by_name[n] for n in plan.mine if n in by_name]
    gone = [n for n in plan.mine if n not in by_name]  # a resumed plan names a stream that was deleted since
    for n in gone:
        await finished(
            StreamOutcome(n, "failed", message=f"stream {n!r} no longer exists", error_kind="not_found", exit_code=3)
        )
    progress.start(f"account backup ({len(mine)} streams)", None)
    try:
        await asyncio.gather(*(one(p) for p in mine))
    finally:
        progress.finish()

    ordered = [outcomes[n] for n in sorted(outcomes)]
    warnings = sorted(set(warnings + [o.message for o in ordered if o.status == "skipped" and o.message]))
    result = AccountBackupResult(
        url=repo.url,
        account=account,
        started=started,
        finished=_now(),
        streams=ordered,
        planned=len(planned),
        warnings=warnings,
        set_id=None,
        run=run,
        shard=shard.label if shard else None,
    )
    failed = [(o.stream, o.exit_code or 1) for o in ordered if o.status == "failed"]
    if opts.critical_warnings:
        # natscli -w: every warning is a failure (memory streams on old servers, streams skipped with --force).
        failed += [(o.stream, o.exit_code or ServerRefused.exit_code) for o in ordered if o.status == "skipped"]
        failed += [(n, ServerRefused.exit_code) for n in chosen_missing]
    if failed:
        result.seconds = round(time.monotonic() - t0, 3)
        names_ = ", ".join(sorted({n for n, _ in failed}))
        raise AccountRunFailed(
            f"backup of {len(failed)} of {len(ordered) + len(chosen_missing)} stream(s) failed"
            + (" (warnings count as failures with --critical-warnings)" if opts.critical_warnings else "")
            + f": {names_}; "
            + (f"re-run the shard with the same --run {run} to retry them" if run else "no set was written"),
            result,
            _common_exit_code([c for _, c in failed]),
        )

    if run is None:
        entries = [
            set_entry(load_member(repo, "this account backup", o.stream, o.manifest_id))
            for o in ordered
            if o.manifest_id
        ]
        raw = build_set(
            account=account,
            started=started,
            finished=result.finished,
            entries=entries,
            skipped=[{"stream": o.stream, "reason": o.message or ""} for o in ordered if o.status == "skipped"]
            + [{"stream": n, "reason": "offline or missing when listed"} for n in chosen_missing],
            warnings=warnings,
            options=options,
        )
        try:
            result.set_id = repo.write_set(raw, opts.retention)
        except SinkError as e:
            raise storage_error(
                e, f"every stream was backed up but the set could not be written to {repo.url}"
            ) from None
    else:
        # The last shard to finish finds the run complete and seals it; the others leave it to that one (or to
        # `jsarchive account seal`). This shard's own work is done either way, so sealing trouble is a warning.
        try:
            result.set_id = seal_run_in(repo, run, opts.retention).set_id
        except RunIncomplete as e:
            result.pending = e.missing
        except JsArchiveError as e:
            result.warnings.append(f"this shard finished but the run could not be sealed: {e}")
    result.seconds = round(time.monotonic() - t0, 3)
    return result


# -- runs: the records of a sharded backup ------------------------------------------------------------------------


def _plan_key(run: str, shard: Shard) -> str:
    return f"{RUNS}{run}/plan/{shard.leaf}"


def _done_key(run: str, stream: str) -> str:
    return f"{RUNS}{run}/done/{stream}"


def _put_json(repo: Repository, key: str, doc: dict, retention: Retention | None) -> bool:
    try:
        return repo.put_small(key, mf.canonical(doc), retention)
    except SinkError as e:
        raise storage_error(e, f"cannot write {key} to {repo.url}") from None


def _get_json(repo: Repository, key: str) -> dict | None:
    raw = repo.get_small(key, objects.MAX_RUN_RECORD)
    if raw is None:
        return None
    doc = objects.parse_json(raw, f"{key} in {repo.url}", objects.MAX_RUN_RECORD)
    try:
        return objects.run_record(doc)
    except objects.Invalid as e:
        raise IntegrityError(f"{key} in {repo.url} is not a valid run record: {e}") from None


def _record_plan(
    repo: Repository,
    run: str,
    shard: Shard,
    plan: AccountPlan,
    options: dict,
    warnings: list[str],
    retention: Retention | None,
) -> dict | None:
    """Write this shard's plan; if an earlier attempt wrote one, return that one instead (it stays the truth)."""
    for key in repo.keys(f"{RUNS}{run}/plan/"):
        m = _PLAN_LEAF.fullmatch(key.rpartition("/")[2])
        if m and int(m.group(2)) != shard.count:
            raise UsageError(
                f"run {run} was started with {m.group(2)} shards ({key}); this shard says {shard.label}. Use the "
                "same shard count on every shard, or a new --run"
            )
    key = _plan_key(run, shard)
    existing = _get_json(repo, key)
    if existing is not None:
        return existing
    doc = {
        "format": PLAN_FORMAT,
        "version": VERSION,
        "run": run,
        "shard": {"index": shard.index, "count": shard.count},
        "created": _now(),
        "tool": {"name": "jsarchive", "version": __version__},
        "account": plan.account,
        "options": options,
        "streams": [p.name for p in plan.streams],
        "mine": plan.mine,
        "warnings": sorted(warnings),
    }
    if not _put_json(repo, key, doc, retention):
        return _get_json(repo, key)  # a concurrent attempt of this shard won the race: follow its plan
    return None


def _done_records(repo: Repository, run: str) -> dict[str, dict]:
    prefix = f"{RUNS}{run}/done/"
    out = {}
    for key in repo.keys(prefix):
        doc = _get_json(repo, key)
        if doc is not None and doc.get("format") == DONE_FORMAT:
            out[key[len(prefix) :]] = doc
    return out


def _record_outcome(
    repo: Repository, run: str, shard: Shard, o: StreamOutcome, critical: bool, retention: Retention | None
) -> None:
    """A finished stream's record: ``done/<stream>`` on success (or a warning), ``failed/…`` otherwise."""
    if o.status in ("done_before", "deferred"):
        return
    shard_doc = {"index": shard.index, "count": shard.count}
    if o.status == "backed_up" or (o.status == "skipped" and not critical):
        _put_json(
            repo,
            _done_key(run, o.stream),
            {
                "format": DONE_FORMAT,
                "version": VERSION,
                "run": run,
                "stream": o.stream,
                "shard": shard_doc,
                "finished": _now(),
                "manifest_id": o.manifest_id,
                "skipped": o.message if o.status == "skipped" else None,
                "warnings": [],
            },
            retention,
        )
        return
    _put_json(
        repo,
        f"{RUNS}{run}/failed/{o.stream}/{_leaf_time()}-{os.urandom(4).hex()}",
        {
            "format": FAILURE_FORMAT,
            "version": VERSION,
            "run": run,
            "stream": o.stream,
            "shard": shard_doc,
            "time": _now(),
            "error": {"kind": o.error_kind, "exit_code": o.exit_code, "message": o.message},
        },
        retention,
    )


@dataclass
class SealResult:
    set_id: str
    run: str
    shards: int
    streams: list[str]
    skipped: list[str]
    warnings: list[str]
    started: str
    finished: str

    def to_json(self) -> dict:
        return asdict(self)


def seal_run(url: str, run: str, sink: SinkOptions | None = None, retention: Retention | None = None) -> SealResult:
    """Write the set of sharded run ``run`` if every shard has reported every stream; else :class:`RunIncomplete`."""
    return seal_run_in(Repository.open(url, sink), check_run_id(run), retention)


def seal_run_in(repo: Repository, run: str, retention: Retention | None = None) -> SealResult:
    prefix = f"{RUNS}{run}/"
    plans: dict[int, dict] = {}
    count = None
    for key in repo.keys(f"{prefix}plan/"):
        m = _PLAN_LEAF.fullmatch(key.rpartition("/")[2])
        if not m:
            continue
        doc = _get_json(repo, key)
        if doc is None or doc.get("format") != PLAN_FORMAT:
            raise IntegrityError(f"{key} in {repo.url} is not a run plan")
        index, n = int(m.group(1)), int(m.group(2))
        if count is not None and n != count:
            raise IntegrityError(f"run {run} has plans for {count} and for {n} shards in {repo.url}")
        count = n
        plans[index] = doc
    if count is None:
        raise NotFoundError(f"no run {run!r} in {repo.url} (no shard has recorded a plan under {prefix}plan/)")
    done = _done_records(repo, run)
    listed_by_any = sorted({s for p in plans.values() for s in p.get("streams") or []})
    expected: dict[str, int] = {}
    for index, p in plans.items():
        for s in p.get("mine") or []:
            expected[s] = index
    warnings = [w for p in plans.values() for w in p.get("warnings") or []]
    missing: list[str] = []
    absent_shards = [i for i in range(count) if i not in plans]
    for i in absent_shards:
        # A shard that never started: the other shards' full lists say which streams it owes.
        missing += [s for s in listed_by_any if shard_of(s, count) == i]
    missing += [s for s in expected if s not in done]
    for s in listed_by_any:
        owner = shard_of(s, count)
        if owner in plans and s not in expected:
            warnings.append(
                f"stream {s!r} was listed by another shard but not by shard {owner}/{count}, which owns it; it is "
                "not in this set (created or deleted while the run started?)"
            )
    if missing or absent_shards:
        # A shard that has not recorded its plan blocks the seal even if no other shard's list gives it a stream:
        # its own listing might.
        missing = sorted(set(missing))
        why = []
        if absent_shards:
            why.append("shard(s) " + ", ".join(f"{i}/{count}" for i in absent_shards) + " have not started")
        last_failures = _last_failures(repo, run, missing)
        why += [f"{s}: {msg}" for s, msg in last_failures.items()]
        raise RunIncomplete(
            f"run {run} is not complete, no set was written: {len(missing)} stream(s) have no backup yet"
            + (f": {', '.join(missing)}" if missing else "")
            + (f" ({'; '.join(why)})" if why else ""),
            missing,
        )
    entries, skipped = [], []
    for s in sorted(expected):
        d = done[s]
        if d.get("manifest_id"):
            entries.append(set_entry(load_member(repo, f"run {run}", s, str(d["manifest_id"]))))
        else:
            skipped.append({"stream": s, "reason": str(d.get("skipped") or "")})
            if d.get("skipped"):
                warnings.append(str(d["skipped"]))
        warnings += d.get("warnings") or []
    first = plans[min(plans)]
    started = min(str(p.get("created", "")) for p in plans.values())
    finished = max([str(done[s].get("finished", "")) for s in expected] or [started])
    raw = build_set(
        account=first.get("account") or {},
        started=started,
        finished=finished,
        entries=entries,
        skipped=skipped,
        warnings=warnings,
        options=first.get("options") or {},
        run=run,
        shards=count,
        tool=first.get("tool"),
    )
    try:
        set_id = repo.write_set(raw, retention)
    except SinkError as e:
        raise storage_error(e, f"cannot write the set of run {run} to {repo.url}") from None
    doc = json.loads(raw)
    return SealResult(
        set_id=set_id,
        run=run,
        shards=count,
        streams=[e["stream"] for e in doc["streams"]],
        skipped=[e["stream"] for e in doc["skipped"]],
        warnings=doc["warnings"],
        started=started,
        finished=finished,
    )


def _last_failures(repo: Repository, run: str, streams: list[str]) -> dict[str, str]:
    out = {}
    for s in streams:
        keys = repo.keys(f"{RUNS}{run}/failed/{s}/")
        if keys:
            doc = _get_json(repo, keys[-1]) or {}  # leaves start with a UTC time: the last is the newest
            out[s] = str((doc.get("error") or {}).get("message") or "failed")
    return out


# -- account restore -----------------------------------------------------------------------------------------------


@dataclass
class AccountRestoreOptions:
    url: str
    set_id: str | None = None  # id or unique prefix; None: the newest set
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    keys: KeyRing = field(default_factory=KeyRing)
    cluster: str | None = None
    tags: list[str] = field(default_factory=list)
    replicas: int | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    on_exists: str = "fail"  # fail | skip | replace
    safety_backup: bool = True  # replace: back up each live stream (marked pre-restore) before deleting it
    sign_key: object | None = None  # signs the safety backups (pipeline.archive.signing)
    trust: TrustPolicy | None = None  # what each backup must prove before it is restored (pipeline/archive/trust.py)
    parallel: int = 2
    chunk_size: int = RESTORE_CHUNK_SIZE
    in_flight: int = RESTORE_IN_FLIGHT
    wait: float = 120.0
    sink: SinkOptions = field(default_factory=SinkOptions)


@dataclass
class AccountRestoreResult:
    set_id: str
    url: str
    restored: list[RestoreResult]
    skipped: list[dict]  # {"stream", "reason"}
    failed: list[dict]  # {"stream", "kind", "exit_code", "message"}
    replaced: list[str]  # streams deleted on the target before being restored (--on-exists replace)
    seconds: float = 0.0
    safety_backups: dict[str, str] = field(default_factory=dict)  # replaced stream -> its pre-restore backup

    def to_json(self) -> dict:
        return {
            "set_id": self.set_id,
            "url": self.url,
            "restored": [r.to_json() for r in self.restored],
            "skipped": self.skipped,
            "failed": self.failed,
            "replaced": self.replaced,
            "safety_backups": self.safety_backups,
            "seconds": self.seconds,
        }


def restore_account(
    opts: AccountRestoreOptions,
    progress: Progress | None = None,
    *,
    on_stream: Callable[[str, str, str], None] | None = None,
) -> AccountRestoreResult:
    return asyncio.run(restore_account_async(opts, progress, on_stream=on_stream))


async def restore_account_async(
    opts: AccountRestoreOptions,
    progress: Progress | None = None,
    *,
    on_stream: Callable[[str, str, str], None] | None = None,
) -> AccountRestoreResult:
    """Restore the streams of a set, several at once. ``on_stream(stream, status, detail)`` as each one ends.

    Before anything is sent: every selected manifest is loaded and checked, its data object found, its key
    unwrapped, the target's version checked against the snapshot formats, and (``on_exists="fail"``, natscli's
    behaviour) every name checked to be free. Streams that fail later do not stop the others; the result lists
    them and :class:`AccountRunFailed` is raised at the end.
    """
    progress = progress or NoProgress()
    t0 = time.monotonic()
    if opts.on_exists not in ON_EXISTS:
        raise UsageError(f"--on-exists must be one of {', '.join(ON_EXISTS)}, not {opts.on_exists!r}")
    if opts.parallel < 1:
        raise UsageError(f"--parallel must be at least 1, not {opts.parallel}")
    if opts.replicas is not None and opts.replicas < 1:
        raise UsageError(f"--replicas must be at least 1, not {opts.replicas}")
    repo = Repository.open(opts.url, opts.sink)
    bset = load_set(repo, opts.set_id)
    label = f"set {bset.id[:12]}"
    entries = {e["stream"]: e for e in bset.streams}
    chosen = select_streams(sorted(entries), opts.include, opts.exclude, what=label)
    manifests: dict[str, Manifest] = {}
    for name in chosen:
        m = load_member(repo, label, name, entries[name]["manifest_id"])
        open_manifest(repo, m, opts.keys, label=label)  # a missing key or object now, not after half the account
        manifests[name] = m

    js = await connect(opts.connect)
    async with js:
        server = js.server_info()
        if format_for_version(server.version_tuple) != V2:
            v2 = [n for n, m in manifests.items() if m.snapshot_format == V2]
            if v2:
                raise ServerRefused(
                    f"{label}: stream(s) {', '.join(v2)} were backed up in snapshot format V2 (nats-server 2.15 or "
                    f"later), which nats-server {server.version} cannot read; nothing was restored"
                )
        existing = set(await js.stream_names())
    clash = sorted(existing & set(chosen))
    skipped: list[dict] = []
    if clash and opts.on_exists == "fail":
        raise ConflictError(
            f"stream(s) {', '.join(clash)} already exist on the target; nothing was restored (--on-exists skip "
            "leaves them and restores the rest, --on-exists replace deletes and restores them)"
        )
    if opts.on_exists == "skip":
        skipped = [{"stream": n, "reason": "exists on the target"} for n in clash]
    todo = [n for n in chosen if not (opts.on_exists == "skip" and n in clash)]
    to_replace = set(clash) if opts.on_exists == "replace" else set()

    restored: list[RestoreResult] = []
    failed: list[dict] = []
    replaced: list[str] = []
    sem = asyncio.Semaphore(opts.parallel)
    share = _Share(progress)
    for s in skipped:
        if on_stream is not None:
            on_stream(s["stream"], "skipped", s["reason"])

    safety: dict[str, str] = {}

    async def one(name: str) -> None:
        async with sem:
            ropts = RestoreOptions(
                url=opts.url,
                stream=name,
                backup=manifests[name].id,
                connect=opts.connect,
                keys=opts.keys,
                cluster=opts.cluster,
                tags=list(opts.tags),
                replicas=opts.replicas,
                chunk_size=opts.chunk_size,
                in_flight=opts.in_flight,
                wait=opts.wait,
                sink=opts.sink,
                trust=opts.trust,
            )
            try:
                progress.log(f"restore {name}: started")
                if name in to_replace:
                    # verified, preflighted and saved before the live stream is deleted (pipeline/flows/replace.py)
                    out = await replace_stream(
                        ropts, take_safety_backup=opts.safety_backup, progress=share, sign_key=opts.sign_key
                    )
                    replaced.append(name)
                    if out.safety_backup:
                        safety[name] = out.safety_backup
                    r = out.restored
                else:
                    r = await restore_stream_async(ropts, share)
            except JsArchiveError as e:
                failed.append({"stream": name, "kind": e.kind, "exit_code": e.exit_code, "message": str(e)})
                if on_stream is not None:
                    on_stream(name, "failed", str(e))
                return
        restored.append(r)
        if on_stream is not None:
            on_stream(name, "restored", f"{r.messages:,} messages, {len(r.consumers)} consumer(s), R{r.num_replicas}")

    progress.start(f"account restore ({len(todo)} streams)", None)
    try:
        await asyncio.gather(*(one(n) for n in todo))
    finally:
        progress.finish()
    result = AccountRestoreResult(
        set_id=bset.id,
        url=repo.url,
        restored=sorted(restored, key=lambda r: r.stream),
        skipped=skipped,
        failed=sorted(failed, key=lambda f: f["stream"]),
        replaced=sorted(replaced),
        seconds=round(time.monotonic() - t0, 3),
        safety_backups=dict(sorted(safety.items())),
    )
    if failed:
        raise AccountRunFailed(
            f"restore of {len(failed)} of {len(todo)} stream(s) failed: "
            + ", ".join(f["stream"] for f in result.failed),
            result,
            _common_exit_code([int(f["exit_code"]) for f in failed]),
        )
    return result
