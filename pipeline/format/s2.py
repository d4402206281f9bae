"""A streaming decoder for S2 (klauspost/compress/s2) and Snappy framed streams: what nats-server snapshots are.
Also the reverse for bytes that were decoded: :func:`snappy_framed` frames them again for the server.

The framing format (https://github.com/google/snappy/blob/main/framing_format.txt, as extended by S2):

```
chunk   = type (1 byte) || length (3 bytes, little endian) || body (length bytes)
0xff    stream identifier, body "S2sTwO" (S2) or "sNaPpY" (Snappy: blocks decode to at most 64 KiB)
0x00    compressed block:   masked CRC-32C of the decoded bytes (4 bytes LE) || S2 block
0x01    uncompressed block: masked CRC-32C (4 bytes LE) || the bytes themselves
0xfe    padding; 0x80-0xfd reserved skippable chunks: skipped
0x02-0x7f reserved unskippable chunks: an error
masked CRC = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32), crc = CRC-32C (Castagnoli)
```

The first chunk must be a stream identifier; more identifiers may follow (concatenated streams). An empty input
is a valid empty stream. A block decodes to at most 4 MiB (64 KiB after a Snappy identifier); nats-server writes
1 MiB blocks.

An S2 block is ``uvarint(decoded length)`` followed by tags, the low two bits of each tag byte saying which:

```
00 literal   len-1 in bits 2-7 (0-59); 60/61/62/63: len-1 in the next 1/2/3/4 bytes (LE); then the bytes
01 copy1     length 4 + bits 2-4, offset = (bits 5-7 << 8) | next byte
             S2: offset 0 is a *repeat* of the previous copy's offset; its length is 4 + bits 2-4 for 0-4,
             and for 5/6/7 it is next byte + 8, next 2 bytes (LE) + 260, next 3 bytes (LE) + 65540
10 copy2     length 1 + bits 2-7, offset in the next 2 bytes (LE)
11 copy4     length 1 + bits 2-7, offset in the next 4 bytes (LE)
```

A copy reads from the bytes this block decoded so far; when its offset is smaller than its length it repeats the
last ``offset`` bytes (run-length style). Every block starts without a previous offset, so a leading repeat is
corrupt. S2 blocks are a strict superset of Snappy blocks, so the same decoder reads Snappy streams.

``decode_block`` uses the C accelerator ``pipeline.format._s2block`` when it was built (``pip install`` builds it if a C
compiler is there) and the pure-Python reference ``decode_block_py`` otherwise; both raise the same errors, with the
same messages, for the same input. Everything here works on bounded memory: one input chunk plus one frame.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator

from pipeline.base.errors import IntegrityError

try:  # the C accelerator for the block decoder (optional: see setup.py)
    from pipeline.format import _s2block as _c  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time, or a source checkout that was never built
    _c = None

try:  # CRC-32C: google-crc32c has a C implementation (and its own pure-Python fallback)
    import google_crc32c as _crc32c

    def crc32c(data: bytes | bytearray | memoryview) -> int:
        """CRC-32C (Castagnoli) of ``data``."""
        return _crc32c.value(data if isinstance(data, bytes) else bytes(data))

except ImportError:  # pragma: no cover - google-crc32c is a dependency; this keeps the module importable without it
    _CRC_TABLE = []
    for _n in range(256):
        _c32 = _n
        for _ in range(8):
            _c32 = (_c32 >> 1) ^ 0x82F63B78 if _c32 & 1 else _c32 >> 1
        _CRC_TABLE.append(_c32)

    def crc32c(data: bytes | bytearray | memoryview) -> int:
        """CRC-32C (Castagnoli) of ``data`` (slow pure-Python fallback)."""
        crc = 0xFFFFFFFF
        table = _CRC_TABLE
        for b in bytes(data):
            crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


MAX_BLOCK_SIZE = 4 << 20  # S2's maxBlockSize: the largest block a reader accepts
MAX_SNAPPY_BLOCK_SIZE = 1 << 16  # after a "sNaPpY" identifier
# The largest chunk body a reader accepts: CRC + MaxEncodedLen(4 MiB) (varint header and literal tags included).
MAX_CHUNK_LENGTH = 4 + MAX_BLOCK_SIZE + 16
S2_MAGIC = b"S2sTwO"
SNAPPY_MAGIC = b"sNaPpY"
S2_STREAM_IDENTIFIER = b"\xff\x06\x00\x00" + S2_MAGIC
SNAPPY_STREAM_IDENTIFIER = b"\xff\x06\x00\x00" + SNAPPY_MAGIC

CHUNK_COMPRESSED = 0x00
CHUNK_UNCOMPRESSED = 0x01
CHUNK_PADDING = 0xFE
CHUNK_STREAM_IDENTIFIER = 0xFF

#: True when the C block decoder is available (``decode_block`` uses it unless told otherwise).
ACCELERATED = _c is not None and os.environ.get("JSARCHIVE_S2_PURE", "") in ("", "0")


class S2Error(IntegrityError):
    """The bytes are not a valid S2/Snappy stream (corrupt, truncated, wrong checksum or unsupported)."""


class S2CorruptBlock(S2Error):
    """A compressed block does not decode."""


class S2ChecksumError(S2Error):
    """A block decoded, but its CRC-32C differs from the one the chunk carries."""


class S2Truncated(S2Error):
    """The stream ends inside a chunk."""


class S2Unsupported(S2Error):
    """A reserved unskippable chunk type (0x02-0x7f)."""


def masked_crc(data: bytes | bytearray | memoryview) -> int:
    """The framing format's masked CRC-32C of ``data``."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# -- the block decoder: pure-Python reference ---------------------------------------------------------------------

