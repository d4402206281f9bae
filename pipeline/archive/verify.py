"""Check an archive without restoring it: :func:`verify_archive`.

Without a key (an auditor's check, docs/format.md §11.2) each selected backup is checked as follows:

- the manifest's SHA-256 equals its id, and it is a valid v1 manifest (block table contiguous, sizes add up);
- the data object exists and its size equals the manifest's ``data.size``;
- every block's stored bytes hash to the manifest's SHA-256: ranged reads, ``workers`` at a time, each block read
  in pieces of at most ``piece_size`` bytes, so memory stays at ``workers × piece_size`` whatever the block size.

With ``--all`` it also checks the archive's links: every ref holds a manifest id whose manifest exists and is of
the backup and stream the ref names; every set's hash equals its id and each of its streams points at an
existing manifest of that stream. Manifests without a ref and data objects without a manifest are warnings.
Every ref checked must also be named after its manifest's ``created``: the writer always does that, so a ref whose
name says another time was made by something else (e.g. to pass an old backup off as the newest) and is a problem.
``--latest`` picks each stream's newest backup the way a restore does (pipeline.archive.repository.Repository.latest),
and checks every newer-named ref it passed over.

Chains (docs/design/incremental.md): the restore points of each stream that has deltas are checked for continuity
(:func:`pipeline.format.chain.chain_breaks`): a missing capture, a gap between ranges, an overlap, a link to another
chain or to a re-created stream is a broken ``chain`` link naming the missing range (exit 4). With ``--all`` every
stream's chains are checked; with a backup ID or ``--latest``, the chains of the streams whose selected backup is a
restore point of one.

Signatures (pipeline/archive/signing.py): each backup and set reports who signed it. An invalid object under
``signatures/<id>/`` is a problem; with ``trust_keys`` so is a backup or set that no trusted key signed.

``deep=True`` (with a key for encrypted backups) also opens every block (AES-GCM), decompresses it, checks its
plaintext SHA-256, and parses the whole snapshot stream: S2 framing with every chunk CRC (a backup stored decoded
has none: its blocks are the archive, pipeline/format/payload.py), then the NATSARC1 archive up to its end marker (V2:
message count and last sequence against the manifest's stream state) or the tar (V1: ``meta.inf``, ``msgs/`` and
``msgs/index.db`` present). Memory stays at a few blocks.

Each backup ends ``OK``, ``FAILED`` (its stored bytes or links are wrong) or ``UNVERIFIED`` (it could not be
read to the end: data in cold storage, no key for ``--deep``, access denied, store unreachable).
:attr:`VerifyReport.exit_code`: 0 if everything is OK, 4 if anything FAILED, otherwise the code of the first
reason something stayed unverified (5 no key, 7 unreachable, 10 access denied, 11 cold storage).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from pipeline.archive import signing
from pipeline.archive.chains import points_by_stream, stream_points
from pipeline.archive.reader import BlockReader, unwrap_data_key
from pipeline.archive.repository import (
    DATA,
    LATEST_SCAN,
    MANIFESTS,
    REFS,
    Ref,
    Repository,
    ref_disagreement,
    storage_error,
)
from pipeline.base.errors import IntegrityError, JsArchiveError, KeyUnavailable, NotFoundError, UsageError, setting
from pipeline.base.progress import NoProgress, Progress
from pipeline.format import manifest as mf
from pipeline.format import natsarc, objects, payload, s2
from pipeline.format.chain import chain_breaks
from pipeline.format.sets import parse_set
from pipeline.keys.keyring import KeyRing
from sinks import ObjectNotFound, SinkError, SinkOptions

OK, FAILED, UNVERIFIED = "OK", "FAILED", "UNVERIFIED"
PIECE_SIZE = 8 * 1024 * 1024
MAX_BLOCK_PROBLEMS = 5  # block failures listed per backup (the count covers all)
V1_REQUIRED = ("meta.inf", "msgs/index.db")


@dataclass
class VerifyOptions:
    url: str
    backup: str | None = None  # a manifest id or unique prefix
    latest: bool = False  # the newest backup of each stream (or of ``stream``)
    all: bool = False  # every backup, plus refs and sets; the default when neither backup nor latest is given
    stream: str | None = None
    deep: bool = False
    keys: KeyRing = field(default_factory=KeyRing)
    workers: int = 4  # parallel ranged reads (and backups checked at once)
    piece_size: int = PIECE_SIZE  # the largest single read when hashing a block
    prefetch: int = 4  # deep: blocks fetched ahead
    sink: SinkOptions = field(default_factory=SinkOptions)
    trust_keys: list[signing.TrustedKey] = field(default_factory=list)  # backups and sets must be signed by one


@dataclass
class BackupCheck:
    manifest_id: str
    stream: str | None = None
    backup_id: str | None = None
    created: str | None = None
    snapshot_format: str | None = None
    status: str = OK
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exit_code: int = 0  # 0 OK, 4 FAILED, or why it stayed unverified
    blocks: int = 0
    blocks_checked: int = 0
    stored_bytes: int = 0
    deep: bool = False  # opened, decompressed and parsed to the end
    snapshot_bytes: int | None = None  # deep: plaintext bytes checked
    messages: int | None = None  # deep V2: messages counted in the archive
    seconds: float = 0.0
    signature: str = ""  # who signed it (pipeline.archive.signing.SignatureStatus.describe)

    def fail(self, why: str) -> None:
        self.status = FAILED
        self.exit_code = IntegrityError.exit_code
        self.problems.append(why)

    def unverified(self, why: str, code: int) -> None:
        if self.status != FAILED:
            if self.status == OK:
                self.exit_code = code
            self.status = UNVERIFIED
        self.problems.append(why)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class LinkCheck:
    """A ref or a set, and whether what it points to exists and matches."""

    kind: str  # "ref" | "set"
    key: str
    ok: bool
    target: str | None = None  # the manifest id (ref) or set id
    problems: list[str] = field(default_factory=list)
    signature: str | None = None  # sets: who signed it

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class VerifyReport:
    url: str
    deep: bool
    selection: str  # "all", "latest" or "backup"
    stream: str | None = None
    backups: list[BackupCheck] = field(default_factory=list)
    links: list[LinkCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def exit_code(self) -> int:
        if any(b.status == FAILED for b in self.backups) or any(not link.ok for link in self.links):
            return IntegrityError.exit_code
        for b in self.backups:
            if b.status == UNVERIFIED:
                return b.exit_code
        return 0

    @property
    def rate(self) -> float:
        """Bytes read from the store per second."""
        return self.bytes_read / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "url": self.url,
            "deep": self.deep,
            "selection": self.selection,
            "stream": self.stream,
            "backups": [b.to_json() for b in self.backups],
            "links": [link.to_json() for link in self.links],
            "warnings": self.warnings,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
            "failed": sum(1 for b in self.backups if b.status == FAILED) + sum(1 for x in self.links if not x.ok),
            "unverified": sum(1 for b in self.backups if b.status == UNVERIFIED),
        }


@dataclass
class LoadedManifest:
    """A manifest read once: parsed, or the reason it is not a usable manifest (and its raw bytes, if any)."""

    id: str
    manifest: mf.Manifest | None
    problem: JsArchiveError | None = None
    stream: str | None = None  # for an invalid manifest: its "stream" field, if it still has one
    raw: bytes | None = None  # for an invalid manifest: what is stored


def load_quietly(repo: Repository, mid: str) -> LoadedManifest:
    """Read and check manifest ``mid``; problems are returned, not raised."""
    try:
        raw = objects.read_capped(repo.sink, repo.manifest_key(mid), objects.MAX_MANIFEST)
    except IntegrityError as e:  # over the size limit: never read whole
        return LoadedManifest(mid, None, e)
    except ObjectNotFound:
        return LoadedManifest(mid, None, NotFoundError(f"manifest {mid[:12]} does not exist in {repo.url}"))
    except SinkError as e:
        return LoadedManifest(mid, None, storage_error(e, f"cannot read manifest {mid[:12]}"))
    try:
        return LoadedManifest(mid, mf.parse(raw, mid))
    except JsArchiveError as e:
        stream = None
        try:  # best effort: whose backup this was, for --stream and the report (bounded like every read)
            doc = objects.parse_json(raw, f"manifest {mid[:12]}", objects.MAX_MANIFEST)
            stream = doc.get("stream") if isinstance(doc, dict) and isinstance(doc.get("stream"), str) else None
        except JsArchiveError:
            pass
        return LoadedManifest(mid, None, e, stream, raw)


def manifest_names(repo: Repository) -> tuple[list[str], list[str]]:
    """The ids under ``manifests/``, and the keys there that are not named like a manifest."""
    ids, stray = [], []
    for key in repo.keys(MANIFESTS):
        name = key[len(MANIFESTS) :]
        if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
            ids.append(name)
        else:
            stray.append(key)
    return ids, stray


class _Meter:
    """Counts bytes read (thread-safe) and forwards them to the progress display."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self.total = 0

    def __call__(self, n: int) -> None:
        with self._lock:
            self.total += n
            self._progress.advance(n)


