"""The account as the server sees it: which account this is, and its streams with their sizes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from pipeline.jetstream.client import ConnectOptions, JetStream
from pipeline.jetstream.client import connect as connect_js


@dataclass
class PlannedStream:
    name: str
    storage: str
    replicas: int
    messages: int
    bytes: int
    consumers: int

    def to_json(self) -> dict:
        return asdict(self)


async def account_identity(js: JetStream, connect_opts: ConnectOptions) -> dict:
    """Which account this is: its name (from ``$SYS.REQ.USER.INFO``, answered for any user) and the server."""
    name = None
    try:
        msg = await js.nc.request("$SYS.REQ.USER.INFO", b"", timeout=2.0)
        data = json.loads(msg.data or b"{}").get("data") or {}
        name = data.get("account_name") or data.get("account")
    except Exception:  # noqa: BLE001 - old servers or restricted users: the name is informational only
        name = None
    server = js.server_info()
    return {
        "name": name,
        "domain": connect_opts.js_domain,
        "server": {"version": server.version, "name": server.name, "cluster": server.cluster},
    }


async def list_account(js: JetStream) -> tuple[list[PlannedStream], list[str]]:
    """Every stream with its size, plus the streams the server lists but cannot describe (offline, no quorum)."""
    out: list[PlannedStream] = []
    missing: set[str] = set()
    offset = 0
    while True:
        resp = await js.api("STREAM.LIST", {"offset": offset}, timeout=30.0)
        page = resp.get("streams") or []
        for info in page:
            cfg = info.get("config") or {}
            st = info.get("state") or {}
            out.append(
                PlannedStream(
                    name=str(cfg.get("name")),
                    storage=str(cfg.get("storage", "file")),
                    replicas=int(cfg.get("num_replicas", 1) or 1),
                    messages=int(st.get("messages", 0)),
                    bytes=int(st.get("bytes", 0)),
                    consumers=int(st.get("consumer_count", 0)),
                )
            )
        missing.update(resp.get("missing") or [])
        missing.update((resp.get("offline") or {}).keys())  # 2.11+: name → reason
        offset += len(page)
        if not page or offset >= int(resp.get("total", 0)):
            break
    known = {p.name for p in out}
    return sorted(out, key=lambda p: p.name), sorted(missing - known)


async def connection_account(connect: ConnectOptions) -> str | None:
    """The account a connection with ``connect`` is in, or None where the server does not say."""
    async with await connect_js(connect) as js:
        return (await account_identity(js, connect.resolved())).get("name")
