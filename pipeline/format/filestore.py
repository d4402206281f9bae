"""A streaming census of a V1 snapshot: what the message blocks really hold, and what ``index.db`` claims.

A V1 snapshot (nats-server <= 2.14) is an S2-framed PAX tar of the stream's file-store directory: ``meta.inf``,
``meta.sum``, one ``msgs/<N>.blk`` per message block, ``msgs/index.db`` (the full stream state, force-written
*after* the blocks were copied) and the consumers under ``obs/``. Publishing goes on while the blocks are copied,
so ``index.db`` can claim messages the copied blocks never received; a restore then trusts the claim (or bumps
its last sequence to it) and silently serves a stream with a hole at its end. :class:`V1Census` counts the live
records of every block as the tar streams past and compares them with the claim, so a backup can be retried.

Formats (nats-server ``server/filestore.go``; the snapshot sends blocks decrypted and decompressed):

- A block is a sequence of records, all integers little-endian:
  ``total_len u32`` (bit 31 ``hbit``: the record has headers) ``seq u64`` (bit 63 ``ebit``: erased, bit 62
  ``tbit``: delete tombstone carrying the deleted sequence) ``ts i64`` ``subj_len u16``, then the subject,
  ``hdr_len u32`` and the headers when ``hbit`` is set, the payload, and an 8-byte highwayhash. ``total_len``
  covers the whole record; the server refuses records over 32 MiB (``rlBadThresh``).
- ``index.db``: ``magic 11``, ``version`` (1 on 2.10, 3 on 2.12, 4 on 2.14), then uvarints ``msgs``, ``bytes``,
  ``first_seq``, varint ``first_ts``, ``last_seq``, varint ``last_ts``; the per-subject map (count, then per
  subject ``len``, subject, ``total``, ``fblk`` and ``lblk`` when ``total > 1`` or version >= 4); the block
  count and per block ``index``, ``bytes``, ``first_seq``, varint ``first_ts``, ``last_seq``, varint
  ``last_ts``, ``num_deleted``, one more uvarint from version 2 (TTL count) and another from version 3, then
  the deleted-sequence set (``avl.SequenceSet`` encoding) when ``num_deleted > 0``; last the index of the last
  block, its last record checksum (8 bytes) and the highwayhash of the file (8 bytes).

A block record is a live message unless it is a tombstone, erased, has sequence 0, or (with ``index.db``) falls
outside the block's claimed ``first_seq..last_seq`` or into its deleted set: removals through limits (max age,
max msgs per subject) leave the record in place and only ``index.db`` knows about them. Without ``index.db``
the tombstones are applied instead, as the server's rebuild from blocks would.

Memory: counters, the runs of consecutive live sequences per block (a few per block; capped, with exact
counting given up past the cap), a partial record header and a skip count; ``index.db`` itself is held while
its member streams (capped). Checksums are not verified here (that needs highwayhash); a corrupt record that
still looks well-formed is counted.
"""

from __future__ import annotations

import re
import struct
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field

from pipeline.base.errors import IntegrityError

HBIT = 1 << 31
EBIT = 1 << 63
TBIT = 1 << 62
MSG_HDR_SIZE = 22
EMPTY_RECORD_LEN = MSG_HDR_SIZE + 8
MAX_RECORD = 32 * 1024 * 1024  # rlBadThresh: the server itself never writes a longer record
MAX_INDEX_DB = 128 * 1024 * 1024
MAX_SMALL_MEMBER = 1024 * 1024  # PAX headers, GNU long names, errors.txt
MAX_RUNS = 1 << 20  # live-sequence runs plus tombstones kept for exact counting (16 bytes each)
FULL_STATE_MAGIC = 11
AVL_MAGIC = 22

_RECORD = struct.Struct("<IQ8xH")  # total_len, seq, (ts), subj_len
_BLOCK_NAME = re.compile(r"msgs/(\d+)\.blk")
_BLOCK = 512
NO_RUN = -2  # the open run's end when there is none: no sequence follows it


