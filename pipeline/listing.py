"""Listing backups from refs and manifest envelopes: no key needed."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.errors import JsArchiveError
from pipeline.repository import Repository
from sinks import SinkOptions


@dataclass
class BackupEntry:
    manifest_id: str
    stream: str
    created: str
    messages: int = 0
    bytes: int = 0
    stored_bytes: int = 0
    snapshot_format: str = ""
    server_version: str = ""
    encrypted: bool = True
    key_slots: int = 0
    problem: str | None = None  # a ref whose manifest is missing or invalid

    @property
    def ratio(self) -> float:
        return self.bytes / self.stored_bytes if self.stored_bytes else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["ratio"] = round(self.ratio, 3)
        return d


def list_backups(url: str, stream: str | None = None, sink: SinkOptions | None = None) -> list[BackupEntry]:
    repo = Repository.open(url, sink)
    out = []
    for ref in repo.refs(stream):
        try:
            m = repo.load_ref(ref)
        except JsArchiveError as e:
            out.append(BackupEntry(manifest_id=ref.backup_id, stream=ref.stream, created=ref.time, problem=str(e)))
            continue
        s = m.summary
        out.append(
            BackupEntry(
                manifest_id=m.id,
                stream=m.stream,
                created=m.created,
                messages=int(s.get("messages", 0)),
                bytes=int(s.get("bytes", 0)),
                stored_bytes=m.data_size,
                snapshot_format=m.snapshot_format,
                server_version=str(m.server.get("version", "")),
                encrypted=m.encrypted,
                key_slots=len(m.key_slots),
            )
        )
    return out
