"""Cut the snapshot byte stream into plaintext blocks.

A block is emitted only once a byte beyond it has arrived, so the final block is known to be final when it is
sealed (its associated data carries a last-block flag that makes truncation detectable).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

MiB = 1024 * 1024
DEFAULT_BLOCK_SIZE = 8 * MiB
MAX_BLOCKS = 10_000
# A snapshot is rarely larger than the stream's stored bytes (S2 compresses; V1 adds a little metadata), but leave
# headroom so an underestimate cannot push a backup past the part limit of S3 multipart uploads.
SIZE_HEADROOM = 1.5
RECYCLED = 4  # spare block buffers kept for reuse


def choose_block_size(expected_bytes: int, minimum: int = DEFAULT_BLOCK_SIZE) -> int:
    """Block size so that ``expected_bytes`` fits in :data:`MAX_BLOCKS` blocks, rounded up to whole MiB."""
    need = int(expected_bytes * SIZE_HEADROOM) // MAX_BLOCKS + 1
    size = max(minimum, need)
    return -(-size // MiB) * MiB


class BlockCutter:
    """Accumulates chunks into preallocated blocks; yields ``(index, block, is_last)``.

    Every block is exactly ``size`` bytes except the last. A full block is handed over as it is (no copy) once a
    byte beyond it arrives; the caller owns it from then on, and may hand it back with :meth:`recycle` once it is
    done with it. Reusing buffers matters: a fresh ``bytearray(8 MiB)`` is zero-filled and page-faulted in (about
    2,000 faults), which cost more CPU than the copies it replaced.
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("block size must be positive")
        self.size = size
        self._buf = bytearray(size)
        self._fill = 0
        self._index = 0
        self._free: collections.deque[bytearray] = collections.deque(maxlen=RECYCLED)

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytearray, bool]]:
        view = memoryview(chunk)
        while view:
            if self._fill == self.size:  # full, and more data follows: it cannot be the last block
                fresh = self._free.pop() if self._free else bytearray(self.size)
                full, self._buf, self._fill = self._buf, fresh, 0
                yield self._emit(full, last=False)
            take = min(self.size - self._fill, len(view))
            self._buf[self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]

    def recycle(self, block: bytearray) -> None:
        """Take back a full block the caller no longer references (thread-safe: deque ends are atomic)."""
        if len(block) == self.size:
            self._free.append(block)

    def finish(self) -> tuple[int, bytearray, bool]:
        block = self._buf if self._fill == self.size else self._buf[: self._fill]
        self._buf, self._fill = bytearray(0), 0
        return self._emit(block, last=True)

    def _emit(self, block: bytearray, last: bool) -> tuple[int, bytearray, bool]:
        index = self._index
        self._index += 1
        return index, block, last
