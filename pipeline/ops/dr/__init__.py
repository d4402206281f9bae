"""Disaster recovery: which recovery path each stream needs after servers were lost, and the plan that takes it.

Two paths exist (reference: jetstream-cluster-recovery.md §4). The automatic one: a replicated stream that keeps a
replica removes the lost servers with peer-remove and the cluster rebuilds the replicas from the survivors. The
manual one: a stream with no replica left (or one that peer-remove re-created empty) is deleted and restored from
its latest backup. ``dr status`` tells them apart; ``dr recover`` takes them, peer-removes first.

Liveness is judged the way the server's own signals allow: with the system account, a server that is a member of
the meta group but does not answer a ``$SYS.REQ.SERVER.PING.JSZ`` is gone at once; without it, a replica whose last
contact (``active``) is older than ``lost_after`` is gone. ``current`` alone is not used: a dead follower keeps
``current: true`` for about ten seconds (G10).

With an archive, status also sees what the cluster *lacks*: a stream is ``missing`` when the archive says it should
exist (:func:`expected_missing` holds the rule) and ``partial-restore`` marks a stream a jsarchive restore created and
never finished (pipeline.format.marks). Before anything is done, recover checks each restore against the live servers'
cluster names and tags (:func:`placement_problem`), so a backup pinned to a lost server's tag is a blocked step, not
a failed restore after the deletes.

The package, one module per idea: health (what is known of a stream, the verdict names), judge (the verdict rules),
view (the cluster through the system account), gather (every stream's STREAM.INFO), expected (what the archive
says should exist), options, status, plan, placement (the checks before anything is done) and recover.
"""

from pipeline.ops.dr.expected import NewestSet, expected_missing
from pipeline.ops.dr.health import (
    EMPTIED,
    HEALING,
    HEALTHY,
    LOST,
    LOST_AFTER,
    MISSING,
    NEEDS_PEER_REMOVE,
    PARTIAL_RESTORE,
    QUORUM_LOST,
    R1_LOST,
    LatestBackup,
    StreamHealth,
)
from pipeline.ops.dr.judge import judge
from pipeline.ops.dr.options import RecoverOptions, StatusOptions
from pipeline.ops.dr.placement import placement_problem
from pipeline.ops.dr.plan import format_age, plan_recovery
from pipeline.ops.dr.recover import RecoveryFailed, RecoveryResult, plan, recover
from pipeline.ops.dr.status import StatusReport, status
from pipeline.ops.dr.view import ClusterView, LiveServer

__all__ = [
    "EMPTIED",
    "HEALING",
    "HEALTHY",
    "LOST",
    "LOST_AFTER",
    "MISSING",
    "NEEDS_PEER_REMOVE",
    "PARTIAL_RESTORE",
    "QUORUM_LOST",
    "R1_LOST",
    "ClusterView",
    "LatestBackup",
    "LiveServer",
    "NewestSet",
    "RecoverOptions",
    "RecoveryFailed",
    "RecoveryResult",
    "StatusOptions",
    "StatusReport",
    "StreamHealth",
    "expected_missing",
    "format_age",
    "judge",
    "placement_problem",
    "plan",
    "plan_recovery",
    "recover",
    "status",
]
