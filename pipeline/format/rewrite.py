"""Partial and renamed restores of V2 backups: rewrite the NATSARC1 archive, then re-frame it for the server.

Pure functions over archive entries (:mod:`pipeline.format.natsarc`), used by :mod:`pipeline.flows.restore` in "rewrite
mode"
(``--as``, ``--subject-map``, ``--subject``, ``--until-seq``, ``--until``):

* :func:`plan_rewrite` reads the decoded archive once (pass 1): it finds the cut, checks that every message
  subject, configured subject and consumer filter maps, and computes the rewritten stream state, config and
  consumers;
* :func:`rewrite_archive` reads it again (pass 2) and yields the rewritten archive bytes: the new ``state.json``,
  the clamped consumers, the kept messages (same sequences: a dropped message becomes a gap, which the server
  restores as a delete) and the end marker;
then :func:`pipeline.format.s2.snappy_framed` (re-exported here) frames the result as Snappy (``sNaPpY``, uncompressed
0x01 chunks of at most 64 KiB, each with its masked CRC-32C), which the server's restore reader accepts (protocol notes
§4.2). The archive comes from :func:`pipeline.format.payload.decoded`, whichever way the backup stored it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pipeline.base.errors import UsageError, setting
from pipeline.format.natsarc import (
    CONSUMER_PREFIX,
    END_MARKER,
    MAGIC,
    STATE_ENTRY,
    Entry,
    encode_entry,
    entry_json,
    iter_entries,
)
from pipeline.format.s2 import snappy_framed  # noqa: F401 - re-exported: where rewritten archives get their framing
from pipeline.format.selection import MessageFilter, check_subject_filter, format_ns, subject_matches

# -- subject mapping ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectMapping:
    """``SRC=DST``: ``*`` and ``>`` in SRC capture tokens; DST must use the same wildcards in the same order."""

    src: tuple[str, ...]
    dst: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> SubjectMapping:
        src, sep, dst = text.partition("=")
        if not sep:
            raise UsageError(f"{setting('subject-map')} {text!r}: use SRC=DST, e.g. 'ORDERS.>=DRILL.ORDERS.>'")
        s, d = check_subject_filter(src.strip()), check_subject_filter(dst.strip())
        if [t for t in s if t in ("*", ">")] != [t for t in d if t in ("*", ">")]:
            raise UsageError(
                f"{setting('subject-map')} {text!r}: the destination must "
                "have the same wildcards ('*', '>') in the same order "
                "as the source"
            )
        return cls(tuple(s), tuple(d))

    def apply(self, tokens: list[str]) -> list[str] | None:
        """The mapped tokens, or None if ``tokens`` (a subject, or a filter taken literally) is not all in SRC."""
        caps: list[list[str]] = []
        for i, p in enumerate(self.src):
            if p == ">":
                if len(tokens) <= i:
                    return None
                caps.append(tokens[i:])
                break
            if i >= len(tokens):
                return None
            if p == "*":
                if tokens[i] == ">":  # a filter's '>' is wider than one token
                    return None
                caps.append([tokens[i]])
            elif p != tokens[i]:
                return None
        else:
            if len(tokens) != len(self.src):
                return None
        out: list[str] = []
        k = 0
        for p in self.dst:
            if p in ("*", ">"):
                out.extend(caps[k])
                k += 1
            else:
                out.append(p)
        return out


@dataclass
class SubjectMap:
    """Ordered ``SRC=DST`` mappings: the first whose SRC covers a subject (or filter) maps it."""

    mappings: list[SubjectMapping] = field(default_factory=list)
    _cache: dict[str, str | None] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, texts: Iterable[str]) -> SubjectMap:
        return cls([SubjectMapping.parse(t) for t in texts])

    def __bool__(self) -> bool:
        return bool(self.mappings)

    def map(self, subject: str) -> str | None:
        """The mapped subject or filter; itself without mappings; None if no mapping covers it."""
        if not self.mappings:
            return subject
        hit = self._cache.get(subject, "")
        if hit == "":
            hit = None
            tokens = subject.split(".")
            for m in self.mappings:
                out = m.apply(tokens)
                if out is not None:
                    hit = ".".join(out)
                    break
            if len(self._cache) < 100_000:
                self._cache[subject] = hit
        return hit

    def describe(self) -> str:
        return ", ".join(f"{'.'.join(m.src)}={'.'.join(m.dst)}" for m in self.mappings)


def filters_overlap(a: str, b: str) -> bool:
    """Whether two subject filters can match a common subject."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        if i >= len(ta) or i >= len(tb):
            return False
        x, y = ta[i], tb[i]
        if x == ">" or y == ">":
            return True
        if x != y and x != "*" and y != "*":
            return False
    return True


