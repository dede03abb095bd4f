"""A consumer of m8's events outside m8, with a broker user of its own (docs/consumers.md).

    M8_CONSUMER_URL=amqp://m8-consumer-audit:PASSWORD@rabbitmq:5672/m8 python consumer.py

It binds its own queue to `m8.events` and prints a line per outcome. The operator made the
queue and the user (`python -m m8.messaging.users consumer audit`): it may bind and read
its queue, never declare or publish.
"""

import asyncio
import json
import os
import sys

import aio_pika

NAME = os.environ.get("M8_CONSUMER_NAME", "audit")
BINDINGS = ("secret.secret_stored.*", "secret.secret_upload_rejected.*")


async def main(url: str) -> None:
    async with await aio_pika.connect_robust(url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=20)
        queue = await channel.get_queue(f"consumer.{NAME}")  # the operator made it
        for key in BINDINGS:
            await queue.bind("m8.events", routing_key=key)
        print(f"listening on consumer.{NAME}", file=sys.stderr, flush=True)
        seen: set[str] = set()  # at least once: a real consumer keeps handled ids durably
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():  # acked once handled; requeued if it raises
                    if message.message_id in seen:
                        continue
                    event = json.loads(message.body)
                    data = event["data"]
                    print(event["event_type"], data["store"], data["path"], flush=True)
                    seen.add(str(message.message_id))


if __name__ == "__main__":
    asyncio.run(main(os.environ["M8_CONSUMER_URL"]))
