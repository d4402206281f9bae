"""Make test streams with real content and read them back completely, through nats-py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import ServiceUnavailableError

from pipeline.jetstream.client import ConnectOptions, connect
from tests.settle import eventually

SUBJECTS = ("orders.eu.new", "orders.eu.paid", "orders.us.new", "orders.us.paid", "orders.ap.new", "audit.log")


@dataclass
class Filled:
    name: str
    messages: int
    deleted: list[int]


async def fill_stream(
    url: str,
    name: str = "ORDERS",
    messages: int = 50_000,
    *,
    storage: str = "file",
    replicas: int = 1,
    placement: dict | None = None,
    consumers: bool = True,
    deletes: tuple[int, ...] = (7, 8, 1000, 25_000),
    payload_size: int = 120,
) -> Filled:
    """Messages with headers on several subjects, interior deletes, and two durables with partial acks.

    ``billing`` (all subjects) acks the first third of the stream; ``eu-audit`` (filter ``orders.eu.>``) acks 300.
    """
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        cfg = StreamConfig(
            name=name,
            subjects=["orders.>", "audit.>"],
            storage=StorageType.MEMORY if storage == "memory" else StorageType.FILE,
            num_replicas=replicas,
        )
        if placement:
            from nats.js.api import Placement

            cfg.placement = Placement(cluster=placement.get("cluster"), tags=placement.get("tags"))
        await js.add_stream(cfg)
        pending = []
        for i in range(1, messages + 1):
            subject = SUBJECTS[i % len(SUBJECTS)]
            body = json.dumps({"id": i, "subject": subject, "pad": hashlib.sha256(str(i).encode()).hexdigest()})
            body = (body + " " * payload_size)[: max(payload_size, len(body))]
            pending.append(
                await js.publish_async(subject, body.encode(), headers={"Nats-Msg-Id": f"m{i}", "X-Index": str(i)})
            )
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        deleted = [d for d in deletes if d <= messages]
        for seq in deleted:
            await js.delete_msg(name, seq)
        if consumers:
            await js.add_consumer(
                name,
                ConsumerConfig(durable_name="billing", ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL),
            )
            await js.add_consumer(
                name,
                ConsumerConfig(durable_name="eu-audit", ack_policy=AckPolicy.EXPLICIT, filter_subject="orders.eu.>"),
            )
            for durable, n in (("billing", messages // 3), ("eu-audit", 300)):
                sub = await js.pull_subscribe_bind(durable, stream=name)
                left = n
                while left > 0:
                    for m in await sub.fetch(min(left, 500), timeout=10):
                        await m.ack()
                        left -= 1
                await nc.flush()
                for _ in range(200):  # acks are asynchronous: wait until the server has applied them all
                    if (await js.consumer_info(name, durable)).num_ack_pending == 0:
                        break
                    await asyncio.sleep(0.05)
        await nc.flush()
        return Filled(name, messages - len(deleted), deleted)
    finally:
        await nc.close()


async def stream_state(url: str, name: str) -> dict:
    """The comparable parts of stream state and of every consumer's position."""
    async with await connect(ConnectOptions(servers=url)) as js:
        info = await js.stream_info(name)
        assert info is not None, f"stream {name} not found"
        st = info["state"]
        out = {k: st.get(k, 0) for k in ("messages", "bytes", "first_seq", "last_seq", "num_deleted", "num_subjects")}
        out["consumers"] = {}
        for c in await js.consumers(name):
            out["consumers"][c["name"]] = {
                "ack_floor": c.get("ack_floor", {}).get("stream_seq", 0),
                "num_pending": c.get("num_pending"),
                "filter_subject": c.get("config", {}).get("filter_subject"),
            }
        out["_info"] = info
        return out


async def read_messages(url: str, name: str) -> list[tuple[int, str, dict | None, bytes]]:
    """Every stored message (sequence, subject, headers, payload) through an ordered consumer."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        info = await js.stream_info(name)
        want = info.state.messages
        out = []
        if want == 0:
            return out
        # A named consumer deleted afterwards, so reading leaves nothing behind that a backup would capture.
        reader = f"reader-{nc.new_inbox().rsplit('.', 1)[-1]}"
        await js.add_consumer(
            name,
            ConsumerConfig(
                name=reader, ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60
            ),
        )
        try:
            sub = await js.pull_subscribe_bind(reader, stream=name)
            # A replicated consumer just created may not have a leader yet: its first pulls answer 503 (G7).
            elected_by = time.monotonic() + 20.0
            while len(out) < want:
                try:
                    batch = await sub.fetch(min(1000, want - len(out)), timeout=10)
                except ServiceUnavailableError:
                    if time.monotonic() >= elected_by:
                        raise
                    await asyncio.sleep(0.2)
                    continue
                for m in batch:
                    hdrs = dict(m.headers or {})
                    out.append((m.metadata.sequence.stream, m.subject, hdrs or None, m.data))
            await sub.unsubscribe()
        finally:
            await js.delete_consumer(name, reader)
        return out
    finally:
        await nc.close()


def wait_consumers_settled(url: str, name: str, expected: dict, deadline_s: float = 15.0) -> dict:
    """Stream state once the consumers match ``expected`` (a clustered restore reports num_pending transiently wrong
    for a moment, gotcha G7); after the deadline, whatever the server says, for the caller's assertion to show."""
    return eventually(
        lambda: asyncio.run(stream_state(url, name)), lambda s: s["consumers"] == expected["consumers"], deadline_s
    )


def comparable(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "_info"}
