"""After a restore's last chunk: wait until the restored stream is healthy, then judge its state against the backup's.

Healthy is a leader, current replicas, a last sequence at least the backup's and the consumers back
(:func:`await_healthy`, a poll of STREAM.INFO and CONSUMER.NAMES). The judgement (:func:`compare_state`) fails only on
real loss and warns about what the server is documented to change on a restore: messages its config lets it drop
(TTLs, max_age, schedules, retention, limits) and messages that arrived since (mirrors, sources, schedules).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pipeline.base.errors import IntegrityError, JsArchiveError, ServerRefused, TransferFailed
from pipeline.base.retry import until
from pipeline.format.snapshot import V2, format_for_version
from pipeline.jetstream.client import JetStream

HEALTH_POLL_PAUSE = 0.25  # between looks at a restored stream that is not healthy yet


def archive_state(body: dict) -> dict:
    """What a restore of this backup must give back: what its archive was counted to hold (``held``, backups
    from this version on), else the state the server announced when the snapshot started."""
    held = body.get("held")
    if isinstance(held, dict) and all(isinstance(held.get(k), int) for k in ("messages", "first_seq", "last_seq")):
        return {k: held[k] for k in ("messages", "first_seq", "last_seq")}
    return body.get("state") or {}


# -- healthy -----------------------------------------------------------------------------------------------------


@dataclass
class _Look:
    """One look at the restored stream: its info once healthy, else why not yet (and in ``behind`` its info, when
    what is missing is the end of the backup's sequences)."""

    info: dict | None = None
    why: str = ""
    behind: dict | None = None


async def await_healthy(
    js: JetStream, stream: str, expected: dict, expected_consumers: int, wait: float
) -> tuple[dict, list[str]]:
    """Poll until leader, current replicas, consumers and state are there; then compare state with the backup."""
    until_healthy = until(lambda look: look.info is not None, pause=HEALTH_POLL_PAUSE, budget=wait)
    look: _Look = await until_healthy(_look, js, stream, expected, expected_consumers)
    if look.info is None:
        if look.behind is not None:  # it had its time to catch up: the sequences are lost, say so
            compare_state(stream, expected, look.behind.get("state") or {}, config=look.behind.get("config") or {})
        raise TransferFailed(f"restored stream {stream!r} did not become healthy within {wait:g} s: {look.why}")
    cfg = look.info.get("config") or {}  # the restored config: its limits are what apply now
    notes = _sourcing_notes(js, stream, cfg)
    return look.info, compare_state(stream, expected, look.info.get("state") or {}, config=cfg) + notes


async def _look(js: JetStream, stream: str, expected: dict, expected_consumers: int) -> _Look:
    # both asked at once: one round trip per poll (the consumers are only counted once the stream is healthy)
    info, names_or = await asyncio.gather(
        js.stream_info(stream, timeout=5.0), js.consumer_names(stream, timeout=5.0), return_exceptions=True
    )
    if isinstance(info, (TransferFailed, ServerRefused)):  # no leader to answer yet, or a timeout
        return _Look(why=str(info))
    if isinstance(info, BaseException):
        raise info
    if info is None:
        return _Look(why="the stream is not there")
    lag = _replication_lag(info.get("cluster"))
    if lag:
        return _Look(why=lag)
    st = info.get("state") or {}
    if int(st.get("last_seq", 0)) < int(expected.get("last_seq", 0)):
        why = f"last sequence {st.get('last_seq')} is below the backup's {expected.get('last_seq')}"
        return _Look(why=why, behind=info)
    names = _consumer_names(names_or)
    if len(names) < expected_consumers:
        return _Look(why=f"{len(names)} of {expected_consumers} consumers are back")
    info["_consumers"] = names
    return _Look(info=info)


def _replication_lag(cluster: dict | None) -> str:
    """Why a clustered stream cannot answer for its data yet; empty once it has a leader and current replicas."""
    if cluster is None:
        return ""
    if not cluster.get("leader"):
        return "the stream has no leader yet"
    lagging = [r.get("name") for r in cluster.get("replicas") or [] if not r.get("current")]
    return f"replicas {', '.join(map(str, lagging))} are not current yet" if lagging else ""


def _consumer_names(names_or: list[str] | BaseException) -> list[str]:
    """The consumers CONSUMER.NAMES listed; none while the API does not answer for them."""
    if isinstance(names_or, JsArchiveError):
        return []
    if isinstance(names_or, BaseException):
        raise names_or
    return names_or


def _sourcing_notes(js: JetStream, stream: str, config: dict) -> list[str]:
    """A restored stream that sources without a durable consumer may take its origins again from the start.

    nats-server 2.15 stamps sourced messages with the origin stream's identity, and a restored or re-created
    origin is a new identity: the restored stream then sources it again from its first message (seen on 2.15.1;
    2.14 resumes from the last sourced sequence). Durable sourcing (``sources[].consumer``) resumes where its
    consumer on the origin stands.
    """
    plain = [s.get("name") for s in config.get("sources") or [] if not s.get("consumer")]
    if not plain or format_for_version(js.server_info().version_tuple) != V2:
        return []
    names = ", ".join(map(repr, plain))
    return [
        f"stream {stream!r} sources {names} without a durable consumer: nats-server {js.server_info().version} "
        "sources an origin that is not the very stream the backup sourced from (a restored origin counts as new) "
        "again from its first message, so expect duplicates from it; durable sourcing (sources[].consumer) resumes "
        "where its consumer stands"
    ]


# -- the state against the backup's --------------------------------------------------------------------------------


@dataclass
class _Diff:
    """A restored stream's state beside its backup's, and what its config lets the server drop."""

    stream: str
    expected: dict
    actual: dict
    config: dict
    grew: bool = False  # its last sequence is past the backup's
    reasons: list[str] = field(default_factory=list)  # what may have dropped messages (see _drop_reasons)

    def pair(self, key: str) -> tuple[int, int] | None:
        """(the backup's, the restored) value of ``key``; None when the backup's state does not have it."""
        return (int(self.expected.get(key) or 0), int(self.actual.get(key) or 0)) if key in self.expected else None

    def lost(self, what: str) -> IntegrityError:
        return IntegrityError(f"restored stream {self.stream!r} differs from the backup: {what}")

    @property
    def dropped(self) -> str:
        return f"dropped by the server on restore ({'; '.join(self.reasons)})"


def compare_state(stream: str, expected: dict, actual: dict, *, config: dict | None = None) -> list[str]:
    """Fail only on real loss; warn about the differences the server is documented to make on a restore.

    Real loss is a last sequence below the backup's, or fewer messages or subjects (or a first sequence further
    on) than the backup held where nothing in the restored ``config`` lets the server drop messages: an expired
    ``Nats-TTL``, ``max_age``, a fired schedule, interest/work-queue retention, or a count/size limit the stream
    was over or grew past. Keys missing from ``expected`` are not compared. ``num_deleted`` only ever warns: it
    follows from the other three (gaps between first and last), which are checked. A higher last_seq alone says
    nothing (trailing deleted sequences are restored as such, and a counted ``expected`` ends at the last message).
    """
    d = _Diff(stream, expected, actual, config or {})
    last = d.pair("last_seq")
    if last and last[1] < last[0]:
        raise d.lost(f"last_seq is {last[1]}, expected {last[0]} (sequences would be reused)")
    d.grew = bool(last and last[1] > last[0])
    d.reasons = _drop_reasons(d.config, expected, d.grew)
    # in this order: the first loss found is the one reported
    return [*_messages(d, last), *_first_seq(d, last), *_subjects(d), *_deleted(d)]


def _messages(d: _Diff, last: tuple[int, int] | None) -> list[str]:
    msgs = d.pair("messages")
    if not msgs:
        return [f"last_seq is {last[1]}, the backup's was {last[0]} ({_growth(d.config)})"] if d.grew and last else []
    held, now = msgs
    if now > held:
        return [f"messages is {now}, the backup held {held} ({_growth(d.config)})"]
    if now == held:
        return []
    if not d.reasons:
        raise d.lost(f"messages is {now}, expected {held}")
    return [f"messages is {now}, the backup held {held}: {held - now} {d.dropped}"]


def _first_seq(d: _Diff, last: tuple[int, int] | None) -> list[str]:
    first = d.pair("first_seq")
    if not first or first[1] == first[0]:
        return []
    was, now = first
    if was == 0 and (not last or last[0] == 0):
        # The backup held no message, so nothing can be missing. A stream that never held one restores on 2.15
        # as first_seq 1 where its snapshot said 0; any other first_seq is the position the snapshot's own
        # state put it at (a purged stream, when ``expected`` is what the archive was counted to hold).
        if now == 1 and int(d.actual.get("last_seq") or 0) == 0:
            return ["first_seq is 1, the backup's was 0 (an empty stream; nothing is missing)"]
        return []
    if now < was:
        return [f"first_seq is {now}, the backup's was {was} (nothing before it is missing)"]
    if d.reasons:
        return [f"first_seq is {now}, the backup's was {was}: the first messages were {d.dropped}"]
    raise d.lost(f"first_seq is {now}, expected {was} (the first messages are missing)")


def _subjects(d: _Diff) -> list[str]:
    subjects = d.pair("num_subjects")
    if not subjects or subjects[1] == subjects[0]:
        return []
    had, now = subjects
    if now > had:
        return [f"num_subjects is {now}, the backup had {had} ({_growth(d.config)})"]
    if not d.reasons:
        raise d.lost(f"num_subjects is {now}, expected {had}")
    return [f"num_subjects is {now}, the backup had {had}: their messages were {d.dropped}"]


def _deleted(d: _Diff) -> list[str]:
    deleted = d.pair("num_deleted")
    if not deleted or deleted[1] == deleted[0]:
        return []
    return [
        f"num_deleted is {deleted[1]}, the backup had {deleted[0]} (interior gaps move when messages expire, "
        "are dropped or added; the messages themselves were checked)"
    ]


def _drop_reasons(config: dict, expected: dict, grew: bool) -> list[str]:
    """What the restored config lets the server drop on or right after a restore, as phrases for a warning."""
    reasons = []
    if config.get("allow_msg_ttl"):
        reasons.append("messages whose Nats-TTL had expired")
    if int(config.get("max_age") or 0) > 0:
        reasons.append(f"max_age {int(config['max_age']) / 1e9:g} s")
    if config.get("allow_msg_schedules"):
        reasons.append("schedules that fired")
    if config.get("retention") in ("interest", "workqueue"):
        reasons.append(f"{config['retention']} retention")
    # A limit explains a drop when the backup was over it, or when messages arriving since (a mirror or a source
    # pulling from its origin) pushed old ones out.
    want_msgs, want_subjects = int(expected.get("messages") or 0), int(expected.get("num_subjects") or 0)
    for key, held in (
        ("max_msgs", want_msgs),
        ("max_bytes", int(expected.get("bytes") or 0)),
        ("max_msgs_per_subject", want_msgs // max(1, want_subjects)),
    ):
        limit = int(config.get(key) or 0)
        if limit > 0 and (grew or held > limit):
            reasons.append(f"{key} {limit}")
    return reasons


def _growth(config: dict) -> str:
    """Why a restored stream may hold more than its backup."""
    if config.get("mirror"):
        return f"pulled from its origin {config['mirror'].get('name')!r} since the restore"
    if config.get("sources"):
        names = ", ".join(repr(s.get("name")) for s in config["sources"])
        return f"sourced from {names} since the restore"
    if config.get("allow_msg_schedules"):
        return "schedules fired since the restore"
    if int(config.get("subject_delete_marker_ttl") or 0) > 0:
        return "subject delete markers for expired messages"
    return "messages added while the backup ran, or published since the restore"