def verify_archive(opts: VerifyOptions, progress: Progress | None = None) -> VerifyReport:
    """Check the selected backups (and, for ``all``, the archive's refs and sets); never raises for what it
    finds, only for what stops it from looking (bad arguments, an unreachable or missing archive)."""
    progress = progress or NoProgress()
    if sum(bool(x) for x in (opts.backup, opts.latest, opts.all)) > 1:
        raise UsageError(f"give one of a backup ID, {setting('latest')} or {setting('all')}")
    selection = "backup" if opts.backup else "latest" if opts.latest else "all"
    started = time.monotonic()
    repo = Repository.open(opts.url, opts.sink)
    report = VerifyReport(url=repo.url, deep=opts.deep, selection=selection, stream=opts.stream)
    workers = max(1, opts.workers)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="verify-io") as io_pool:
        if selection == "backup":
            mid = repo.resolve(opts.backup or "")
            loaded = {mid: load_quietly(repo, mid)}
            targets = [mid]
            found = loaded[mid].manifest
            refs = [r for r in repo.refs(found.stream) if r.backup_id == found.backup_id] if found else []
        elif selection == "latest":
            refs, loaded, targets = _latest(repo, opts.stream, io_pool, report)
        else:
            loaded = _load_all(repo, io_pool, report)
            targets = [
                mid
                for mid, x in sorted(loaded.items())
                if opts.stream is None or (x.manifest.stream if x.manifest else x.stream) in (opts.stream, None)
            ]
            refs = repo.refs(opts.stream)
        if selection == "all" and not loaded and not refs:
            raise NotFoundError(f"no backups{f' of stream {opts.stream!r}' if opts.stream else ''} in {repo.url}")
        for ref in refs:
            report.links.append(_check_ref(repo, ref, loaded))
        if selection == "all":
            _check_sets(repo, opts.stream, loaded, report, opts.trust_keys)
            _archive_warnings(repo, opts.stream, loaded, refs, report)
        _check_chains(repo, selection, opts.stream, loaded, targets, report)

        total = sum(loaded[m].manifest.data_size for m in targets if loaded[m].manifest is not None)
        progress.start("verify" + (" --deep" if opts.deep else ""), total)
        meter = _Meter(progress)
        try:
            # Keyless checks run several backups at once (their block reads share io_pool); deep checks one at a
            # time, each with its own prefetching reader, which keeps both CPUs busy decoding.
            outer = 1 if opts.deep else workers
            with concurrent.futures.ThreadPoolExecutor(outer, thread_name_prefix="verify") as pool:
                checks = list(pool.map(lambda mid: _check_backup(repo, loaded[mid], opts, io_pool, meter), targets))
            # by stream, newest first
            checks.sort(key=lambda b: (b.created or "", b.manifest_id), reverse=True)
            report.backups = sorted(checks, key=lambda b: b.stream or "")
        except BaseException:
            progress.abort()  # cut short (interrupted, store gone): never shown as complete
            raise
        progress.finish()
    report.bytes_read = meter.total
    report.seconds = time.monotonic() - started
    return report


