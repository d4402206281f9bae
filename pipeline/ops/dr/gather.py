"""Every stream of the account with its STREAM.INFO answer, asked of a cluster that may have just lost servers."""

from __future__ import annotations

import asyncio

from pipeline.base.errors import NotFoundError, ServerRefused, TransferFailed
from pipeline.base.retry import until, within
from pipeline.jetstream.client import ApiError, JetStream, meta_unavailable

INFO_TIMEOUT = 3.0  # a stream leader election takes about 3 s; a stream that stays silent longer has no replica
INFO_PAUSE = 0.5  # between tries of STREAM.INFO on one stream
META_WAIT = 15.0  # how long a meta leader election may keep the JetStream API from answering


def _meta_unavailable(what: str) -> ServerRefused:
    return ServerRefused(
        f"JetStream did not answer {what}: the meta group may have lost quorum (every JetStream API call then "
        "answers 503 or times out); send $JS.API.META.RESCUE and peer-remove the lost servers through the system "
        "account, or restore into another deployment"
    )


async def _stream_list(js: JetStream) -> tuple[dict[str, dict], list[str]]:
    """STREAM.LIST: infos the meta leader could gather, and the names it lists as missing."""
    infos: dict[str, dict] = {}
    missing: list[str] = []
    offset = 0
    while True:
        resp = await js.api("STREAM.LIST", {"offset": offset}, timeout=10.0)
        page = resp.get("streams") or []
        for i in page:
            infos[i["config"]["name"]] = i
        missing += list(resp.get("missing") or [])
        offset += len(page)
        if not page or offset >= int(resp.get("total", 0)):
            return infos, missing


async def info_or_none(js: JetStream, stream: str, tries: int = 2, not_found: set[str] | None = None) -> dict | None:
    """STREAM.INFO; None when no replica answers within a leader election or two. A name that every try answered
    "not found" (rather than not at all) goes into ``not_found``: the meta group lists it, no server holds it."""
    answered_404 = True

    async def ask() -> dict | None:
        nonlocal answered_404
        try:
            return await js.stream_info(stream, timeout=INFO_TIMEOUT)
        except (TransferFailed, ServerRefused, ApiError):
            answered_404 = False
            return None

    info = await until(lambda i: i is not None, pause=INFO_PAUSE, tries=tries)(ask)
    if info is None and answered_404 and not_found is not None:
        not_found.add(stream)
    return info


async def gather_streams(
    js: JetStream,
    only: list[str] | None = None,
    *,
    known: set[str] | frozenset[str] = frozenset(),
    not_found: set[str] | None = None,
) -> dict[str, dict | None]:
    """Every stream name of the account with its info (None: nobody answered for it, or every answer was "not
    found": those names also go into ``not_found``). ``only`` may name a stream the account lacks if it is
    ``known`` (the archive has it: it may be missing)."""
    try:  # right after a server loss the meta group may be electing a leader for a few seconds
        async for attempt in within(META_WAIT, meta_unavailable):
            with attempt:
                names = await js.stream_names()
                listed, _missing = await _stream_list(js)
    except (TransferFailed, ServerRefused, ApiError) as e:
        if meta_unavailable(e):
            raise _meta_unavailable("STREAM.NAMES / STREAM.LIST") from None
        raise
    if only:
        unknown = sorted(set(only) - set(names) - set(known))
        if unknown:
            raise NotFoundError(f"no stream named {', '.join(unknown)} in this account")
        names = [n for n in names if n in only]
    out: dict[str, dict | None] = {n: listed.get(n) for n in names}
    pending = [n for n, i in out.items() if i is None]
    # A leaderless stream whose survivor answers STREAM.INFO directly is not in STREAM.LIST; ask each one.
    sem = asyncio.Semaphore(8)

    async def ask(n: str) -> None:
        async with sem:
            out[n] = await info_or_none(js, n, not_found=not_found)

    await asyncio.gather(*(ask(n) for n in pending))
    return out
