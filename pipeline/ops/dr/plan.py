"""The recovery plan: peer-removes, waits and restores, from a status report (keyless and offline)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.ops.dr.health import HEALING, MISSING, PARTIAL_RESTORE, PEER_REMOVE_HEALS, QUORUM_LOST, StreamHealth
from pipeline.ops.dr.status import StatusReport


@dataclass
class Action:
    kind: str  # peer-remove | wait | restore | note
    target: str  # server or stream
    detail: str
    blocked: str | None = None  # why this step cannot be taken (missing credentials, archive or backup)
    outcome: str = "planned"  # planned | done | failed (a blocked step stays planned: nothing is done)
    message: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class RecoveryPlan:
    status: StatusReport
    actions: list[Action]
    warnings: list[str] = field(default_factory=list)  # checks that could not be made (they do not block)

    @property
    def blocked(self) -> list[Action]:
        return [a for a in self.actions if a.blocked]

    def to_json(self) -> dict:
        return {
            "status": self.status.to_json(),
            "actions": [a.to_json() for a in self.actions],
            "warnings": self.warnings,
        }


def plan_recovery(report: StatusReport, *, have_system: bool, placement: str | None = None) -> RecoveryPlan:
    """Peer-remove every lost server (one at a time), wait for the replicated streams to heal, then delete and
    restore what has no replica left from its latest backup, restore what is missing and redo partial restores.
    Keyless and offline: :func:`check_restores` then blocks the restores the servers would refuse."""
    where = f" into {placement}" if placement else " with its backed-up placement"
    return RecoveryPlan(
        report,
        [
            *_peer_removes(report, have_system),
            *_quorum_notes(report),
            *_waits(report),
            *(_restore(report, s, where) for s in report.streams if s.restore_required),
        ],
    )


def _peer_removes(report: StatusReport, have_system: bool) -> list[Action]:
    no_sys = None if have_system else "needs the system account (--system-user/--system-creds/--system-context)"
    actions = []
    for server in report.cluster.gone:
        hosts = sorted(s.stream for s in report.streams if server in s.remove)
        detail = f"remove lost server {server} from the meta group"
        if hosts:
            detail += f"; rebuilds replicas of {', '.join(hosts)}"
        actions.append(Action("peer-remove", server, detail, blocked=no_sys))
    return actions


def _quorum_notes(report: StatusReport) -> list[Action]:
    healed_by_remove = [s for s in report.streams if s.verdict in PEER_REMOVE_HEALS]
    return [Action("note", s.stream, s.detail) for s in healed_by_remove if s.verdict == QUORUM_LOST]


def _waits(report: StatusReport) -> list[Action]:
    """One wait for every stream that heals by itself or once the lost servers are removed, if there is any."""
    if not report.cluster.gone and not any(s.verdict == HEALING for s in report.streams):
        return []
    waiting = sorted(s.stream for s in report.streams if s.verdict in PEER_REMOVE_HEALS | {HEALING})
    return [Action("wait", ", ".join(waiting), "until every replica is current again")] if waiting else []


def _restore(report: StatusReport, s: StreamHealth, where: str) -> Action:
    if report.archive is None:
        return Action("restore", s.stream, "restore from the latest backup", blocked="needs --archive URL")
    if s.backup is None:
        return Action("restore", s.stream, "restore from the latest backup", blocked=f"no backup in {report.archive}")
    b = s.backup
    what = (
        f"backup {b.manifest_id[:12]} ({b.messages:,} messages, last_seq {b.last_seq}, "
        f"{format_age(b.age_s)} old){where}"
    )
    if s.verdict == MISSING:
        return Action(
            "restore", s.stream, f"delete the stale listing, then restore {what}" if s.listed else f"restore {what}"
        )
    if s.verdict == PARTIAL_RESTORE and b.stream and b.stream != s.stream:
        # a renamed restore (--as, a drill's prefix): recover cannot redo its rewrite, so it stays the
        # operator's, and nothing of another stream's name is deleted on a guess
        return Action(
            "restore",
            s.stream,
            f"partial restore of backup {b.manifest_id[:12]} of stream {b.stream!r} under another name",
            blocked=(
                f"a renamed or drill restore: delete it with `nats stream rm {s.stream} -f` and rerun "
                f"that restore, or leave it out with --ignore {s.stream}"
            ),
        )
    if s.verdict == PARTIAL_RESTORE:
        return Action("restore", s.stream, f"delete the partial restore, then restore {what}")
    return Action("restore", s.stream, f"delete, then restore {what}")


def format_age(seconds: float) -> str:
    """90s, 5m, 3h, 12d: the largest unit that still shows at least 2 of it."""
    s = int(seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= 2 * n:
            return f"{s // n}{unit}"
    return f"{s}s"
