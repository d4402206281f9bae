"""Restore points in chains (a full backup and the deltas after it), and one NATSARC1 archive merged from a chain.

Pure functions over restore points and decoded archives (docs/design/incremental.md):

* :func:`plan_chain` picks the restore point for a target (newest, ``until_seq`` or ``at_ns``), the path of captures
  from its base to it, and the capture whose consumers and first sequence the restore takes; it refuses a target
  that a missing range of sequences makes unreachable, naming the range and the newest point that does restore;
* :func:`merge_archives` reads the path's archives (:mod:`pipeline.format.natsarc`) once, in order, and yields one
  archive that a 2.15 server restores with every message's sequence, subject, headers, payload and timestamp;
* :func:`chain_breaks`, :func:`required_points` and :func:`why_full` are what verify, prune and an incremental backup
  ask of the same rules.

Continuity is defined on captured ranges, never on which messages exist: a delta captures every sequence from its
parent's ``last_seq + 1`` to its own ``last_seq`` (the stream's last sequence when the capture ended), so sequences
deleted before a capture are gaps inside a range, not holes between ranges.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from pipeline.base.errors import IntegrityError, NotFoundError, UsageError, setting
from pipeline.format.natsarc import END_MARKER, ArchiveReader, Consumer, encode_entry, encode_head
from pipeline.format.selection import format_ns


@dataclass(frozen=True)
class RestorePoint:
    """One capture, as its manifest describes it (clear fields only: planning needs no key)."""

    id: str  # the manifest id
    parent: str | None  # the previous capture of the chain; None for a base (a full backup)
    chain: str  # the chain's id: its base's backup_id (a manifest id cannot name itself), carried by every delta
    stream: str
    stream_created: str  # the stream's identity: its ``created`` time (a re-created stream has another)
    first_seq: int  # the captured range; a base's first_seq is the stream's first sequence when it was taken
    last_seq: int  # the point: the stream's last sequence when the capture ended (a delta may capture none)
    captured_ns: int  # server time when the capture ended, ns since the epoch

    @property
    def is_base(self) -> bool:
        return self.parent is None

    def describe(self) -> str:
        kind = "full backup" if self.is_base else "delta"
        return f"{kind} {self.id[:12]} (sequence {self.last_seq}, {format_ns(self.captured_ns)})"


@dataclass(frozen=True)
class Break:
    """Why the link from ``point`` to its parent does not hold, and the sequences that are missing (if any)."""

    point: str
    parent: str | None
    reason: str  # "missing" (the parent is gone), "gap", "overlap", "recreated", "chain", "time"
    first: int = 0  # the missing range; first 0: its start is unknown (the base itself is gone)
    last: int = 0

    @property
    def missing_range(self) -> str:
        if self.reason not in ("missing", "gap"):
            return ""
        if self.first == 0:
            return f"sequences up to {self.last}"
        if self.first > self.last:
            return "no sequences (an empty capture)"
        return f"sequence {self.first}" if self.first == self.last else f"sequences {self.first}-{self.last}"

    def describe(self) -> str:
        p = (self.parent or "")[:12]
        if self.reason == "missing":
            return f"capture {p} before {self.point[:12]} is missing: {self.missing_range} are not in the archive"
        if self.reason == "gap":
            return f"{self.missing_range} between {p} and {self.point[:12]} were never captured"
        if self.reason == "overlap":
            return f"delta {self.point[:12]} starts at sequence {self.first}, inside the range of {p}"
        if self.reason == "recreated":
            return f"delta {self.point[:12]} is of a re-created stream: its parent {p} is of the stream before"
        if self.reason == "chain":
            return f"delta {self.point[:12]} names another chain than its parent {p}"
        return f"delta {self.point[:12]} was captured before its parent {p}"


class ChainHole(IntegrityError):
    """The restore point a target needs lies after a missing range (or a broken link) of its chain."""

    def __init__(self, message: str, brk: Break, restorable: RestorePoint | None, *, subject: str | None = None):
        super().__init__(message, subject=subject)
        self.brk = brk
        self.restorable = restorable


class ChainInconsistent(IntegrityError):
    """A restore point, or an archive read for it, contradicts its manifest or its chain."""


class NoRestorePoint(NotFoundError):
    """Nothing in the archive is at or before the target."""


# -- links ------------------------------------------------------------------------------------------------------


def _check_point(p: RestorePoint) -> None:
    if p.last_seq < 0 or p.first_seq < 0:
        raise ChainInconsistent(f"restore point {p.id[:12]}: negative sequence range", subject=p.stream)
    if not p.chain:
        raise ChainInconsistent(f"restore point {p.id[:12]} names no chain", subject=p.stream)
    if not p.is_base and (p.first_seq < 1 or p.last_seq < p.first_seq - 1):
        raise ChainInconsistent(
            f"delta {p.id[:12]}: its range {p.first_seq}-{p.last_seq} is not a range of sequences", subject=p.stream
        )


def _link(p: RestorePoint, by_id: dict[str, RestorePoint], chain_mates: list[RestorePoint]) -> Break | None:
    """The break in the link from delta ``p`` to its parent, or None."""
    assert p.parent is not None
    parent = by_id.get(p.parent)
    if parent is None:
        # the missing capture's range: from after the newest capture of the chain that ends before p starts
        below = [m.last_seq for m in chain_mates if m.id != p.id and m.last_seq < p.first_seq]
        first = max(below) + 1 if below else 0
        return Break(p.id, p.parent, "missing", first, p.first_seq - 1)
    if parent.stream_created != p.stream_created:
        return Break(p.id, parent.id, "recreated")
    if parent.chain != p.chain:
        return Break(p.id, parent.id, "chain")
    if p.captured_ns < parent.captured_ns:
        return Break(p.id, parent.id, "time")
    if p.first_seq > parent.last_seq + 1:
        return Break(p.id, parent.id, "gap", parent.last_seq + 1, p.first_seq - 1)
    if p.first_seq <= parent.last_seq:
        return Break(p.id, parent.id, "overlap", p.first_seq, parent.last_seq)
    return None


class _Graph:
    """The restore points of one stream: each one's path to its base and the first break on it."""

    def __init__(self, points: Iterable[RestorePoint]) -> None:
        self.points = list(points)
        self.by_id: dict[str, RestorePoint] = {}
        for p in self.points:
            _check_point(p)
            if p.id in self.by_id:
                raise ChainInconsistent(f"restore point {p.id[:12]} is listed twice", subject=p.stream)
            self.by_id[p.id] = p
        streams = {p.stream for p in self.points}
        if len(streams) > 1:
            raise UsageError(f"restore points of several streams cannot be planned together: {sorted(streams)}")
        self.stream = next(iter(streams), "")
        self.mates: dict[str, list[RestorePoint]] = {}
        for p in self.points:
            self.mates.setdefault(p.chain, []).append(p)
        self.children: dict[str, list[RestorePoint]] = {}
        for p in self.points:
            if p.parent is not None:
                self.children.setdefault(p.parent, []).append(p)
        self._links: dict[str, Break | None] = {}
        self._paths: dict[str, tuple[tuple[RestorePoint, ...], Break | None]] = {}

    def link(self, p: RestorePoint) -> Break | None:
        if p.is_base:
            return None
        if p.id not in self._links:
            self._links[p.id] = _link(p, self.by_id, self.mates.get(p.chain, []))
        return self._links[p.id]

    def path(self, p: RestorePoint) -> tuple[tuple[RestorePoint, ...], Break | None]:
        """The captures from ``p``'s base to ``p``, and the break nearest to ``p`` (then the path is partial)."""
        if p.id in self._paths:
            return self._paths[p.id]
        out: list[RestorePoint] = []
        brk: Break | None = None
        seen: set[str] = set()
        cur: RestorePoint | None = p
        while cur is not None:
            if cur.id in seen:
                raise ChainInconsistent(f"restore point {cur.id[:12]} is its own ancestor", subject=cur.stream)
            seen.add(cur.id)
            out.append(cur)
            if cur.is_base:
                break
            brk = self.link(cur)
            if brk is not None:
                break
            cur = self.by_id[cur.parent]  # type: ignore[index]
        result = (tuple(reversed(out)), brk)
        self._paths[p.id] = result
        return result

    def sound(self, p: RestorePoint) -> bool:
        return self.path(p)[1] is None