@dataclass
class V1Counts:
    """What the blocks of one V1 snapshot hold, next to what its ``index.db`` claims."""

    messages: int = 0
    first_seq: int = 0
    last_seq: int = 0
    blocks: int = 0
    claimed_messages: int | None = None
    claimed_first_seq: int | None = None
    claimed_last_seq: int | None = None
    notes: list[str] = field(default_factory=list)
    # The highest sequence index.db claims is live (its last_seq stays put when the last message is deleted).
    claimed_live_last_seq: int | None = None
    # Blocks holding fewer live messages than index.db claims for them, worst first is not implied: tar order.
    short_blocks: list[str] = field(default_factory=list)
    # Contents of an errors.txt member: a 2.10 server reports a failed snapshot only there.
    errors: list[str] = field(default_factory=list)

    def shortfall(self) -> str | None:
        """Why this snapshot holds less than its ``index.db`` claims, or None when blocks and claim agree."""
        parts = [f"the server reported a snapshot error: {e}" for e in self.errors]
        if self.claimed_messages is not None and self.messages < self.claimed_messages:
            parts.append(
                f"the message blocks hold {self.messages} live messages but index.db claims "
                f"{self.claimed_messages} ({self.claimed_messages - self.messages} missing)"
            )
        live_last = self.claimed_live_last_seq if self.claimed_live_last_seq is not None else self.claimed_last_seq
        if live_last and self.last_seq < live_last:
            parts.append(f"the last live message in the blocks is seq {self.last_seq}, index.db claims {live_last}")
        if not parts:
            return None
        if self.short_blocks:
            more = len(self.short_blocks) - 3
            parts.append("; ".join(self.short_blocks[:3]) + (f" (and {more} more blocks)" if more > 0 else ""))
        return "; ".join(parts)


class _Bad(Exception):
    """index.db could not be parsed: becomes a note, not an error (the blocks are still counted)."""


class _Buffer:
    """A member kept whole (PAX header, index.db, ...), refused past ``cap`` bytes."""

    def __init__(self, name: str, cap: int) -> None:
        self.name, self.cap, self.data, self.overflow = name, cap, bytearray(), False

    def write(self, mv: memoryview) -> None:
        if self.overflow:
            return
        if len(self.data) + len(mv) > self.cap:
            self.overflow = True
            self.data = bytearray()
            return
        self.data += mv


class _Skip:
    def write(self, mv: memoryview) -> None:
        pass


