"""Cut the snapshot byte stream into plaintext blocks.

A block is emitted only once a byte beyond it has arrived, so the final block is known to be final when it is
sealed (its associated data carries a last-block flag that makes truncation detectable).
"""

from __future__ import annotations

from collections.abc import Iterator

MiB = 1024 * 1024
DEFAULT_BLOCK_SIZE = 8 * MiB
MAX_BLOCKS = 10_000
# A snapshot is rarely larger than the stream's stored bytes (S2 compresses; V1 adds a little metadata), but leave
# headroom so an underestimate cannot push a backup past the part limit of S3 multipart uploads.
SIZE_HEADROOM = 1.5


def choose_block_size(expected_bytes: int, minimum: int = DEFAULT_BLOCK_SIZE) -> int:
    """Block size so that ``expected_bytes`` fits in :data:`MAX_BLOCKS` blocks, rounded up to whole MiB."""
    need = int(expected_bytes * SIZE_HEADROOM) // MAX_BLOCKS + 1
    size = max(minimum, need)
    return -(-size // MiB) * MiB


class BlockCutter:
    """Accumulates chunks; yields ``(index, block_bytes, is_last)`` with every block exactly ``size`` bytes except the last."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("block size must be positive")
        self.size = size
        self._buf = bytearray()
        self._index = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes, bool]]:
        self._buf += chunk
        # Strictly more than one block buffered: the first one cannot be the last.
        while len(self._buf) > self.size:
            block = bytes(self._buf[: self.size])
            del self._buf[: self.size]
            yield self._emit(block, last=False)

    def finish(self) -> tuple[int, bytes, bool]:
        block = bytes(self._buf)
        self._buf.clear()
        return self._emit(block, last=True)

    def _emit(self, block: bytes, last: bool) -> tuple[int, bytes, bool]:
        index = self._index
        self._index += 1
        return index, block, last

    @property
    def buffered(self) -> int:
        return len(self._buf)