def chain_breaks(points: Iterable[RestorePoint]) -> list[Break]:
    """Every broken link among ``points`` (one stream), lowest sequence first: what verify reports."""
    g = _Graph(points)
    out = [b for p in g.points if (b := g.link(p)) is not None]
    return sorted(out, key=lambda b: (b.last, b.point))


def required_points(points: Iterable[RestorePoint], keep: Iterable[str]) -> set[str]:
    """The ids of every capture the kept restore points need (each one's path to its base): what prune may not
    delete. A kept point whose path is already broken keeps what remains of it."""
    g = _Graph(points)
    out: set[str] = set()
    for pid in keep:
        p = g.by_id.get(pid)
        if p is not None:
            out.update(q.id for q in g.path(p)[0])
    return out


def why_full(parent: RestorePoint, *, stream_created: str, first_seq: int, last_seq: int) -> str | None:
    """Why the next capture of a live stream (its identity and state now) cannot be a delta after ``parent``,
    or None if it can."""
    if stream_created != parent.stream_created:
        return (
            f"stream {parent.stream!r} was re-created (created {stream_created}, the previous backup's was "
            f"{parent.stream_created})"
        )
    if last_seq < parent.last_seq:
        return (
            f"stream {parent.stream!r} is at sequence {last_seq}, before the previous backup's {parent.last_seq} "
            "(re-created or restored)"
        )
    if first_seq > parent.last_seq + 1:
        return (
            f"stream {parent.stream!r} was purged or compacted past the previous backup: its first sequence is "
            f"{first_seq}, after {parent.last_seq}"
        )
    return None


