"""What a backup's blocks hold (its *inner encoding*), and the two views of it that readers need.

The manifest body's ``snapshot.inner_encoding`` names one of:

- ``"s2-stream"`` (:data:`S2_STREAM`, ``--store snapshot``, the default): the snapshot stream exactly as
  nats-server sent it, S2-framed (a V1 tar or a V2 NATSARC1 archive inside). Byte for byte natscli's
  ``stream.tar.s2``.
- ``"natsarc"`` (:data:`NATSARC`, ``--store decoded``, V2 only): the NATSARC1 archive itself, the S2 framing
  decoded while the snapshot arrived. zstd compresses these bytes much better than S2 output, in which most
  redundancy is already gone but is still spread too thin for zstd to gain.

Every reader of the data goes through this module, so none can take one encoding for the other:

- :func:`decoded` gives the decoded snapshot (what inspect, cat, verify --deep and a rewrite parse);
- :func:`server_stream` gives a framed stream nats-server's restore reads (and natscli's ``stream.tar.s2``): the
  stored bytes as they are, or the archive re-framed as Snappy (uncompressed chunks, protocol notes §4.2);
- :class:`StoredForm` turns the server's snapshot chunks into what the blocks store (the write side).

All of them stream: memory stays at one block plus one S2 frame, whatever the backup's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pipeline.base.errors import IntegrityError, ServerRefused, UsageError, setting
from pipeline.format import s2
from pipeline.format.natsarc import END_MARKER, MAGIC

S2_STREAM = "s2-stream"
NATSARC = "natsarc"
INNER_ENCODINGS = (S2_STREAM, NATSARC)
#: ``--store`` choices and the inner encoding each writes.
STORE_MODES = {"snapshot": S2_STREAM, "decoded": NATSARC}

Bytes = bytes | bytearray | memoryview


def store_encoding(store: str) -> str:
    """The inner encoding a ``--store`` mode writes (:class:`UsageError` for anything else)."""
    try:
        return STORE_MODES[store]
    except KeyError:
        raise UsageError(f"{setting('store')} {store!r}: use one of {', '.join(STORE_MODES)}") from None


def inner_encoding(body: dict, snapshot_format: str, backup: str = "") -> str:
    """The inner encoding a backup's opened body records, checked against its snapshot format.

    Backups written before the field existed hold the S2 stream. An encoding this version does not know (a newer
    jsarchive wrote it) or ``natsarc`` on a V1 backup is an :class:`IntegrityError`: reading those bytes as
    something else would go wrong later and less clearly.
    """
    enc = (body.get("snapshot") or {}).get("inner_encoding", S2_STREAM)
    name = f"backup {backup[:12]}" if backup else "the backup"
    if enc not in INNER_ENCODINGS:
        raise IntegrityError(
            f"{name} stores its snapshot as {enc!r}, which this jsarchive cannot read (it reads "
            f"{', '.join(INNER_ENCODINGS)}): use the jsarchive version that wrote it, or a newer one"
        )
    if enc == NATSARC and snapshot_format != "V2":
        raise IntegrityError(f"{name} claims a decoded NATSARC1 archive in a {snapshot_format} snapshot")
    return enc


def decoded(plain: Iterable[Bytes], encoding: str) -> Iterator[bytes]:
    """The decoded snapshot (V1 tar or V2 NATSARC1 archive) from the stored plaintext blocks, in order."""
    if encoding == NATSARC:
        return (bytes(b) for b in plain if b)
    return s2.iter_decode(plain)


def server_stream(plain: Iterable[Bytes], encoding: str) -> Iterator[Bytes]:
    """A framed snapshot stream that nats-server's restore (and natscli's restore) reads."""
    if encoding == NATSARC:
        return s2.snappy_framed(plain)
    return iter(plain)


def server_stream_size(plain_lengths: Iterable[int], encoding: str) -> int:
    """The length of :func:`server_stream` over plaintext blocks of these lengths."""
    if encoding == NATSARC:
        return s2.snappy_framed_size(plain_lengths)
    return sum(plain_lengths)


def rechunk(pieces: Iterable[Bytes], size: int) -> Iterator[bytes]:
    """The same bytes in chunks of exactly ``size`` (the last may be shorter)."""
    buf = bytearray()
    for p in pieces:
        buf += p
        if len(buf) < size:
            continue
        whole = len(buf) - len(buf) % size
        with memoryview(buf) as view:  # one copy per chunk; the view is gone before the buffer shrinks
            for off in range(0, whole, size):
                yield bytes(view[off : off + size])
        del buf[:whole]
    if buf:
        yield bytes(buf)


class StoredForm:
    """The server's snapshot chunks → the bytes a backup of ``encoding`` stores (write side).

    ``s2-stream`` passes the chunks through. ``natsarc`` decodes the S2 framing as it arrives (every chunk's
    CRC-32C checked) and requires the result to be a NATSARC1 archive. ``received`` counts the bytes the server
    sent, ``stored`` the bytes handed on.

    ``open_end=True`` (V2 snapshots) keeps the archive open for messages read after the snapshot (see
    pipeline/jetstream/livetail.py): the end of the stream is held back — the last two S2 chunks, or the last five
    decoded bytes — so that :meth:`append` can add entries before the end marker, which :meth:`finish` then writes. On
    the
    S2 stream the held chunks are re-emitted decoded, as uncompressed chunks (S2 readers take any mix of chunk
    types after the stream identifier); at most two S2 blocks (2 MiB) are held. With nothing appended they are
    stored exactly as sent, so a backup of a stream that did not change stays byte for byte the server's stream.
    """

    def __init__(self, encoding: str, *, open_end: bool = False) -> None:
        if encoding not in INNER_ENCODINGS:
            raise UsageError(f"unknown inner encoding {encoding!r}")
        self.encoding = encoding
        self.open_end = open_end
        self.received = 0
        self.stored = 0
        self._decoder = s2.FramedDecoder() if encoding == NATSARC else None
        self._head = b""  # the first decoded bytes, until the magic is known
        self._splitter = s2.ChunkSplitter() if open_end and encoding == S2_STREAM else None
        self._held: list[bytes] = []  # S2 chunks (s2-stream) or decoded bytes (natsarc) not handed on yet
        self._opened = False  # the end marker was taken off and entries may be appended

    def feed(self, chunk: Bytes) -> Iterator[Bytes]:
        """What ``chunk`` adds to the stored bytes; exhaust it before the next :meth:`feed`."""
        self.received += len(chunk)
        if self._decoder is None:
            if self._splitter is not None:
                return self._hold_chunks(chunk)
            self.stored += len(chunk)
            return iter((chunk,))
        return self._decoded(self._decoder.feed(chunk))

    def _hold_chunks(self, chunk: Bytes) -> Iterator[Bytes]:
        assert self._splitter is not None
        for c in self._splitter.feed(chunk):
            self._held.append(c)
            if len(self._held) > 2:
                out = self._held.pop(0)
                self.stored += len(out)
                yield out

    def _decoded(self, blocks: Iterator[bytes]) -> Iterator[bytes]:
        for block in blocks:
            if len(self._head) < len(MAGIC):
                self._head += block[: len(MAGIC) - len(self._head)]
                if len(self._head) == len(MAGIC) and self._head != MAGIC:
                    raise ServerRefused(
                        "the server sent a V1 (tar) snapshot, not a NATSARC1 "
                        f"archive: {setting('store')} decoded needs "
                        f"snapshot format V2 (nats-server 2.15 or later); use {setting('store')} snapshot"
                    )
            if self.open_end:  # hand on all but the last five bytes seen: they may be the end marker
                n = len(END_MARKER)
                prev = b"".join(self._held)
                if len(block) >= n:
                    self._held = [bytes(block[-n:])]
                    if prev:
                        self.stored += len(prev)
                        yield prev
                    block = memoryview(block)[:-n]
                else:
                    joined = prev + bytes(block)
                    self._held, block = [joined[-n:]], joined[:-n]
            self.stored += len(block)
            if block:
                yield block

    def _open(self) -> Iterator[Bytes]:
        """Take the end marker off the held end of the archive; what of it must be stored before new entries."""
        if self._opened:
            return
        self._opened = True
        if self._decoder is not None:
            self._decoder.finish()
            tail = b"".join(self._held)
            self._held = []
            if tail != END_MARKER:
                raise IntegrityError("the snapshot does not end with a NATSARC1 end marker; it cannot be extended")
            return
        assert self._splitter is not None
        if self._splitter.pending:
            raise s2.S2Truncated(f"s2: the snapshot stream ends inside a chunk ({self._splitter.pending} bytes)")
        keep = [c for c in self._held if c[0] == s2.CHUNK_STREAM_IDENTIFIER]  # a tiny stream: its identifier
        data = [c for c in self._held if c[0] != s2.CHUNK_STREAM_IDENTIFIER]
        self._held = []
        for c in keep:
            self.stored += len(c)
            yield c
        tail = b"".join(s2.FramedDecoder().feed(s2.S2_STREAM_IDENTIFIER + b"".join(data)))
        if not tail.endswith(END_MARKER):
            raise IntegrityError("the snapshot does not end with a NATSARC1 end marker; it cannot be extended")
        yield from self._framed(tail[: -len(END_MARKER)])

    def _framed(self, data: bytes) -> Iterator[Bytes]:
        pieces = s2.uncompressed_chunks(data) if self._decoder is None else iter((data,))
        for p in pieces:
            self.stored += len(p)
            yield p

    def append(self, entries: bytes) -> Iterator[Bytes]:
        """Encoded NATSARC1 entries to store before the end marker (``open_end`` only)."""
        if not self.open_end:
            raise UsageError("entries can only be appended to an archive kept open (open_end=True)")
        yield from self._open()
        if entries:
            yield from self._framed(entries)

    def finish(self) -> Iterator[Bytes]:
        """The rest of the stored bytes; checks the end of the stream: no partial S2 chunk, and (decoded) the
        NATSARC1 magic was there."""
        if self.open_end and not self._opened and self._decoder is None:
            # nothing was appended: the held chunks go out as the server sent them (byte for byte natscli's file)
            assert self._splitter is not None
            if self._splitter.pending:
                raise s2.S2Truncated(f"s2: the snapshot stream ends inside a chunk ({self._splitter.pending} bytes)")
            held, self._held = self._held, []
            for c in held:
                self.stored += len(c)
                yield c
        elif self.open_end:
            yield from self._open()
            yield from self._framed(END_MARKER)
        elif self._decoder is None:
            return
        else:
            self._decoder.finish()
        if self._decoder is not None and self._head != MAGIC:
            raise ServerRefused(
                f"the decoded snapshot ({self.stored} bytes) is not a "
                f"NATSARC1 archive: {setting('store')} decoded needs "
                "snapshot format V2 (nats-server 2.15 or later)"
            )
