"""Send simulated Zoom webhook deliveries to an HTTP endpoint (the gateway's /webhooks/zoom), as Zoom would.

Each request is signed again when it goes out (the receiver rejects timestamps more than five minutes off its
clock); one request at a time, in delivery order. A 429 or 5xx answer is retried after its Retry-After (Zoom
retries a failed delivery too); any other non-2xx answer is counted and reported, never retried.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import IO

from streams.simulate.zoom import Delivery, sign

PROGRESS_EVERY_S = 5.0


async def post_deliveries(deliveries: Sequence[Delivery], url: str, secret: str, *, speed: float | None = None,
                          rate: float | None = None, attempts: int = 5, timeout_s: float = 10.0,
                          progress: IO[str] | None = sys.stderr) -> dict[int, int]:
    """POST every delivery; returns the count of final answers by HTTP status (0: no answer at all)."""
    import aiohttp

    statuses: dict[int, int] = {}
    anchor = min((d.ts for d in deliveries), default=0)
    started = last_report = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for n, d in enumerate(deliveries):
            if speed:
                delay = started + (d.ts - anchor) / 1000 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if rate:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            status = 0
            for attempt in range(attempts):
                headers = sign(d.body, int(time.time()), secret, d.headers.get("x-zm-trackingid", ""))
                wait = min(2.0 ** attempt, 30.0)
                try:
                    async with session.post(url, data=d.body, headers=headers) as response:
                        status = response.status
                        await response.read()
                        wait = _retry_after(response.headers.get("Retry-After"), wait)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    status = 0
                if status < 500 and status not in (0, 429):
                    break
                await asyncio.sleep(wait)
            statuses[status] = statuses.get(status, 0) + 1
            now = time.monotonic()
            if progress is not None and now - last_report >= PROGRESS_EVERY_S:
                print(f"posted {n + 1:,}/{len(deliveries):,} deliveries", file=progress, flush=True)
                last_report = now
    return statuses


def _retry_after(value: str | None, default: float) -> float:
    try:
        return min(max(float(value), 0.0), 60.0) if value is not None else default
    except ValueError:
        return default