# -- planning -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainPlan:
    """What a restore to a target reads and what it writes first."""

    path: tuple[RestorePoint, ...]  # base first: the archives merge_archives reads, in this order
    state_from: RestorePoint  # the newest capture not after the target: its consumers and first sequence
    last_seq: int  # the restored stream's last sequence (a lower bound with at_ns: later messages up to it add)
    until_seq: int  # no message above this
    at_ns: int | None = None  # messages after state_from's range are kept up to the first stored after this
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def point(self) -> RestorePoint:
        return self.path[-1]


def _newest(points: Iterable[RestorePoint]) -> RestorePoint | None:
    return max(points, key=lambda p: (p.captured_ns, p.last_seq, p.id), default=None)


def _refuse(g: _Graph, wanted: RestorePoint, brk: Break, what: str) -> ChainHole:
    """The error for a target whose point ``wanted`` a break makes unreachable, with the newest point before it."""
    cutoff = brk.first if brk.first else 0
    limit = g.by_id.get(brk.point, wanted)
    before = [
        p
        for p in g.points
        if g.sound(p) and p.captured_ns <= limit.captured_ns and (not cutoff or p.last_seq < cutoff) and p is not limit
    ]
    best = _newest(before)
    hint = (
        f"; the newest restore point before it is {best.describe()}: restore to {setting('until-seq', best.last_seq)}"
        f" or {setting('at', format_ns(best.captured_ns))}"
        if best is not None
        else "; no restore point before it restores"
    )
    return ChainHole(
        f"stream {g.stream!r}: {what} needs {wanted.describe()}, which cannot be restored: {brk.describe()}{hint}",
        brk,
        best,
        subject=g.stream,
    )


def plan_chain(points: Iterable[RestorePoint], *, until_seq: int | None = None, at_ns: int | None = None) -> ChainPlan:
    """The restore of one stream's ``points`` to a target: the newest point (neither given), the stream as it was
    when its last sequence was ``until_seq`` (of the newest incarnation), or as it was at time ``at_ns``.

    Raises :class:`ChainHole` where the needed point lies after a missing range or broken link, naming it and the
    newest point before it; :class:`NoRestorePoint` where nothing is at or before the target.
    """
    if until_seq is not None and at_ns is not None:
        raise UsageError(f"give {setting('until-seq')} or {setting('at')}, not both")
    if until_seq is not None and until_seq < 1:
        raise UsageError(f"{setting('until-seq')} must be at least 1, not {until_seq}")
    g = _Graph(points)
    if not g.points:
        raise NoRestorePoint("there is no restore point to plan from")
    if at_ns is not None:
        return _plan_at(g, at_ns)
    if until_seq is not None:
        return _plan_seq(g, until_seq)
    newest = _newest(g.points)
    assert newest is not None
    path, brk = g.path(newest)
    if brk is not None:
        raise _refuse(g, newest, brk, "the newest restore point")
    return ChainPlan(path, newest, newest.last_seq, newest.last_seq)