# -- choosing what to check -----------------------------------------------------------------------------------------


def _load_all(repo: Repository, pool: concurrent.futures.Executor, report: VerifyReport) -> dict[str, LoadedManifest]:
    ids, stray = manifest_names(repo)
    report.warnings.extend(f"{key} is not named like a manifest (64 hex digits); ignored" for key in stray)
    return dict(zip(ids, pool.map(lambda m: load_quietly(repo, m), ids), strict=True))


def _latest(
    repo: Repository, stream: str | None, pool: concurrent.futures.Executor, report: VerifyReport
) -> tuple[list[Ref], dict[str, LoadedManifest], list[str]]:
    by_stream: dict[str, list[Ref]] = {}
    for ref in repo.refs(stream):  # newest name first
        by_stream.setdefault(ref.stream, []).append(ref)
    if not by_stream:
        raise NotFoundError(f"no backups{f' of stream {stream!r}' if stream else ''} in {repo.url}")
    refs: list[Ref] = []
    loaded: dict[str, LoadedManifest] = {}
    targets: list[str] = []
    for name in sorted(by_stream):
        # as Repository.latest: the first ref whose manifest agrees with it; the ones passed over are checked
        # (and so flagged) too
        for ref in by_stream[name][:LATEST_SCAN]:
            refs.append(ref)
            try:
                mid = repo.ref_target(ref)
            except JsArchiveError:
                continue  # reported by the ref check
            if mid not in loaded:
                loaded[mid] = load_quietly(repo, mid)
            m = loaded[mid].manifest
            if m is None or m.backup_id != ref.backup_id or m.stream != ref.stream or ref_disagreement(ref, m):
                continue
            if mid not in targets:
                targets.append(mid)
            break
    return refs, loaded, targets


