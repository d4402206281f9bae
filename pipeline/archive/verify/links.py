"""The archive's links, as ``jsarchive verify`` checks them: refs against their manifests, sets against their
members, the continuity of each stream's chains, and (for ``--all``) what nothing links to."""

from __future__ import annotations

from pipeline.archive import signing
from pipeline.archive.chains import points_by_stream, stream_points
from pipeline.archive.repository import DATA, REFS, Ref, Repository, ref_disagreement
from pipeline.archive.verify.report import (
    LinkCheck,
    LoadedManifest,
    VerifyOptions,
    VerifyReport,
    _signature_problems,
    load_quietly,
)
from pipeline.base.errors import JsArchiveError, NotFoundError
from pipeline.format.chain import RestorePoint, chain_breaks
from pipeline.format.sets import parse_set


def _check_links(
    repo: Repository,
    opts: VerifyOptions,
    selection: str,
    refs: list[Ref],
    loaded: dict[str, LoadedManifest],
    targets: list[str],
    report: VerifyReport,
) -> None:
    """Every link of the selection into ``report.links`` (and, for ``all``, the archive's warnings)."""
    for ref in refs:
        report.links.append(_check_ref(repo, ref, loaded))
    if selection == "all":
        _check_sets(repo, opts.stream, loaded, report, opts.trust_keys)
        _archive_warnings(repo, opts.stream, loaded, refs, report)
    _check_chains(repo, selection, opts.stream, loaded, targets, report)


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
    for name, points in sorted(_chain_points(repo, selection, stream, loaded, targets).items()):
        if not any(p.parent is not None for p in points):
            continue  # full backups only: each restores alone
        report.links.extend(_chain_links(name, points))


def _chain_points(
    repo: Repository, selection: str, stream: str | None, loaded: dict[str, LoadedManifest], targets: list[str]
) -> dict[str, list[RestorePoint]]:
    """The restore points to check, by stream: all of the archive's (``all``), or every point of each stream whose
    selected backup is in a chain."""
    if selection == "all":
        valid = [x.manifest for x in loaded.values() if x.manifest is not None]
        return points_by_stream(m for m in valid if stream is None or m.stream == stream)
    chained = {m.stream for t in targets if (m := loaded[t].manifest) is not None and m.chain is not None}
    return {name: stream_points(repo, name)[0] for name in sorted(chained)}


def _chain_links(name: str, points: list[RestorePoint]) -> list[LinkCheck]:
    """The links of one stream's chains: one per chain of two or more points, or that is broken."""
    try:
        breaks = chain_breaks(points)
    except JsArchiveError as e:
        return [LinkCheck("chain", f"of stream {name}", ok=False, problems=[str(e)])]
    broken: dict[str, list[str]] = {}
    for b in breaks:
        chain = next((p.chain for p in points if p.id == b.point), "")
        broken.setdefault(chain, []).append(f"stream {name!r}: {b.describe()}")
    links = []
    for chain in sorted({p.chain for p in points}):
        mates = [p for p in points if p.chain == chain]
        if len(mates) < 2 and chain not in broken:
            continue
        top = max(p.last_seq for p in mates)
        key = f"{chain[:12]} of stream {name} ({len(mates)} restore point(s), up to sequence {top})"
        links.append(LinkCheck("chain", key, ok=chain not in broken, problems=broken.get(chain, [])))
    return links


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
        for key in repo.object_names(DATA):
            if key not in used:
                report.warnings.append(
                    f"{key} is not referenced by any valid manifest (an abandoned upload; `jsarchive prune` "
                    "collects it after its grace period)"
                )
        valid = {r.key for r in refs}
        for key in repo.object_names(REFS):
            if key not in valid:
                report.warnings.append(f"{key} is not named like a ref; readers ignore it")
