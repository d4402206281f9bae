"""What ``jsarchive verify`` reports, and reading manifests without raising: its options, the per-backup and
per-link results, the whole report with its exit code, and :func:`load_quietly` / :func:`manifest_names`, which
``prune`` shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.archive import signing
from pipeline.archive.repository import MANIFESTS, Repository, storage_error
from pipeline.base.errors import IntegrityError, JsArchiveError, NotFoundError
from pipeline.format import manifest as mf
from pipeline.format import objects
from pipeline.keys.keyring import KeyRing
from sinks import ObjectNotFound, SinkError, SinkOptions

OK, FAILED, UNVERIFIED = "OK", "FAILED", "UNVERIFIED"
PIECE_SIZE = 8 * 1024 * 1024


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
    for key in repo.object_names(MANIFESTS):
        name = key[len(MANIFESTS) :]
        if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
            ids.append(name)
        else:
            stray.append(key)
    return ids, stray


def _signature_problems(status: signing.SignatureStatus, trusted: list[signing.TrustedKey], what: str) -> list[str]:
    out = [f"invalid signature object {bad}" for bad in status.invalid]
    if trusted and not status.trusted:
        keys = ", ".join(f"{t.short} ({t.source})" for t in trusted)
        out.append(
            f"{what} is not signed by a trusted key: no valid signatures/{status.object_id}/<fingerprint> of {keys}"
            + (f" ({status.describe()})" if status.others else "")
        )
    return out