def _check_ref(repo: Repository, ref: Ref, loaded: dict[str, LoadedManifest]) -> LinkCheck:
    check = LinkCheck("ref", ref.key, ok=True)
    try:
        mid = repo.ref_target(ref)
    except JsArchiveError as e:
        check.ok = False
        check.problems.append(str(e))
        return check
    check.target = mid
    if mid not in loaded:
        loaded[mid] = load_quietly(repo, mid)
    x = loaded[mid]
    if x.manifest is None:
        check.ok = False
        if isinstance(x.problem, NotFoundError):
            check.problems.append(f"dangling ref: it points to manifest {mid[:12]}, which does not exist")
        else:
            check.problems.append(f"it points to manifest {mid[:12]}, which is not valid: {x.problem}")
    elif x.manifest.backup_id != ref.backup_id or x.manifest.stream != ref.stream:
        check.ok = False
        check.problems.append(
            f"it names backup {ref.backup_id[:12]} of stream {ref.stream!r} but points to manifest {mid[:12]} of "
            f"backup {x.manifest.backup_id[:12]} of stream {x.manifest.stream!r}"
        )
    elif why := ref_disagreement(ref, x.manifest):
        check.ok = False
        check.problems.append(f"its time disagrees with its manifest: {why} (ref names are not authenticated)")
    return check


def _check_sets(
    repo: Repository,
    stream: str | None,
    loaded: dict[str, LoadedManifest],
    report: VerifyReport,
    trust_keys: list[signing.TrustedKey],
) -> None:
    for sid in sorted(repo.list_sets()):
        check = LinkCheck("set", repo.set_key(sid), ok=True, target=sid)
        report.links.append(check)
        try:
            bset = parse_set(repo.load_set(sid), sid)
        except JsArchiveError as e:
            check.ok = False
            check.problems.append(str(e))
            continue
        for entry in bset.streams:
            if stream is not None and entry["stream"] != stream:
                continue
            mid = entry["manifest_id"]
            x = loaded.get(mid) or load_quietly(repo, mid)
            loaded.setdefault(mid, x)
            if x.manifest is None:
                what = "does not exist" if isinstance(x.problem, NotFoundError) else f"is not valid ({x.problem})"
                check.problems.append(f"stream {entry['stream']!r}: manifest {mid[:12]} {what}")
            elif x.manifest.stream != entry["stream"]:
                check.problems.append(
                    f"stream {entry['stream']!r}: manifest {mid[:12]} is a backup of {x.manifest.stream!r}"
                )
        status = signing.signature_status(repo, "set", sid, trust_keys)
        check.signature = status.describe()
        check.problems += _signature_problems(status, trust_keys, f"set {sid[:12]}")
        check.ok = not check.problems