class _Block:
    """The record walk of one ``msgs/<N>.blk`` member: runs of consecutive live sequences, nothing else."""

    def __init__(self, census: V1Census, name: str, index: int) -> None:
        self.census, self.name, self.index = census, name, index
        self.starts, self.ends = array("Q"), array("Q")
        self.rs, self.re = 0, NO_RUN  # the open run
        self.live = 0  # live records seen, kept even when the runs are given up
        self.min_live = self.max_live = 0
        self.max_any = 0  # highest sequence of any record: evidence of how far the block got
        self.erased = self.tombstones = self.duplicates = 0
        self.carry = bytearray()  # a record header cut by a feed boundary (< 22 bytes)
        self.skip = 0  # bytes of the current record still to come
        self.offset = 0  # member offset of the next byte written

    def bad(self, at: int, why: str) -> IntegrityError:
        return IntegrityError(f"snapshot member {self.name}: {why} at byte {at}: the message block is corrupt")

    def write(self, mv: memoryview) -> None:
        n = len(mv)
        base = self.offset
        self.offset += n
        pos = 0
        if self.skip:
            pos = min(self.skip, n)
            self.skip -= pos
            if self.skip:
                return
        if self.carry:
            need = MSG_HDR_SIZE - len(self.carry)
            self.carry += mv[pos : pos + need]
            pos = min(n, pos + need)
            if len(self.carry) < MSG_HDR_SIZE:
                return
            rl = self._records(memoryview(bytes(self.carry)), 0, MSG_HDR_SIZE, base + pos - MSG_HDR_SIZE, one=True)
            self.carry.clear()
            rest = rl - MSG_HDR_SIZE
            if rest > n - pos:
                self.skip = rest - (n - pos)
                return
            pos += rest
        end = self._records(mv, pos, n, base)
        if end > n:
            self.skip = end - n
        elif end < n:
            self.carry = bytearray(mv[end:n])

    def _records(self, mv: memoryview, pos: int, n: int, base: int, one: bool = False) -> int:
        """Walk whole record headers in ``mv[pos:n]``; returns the offset just past the last record started
        (beyond ``n`` when that record continues in the next piece), or the record length when ``one``."""
        unpack = _RECORD.unpack_from
        rs, re_, live, max_any = self.rs, self.re, self.live, self.max_any
        starts, ends = self.starts, self.ends
        keep = not self.census._degraded
        rl = 0
        try:
            while pos + MSG_HDR_SIZE <= n:
                rl, seq, slen = unpack(mv, pos)
                rl &= 0x7FFFFFFF
                if rl < EMPTY_RECORD_LEN + slen or rl > MAX_RECORD:
                    raise self.bad(base + pos, f"record length {rl} (subject length {slen})")
                if seq & TBIT:
                    seq &= ~(TBIT | EBIT)
                    self.tombstones += 1
                    self.census._tombstone(seq)
                elif seq & EBIT or not seq:
                    seq &= ~EBIT
                    self.erased += 1
                else:
                    live += 1
                    if seq == re_ + 1:
                        re_ = seq
                    elif seq > re_:
                        if re_ > 0 and keep:
                            if starts and rs <= ends[-1]:
                                self._add_run(rs, re_)
                            else:
                                starts.append(rs)
                                ends.append(re_)
                            keep = self.census._grow()
                        rs = re_ = seq
                    else:
                        # Out of order (or a duplicate): merge into the sorted runs, slowly; never seen in a
                        # real block, whose records are written in sequence order.
                        if re_ > 0 and keep:
                            self._add_run(rs, re_)
                            keep = self.census._grow()
                        rs, re_ = 0, NO_RUN
                        if keep:
                            if not self._add_run(seq, seq):
                                live -= 1
                            keep = self.census._grow()
                if seq > max_any:
                    max_any = seq
                pos += rl
                if one:
                    return rl
        finally:
            self.rs, self.re, self.live, self.max_any = rs, re_, live, max_any
        return pos

    def _add_run(self, s: int, e: int) -> bool:
        """Merge the run ``s..e`` into the sorted, disjoint runs; False if it was wholly present already."""
        starts, ends = self.starts, self.ends
        i = bisect_right(starts, s) - 1
        if i >= 0 and ends[i] >= e:
            self.duplicates += e - s + 1
            return False
        if i >= 0 and ends[i] >= s - 1:
            s = starts[i]
        else:
            i += 1
        j = i
        while j < len(starts) and starts[j] <= e + 1:
            e = max(e, ends[j])
            j += 1
        del starts[i:j], ends[i:j]
        starts.insert(i, s)
        ends.insert(i, e)
        return True

    def close(self) -> None:
        if self.carry or self.skip:
            raise self.bad(self.offset, "the last record is cut short")
        if self.re > 0 and not self.census._degraded:
            self._add_run(self.rs, self.re)
            self.census._grow()
        if self.starts:
            self.min_live, self.max_live = self.starts[0], self.ends[-1]
        if self.census._degraded and self.re > 0:  # the runs are incomplete: the open run is the latest evidence
            self.min_live = min(self.min_live or self.rs, self.rs)
            self.max_live = max(self.max_live, self.re)
        self.rs, self.re = 0, NO_RUN

    # -- set operations on the runs, for the finish -----------------------------------------------------------
    def count_in(self, lo: int, hi: int) -> int:
        total = 0
        for s, e in zip(self.starts, self.ends):  # noqa: B905 - same length by construction
            if e < lo:
                continue
            if s > hi:
                break
            total += min(e, hi) - max(s, lo) + 1
        return total

    def has(self, seq: int) -> bool:
        i = bisect_right(self.starts, seq) - 1
        return i >= 0 and self.ends[i] >= seq

    def remove(self, seq: int) -> bool:
        i = bisect_right(self.starts, seq) - 1
        if i < 0 or self.ends[i] < seq:
            return False
        s, e = self.starts[i], self.ends[i]
        if s == e:
            del self.starts[i], self.ends[i]
        elif seq == s:
            self.starts[i] = s + 1
        elif seq == e:
            self.ends[i] = e - 1
        else:
            self.ends[i] = seq - 1
            self.starts.insert(i + 1, seq + 1)
            self.ends.insert(i + 1, e)
        return True

    def first_not_in(self, lo: int, hi: int, gone: set[int]) -> int:
        for s, e in zip(self.starts, self.ends):  # noqa: B905
            for seq in range(max(s, lo), min(e, hi) + 1):
                if seq not in gone:
                    return seq
        return 0

    def last_not_in(self, lo: int, hi: int, gone: set[int]) -> int:
        for s, e in zip(reversed(self.starts), reversed(self.ends)):  # noqa: B905
            for seq in range(min(e, hi), max(s, lo) - 1, -1):
                if seq not in gone:
                    return seq
        return 0


