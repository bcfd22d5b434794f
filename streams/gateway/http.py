"""Request plumbing shared by the routes: the application's keys, bounded body reading, producing with 503s."""

from __future__ import annotations

import asyncio

from aiohttp import web

from streams.gateway.errors import Refused
from streams.gateway.metrics import GatewayMetrics
from streams.gateway.producer import Producer, Unavailable
from streams.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
PRODUCER = web.AppKey("producer", Producer)
METRICS = web.AppKey("metrics", GatewayMetrics)


class BodyBudget:
    """Bytes of request bodies held at once, over all requests: receiving is refused beyond the cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int, retry_after: int) -> None:
        if self.used + size > self.limit:
            raise Refused(503, "overloaded", "too many request bodies are being received; retry later",
                          {"Retry-After": str(retry_after)})
        self.used += size

    def give_back(self, size: int) -> None:
        self.used -= size


BUDGET = web.AppKey("body_budget", BodyBudget)


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body, refused as too_large beyond `limit` bytes (before reading it when the length is declared),
    as slow_body when the client takes longer than `timeout` to send it, and as overloaded when the bodies being
    received by all requests would pass gateway_max_buffered_bytes. The budget is held until the answer."""
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, "too_large", f"the body is {request.content_length} bytes, more than the {limit} allowed")
    budget, retry = request.app[BUDGET], request.app[SETTINGS].gateway_retry_after_s
    held = request.get("budget_held", 0)
    if request.content_length:
        budget.take(request.content_length, retry)
        held += request.content_length
        request["budget_held"] = held
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, "too_large", f"the body is more than the {limit} bytes allowed")
                if size > held:  # no declared length (chunked): take the budget as the bytes come
                    budget.take(size - held, retry)
                    held = request["budget_held"] = size
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(408, "slow_body", f"the body was not sent within {timeout:g} s") from None
    return b"".join(chunks)


def client_address(request: web.Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded.strip():
            return forwarded.rsplit(",", 1)[-1].strip()[:64]
    return request.remote or "unknown"


async def produce(request: web.Request, records: list[tuple[str, bytes, bytes]]) -> None:
    try:
        await request.app[PRODUCER].send(records)
    except Unavailable as exc:
        retry = str(request.app[SETTINGS].gateway_retry_after_s)
        raise Refused(503, exc.reason, exc.error, {"Retry-After": retry}) from None