def _check_chains(
    repo: Repository,
    selection: str,
    stream: str | None,
    loaded: dict[str, LoadedManifest],
    targets: list[str],
    report: VerifyReport,
) -> None:
    """One ``chain`` link per chain of each stream that has deltas: OK, or broken with the range it misses."""
    if selection == "all":
        valid = [x.manifest for x in loaded.values() if x.manifest is not None]
        by_stream = points_by_stream(m for m in valid if stream is None or m.stream == stream)
    else:
        chained = {m.stream for t in targets if (m := loaded[t].manifest) is not None and m.chain is not None}
        by_stream = {name: stream_points(repo, name)[0] for name in sorted(chained)}
    for name, points in sorted(by_stream.items()):
        if not any(p.parent is not None for p in points):
            continue  # full backups only: each restores alone
        try:
            breaks = chain_breaks(points)
        except JsArchiveError as e:
            report.links.append(LinkCheck("chain", f"of stream {name}", ok=False, problems=[str(e)]))
            continue
        broken: dict[str, list[str]] = {}
        for b in breaks:
            chain = next((p.chain for p in points if p.id == b.point), "")
            broken.setdefault(chain, []).append(f"stream {name!r}: {b.describe()}")
        for chain in sorted({p.chain for p in points}):
            mates = [p for p in points if p.chain == chain]
            if len(mates) < 2 and chain not in broken:
                continue
            top = max(p.last_seq for p in mates)
            key = f"{chain[:12]} of stream {name} ({len(mates)} restore point(s), up to sequence {top})"
            report.links.append(LinkCheck("chain", key, ok=chain not in broken, problems=broken.get(chain, [])))


def _archive_warnings(
    repo: Repository, stream: str | None, loaded: dict[str, LoadedManifest], refs: list[Ref], report: VerifyReport
) -> None:
    referenced = {link.target for link in report.links if link.kind == "ref"}
    for mid, x in sorted(loaded.items()):
        m = x.manifest
        if m is not None and mid not in referenced and (stream is None or m.stream == stream):
            report.warnings.append(
                f"backup {mid[:12]} ({m.stream}, {m.created}) has no ref: `jsarchive ls` does not list it, "
                "but it can be restored by its id"
            )
    if stream is None:
        used = {x.manifest.data_object for x in loaded.values() if x.manifest is not None}
        for key in repo.keys(DATA):
            if key not in used:
                report.warnings.append(
                    f"{key} is not referenced by any valid manifest (an abandoned upload; `jsarchive prune` "
                    "collects it after its grace period)"
                )
        valid = {r.key for r in refs}
        for key in repo.keys(REFS):
            if key not in valid:
                report.warnings.append(f"{key} is not named like a ref; readers ignore it")


# -- one backup -----------------------------------------------------------------------------------------------------


def _check_backup(
    repo: Repository,
    x: LoadedManifest,
    opts: VerifyOptions,
    io_pool: concurrent.futures.Executor,
    meter: Callable[[int], None],
) -> BackupCheck:
    t0 = time.monotonic()
    check = BackupCheck(manifest_id=x.id, stream=x.stream)
    m = x.manifest
    if m is None:
        problem = x.problem
        if isinstance(problem, (NotFoundError, IntegrityError)):
            check.fail(str(problem))
        else:
            check.unverified(str(problem), getattr(problem, "exit_code", 1))
        return check
    check.stream, check.backup_id, check.created = m.stream, m.backup_id, m.created
    check.snapshot_format = m.snapshot_format
    check.blocks, check.stored_bytes = len(m.blocks), m.data_size
    try:
        status = signing.signature_status(repo, "manifest", m.id, opts.trust_keys)
        check.signature = status.describe()
        for problem in _signature_problems(status, opts.trust_keys, "the backup"):
            check.fail(problem)
        _check_stored(repo, m, check, opts, io_pool, meter)
    except JsArchiveError as e:  # what a check could not get past: storage errors mostly
        if isinstance(e, (IntegrityError, NotFoundError)):
            check.fail(str(e))
        else:
            check.unverified(str(e), e.exit_code)
    check.seconds = round(time.monotonic() - t0, 3)
    return check


