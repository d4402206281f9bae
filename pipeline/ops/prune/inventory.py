"""What the archive holds, as prune reads it once: data objects and refs first, then key slots, signatures,
manifests and sets, so a backup committing meanwhile is seen as complete or as fresh objects inside the grace
period."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass

from pipeline.archive.repository import DATA, KEYSLOTS, Ref, Repository, storage_error
from pipeline.archive.signing import SIGNATURES
from pipeline.archive.verify import LoadedManifest, load_quietly, manifest_names
from pipeline.base.errors import JsArchiveError
from pipeline.format.manifest import Manifest
from pipeline.format.sets import BackupSet, parse_set
from pipeline.ops.prune.report import PruneReport
from sinks import ObjectInfo, SinkError


@dataclass
class _Inventory:
    """What the archive holds, read once, in the order that makes a concurrent backup safe (the module doc)."""

    data_objects: list[ObjectInfo]
    refs: list[Ref]
    ref_infos: dict[str, ObjectInfo]
    slot_objects: dict[str, list[ObjectInfo]]  # manifest id -> keyslots/<id>/… (slots added later)
    signed: dict[str, list[str]]  # manifest or set id -> signatures/<id>/… (they go with what they sign)
    loaded: dict[str, LoadedManifest]
    valid: dict[str, Manifest]
    invalid: list[LoadedManifest]
    sets: list[BackupSet]


def _inventory(
    repo: Repository, stream: str | None, pool: concurrent.futures.Executor, report: PruneReport
) -> _Inventory:
    try:
        data_objects = [] if stream else list(repo.sink.list(DATA))
    except SinkError as e:
        raise storage_error(e, f"cannot list {repo.url}") from None
    refs = repo.refs(stream)
    ref_infos = _listing(repo, f"refs/{stream}/" if stream else "refs/")
    slot_objects: dict[str, list[ObjectInfo]] = {}
    for info in _listing(repo, KEYSLOTS).values():
        slot_objects.setdefault(info.key[len(KEYSLOTS) :].partition("/")[0], []).append(info)
    signed: dict[str, list[str]] = {}
    for key in _listing(repo, SIGNATURES):
        signed.setdefault(key[len(SIGNATURES) :].partition("/")[0], []).append(key)
    ids, _stray = manifest_names(repo)
    loaded = dict(zip(ids, pool.map(lambda m: load_quietly(repo, m), ids), strict=True))
    valid = {mid: x.manifest for mid, x in loaded.items() if x.manifest is not None}
    invalid = [x for x in loaded.values() if x.manifest is None]
    for x in invalid:
        report.warnings.append(f"manifests/{x.id} is left alone: {x.problem}")
    sets = []
    for sid in sorted(repo.list_sets()):
        try:
            sets.append(parse_set(repo.load_set(sid), sid))
        except JsArchiveError as e:
            report.warnings.append(f"sets/{sid} is left alone: {e}")
    return _Inventory(data_objects, refs, ref_infos, slot_objects, signed, loaded, valid, invalid, sets)


def _listing(repo: Repository, prefix: str) -> dict[str, ObjectInfo]:
    try:
        return {i.key: i for i in repo.sink.list(prefix)}
    except SinkError as e:
        raise storage_error(e, f"cannot list {repo.url}") from None