def _plan_seq(g: _Graph, n: int) -> ChainPlan:
    newest = _newest(g.points)
    assert newest is not None
    same = [p for p in g.points if p.stream_created == newest.stream_created]
    notes: list[str] = []
    if len(same) < len(g.points):
        notes.append(
            f"sequence {n} is taken in the stream created {newest.stream_created}; earlier incarnations of "
            f"{g.stream!r} are reached with {setting('at')}"
        )
    covering = [p for p in same if p.last_seq >= n]
    if covering:
        wanted = min(covering, key=lambda p: (p.last_seq, p.captured_ns, p.id))
    else:
        wanted = _newest(same)
        assert wanted is not None
        notes.append(f"the newest restore point is at sequence {wanted.last_seq}, before {n}: restored up to it")
    path, brk = g.path(wanted)
    if brk is not None:
        raise _refuse(g, wanted, brk, f"{setting('until-seq', n)}")
    cut = min(n, wanted.last_seq)
    state_from = next((p for p in reversed(path) if p.last_seq <= cut), wanted)
    return ChainPlan(path, state_from, cut, cut, notes=tuple(notes))


def _plan_at(g: _Graph, t: int) -> ChainPlan:
    when = format_ns(t)
    before = [p for p in g.points if p.captured_ns <= t]
    c = _newest(before)
    if c is None:
        oldest = min(g.points, key=lambda p: (p.captured_ns, p.last_seq))
        raise NoRestorePoint(
            f"stream {g.stream!r} has no restore point at or before {when}; the oldest is {oldest.describe()}",
            subject=g.stream,
        )
    path, brk = g.path(c)
    if brk is not None:
        raise _refuse(g, c, brk, f"{setting('at', when)}")
    # The messages stored between c's capture and t are in the capture after c: its link to c must hold.
    children = g.children.get(c.id, [])
    good = [k for k in children if g.link(k) is None]
    if good:
        d = min(good, key=lambda p: (p.captured_ns, p.last_seq, p.id))
        return ChainPlan((*path, d), c, c.last_seq, d.last_seq, at_ns=t)
    # A later capture of the chain that does not restore and starts after c: it descends from a child of c that
    # is gone, so the messages between c and t may be in the missing range.
    orphans = [
        p
        for p in g.mates.get(c.chain, [])
        if p.first_seq > c.last_seq and p.captured_ns > c.captured_ns and not g.sound(p)
    ]
    # At c's capture instant exactly, nothing after c can be needed.
    if (children or orphans) and t > c.captured_ns:
        k = children[0] if children else min(orphans, key=lambda p: (p.first_seq, p.captured_ns, p.id))
        brk = g.link(k) if children else g.path(k)[1]
        assert brk is not None
        raise _refuse(g, k, brk, f"{setting('at', when)}")
    notes = ()
    if t > c.captured_ns:
        notes = (f"the newest restore point is {c.describe()}, before {when}: restored up to it",)
    return ChainPlan(path, c, c.last_seq, c.last_seq, notes=notes)


# -- merging ------------------------------------------------------------------------------------------------------


@dataclass
class MergeStats:
    """What :func:`merge_archives` wrote, complete once its output was read to the end."""

    messages: int = 0
    bytes: int = 0  # header + payload
    first_seq: int = 0
    last_seq: int = 0  # the last message written (the restored stream's last sequence is max(this, plan.last_seq))
    below_floor: int = 0  # messages the newest capture not after the target no longer had (limits, purges)
    after_cut: int = 0
    per_point: dict[str, int] = field(default_factory=dict)