def _signature_problems(status: signing.SignatureStatus, trusted: list[signing.TrustedKey], what: str) -> list[str]:
    out = [f"invalid signature object {bad}" for bad in status.invalid]
    if trusted and not status.trusted:
        keys = ", ".join(f"{t.short} ({t.source})" for t in trusted)
        out.append(
            f"{what} is not signed by a trusted key: no valid signatures/{status.object_id}/<fingerprint> of {keys}"
            + (f" ({status.describe()})" if status.others else "")
        )
    return out


def _check_stored(
    repo: Repository,
    m: mf.Manifest,
    check: BackupCheck,
    opts: VerifyOptions,
    io_pool: concurrent.futures.Executor,
    meter: Callable[[int], None],
) -> None:
    try:
        head = repo.sink.head(m.data_object)
    except SinkError as e:
        raise storage_error(e, f"cannot read the data object of backup {m.id[:12]}") from None
    if head is None:
        check.fail(f"the data object {m.data_object} is missing")
        return
    if head.size != m.data_size:
        check.fail(
            f"the data object {m.data_object} is {head.size} bytes, the manifest says {m.data_size}: it is truncated "
            "or was replaced"
        )
        return
    if head.archived:
        check.unverified(
            f"the data object is in cold storage ({head.storage_class}): its size is right, its blocks were not "
            f"read; thaw it first (jsarchive thaw {repo.url} {m.id[:12]})",
            11,
        )
        return
    if opts.deep:
        body, data_key = _open(repo, m, opts.keys, check)
        if body is not None:
            _deep(repo, m, body, data_key, check, opts, meter)
            return
        if check.status == FAILED:
            return
    _hash_blocks(repo, m, check, opts, io_pool, meter)


def _hash_blocks(
    repo: Repository,
    m: mf.Manifest,
    check: BackupCheck,
    opts: VerifyOptions,
    io_pool: concurrent.futures.Executor,
    meter: Callable[[int], None],
) -> None:
    piece = max(4096, opts.piece_size)

    def one(index: int) -> str | None:
        blk = m.blocks[index]
        h = hashlib.sha256()
        got = 0
        while got < blk.length:
            n = min(piece, blk.length - got)
            try:
                data = repo.sink.get_range(m.data_object, blk.offset + got, n)
            except SinkError as e:
                raise storage_error(e, f"cannot read block {index} of backup {m.id[:12]}") from None
            meter(len(data))
            h.update(data)
            got += len(data)
            if len(data) < n:
                return f"block {index}: the data object ends inside it ({got} of {blk.length} bytes)"
        if h.hexdigest() != blk.sha256:
            return (
                f"block {index} (bytes {blk.offset}–{blk.offset + blk.length}): stored bytes do not match the "
                "manifest's SHA-256 (corrupted or altered)"
            )
        return None

    bad = []
    futures = [io_pool.submit(one, i) for i in range(len(m.blocks))]
    try:
        for f in futures:
            problem = f.result()
            check.blocks_checked += 1
            if problem:
                bad.append(problem)
    finally:
        for f in futures:
            f.cancel()
    for problem in bad[:MAX_BLOCK_PROBLEMS]:
        check.fail(problem)
    if len(bad) > MAX_BLOCK_PROBLEMS:
        check.fail(f"… and {len(bad) - MAX_BLOCK_PROBLEMS} more damaged blocks ({len(bad)} of {len(m.blocks)})")


# -- deep -----------------------------------------------------------------------------------------------------------


def _open(repo: Repository, m: mf.Manifest, keys: KeyRing, check: BackupCheck) -> tuple[dict | None, bytes | None]:
    """The body and data key, or (None, None) with the reason recorded (then the keyless block check runs)."""
    data_key = None
    if m.encrypted:
        try:
            # the manifest's own slots, then slots added later (keyslots/…), each key checked against the body
            data_key = unwrap_data_key(repo, m, keys)
        except KeyUnavailable as e:
            check.unverified(f"--deep: {e}; only the keyless checks were made", e.exit_code)
            return None, None
    try:
        return m.open_body(data_key), data_key
    except JsArchiveError as e:
        check.fail(str(e))
        return None, None


