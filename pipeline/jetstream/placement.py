"""Where a restored stream lands: natscli's --cluster, --tag and --replicas as one value."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.base.errors import UsageError, setting


@dataclass(frozen=True)
class RestoreTarget:
    """Where a restore lands, as natscli says it: a cluster and placement tags replace the backed-up placement, a
    replica count replaces the backed-up one. Empty: as backed up."""

    cluster: str | None = None
    tags: tuple[str, ...] = ()
    replicas: int | None = None

    @property
    def moves(self) -> bool:
        """Whether the placement is this target's rather than the backed-up one."""
        return bool(self.cluster or self.tags)

    def describe(self) -> str | None:
        parts = ([f"cluster {self.cluster}"] if self.cluster else []) + (
            ["tags " + ",".join(self.tags)] if self.tags else []
        )
        return " and ".join(parts) or None

    def to_json(self) -> dict:
        return {"cluster": self.cluster, "tags": list(self.tags), "replicas": self.replicas}

    def apply(self, config: dict) -> dict:
        """The backed-up config with this target's placement and replica count."""
        cfg = dict(config)
        if self.moves:
            placement: dict = {}
            if self.cluster:
                placement["cluster"] = self.cluster
            if self.tags:
                placement["tags"] = list(self.tags)
            cfg["placement"] = placement
        if self.replicas is not None:
            if self.replicas < 1:
                raise UsageError(f"{setting('replicas')} must be at least 1, not {self.replicas}")
            cfg["num_replicas"] = self.replicas
        return cfg
