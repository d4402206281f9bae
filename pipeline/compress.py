"""zstd stage: one independent frame per block, so any block decodes on its own."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import zstandard

from pipeline.errors import UsageError


@dataclass(frozen=True)
class Compression:
    algorithm: str = "zstd"  # "zstd" | "none"
    level: int = 3

    @classmethod
    def parse(cls, spec: str) -> Compression:
        """``zstd``, ``zstd:LEVEL`` (1–22) or ``none``."""
        name, _, level = spec.strip().lower().partition(":")
        if name == "none" and not level:
            return cls("none", 0)
        if name == "zstd":
            if not level:
                return cls("zstd", 3)
            try:
                n = int(level)
            except ValueError:
                n = 0
            if 1 <= n <= 22:
                return cls("zstd", n)
            raise UsageError(f"invalid zstd level {level!r} in --compression {spec!r}: use 1–22")
        raise UsageError(f"invalid --compression {spec!r}: use zstd, zstd:LEVEL (1–22) or none")

    def to_json(self) -> dict:
        return {"algorithm": self.algorithm, "level": self.level}

    @classmethod
    def from_json(cls, obj: dict) -> Compression:
        return cls(str(obj["algorithm"]), int(obj.get("level", 0)))


class BlockCompressor:
    """Thread-safe: zstd contexts are not, so each thread keeps its own (and zstd releases the GIL)."""

    def __init__(self, compression: Compression) -> None:
        self.compression = compression
        self._local = threading.local()

    def compress(self, block: bytes) -> bytes:
        if self.compression.algorithm == "none":
            return block
        ctx = getattr(self._local, "c", None)
        if ctx is None:
            ctx = self._local.c = zstandard.ZstdCompressor(level=self.compression.level, write_content_size=True)
        return ctx.compress(block)

    def decompress(self, data: bytes, expected_size: int) -> bytes:
        if self.compression.algorithm == "none":
            return data
        ctx = getattr(self._local, "d", None)
        if ctx is None:
            ctx = self._local.d = zstandard.ZstdDecompressor()
        return ctx.decompress(data, max_output_size=expected_size)