def _deep(
    repo: Repository,
    m: mf.Manifest,
    body: dict,
    data_key: bytes | None,
    check: BackupCheck,
    opts: VerifyOptions,
    meter: Callable[[int], None],
) -> None:
    encoding = payload.inner_encoding(body, m.snapshot_format, m.id)
    reader = BlockReader(repo, m, body, data_key, opts.prefetch, max(1, min(opts.workers, 4)))
    plain = 0

    def blocks() -> Iterator[bytes]:
        nonlocal plain
        for index, block in enumerate(reader.blocks()):
            check.blocks_checked += 1
            plain += len(block)
            meter(m.blocks[index].length)
            yield block

    decoded = payload.decoded(blocks(), encoding)
    try:
        if m.snapshot_format == "V2":
            _deep_v2(decoded, body, check)
        else:
            _deep_v1(decoded, m, check)
    finally:
        decoded.close()
    check.snapshot_bytes = plain
    check.deep = check.status == OK


def _deep_v2(decoded: Iterator[bytes], body: dict, check: BackupCheck) -> None:
    ar = natsarc.ArchiveReader(decoded)
    n = first = last = 0
    for msg in ar.messages():
        n += 1
        if not first:
            first = msg.sequence
        last = msg.sequence
    if not ar.complete:
        check.fail("the NATSARC1 archive has no end marker")
        return
    check.messages = n
    held = body.get("held")
    if isinstance(held, dict) and "messages" in held:
        # the backup counted what it stored (pipeline/format/census.py): the archive must hold exactly that
        want = (int(held.get("messages", -1)), int(held.get("first_seq", -1)), int(held.get("last_seq", -1)))
        if (n, first, last) != want:
            check.fail(
                f"the archive holds {n} messages from sequence {first} to {last}; its backup counted {want[0]} "
                f"from {want[1]} to {want[2]} when it was written"
            )
        return
    state = body.get("state") or {}
    own = ar.state  # the archive's state.json
    want_n, want_last = int(state.get("messages", 0) or 0), int(state.get("last_seq", 0) or 0)
    deleted = int(state.get("num_deleted", 0) or 0)

    def agrees(count: int, last_seq: int, slack: int) -> bool:
        # the last message may precede last_seq when the newest messages were deleted (last_seq stays)
        return n == count and (n == 0 or last == last_seq or 0 < last_seq - last <= slack)

    if agrees(want_n, want_last, deleted):
        return
    own_n, own_last = int(own.get("messages", -1) or 0), int(own.get("last_seq", -1) or 0)
    if own and agrees(own_n, own_last, int(own.get("num_deleted", 0) or 0)):
        check.notes.append(
            f"the stream changed while the snapshot was taken: the archive holds {n} messages up to sequence "
            f"{last} (its own state.json agrees), the manifest recorded {want_n} up to {want_last}"
        )
        return
    check.fail(
        f"the archive holds {n} messages up to sequence {last}; the manifest's stream state says {want_n} "
        f"messages up to sequence {want_last}"
    )


def _deep_v1(decoded: Iterator[bytes], m: mf.Manifest, check: BackupCheck) -> None:
    f = s2.BlockFile(decoded)
    contents = natsarc.read_v1_tar(io.BufferedReader(f, buffer_size=1 << 20), keep=lambda name: name == "meta.inf")
    while f.read(1 << 20):  # past the tar's end: every remaining block and S2 checksum is still checked
        pass
    names = {x.name for x in contents.members}
    missing = [n for n in V1_REQUIRED if n not in names]
    if not any(n.startswith("msgs/") for n in names):
        missing.append("msgs/")
    if missing:
        check.fail(f"the snapshot tar lacks {', '.join(missing)}")
        return
    name = contents.config.get("name")
    if name is not None and name != m.stream:
        check.fail(f"the snapshot's meta.inf is of stream {name!r}, the manifest says {m.stream!r}")
