"""The whole loop on two embedded nats-servers and a local-directory archive: `jsarchive demo`."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.base.progress import Progress
from pipeline.flows.backup import BackupOptions, BackupResult, backup_stream_async
from pipeline.flows.restore import RestoreOptions, RestoreResult, restore_stream_async
from pipeline.jetstream.client import ConnectOptions, connect
from pipeline.jetstream.embedded import EmbeddedServer, ServerSpec
from pipeline.jetstream.sample import fill_stream
from pipeline.keys.keyring import KeyRing, generate_identity

STREAM = "ORDERS"


@dataclass
class DemoResult:
    archive: str
    key_file: str
    backup: BackupResult
    restore: RestoreResult
    source: dict
    target: dict
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return all(a == b for _, a, b in self.rows)


async def describe(url: str) -> dict:
    """Stream state and consumer positions, straight from the JetStream API."""
    async with await connect(ConnectOptions(servers=url)) as js:
        s = (await js.stream_info(STREAM) or {}).get("state") or {}
        out = {
            k: int(s.get(k) or 0) for k in ("messages", "bytes", "first_seq", "last_seq", "num_deleted", "num_subjects")
        }
        for c in ("billing", "eu-audit"):
            ci = await js.api(f"CONSUMER.INFO.{STREAM}.{c}", stream=STREAM)
            out[f"{c} ack floor"] = int((ci.get("ack_floor") or {}).get("stream_seq", 0))
            out[f"{c} pending"] = int(ci.get("num_pending", 0))
        return out


async def run_demo(
    workdir: str | os.PathLike[str] = "jsarchive-demo",
    messages: int = 5000,
    progress: Progress | None = None,
    say=print,
) -> DemoResult:
    root = Path(workdir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "archive"
    key_file = root / "demo.key"
    if not key_file.exists():
        ident, public = generate_identity()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"# jsarchive demo key\n# public key: {public}\n{ident}\n")
    keys = KeyRing.load(identity_files=[str(key_file)], use_env=False)

    source = EmbeddedServer(ServerSpec(name="demo-source"))
    target = EmbeddedServer(ServerSpec(name="demo-target"))
    try:
        for s in (source, target):
            s.start()
        for s in (source, target):
            await asyncio.to_thread(s.wait_ready)
        say(f"started nats-server {source.varz().get('version')} twice: source {source.url}, target {target.url}")
        await fill_stream(source.url, STREAM, messages)
        before = await describe(source.url)
        say(f"filled stream {STREAM}: {before['messages']} messages, 2 consumers")
        b = await backup_stream_async(
            BackupOptions(stream=STREAM, url=str(archive), connect=ConnectOptions(servers=source.url), keys=keys),
            progress,
        )
        say(f"backed up to {archive} as {b.manifest_id[:12]} ({b.stored_bytes} bytes stored, encrypted)")
        r = await restore_stream_async(
            RestoreOptions(url=str(archive), stream=STREAM, connect=ConnectOptions(servers=target.url), keys=keys),
            progress,
        )
        after = await describe(target.url)
        rows = [(k, str(before[k]), str(after.get(k))) for k in before]
        return DemoResult(str(archive), str(key_file), b, r, before, after, rows)
    finally:
        for s in (source, target):
            s.cleanup()
