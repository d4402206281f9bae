"""How many bytes an S2/Snappy framed stream decodes to, read from its chunk headers as it passes: nothing is
decoded, copied or checked (pipeline/format/s2.py does that where the bytes are used).

Progress counts the stream's bytes, as natscli does (it decodes the snapshot to count them): the compressed
bytes on the wire say nothing about how far a snapshot has got against the stream's size. A compressed chunk's
decoded length is the uvarint at the start of its block, an uncompressed chunk's is its body less the checksum,
so the count costs a few operations per chunk (nats-server writes 1 MiB blocks), not a second decode.
"""

from __future__ import annotations

import contextlib

from pipeline.format.s2 import CHUNK_COMPRESSED, CHUNK_UNCOMPRESSED, block_length

_HEADER = 4  # type || length (3 bytes LE)
_PREFIX = _HEADER + 4 + 5  # ... || masked CRC || uvarint of a 32-bit decoded length (at most 5 bytes)


class DecodedLength:
    """Feed it a framed stream in pieces cut anywhere; each :meth:`feed` returns the decoded bytes of the chunks
    whose headers it completed. A corrupt header counts nothing: the decoder that reads the bytes reports it."""

    def __init__(self) -> None:
        self._head = bytearray()  # the start of a chunk, until its decoded length can be read
        self._skip = 0  # bytes of the current chunk's body still to pass over
        self.total = 0

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        pos, end, counted = 0, len(view), 0
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            head = self._head
            want = _HEADER if len(head) < _HEADER else _HEADER + min(self._length(), _PREFIX - _HEADER)
            if len(head) < want:
                take = min(want - len(head), end - pos)
                head += view[pos : pos + take]
                pos += take
                continue
            ctype, clen = head[0], self._length()
            if ctype == CHUNK_COMPRESSED and clen > 4:
                with contextlib.suppress(ValueError):
                    counted += block_length(head[_HEADER + 4 :])[0]
            elif ctype == CHUNK_UNCOMPRESSED and clen >= 4:
                counted += clen - 4
            self._skip = _HEADER + clen - len(head)
            head.clear()
        self.total += counted
        return counted

    def _length(self) -> int:
        h = self._head
        return h[1] | h[2] << 8 | h[3] << 16
