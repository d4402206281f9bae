"""Choosing what ``jsarchive verify`` checks: one backup by id, each stream's newest (as a restore picks it), or
every manifest of the archive, together with the refs checked alongside."""

from __future__ import annotations

import concurrent.futures

from pipeline.archive.repository import LATEST_SCAN, Ref, Repository, ref_disagreement
from pipeline.archive.verify.report import LoadedManifest, VerifyOptions, VerifyReport, load_quietly, manifest_names
from pipeline.base.errors import JsArchiveError, NotFoundError


def _select(
    repo: Repository, opts: VerifyOptions, selection: str, pool: concurrent.futures.Executor, report: VerifyReport
) -> tuple[list[Ref], dict[str, LoadedManifest], list[str]]:
    """The refs to check, the manifests read so far (by id) and the ids of the backups to check."""
    if selection == "backup":
        mid = repo.resolve(opts.backup or "")
        loaded = {mid: load_quietly(repo, mid)}
        targets = [mid]
        found = loaded[mid].manifest
        refs = [r for r in repo.refs(found.stream) if r.backup_id == found.backup_id] if found else []
    elif selection == "latest":
        refs, loaded, targets = _latest(repo, opts.stream, pool, report)
    else:
        loaded = _load_all(repo, pool, report)
        targets = [
            mid
            for mid, x in sorted(loaded.items())
            if opts.stream is None or (x.manifest.stream if x.manifest else x.stream) in (opts.stream, None)
        ]
        refs = repo.refs(opts.stream)
        if not loaded and not refs:
            raise NotFoundError(f"no backups{f' of stream {opts.stream!r}' if opts.stream else ''} in {repo.url}")
    return refs, loaded, targets


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