# Error reasons, shared word for word with pipeline/format/_s2block.c (the tests compare the two decoders' messages).
_E_HEADER = "bad block header"
_E_TOO_LARGE = "block too large"
_E_TAG = "truncated tag"
_E_LITERAL = "literal overruns"
_E_OFFSET = "bad copy offset"
_E_COPY = "copy overruns"
_E_LENGTH = "length mismatch"


def block_length(src: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(decoded length, header size)`` from a block's uvarint header (``ValueError`` if it is not valid)."""
    value = shift = 0
    for i in range(min(len(src), 10)):
        b = src[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value > 0xFFFFFFFF:
                break
            return value, i + 1
        shift += 7
    raise ValueError(_E_HEADER)


def decode_block_py(src: bytes | bytearray | memoryview, max_size: int = MAX_BLOCK_SIZE) -> bytes:
    """Decode one S2 (or Snappy) block: the reference implementation (``ValueError`` with a reason if corrupt)."""
    if not isinstance(src, bytes):
        src = bytes(src)
    dlen, s = block_length(src)
    if dlen > max_size:
        raise ValueError(_E_TOO_LARGE)
    n = len(src)
    out = bytearray()
    d = 0  # bytes decoded so far (== len(out))
    offset = 0  # the previous copy's offset, for S2 repeat codes
    while s < n:
        tag = src[s]
        kind = tag & 0x03
        if kind == 0:  # literal
            x = tag >> 2
            if x < 60:
                s += 1
            else:
                extra = x - 59
                if s + 1 + extra > n:
                    raise ValueError(_E_TAG)
                x = int.from_bytes(src[s + 1 : s + 1 + extra], "little")
                s += 1 + extra
            length = x + 1
            if length > dlen - d or length > n - s:
                raise ValueError(_E_LITERAL)
            out += src[s : s + length]
            s += length
            d += length
            continue
        if kind == 1:  # copy1, or an S2 repeat when its offset is 0
            if s + 2 > n:
                raise ValueError(_E_TAG)
            length = (tag >> 2) & 0x07
            toffset = ((tag & 0xE0) << 3) | src[s + 1]
            s += 2
            if toffset == 0:
                if length == 5:
                    if s + 1 > n:
                        raise ValueError(_E_TAG)
                    length = src[s] + 4
                    s += 1
                elif length == 6:
                    if s + 2 > n:
                        raise ValueError(_E_TAG)
                    length = (src[s] | src[s + 1] << 8) + (1 << 8)
                    s += 2
                elif length == 7:
                    if s + 3 > n:
                        raise ValueError(_E_TAG)
                    length = (src[s] | src[s + 1] << 8 | src[s + 2] << 16) + (1 << 16)
                    s += 3
            else:
                offset = toffset
            length += 4
        elif kind == 2:  # copy2
            if s + 3 > n:
                raise ValueError(_E_TAG)
            offset = src[s + 1] | src[s + 2] << 8
            length = 1 + (tag >> 2)
            s += 3
        else:  # copy4
            if s + 5 > n:
                raise ValueError(_E_TAG)
            offset = int.from_bytes(src[s + 1 : s + 5], "little")
            length = 1 + (tag >> 2)
            s += 5
        if offset <= 0 or offset > d:
            raise ValueError(_E_OFFSET)
        if length > dlen - d:
            raise ValueError(_E_COPY)
        start = d - offset
        if offset >= length:
            out += out[start : start + length]
        else:  # overlapping: the last ``offset`` bytes repeat
            out += (out[start:d] * (length // offset + 1))[:length]
        d += length
    if d != dlen:
        raise ValueError(_E_LENGTH)
    return bytes(out)


def decode_block(src: bytes | bytearray | memoryview, max_size: int = MAX_BLOCK_SIZE) -> bytes:
    """Decode one S2 (or Snappy) block with the C accelerator if it is there (``ValueError`` if corrupt)."""
    if ACCELERATED:
        return _c.decode_block(src, max_size)
    return decode_block_py(src, max_size)


def _block_decoder(accelerated: bool | None) -> Callable[[bytes | memoryview, int], bytes]:
    if accelerated is None:
        accelerated = ACCELERATED
    if accelerated:
        if _c is None:
            raise RuntimeError(
                "the S2 accelerator pipeline.format._s2block is not built (no C compiler at install time?)"
            )
        return _c.decode_block
    return decode_block_py


# -- the framing format -------------------------------------------------------------------------------------------


class FramedDecoder:
    """A push-style decoder of an S2/Snappy framed stream: :meth:`feed` bytes as they come, get decoded blocks.

    For producers that are handed chunks (a snapshot arriving from the server) rather than pulling them. The
    stream may be cut anywhere. It holds one partial frame plus the bytes of one :meth:`feed`. Exhaust the
    iterator a :meth:`feed` returns before feeding again, and call :meth:`finish` at the end: a stream that stops
    inside a chunk is truncated. Errors are those of :func:`iter_decode`, with the same messages.
    """

    def __init__(self, *, verify_crc: bool = True, accelerated: bool | None = None) -> None:
        self._decode = _block_decoder(accelerated)
        self._verify_crc = verify_crc
        self._buf = bytearray()
        self._pos = 0  # the next unread byte of _buf
        self.offset = 0  # stream offset of _buf[_pos]: bytes consumed so far
        self._started = False
        self._max_block = MAX_BLOCK_SIZE
        self._skipping = 0  # bytes of a padding or skippable chunk that have not arrived yet
        self._skip_where = ""

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        """Take ``data`` (now) and return the blocks it completes (decoded lazily, as the iterator is read)."""
        view = memoryview(data)
        if self._skipping:  # the rest of a skippable chunk is dropped without being buffered
            n = min(self._skipping, len(view))
            self._skipping -= n
            self.offset += n
            view = view[n:]
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += view
        return self._drain()

    def finish(self) -> None:
        """Check that the stream ended on a chunk boundary (:class:`S2Truncated` otherwise)."""
        if self._skipping:
            raise S2Truncated(f"s2: the stream ends inside the {self._skip_where}")
        left = len(self._buf) - self._pos
        if not left:
            return
        if left < 4:
            raise S2Truncated(f"s2: the stream ends inside a chunk header at byte {self.offset}")
        raise S2Truncated(f"s2: the stream ends inside the {self._where(self._buf[self._pos : self._pos + 4])}")

    def _where(self, header: bytes | bytearray | memoryview) -> str:
        ctype = header[0]
        clen = header[1] | header[2] << 8 | header[3] << 16
        return f"chunk at byte {self.offset} (type 0x{ctype:02x}, {clen} bytes)"

    def _consume(self, n: int) -> None:
        self._pos += n
        self.offset += n

    def _drain(self) -> Iterator[bytes]:
        buf = self._buf
        while not self._skipping:
            pos = self._pos
            avail = len(buf) - pos
            if avail < 4:
                return
            ctype = buf[pos]
            clen = buf[pos + 1] | buf[pos + 2] << 8 | buf[pos + 3] << 16
            where = self._where(buf[pos : pos + 4])
            if not self._started and ctype != CHUNK_STREAM_IDENTIFIER:
                raise S2Error(f"s2: not an S2 or Snappy stream: {where} is not a stream identifier")
            if ctype == CHUNK_STREAM_IDENTIFIER:
                if clen != len(S2_MAGIC):
                    raise S2Error(f"s2: bad stream identifier: {where}")
                if avail < 4 + clen:
                    return
                magic = bytes(buf[pos + 4 : pos + 4 + clen])
                if magic == S2_MAGIC:
                    self._max_block = MAX_BLOCK_SIZE
                elif magic == SNAPPY_MAGIC:
                    self._max_block = MAX_SNAPPY_BLOCK_SIZE
                else:
                    raise S2Error(f"s2: bad stream identifier {magic!r} in {where}")
                self._started = True
                self._consume(4 + clen)
                continue
            if ctype in (CHUNK_COMPRESSED, CHUNK_UNCOMPRESSED):
                if clen < 4:
                    raise S2Error(f"s2: {where} is too short for its checksum")
                max_block = self._max_block
                if (ctype == CHUNK_COMPRESSED and clen > MAX_CHUNK_LENGTH) or (
                    ctype == CHUNK_UNCOMPRESSED and clen - 4 > max_block
                ):
                    raise S2Error(f"s2: {where} is larger than a block may be ({max_block} bytes)")
                if avail < 4 + clen:
                    return
                expected = buf[pos + 4] | buf[pos + 5] << 8 | buf[pos + 6] << 16 | buf[pos + 7] << 24
                with memoryview(buf) as whole:  # released before the buffer is resized by the next feed
                    body = whole[pos + 8 : pos + 4 + clen]
                    if ctype == CHUNK_COMPRESSED:
                        try:
                            data = self._decode(body, max_block)
                        except ValueError as e:
                            raise S2CorruptBlock(f"s2: corrupt block in {where}: {e}") from None
                    else:
                        data = bytes(body)
                    body.release()
                if self._verify_crc and masked_crc(data) != expected:
                    raise S2ChecksumError(
                        f"s2: checksum mismatch in {where}: the decoded bytes are not what was written"
                    )
                self._consume(4 + clen)
                if data:
                    yield data
                continue
            if ctype <= 0x7F:
                raise S2Unsupported(f"s2: unsupported chunk type 0x{ctype:02x} ({where})")
            # 0xfe padding, 0x80-0xfd skippable: drop what is here, the rest as it arrives
            here = min(clen, avail - 4)
            self._consume(4 + here)
            self._skipping = clen - here
            self._skip_where = where


def iter_decode(
    chunks: Iterable[bytes | bytearray | memoryview],
    *,
    verify_crc: bool = True,
    accelerated: bool | None = None,
) -> Iterator[bytes]:
    """The decoded content of an S2/Snappy framed stream, one block at a time, pulling ``chunks`` as needed.

    ``chunks`` may cut the stream anywhere. Raises an :class:`S2Error` subclass, with the stream offset of the
    failing chunk, on anything klauspost's ``s2.Reader`` rejects. ``accelerated``: None picks the C decoder if it
    is built, True requires it, False forces the pure-Python one.
    """
    decoder = FramedDecoder(verify_crc=verify_crc, accelerated=accelerated)
    for chunk in chunks:
        yield from decoder.feed(chunk)
    decoder.finish()


def snappy_framed(pieces: Iterable[bytes | bytearray | memoryview]) -> Iterator[bytes | memoryview]:
    """``pieces`` as a Snappy framed stream of uncompressed chunks (the stream identifier first).

    Yields each chunk's 8-byte header and its data (a view of the piece) separately.

    Each piece is cut into chunks of at most 64 KiB, each carrying its masked CRC-32C. nats-server's restore
    reader accepts this framing (protocol notes §4.2), and so does :func:`iter_decode`. No compressor is needed,
    at the price of sending the bytes as they are.
    """
    yield SNAPPY_STREAM_IDENTIFIER
    for piece in pieces:
        yield from uncompressed_chunks(piece)


def uncompressed_chunks(piece: bytes | bytearray | memoryview) -> Iterator[bytes | memoryview]:
    """``piece`` as uncompressed chunks of at most 64 KiB, no stream identifier: what may follow any S2 or Snappy
    stream's chunks (header and data yielded apart; the data is a view of ``piece``)."""
    view = memoryview(piece)
    for off in range(0, len(view), MAX_SNAPPY_BLOCK_SIZE):
        block = view[off : off + MAX_SNAPPY_BLOCK_SIZE]
        n = len(block) + 4
        yield bytes((CHUNK_UNCOMPRESSED, n & 0xFF, (n >> 8) & 0xFF, n >> 16)) + masked_crc(block).to_bytes(4, "little")
        yield block


class ChunkSplitter:
    """Cuts a framed stream, fed in arbitrary pieces, at its chunk boundaries (nothing is decoded or checked)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        self._buf += data
        pos = 0
        buf = self._buf
        while len(buf) - pos >= 4:
            clen = buf[pos + 1] | buf[pos + 2] << 8 | buf[pos + 3] << 16
            if len(buf) - pos < 4 + clen:
                break
            yield bytes(buf[pos : pos + 4 + clen])
            pos += 4 + clen
        del buf[:pos]

    @property
    def pending(self) -> int:
        """Bytes of a chunk that has not been completed yet."""
        return len(self._buf)


def snappy_framed_size(piece_lengths: Iterable[int]) -> int:
    """The length of :func:`snappy_framed` over pieces of these lengths."""
    total = len(SNAPPY_STREAM_IDENTIFIER)
    for n in piece_lengths:
        total += n + 8 * (-(-n // MAX_SNAPPY_BLOCK_SIZE))
    return total


def decompress(
    data: bytes | bytearray | memoryview, *, verify_crc: bool = True, accelerated: bool | None = None
) -> bytes:
    """The whole decoded content of a framed stream held in memory."""
    return b"".join(iter_decode([data], verify_crc=verify_crc, accelerated=accelerated))


class BlockFile(io.RawIOBase):
    """A read-only file object over an iterator of byte blocks (e.g. decoded S2 blocks, for ``tarfile`` ``r|``)."""

    def __init__(self, blocks: Iterable[bytes | bytearray | memoryview]) -> None:
        super().__init__()
        self._blocks = iter(blocks)
        self._cur = memoryview(b"")
        self.consumed = 0  # bytes handed out so far

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._cur:
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._cur = memoryview(block)
        n = min(len(b), len(self._cur))
        b[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        self.consumed += n
        return n

    def close(self) -> None:
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()
        super().close()


class S2Reader(BlockFile):
    """A read-only file object over the decoded content of a framed stream given as ``chunks``."""

    def __init__(
        self,
        chunks: Iterable[bytes | bytearray | memoryview],
        *,
        verify_crc: bool = True,
        accelerated: bool | None = None,
    ) -> None:
        super().__init__(iter_decode(chunks, verify_crc=verify_crc, accelerated=accelerated))