@dataclass
class _ClaimedBlock:
    index: int
    first: int
    last: int
    deleted: set[int]

    @property
    def live(self) -> int:
        return max(0, self.last - self.first + 1 - len(self.deleted)) if self.last >= self.first else 0

    def live_last(self) -> int:
        seq = self.last
        while seq >= self.first and seq in self.deleted:
            seq -= 1
        return seq if seq >= self.first else 0


@dataclass
class _Claim:
    msgs: int
    first: int
    last: int
    blocks: list[_ClaimedBlock] | None  # None: the block section could not be read


class V1Census:
    """Feed the decoded (S2-decoded) tar bytes of a V1 snapshot in any pieces, then :meth:`finish`.

    Any malformed input (bad tar header, truncation, impossible sizes, a corrupt record) raises
    :class:`IntegrityError` naming the member; an unreadable ``index.db`` only becomes a note.
    """

    def __init__(self) -> None:
        self._hdr = bytearray()
        self._state = "header"  # header | data | pad | zero | end
        self._remain = 0
        self._pad = 0
        self._sink: _Block | _Buffer | _Skip = _Skip()
        self._member = ""
        self._offset = 0  # tar offset of the next byte fed
        self._pax: dict[str, str] = {}
        self._blocks: list[_Block] = []
        self._by_index: dict[int, _Block] = {}
        self._index_db: bytes | None = None
        self._tombs = array("Q")
        self._runs = 0
        self._degraded = False
        self._notes: list[str] = []
        self._errors: list[str] = []
        self._finished = False
        self._kind = b"0"

    # -- bounded bookkeeping --------------------------------------------------------------------------------
    def _grow(self) -> bool:
        self._runs += 1
        if self._runs > MAX_RUNS and not self._degraded:
            self._degraded = True
            self._notes.append(
                f"more than {MAX_RUNS} runs of live sequences and tombstones: exact counting was given up, the "
                "message count is of live records and only the last sequences are compared"
            )
        return not self._degraded

    def _tombstone(self, seq: int) -> None:
        if not self._degraded:
            self._tombs.append(seq)
            self._grow()

    # -- the tar stream -----------------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._finished:
            raise IntegrityError("V1 census: data fed after finish()")
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        while mv:
            state = self._state
            if state == "data":
                take = min(self._remain, len(mv))
                self._sink.write(mv[:take])
                self._remain -= take
                self._consume(take)
                mv = mv[take:]
                if not self._remain:
                    self._end_member()
            elif state == "pad":
                take = min(self._pad, len(mv))
                self._pad -= take
                self._consume(take)
                mv = mv[take:]
                if not self._pad:
                    self._state = "header"
            elif state == "end":
                self._consume(len(mv))
                return
            else:
                take = min(_BLOCK - len(self._hdr), len(mv))
                self._hdr += mv[:take]
                self._consume(take)
                mv = mv[take:]
                if len(self._hdr) == _BLOCK:
                    hdr, self._hdr = bytes(self._hdr), bytearray()
                    self._header(hdr)

    def _consume(self, n: int) -> None:
        self._offset += n

    def _header(self, hdr: bytes) -> None:
        at = self._offset - _BLOCK
        if not any(hdr):
            if self._state == "zero":
                self._state = "end"
            else:
                self._state = "zero"
            return
        if self._state == "zero":
            raise IntegrityError(f"snapshot tar: a lone end-of-archive block at byte {at - _BLOCK}")
        stored = _octal(hdr[148:156], "header checksum", at)
        if stored != sum(hdr[:148]) + 256 + sum(hdr[156:]):
            raise IntegrityError(f"snapshot tar: bad header checksum at byte {at} (not a tar, or corrupt)")
        name = hdr[:100].split(b"\0", 1)[0]
        if hdr[257:263] == b"ustar\x00":
            prefix = hdr[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        size = _size(hdr[124:136], at)
        kind = hdr[156:157]
        pax, self._pax = self._pax, {}
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise IntegrityError(f"snapshot tar: bad PAX size {pax['size']!r} at byte {at}") from None
            if size < 0:
                raise IntegrityError(f"snapshot tar: negative PAX size at byte {at}")
        member = pax.get("path") or name.decode("utf-8", "replace")
        if member.startswith("./"):
            member = member[2:]
        self._member = member
        if kind in (b"x", b"L"):
            self._sink = _Buffer(member, MAX_SMALL_MEMBER)
            self._kind = kind
        elif kind in (b"0", b"\0", b"7"):
            self._kind = b"0"
            self._sink = self._route(member)
        else:
            self._kind = kind
            self._sink = _Skip()
        self._remain = size
        self._pad = -size % _BLOCK
        self._state = "data"
        if not size:
            self._end_member()

    def _route(self, member: str) -> _Block | _Buffer | _Skip:
        m = _BLOCK_NAME.fullmatch(member)
        if m:
            index = int(m.group(1))
            if index in self._by_index:
                raise IntegrityError(f"snapshot tar: message block {member} appears twice")
            blk = _Block(self, member, index)
            self._blocks.append(blk)
            self._by_index[index] = blk
            return blk
        if member == "msgs/index.db":
            if self._index_db is not None:
                raise IntegrityError("snapshot tar: msgs/index.db appears twice")
            return _Buffer(member, MAX_INDEX_DB)
        if member == "errors.txt":
            return _Buffer(member, MAX_SMALL_MEMBER)
        return _Skip()

    def _end_member(self) -> None:
        sink = self._sink
        self._sink = _Skip()
        self._state = "pad" if self._pad else "header"
        if isinstance(sink, _Block):
            sink.close()
        elif isinstance(sink, _Buffer):
            if self._kind == b"x":
                if sink.overflow:
                    raise IntegrityError(f"snapshot tar: a PAX header over {MAX_SMALL_MEMBER} bytes")
                self._pax = _parse_pax(bytes(sink.data))
            elif self._kind == b"L":
                if sink.overflow:
                    raise IntegrityError(f"snapshot tar: a long name over {MAX_SMALL_MEMBER} bytes")
                self._pax = {"path": bytes(sink.data).split(b"\0", 1)[0].decode("utf-8", "replace")}
            elif sink.name == "msgs/index.db":
                if sink.overflow:
                    self._index_db = b""
                    self._notes.append(f"index.db is larger than {MAX_INDEX_DB} bytes: it was not read")
                else:
                    self._index_db = bytes(sink.data)
            else:
                text = bytes(sink.data).decode("utf-8", "replace").strip() or "(empty errors.txt)"
                self._errors.append(text)

    # -- the result ---------------------------------------------------------------------------------------
    def finish(self) -> V1Counts:
        if self._finished:
            raise IntegrityError("V1 census: finish() called twice")
        self._finished = True
        if self._state in ("data", "pad"):
            where = f"inside member {self._member}" if self._state == "data" else f"after member {self._member}"
            raise IntegrityError(f"snapshot tar is truncated: it ends {where} at byte {self._offset}")
        if self._state != "end":
            raise IntegrityError(
                f"snapshot tar is truncated: no end-of-archive marker after {self._offset} bytes"
                + (f" (last member {self._member})" if self._member else "")
            )
        counts = V1Counts(blocks=len(self._blocks), notes=list(self._notes), errors=list(self._errors))
        claim = None
        if self._index_db is None:
            counts.notes.append("the snapshot has no msgs/index.db: there is no claimed state to check against")
        elif self._index_db:
            try:
                claim = _parse_index_db(self._index_db)
            except _Bad as e:
                counts.notes.append(f"index.db could not be read: {e}")
        if claim is not None:
            counts.claimed_messages, counts.claimed_first_seq, counts.claimed_last_seq = (
                claim.msgs,
                claim.first,
                claim.last,
            )
        if claim is not None and claim.blocks is not None and not self._degraded:
            self._count_claimed(counts, claim.blocks)
        else:
            if claim is not None and claim.blocks is None:
                counts.notes.append("index.db's block section could not be read: tombstones applied instead")
            self._count_records(counts)
        return counts

    def _count_claimed(self, counts: V1Counts, claimed: list[_ClaimedBlock]) -> None:
        """Live = a record exists for a sequence index.db claims live, block by block."""
        listed = set()
        firsts, lasts, live_lasts = [], [], []
        for cb in claimed:
            listed.add(cb.index)
            blk = self._by_index.get(cb.index)
            want = cb.live
            if want:
                live_lasts.append(cb.live_last())
            if blk is None:
                if want:
                    counts.short_blocks.append(
                        f"msgs/{cb.index}.blk is missing from the snapshot, index.db claims {want} messages in it"
                    )
                continue
            have = blk.count_in(cb.first, cb.last) - sum(1 for s in cb.deleted if blk.has(s))
            counts.messages += have
            if have:
                firsts.append(blk.first_not_in(cb.first, cb.last, cb.deleted))
                lasts.append(blk.last_not_in(cb.first, cb.last, cb.deleted))
            if have < want:
                counts.short_blocks.append(
                    f"{blk.name} holds {have} of the {want} messages index.db claims for it (records up to seq "
                    f"{blk.max_any}, index.db: {cb.last})"
                )
        for blk in self._blocks:
            if blk.index not in listed and blk.live:
                counts.notes.append(
                    f"{blk.name} is not in index.db: its {blk.live} live-looking records are not counted"
                )
        counts.first_seq = min(firsts) if firsts else 0
        counts.last_seq = max(lasts) if lasts else 0
        counts.claimed_live_last_seq = max(live_lasts) if live_lasts else 0

    def _count_records(self, counts: V1Counts) -> None:
        """No usable index.db: what the server's rebuild from blocks sees (live records minus tombstoned)."""
        if self._degraded:
            counts.messages = sum(b.live for b in self._blocks)
            lives = [b for b in self._blocks if b.live]
            counts.first_seq = min((b.min_live for b in lives if b.min_live), default=0)
            counts.last_seq = max((b.max_live for b in lives), default=0)
            return
        order = sorted((b for b in self._blocks if b.starts), key=lambda b: b.starts[0])
        firsts = [b.starts[0] for b in order]
        for seq in self._tombs:
            i = bisect_right(firsts, seq) - 1
            if i >= 0:
                order[i].remove(seq)
        counts.messages = sum(b.count_in(0, 1 << 64) for b in order)
        nonempty = [b for b in order if b.starts]
        counts.first_seq = min((b.starts[0] for b in nonempty), default=0)
        counts.last_seq = max((b.ends[-1] for b in nonempty), default=0)


# -- small parsers ----------------------------------------------------------------------------------------
def _octal(field_: bytes, what: str, at: int) -> int:
    text = field_.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise IntegrityError(f"snapshot tar: bad {what} {field_!r} at byte {at}") from None


def _size(field_: bytes, at: int) -> int:
    if field_[0] & 0x80:  # GNU base-256
        if field_[0] == 0xFF:
            raise IntegrityError(f"snapshot tar: negative member size at byte {at}")
        return int.from_bytes(bytes([field_[0] & 0x7F]) + field_[1:], "big")
    return _octal(field_, "member size", at)


def _parse_pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            raise IntegrityError("snapshot tar: malformed PAX header record")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise IntegrityError("snapshot tar: malformed PAX header record length") from None
        rec = data[sp + 1 : pos + length]
        if length <= sp - pos or pos + length > len(data) or not rec.endswith(b"\n") or b"=" not in rec:
            raise IntegrityError("snapshot tar: malformed PAX header record")
        key, _, value = rec[:-1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return out


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def uv(self, what: str) -> int:
        buf, pos, shift, out = self.buf, self.pos, 0, 0
        for _ in range(10):
            if pos >= len(buf):
                raise _Bad(f"it ends inside {what}")
            c = buf[pos]
            pos += 1
            out |= (c & 0x7F) << shift
            if c < 0x80:
                self.pos = pos
                return out
            shift += 7
        raise _Bad(f"an overlong varint for {what}")

    def sv(self, what: str) -> int:
        u = self.uv(what)
        return (u >> 1) ^ -(u & 1)

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise _Bad(f"it ends inside {what}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out


def _parse_index_db(raw: bytes) -> _Claim:
    if len(raw) < 32:
        raise _Bad(f"only {len(raw)} bytes")
    if raw[0] != FULL_STATE_MAGIC:
        raise _Bad(f"magic {raw[0]} is not {FULL_STATE_MAGIC} (encrypted, or not a stream state file)")
    version = raw[1]
    if version < 1:
        raise _Bad(f"version {version}")
    r = _Reader(raw[:-8])  # the highwayhash of the file is the last 8 bytes
    r.pos = 2
    msgs = r.uv("msgs")
    r.uv("bytes")
    first = r.uv("first_seq")
    r.sv("first_ts")
    last = r.uv("last_seq")
    r.sv("last_ts")
    if version > 4:
        return _Claim(msgs, first, last, None)
    try:
        blocks = _parse_index_blocks(r, version)
    except _Bad:
        return _Claim(msgs, first, last, None)
    return _Claim(msgs, first, last, blocks)


def _parse_index_blocks(r: _Reader, version: int) -> list[_ClaimedBlock]:
    for i in range(r.uv("the subject count")):
        r.take(r.uv(f"subject {i}"), f"subject {i}")
        total = r.uv("a subject total")
        r.uv("a subject's first block")
        if total > 1 or version >= 4:
            r.uv("a subject's last block")
    blocks = []
    for i in range(r.uv("the block count")):
        index = r.uv(f"block {i} index")
        r.uv("block bytes")
        bfirst = r.uv("block first_seq")
        r.sv("block first_ts")
        blast = r.uv("block last_seq")
        r.sv("block last_ts")
        ndel = r.uv("block num_deleted")
        for _ in range(max(0, min(version, 3) - 1)):
            r.uv("a block counter")  # TTL count from version 2; one more counter from version 3
        deleted = _parse_seqset(r) if ndel else set()
        blocks.append(_ClaimedBlock(index, bfirst, blast, deleted))
    r.uv("the last block index")
    r.take(8, "the last record checksum")
    if r.pos != len(r.buf):
        raise _Bad(f"{len(r.buf) - r.pos} unexpected bytes after the block section")
    return blocks


def _parse_seqset(r: _Reader) -> set[int]:
    head = r.take(10, "a deleted-sequence set")
    if head[0] != AVL_MAGIC or head[1] not in (1, 2):
        raise _Bad("a deleted-sequence set has a bad magic or version")
    nodes = int.from_bytes(head[2:6], "little")
    buckets = 64 if head[1] == 1 else 32
    body = r.take(nodes * (8 + buckets * 8 + 2), "a deleted-sequence set")
    out: set[int] = set()
    pos = 0
    for _ in range(nodes):
        node_base = int.from_bytes(body[pos : pos + 8], "little")
        pos += 8
        for b in struct.unpack_from(f"<{buckets}Q", body, pos):
            while b:
                low = b & -b
                out.add(node_base + low.bit_length() - 1)
                b ^= low
            node_base += 64
        pos += buckets * 8 + 2
    return out