# -- the spec and the plan ----------------------------------------------------------------------------------------


@dataclass
class RewriteSpec:
    """What to change. Subject filters and the time cut apply to the original subjects and timestamps."""

    new_name: str | None = None
    subject_map: SubjectMap = field(default_factory=SubjectMap)
    subjects: tuple[str, ...] = ()  # keep only messages matching any of these (before mapping)
    until_seq: int | None = None  # keep sequences <= this
    until_ns: int | None = None  # keep messages before this time (ns since the epoch, exclusive)

    def __post_init__(self) -> None:
        if self.until_seq is not None and self.until_seq < 1:
            raise UsageError(f"{setting('until-seq')} must be at least 1, not {self.until_seq}")
        self._filter = MessageFilter(subjects=tuple(self.subjects))

    @property
    def active(self) -> bool:
        return bool(
            self.new_name
            or self.subject_map
            or self.subjects
            or self.until_seq is not None
            or self.until_ns is not None
        )

    def keep_subject(self, subject: str) -> bool:
        return self._filter.subject_ok(subject)


def _consumer_filters(config: dict) -> list[str]:
    out = list(config.get("filter_subjects") or [])
    if config.get("filter_subject"):
        out.insert(0, config["filter_subject"])
    return out


@dataclass
class _ConsumerCount:
    """Messages a consumer's filter matches beyond the cut, up to its delivered and ack-floor stream sequences."""

    filters: list[str]
    delivered_seq: int
    floor_seq: int
    past_delivered: int = 0
    past_floor: int = 0


@dataclass
class RewritePlan:
    """The outcome of pass 1: everything pass 2 writes before the messages, and the expected final state."""

    spec: RewriteSpec
    cut: int  # the last sequence kept (messages above it are dropped)
    state: dict  # the rewritten state.json
    config: dict  # the rewritten stream config
    consumers: dict[str, dict]  # name -> rewritten {"config", "state"}
    messages: int
    dropped: int  # messages removed by the filter and the cut

    def expected_state(self) -> dict:
        """What the restored stream's state should be (the keys restore compares)."""
        return {k: self.state[k] for k in ("messages", "first_seq", "last_seq", "num_subjects", "num_deleted")}


def _mapped(smap: SubjectMap, subject: str, what: str) -> str:
    out = smap.map(subject)
    if out is None:
        raise UsageError(
            f"{what} {subject!r} is not covered by any {setting('subject-map')} "
            f"({smap.describe()}); every message subject, "
            "stream subject and consumer filter must map"
        )
    return out


def _store_size(subject: str, header: bytes, payload: bytes) -> int:
    """The file store's size of one message (an upper bound of the memory store's)."""
    if header:
        return 22 + len(subject) + 4 + len(header) + len(payload) + 8
    return 22 + len(subject) + len(payload) + 8