def _clamp(c: Consumer, last_seq: int) -> Consumer:
    """The server's own bound for a consumer in a snapshot (``writeConsumerMsg``): stream sequences at most the
    last, pending and redelivered entries beyond it dropped, consumer sequences left as they are."""
    st = copy.deepcopy(c.state)  # the capture stays as read
    for key in ("delivered", "ack_floor"):
        pair = st.get(key)
        if isinstance(pair, dict) and int(pair.get("stream_seq", 0) or 0) > last_seq:
            pair["stream_seq"] = last_seq
    for key in ("pending", "redelivered"):
        entries = st.get(key)
        if isinstance(entries, dict):
            kept = {k: v for k, v in entries.items() if str(k).isdigit() and int(k) <= last_seq}
            if kept:
                st[key] = kept
            else:
                st.pop(key)
    return Consumer(c.name, c.config, st)


def merge_archives(
    plan: ChainPlan,
    archives: Sequence[Iterable[bytes]],
    *,
    stats: MergeStats | None = None,
    batch: int = 256 * 1024,
) -> Iterator[bytes]:
    """One NATSARC1 archive from the decoded archives of ``plan.path`` (``archives[i]`` for ``plan.path[i]``), in
    pieces of about ``batch`` bytes, read once each, one entry held at a time.

    The head comes from the capture ``plan.state_from``: its consumers (bounded by the cut) and its first sequence
    (messages below it were gone by then), with ``last_seq`` the plan's. Each archive contributes the sequences of
    its captured range; a message outside it is a :class:`ChainInconsistent` error. Messages keep their
    sequences, subjects, headers, payloads and timestamps; gaps stay gaps, which the server restores as deletes.
    The server reads ``first_seq``, ``last_seq``, ``consumer_count`` and ``bytes`` (a reservation) of the head; the
    other state fields are ``state_from``'s, as captured.
    """
    if len(archives) != len(plan.path):
        raise ValueError(f"merge_archives: {len(plan.path)} restore points but {len(archives)} archives")
    stats = stats if stats is not None else MergeStats()
    k = next(i for i, p in enumerate(plan.path) if p.id == plan.state_from.id)
    readers: dict[int, ArchiveReader] = {k: ArchiveReader(archives[k])}
    head = readers[k]
    floor = min(int(head.state.get("first_seq", 0) or 0), plan.last_seq + 1)
    state = dict(head.state)
    state.pop("deleted", None)
    state.pop("lost", None)
    state["first_seq"] = floor
    state["last_seq"] = plan.last_seq
    consumers = [_clamp(c, plan.last_seq) for c in head.consumers]
    buf: list[bytes] = [encode_head(state, consumers, plan.state_from.captured_ns)]
    have = len(buf[0])
    lower = 0  # sequences at or below this belong to earlier captures of the path
    done = False
    for i, point in enumerate(plan.path):
        reader = readers.pop(i, None) or ArchiveReader(archives[i])
        n = 0
        for m in reader.messages():
            seq = m.sequence
            if seq <= lower or seq > point.last_seq or (not point.is_base and seq < point.first_seq):
                raise ChainInconsistent(
                    f"stream {point.stream!r}: the archive of {point.describe()} holds sequence {seq}, outside the "
                    f"range it captured ({lower + 1}-{point.last_seq})",
                    subject=point.stream,
                )
            if done:  # read to the end all the same: a truncated archive must fail, not pass as a cut
                stats.after_cut += 1
                continue
            if seq < floor:
                stats.below_floor += 1
                continue
            if seq > plan.until_seq or (
                plan.at_ns is not None and seq > plan.state_from.last_seq and m.timestamp > plan.at_ns
            ):
                stats.after_cut += 1
                done = True
                continue
            piece = encode_entry(m.subject, m.timestamp, seq, m.header, m.data)
            buf.append(piece)
            have += len(piece)
            n += 1
            stats.messages += 1
            stats.bytes += m.size
            stats.first_seq = stats.first_seq or seq
            stats.last_seq = seq
            if have >= batch:
                yield b"".join(buf)
                buf, have = [], 0
        stats.per_point[point.id] = n
        lower = point.last_seq
    buf.append(END_MARKER)
    yield b"".join(buf)
