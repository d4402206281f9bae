"""Before anything is done: block each restore the servers would refuse (keys, data, placement)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.archive.reader import open_manifest
from pipeline.archive.repository import Repository
from pipeline.base.errors import JsArchiveError
from pipeline.ops.dr.options import RecoverOptions
from pipeline.ops.dr.plan import RecoveryPlan
from pipeline.ops.dr.view import LiveServer


@dataclass
class PlacementProblem:
    why: str
    fits: int = 0  # live servers that match the placement (fewer than the replicas asked for)

    def fix(self, moved: bool) -> str:
        flags = "another --cluster/--tag" if moved else "--cluster/--tag"
        if self.fits:
            return f"pass --replicas {self.fits} (or fewer) or {flags} naming more live servers"
        return f"pass {flags} naming live servers"


def placement_problem(
    config: dict, servers: list[LiveServer], client_cluster: str | None = None
) -> PlacementProblem | None:
    """Why no live server set can take a stream with this config (placement and replicas, as the meta leader
    picks peers: the cluster must match, every tag must be on each chosen server, one replica per server), or None.
    Without placement a stream lands in the cluster of the server the client is connected to (G9). Tags are
    compared ignoring case, so a doubt never blocks a restore the server would take."""
    pl = config.get("placement") or {}
    want_cluster = pl.get("cluster") or None
    want_tags = [str(t) for t in pl.get("tags") or []]
    replicas = int(config.get("num_replicas", 1) or 1)
    pool, problem = _cluster_pool(servers, want_cluster, client_cluster)
    if problem is None and want_tags:
        pool, problem = _tagged(pool, want_tags, want_cluster or client_cluster)
    return problem or _too_few(pool, replicas)


def _cluster_pool(
    servers: list[LiveServer], want_cluster: str | None, client_cluster: str | None
) -> tuple[list[LiveServer], PlacementProblem | None]:
    """The live servers of the cluster the stream lands in: its placement's, else the client's."""
    if not want_cluster:
        return [x for x in servers if client_cluster is None or x.cluster == client_cluster], None
    pool = [x for x in servers if x.cluster == want_cluster]
    if pool:
        return pool, None
    clusters = ", ".join(sorted({str(x.cluster) for x in servers})) or "none"
    return [], PlacementProblem(
        f"placement cluster {want_cluster!r}: no live server is in it (live clusters: {clusters})"
    )


def _tagged(
    pool: list[LiveServer], want_tags: list[str], cluster: str | None
) -> tuple[list[LiveServer], PlacementProblem | None]:
    """The servers of ``pool`` that carry every tag asked for."""
    wanted = {t.lower() for t in want_tags}
    matched = [x for x in pool if wanted <= {t.lower() for t in x.tags}]
    if matched:
        return matched, None
    have = "; ".join(f"{x.name}: {','.join(x.tags) or '-'}" for x in pool) or "none"
    where = f" in cluster {cluster}" if cluster else ""
    return [], PlacementProblem(
        f"placement tags {','.join(want_tags)}: no live server{where} has them all (live servers' tags: {have})"
    )


def _too_few(pool: list[LiveServer], replicas: int) -> PlacementProblem | None:
    """One replica per server: fewer matching servers than replicas cannot take the stream."""
    if len(pool) >= replicas:
        return None
    names = ", ".join(x.name for x in pool)
    return PlacementProblem(
        f"R{replicas} needs {replicas} live servers matching its placement; {len(pool)} do ({names or 'none'})",
        fits=len(pool),
    )


def check_restores(the_plan: RecoveryPlan, opts: RecoverOptions) -> None:
    """Block each restore step the server would refuse, before anything is done: the backup must open with the
    given keys (placement is in the sealed body) and its data object must be readable, and with the system account
    its placement (as --cluster/--tag/--replicas change it) must be met by live servers."""
    steps = [a for a in the_plan.actions if a.kind == "restore" and not a.blocked]
    if not steps or opts.url is None:
        return
    view = the_plan.status.cluster
    moved = opts.target.moves
    repo = Repository.open(opts.url, opts.sink)
    by_name = {s.stream: s for s in the_plan.status.streams}
    for a in steps:
        b = by_name[a.target].backup
        assert b is not None
        try:
            m = repo.load_manifest(b.manifest_id)
            body = open_manifest(repo, m, opts.keys).body
        except JsArchiveError as e:
            a.blocked = f"backup {b.manifest_id[:12]} cannot be restored: {e}"
            continue
        if not view.system:
            continue
        cfg = opts.target.apply(body.get("config") or {})
        problem = placement_problem(cfg, view.servers, view.client_cluster)
        if problem is None:
            continue
        source = "--cluster/--tag" if moved else "the backed-up placement"
        a.blocked = f"{source}: {problem.why}; {problem.fix(moved)}"
    if not view.system:
        the_plan.warnings.append(
            "the restores' placement was not checked against the live servers (cluster names and tags come from the "
            "system account: --system-user/--system-creds/--system-context); a placement no live server meets fails "
            "at restore with 'no suitable peers'"
        )
