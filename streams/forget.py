"""`livepulse forget ATTENDEE_ID`: ask the workers to erase one person (docs/data-protection.md).

The request goes to every partition of the erasure topic, so whichever worker owns each partition -- now, or
after a restart or a rebalance -- erases what that partition holds; it is committed only once the erasure is
persisted (at-least-once), and repeating it is harmless.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import click
import orjson

from streams import kafka
from streams.settings import Settings


def erasure_request(attendee_id: str, event_ids: tuple[str, ...] = (), request_id: str | None = None,
                    now_ms: int | None = None) -> dict:
    request = {"request_id": request_id or f"forget-{uuid.uuid4()}", "attendee_id": attendee_id,
               "ts": now_ms if now_ms is not None else int(time.time() * 1000)}
    if event_ids:
        request["event_ids"] = sorted(set(event_ids))
    return request


async def send_erasure(settings: Settings, request: dict, timeout: float = 30.0) -> int:
    """Write `request` to every partition of the erasure topic (created like the worker does when missing);
    returns the number of partitions written."""
    from aiokafka import AIOKafkaProducer

    from streams.topics import topic_configs

    await kafka.wait_for_broker(settings, timeout=timeout)
    configs = topic_configs(settings)
    counts = await kafka.ensure_topics(settings, {settings.topic_interactions: settings.partitions}, configs=configs)
    n = counts[settings.topic_interactions]
    n = (await kafka.ensure_topics(settings, {settings.topic_erasure: n, settings.topic_leads: n},
                                   configs=configs))[settings.topic_erasure]
    producer = AIOKafkaProducer(**kafka.client_kwargs(settings), acks="all", enable_idempotence=False)
    await producer.start()
    try:
        key, value = request["attendee_id"].encode(), orjson.dumps(request)
        sent = [await producer.send(settings.topic_erasure, value, key=key, partition=p) for p in range(n)]
        # Versions before event_id/attendee_id lead keys keyed leads by attendee_id alone: tombstone that key too.
        sent.append(await producer.send(settings.topic_leads, None, key=key))
        await asyncio.wait_for(asyncio.gather(*sent), timeout)
    finally:
        await producer.stop()
    return n


@click.command("forget")
@click.argument("attendee_id")
@click.option("--event-id", "event_ids", multiple=True,
              help="Also delete this person's lead of this event (an event LivePulse no longer holds); repeatable.")
@click.option("--request-id", help="Names the request in the workers' logs and your records [a new uuid].")
@click.option("--broker", help="Bootstrap servers, kafka://host:port[,...] [env LIVEPULSE_BROKER].")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for Kafka.")
def forget_command(attendee_id: str, event_ids: tuple[str, ...], request_id: str | None, broker: str | None,
                   timeout: float) -> None:
    """Erase one attendee: from the workers' state, the changelog, livepulse.leads and the ROI figures.

    The workers erase the person when they read the request (at once if they are running, else when they start);
    see docs/data-protection.md for what is erased, and what stays until its topic's retention ends.
    """
    settings = Settings(**({"broker": broker} if broker else {}))
    request = erasure_request(attendee_id, event_ids, request_id)
    from streams.ingest.decode import Rejection, decode_erasure

    checked = decode_erasure(orjson.dumps(request), now_ms=request["ts"])
    if isinstance(checked, Rejection):
        raise click.BadParameter(checked.error)
    try:
        n = asyncio.run(send_erasure(settings, request, timeout))
    except kafka.KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"erasure request {request['request_id']} sent to {n} partitions of {settings.topic_erasure}")
