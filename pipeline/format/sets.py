"""The set document: the commit point of an account backup, and how streams are selected for one.

A **set** (``sets/<sha256>``) is to an account backup what a manifest is to one stream: it is written only after
every stream's manifest exists, names them all by manifest id, and is named by the SHA-256 of its own canonical
bytes. It stays in the clear (like a manifest's envelope it holds only names, ids and counts), so the step that writes
it needs no key and an auditor can follow it to every stored byte.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from pipeline import __version__
from pipeline.base.errors import IntegrityError, UsageError, setting
from pipeline.format import manifest as mf
from pipeline.format import objects
from pipeline.format.manifest import Manifest

SET_FORMAT = "jsarchive.set"
VERSION = 1


def select_streams(names: list[str], include: list[str], exclude: list[str], *, what: str = "account") -> list[str]:
    """The names matching any ``include`` glob (all if none) and no ``exclude`` glob, sorted.

    Every ``include`` pattern must match something: a pattern that matches nothing is almost always a typo, and a
    silent empty backup is worse than an error.
    """
    for pattern in include:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise UsageError(f"{setting('include')} {pattern!r} matches none of the {len(names)} streams of the {what}")
    chosen = [n for n in names if not include or any(fnmatch.fnmatchcase(n, p) for p in include)]
    chosen = [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    if not chosen and names:
        raise UsageError(
            f"{setting('include')}/{setting('exclude')} leave none of the {len(names)} streams of the {what}"
        )
    return sorted(chosen)


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


_HEX64 = re.compile(r"[0-9a-f]{64}")
