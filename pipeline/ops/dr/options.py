"""What dr status and dr recover are asked to do."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.archive.trust import TrustPolicy
from pipeline.jetstream.client import ConnectOptions
from pipeline.jetstream.placement import RestoreTarget
from pipeline.keys.keyring import KeyRing
from pipeline.ops.dr.health import LOST_AFTER
from sinks.base import SinkOptions


@dataclass
class StatusOptions:
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    system: ConnectOptions | None = None  # the system account: server liveness and peer-remove
    url: str | None = None  # archive: newest backup of each stream
    sink: SinkOptions = field(default_factory=SinkOptions)
    streams: list[str] = field(default_factory=list)  # only these (default: every stream of the account)
    lost_after: float = LOST_AFTER
    ignore: list[str] = field(default_factory=list)  # globs: streams left out (deliberately deleted ones)


@dataclass
class RecoverOptions(StatusOptions):
    keys: KeyRing = field(default_factory=KeyRing)
    trust: TrustPolicy | None = None  # what a backup must prove before it is restored (pipeline/archive/trust.py)
    safety_backup: bool = True  # back up a live stream (marked pre-restore) before it is deleted to be restored
    sign_key: object | None = None  # signs those safety backups (pipeline.archive.signing)
    target: RestoreTarget = field(default_factory=lambda: RestoreTarget())  # default: the backed-up placement
    wait: float = 120.0  # per wait step: replicas rebuilding, a restored stream becoming healthy