def _clamp_consumer(state: dict, cut: int, count: _ConsumerCount) -> dict:
    st = json.loads(json.dumps(state))  # a deep copy
    delivered = st.setdefault("delivered", {})
    floor = st.setdefault("ack_floor", {})
    ds, dc = int(delivered.get("stream_seq", 0) or 0), int(delivered.get("consumer_seq", 0) or 0)
    fs, fc = int(floor.get("stream_seq", 0) or 0), int(floor.get("consumer_seq", 0) or 0)
    if ds > cut:
        delivered["stream_seq"] = cut
        delivered["consumer_seq"] = max(0, dc - count.past_delivered)
    if fs > cut:
        floor["stream_seq"] = cut
        floor["consumer_seq"] = max(0, fc - count.past_floor)
    floor["consumer_seq"] = min(int(floor.get("consumer_seq", 0)), int(delivered.get("consumer_seq", 0)))
    for key in ("pending", "redelivered"):
        entries = st.get(key)
        if entries:
            kept = {k: v for k, v in entries.items() if int(k) <= cut}
            st[key] = kept or None
            if not kept:
                st.pop(key)
    return st


def plan_rewrite(blocks: Iterable[bytes], config: dict, spec: RewriteSpec) -> RewritePlan:
    """Pass 1 over the decoded archive (``blocks``): find the cut, check the mappings, compute state and consumers."""
    seen = _Pass1(spec)
    for e in iter_entries(blocks):
        if e.sequence:
            seen.message(e)
        elif e.name == STATE_ENTRY:
            seen.state = entry_json(e)
        elif e.name.startswith(CONSUMER_PREFIX):
            seen.consumer(e.name[len(CONSUMER_PREFIX) :], entry_json(e))
    # Entries a client appended after the server's own (a backup's catch-up read, a merged chain's messages after
    # its head's point) extend the archive past its state.json's last_seq.
    orig_last = max(int(seen.state.get("last_seq", 0) or 0), seen.max_seq)
    cut = orig_last if seen.cut is None or seen.cut > orig_last else seen.cut
    consumers = _rewritten_consumers(seen, cut)
    new_state = seen.new_state(cut)
    new_state["consumer_count"] = len(consumers)
    return RewritePlan(spec, cut, new_state, _rewritten_config(config, spec), consumers, seen.kept, seen.dropped)


class _Pass1:
    """What pass 1 learns from the archive's entries, in order: the state, the consumers, the kept messages."""

    def __init__(self, spec: RewriteSpec) -> None:
        self.spec = spec
        self.state: dict = {}
        self.raw_consumers: dict[str, dict] = {}
        self.counts: dict[str, _ConsumerCount] = {}
        self.cut: int | None = spec.until_seq
        self.last_kept_any = 0  # the last message sequence before the time cut (any subject)
        self.kept = self.size = self.dropped = 0
        self.max_seq = 0  # the highest message sequence in the archive
        self.first_seq = self.first_ts = self.last_ts = 0
        self.subjects: set[str] = set()

    def consumer(self, name: str, obj: dict) -> None:
        self.raw_consumers[name] = obj
        cst = obj.get("state") or {}
        self.counts[name] = _ConsumerCount(
            filters=_consumer_filters(obj.get("config") or {}),
            delivered_seq=int((cst.get("delivered") or {}).get("stream_seq", 0) or 0),
            floor_seq=int((cst.get("ack_floor") or {}).get("stream_seq", 0) or 0),
        )

    def message(self, e: Entry) -> None:
        seq, spec = e.sequence, self.spec
        self.max_seq = max(self.max_seq, seq)
        if self.cut is None and spec.until_ns is not None and e.timestamp >= spec.until_ns:
            self.cut = self.last_kept_any
        if self.cut is not None and seq > self.cut:
            self.dropped += 1
            self._count_cut(seq, e.name)
            return
        self.last_kept_any = seq
        if not spec.keep_subject(e.name):
            self.dropped += 1
            return
        new_subject = _mapped(spec.subject_map, e.name, "message subject")
        self.kept += 1
        self.size += _store_size(new_subject, e.header, e.payload)
        if not self.first_seq:
            self.first_seq, self.first_ts = seq, e.timestamp
        self.last_ts = e.timestamp
        self.subjects.add(new_subject)

    def _count_cut(self, seq: int, subject: str) -> None:
        """A message past the cut that a consumer had delivered or acknowledged: its positions move back."""
        for c in self.counts.values():
            if c.filters and not any(subject_matches(f, subject) for f in c.filters):
                continue
            if seq <= c.delivered_seq:
                c.past_delivered += 1
            if seq <= c.floor_seq:
                c.past_floor += 1

    def new_state(self, cut: int) -> dict:
        st = dict(self.state)
        st.update(last_seq=cut, messages=self.kept, bytes=self.size, num_subjects=len(self.subjects))
        if self.kept:
            st["first_seq"] = self.first_seq
            st["num_deleted"] = cut - self.first_seq + 1 - self.kept
            st["first_ts"] = format_ns(self.first_ts)
            st["last_ts"] = format_ns(self.last_ts)
        else:
            st["first_seq"] = cut + 1
            st["num_deleted"] = 0
        st.pop("deleted", None)
        st.pop("lost", None)
        return st


