"""The sample stream `jsarchive demo` backs up: orders with headers, deletes and two consumers part-way through."""

from __future__ import annotations

import asyncio
import json

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

REGIONS = ("eu", "us", "ap")


async def fill_stream(url: str, stream: str, messages: int) -> None:
    """A stream with headers, several subjects, interior deletes and two consumers with partial acks."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=["orders.>"]))
        futs = []
        for i in range(1, messages + 1):
            region = REGIONS[i % len(REGIONS)]
            body = json.dumps({"id": i, "region": region, "amount": (i * 37) % 1000, "sku": f"SKU-{i % 97}"})
            futs.append(
                await js.publish_async(f"orders.{region}.{i % 10}", body.encode(), headers={"Order-Id": str(i)})
            )
            if len(futs) >= 512:
                await asyncio.gather(*futs)
                futs.clear()
        await asyncio.gather(*futs)
        for seq in (10, 11, 500, messages // 2):
            await js.delete_msg(stream, seq)
        await js.add_consumer(stream, ConsumerConfig(durable_name="billing", ack_policy=AckPolicy.EXPLICIT))
        await js.add_consumer(
            stream, ConsumerConfig(durable_name="eu-audit", ack_policy=AckPolicy.EXPLICIT, filter_subject="orders.eu.>")
        )
        for durable, subject, n in (("billing", "orders.>", messages // 3), ("eu-audit", "orders.eu.>", 200)):
            sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
            left = n
            while left > 0:
                batch = await sub.fetch(min(left, 256), timeout=5)
                for m in batch:
                    await m.ack()
                left -= len(batch)
        await nc.flush()
    finally:
        await nc.close()
