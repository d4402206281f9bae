"""zstd stage: one independent frame per block, so any block decodes on its own."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import zstandard

from pipeline.base.errors import IntegrityError, UsageError, setting


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
            raise UsageError(f"invalid zstd level {level!r} in {setting('compression')} {spec!r}: use 1–22")
        raise UsageError(f"invalid {setting('compression')} {spec!r}: use zstd, zstd:LEVEL (1–22) or none")

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
        """Exactly ``expected_size`` bytes from one zstd frame, or IntegrityError; never more memory than that.

        The stored bytes may be hostile (an unencrypted backup can be planted whole), and python-zstandard ignores
        ``max_output_size`` when a frame declares its content size: a 32 KB frame declaring 1 GB would get a 1 GB
        buffer. So the declared size is compared with ``expected_size`` before anything is decoded. The frame is
        then decoded in one call into a buffer of exactly ``expected_size`` bytes (``max_output_size`` bounds it
        when no size is declared), which zstd refuses to overrun: a frame that produces more fails as soon as the
        buffer is full. Data after the frame (a second frame, trailing bytes) is refused. The one-shot call also
        keeps no window buffer, unlike zstd's streaming API.
        """
        if expected_size < 0:
            raise IntegrityError(f"a block cannot hold {expected_size} bytes")
        if self.compression.algorithm == "none":
            if len(data) != expected_size:
                raise IntegrityError(f"the block holds {len(data)} bytes, not {expected_size}")
            return data
        try:
            declared = zstandard.get_frame_parameters(data).content_size
        except zstandard.ZstdError as e:
            raise IntegrityError(f"not a zstd frame ({e})") from None
        if declared != zstandard.CONTENTSIZE_UNKNOWN and declared != expected_size:
            raise IntegrityError(f"the zstd frame declares {declared} bytes, the manifest {expected_size}")
        ctx = getattr(self._local, "d", None)
        if ctx is None:
            ctx = self._local.d = zstandard.ZstdDecompressor()
        try:
            # max_output_size=0 would mean "no limit": an empty block without a declared size gets a 1-byte bound.
            out = ctx.decompress(data, max_output_size=max(expected_size, 1), allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"the zstd frame does not decode to {expected_size} bytes ({e})") from None
        if len(out) != expected_size:
            raise IntegrityError(f"the zstd frame decodes to {len(out)} bytes, the manifest says {expected_size}")
        return out