def _rewritten_config(config: dict, spec: RewriteSpec) -> dict:
    new_config = dict(config)
    if spec.new_name:
        new_config["name"] = spec.new_name
    if spec.subject_map:
        new_config["subjects"] = [_mapped(spec.subject_map, s, "stream subject") for s in config.get("subjects") or []]
    return new_config


def _rewritten_consumers(seen: _Pass1, cut: int) -> dict[str, dict]:
    smap = seen.spec.subject_map
    consumers: dict[str, dict] = {}
    for name, obj in seen.raw_consumers.items():
        ccfg = dict(obj.get("config") or {})
        if smap:
            if ccfg.get("filter_subject"):
                ccfg["filter_subject"] = _mapped(smap, ccfg["filter_subject"], f"consumer {name!r} filter")
            if ccfg.get("filter_subjects"):
                ccfg["filter_subjects"] = [
                    _mapped(smap, f, f"consumer {name!r} filter") for f in ccfg["filter_subjects"]
                ]
        consumers[name] = {"config": ccfg, "state": _clamp_consumer(obj.get("state") or {}, cut, seen.counts[name])}
    return consumers


# -- pass 2: encode ------------------------------------------------------------------------------------------------


def rewrite_archive(blocks: Iterable[bytes], plan: RewritePlan, batch: int = 256 * 1024) -> Iterator[bytes]:
    """Pass 2: the rewritten NATSARC1 archive, in pieces of about ``batch`` bytes."""
    spec, smap = plan.spec, plan.spec.subject_map
    now = 0
    buf: list[bytes] = [MAGIC]
    have = len(MAGIC)
    wrote_meta = False

    def meta() -> list[bytes]:
        out = [encode_entry(STATE_ENTRY, now, 0, b"", json.dumps(plan.state).encode())]
        for name, obj in plan.consumers.items():
            out.append(encode_entry(CONSUMER_PREFIX + name, now, 0, b"", json.dumps(obj).encode()))
        return out

    for e in iter_entries(blocks):
        if not e.sequence:
            if e.name == STATE_ENTRY:
                now = e.timestamp
            continue
        if not wrote_meta:
            buf.extend(meta())
            wrote_meta = True
        if e.sequence > plan.cut:
            break
        if not spec.keep_subject(e.name):
            continue
        subject = _mapped(smap, e.name, "message subject")
        piece = encode_entry(subject, e.timestamp, e.sequence, e.header, e.payload)
        buf.append(piece)
        have += len(piece)
        if have >= batch:
            yield b"".join(buf)
            buf, have = [], 0
    if not wrote_meta:
        buf.extend(meta())
    buf.append(END_MARKER)
    yield b"".join(buf)
