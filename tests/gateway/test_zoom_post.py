"""`livepulse simulate --as zoom-webhooks`: signed requests reach a real HTTP endpoint (an aiohttp server on
localhost that checks them as the gateway does), 503 answers are retried, and -o writes the same deliveries."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Self

import orjson
from aiohttp import web
from click.testing import CliRunner

from streams.gateway.zoom import ZoomRejected, map_delivery, verify
from streams.simulate.cli import simulate_command

SECRET = "post-secret"
ARGS = ["--seed", "6", "--registrants", "15", "--duration", "3m", "--as", "zoom-webhooks", "--zoom-secret", SECRET,
        "--retry-rate", "0.1"]


class Endpoint:
    """A Zoom webhook receiver on a free port, in a thread of its own; the first request gets a 503."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.rejected: list[str] = []
        self.answered_503 = 0
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(body, request.headers.get("x-zm-signature"), request.headers.get("x-zm-request-timestamp"),
                   [SECRET], now_s=time.time())
        except ZoomRejected as exc:
            self.rejected.append(exc.reason)
            return web.json_response({"reason": exc.reason}, status=401)
        if not self.answered_503:
            self.answered_503 += 1
            return web.Response(status=503, headers={"Retry-After": "0"})
        self.bodies.append(body)
        return web.Response(status=204)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks/zoom", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __enter__(self) -> Self:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_simulate_posts_signed_zoom_webhooks(tmp_path):
    runner = CliRunner()
    written = runner.invoke(simulate_command, [*ARGS, "-o", str(tmp_path / "zoom.jsonl")])
    assert written.exit_code == 0, written.output
    lines = [orjson.loads(line) for line in (tmp_path / "zoom.jsonl").read_bytes().splitlines()]
    with Endpoint() as endpoint:
        done = runner.invoke(simulate_command, [*ARGS, "--url", f"http://127.0.0.1:{endpoint.port}/webhooks/zoom"])
    assert done.exit_code == 0, done.output
    assert endpoint.rejected == [] and endpoint.answered_503 == 1
    assert [b.decode() for b in endpoint.bodies] == [x["body"] for x in lines], "every delivery once, in order"
    assert len(lines) > 20 and len({x["body"] for x in lines}) < len(lines), "retries included"
    for body in endpoint.bodies:
        assert map_delivery(orjson.loads(body), id_key=b"k").mapped


def test_a_wrong_secret_is_reported():
    with Endpoint() as endpoint:
        args = [a if a != SECRET else "not-the-secret" for a in ARGS]
        done = CliRunner().invoke(simulate_command, [*args, "--url", f"http://127.0.0.1:{endpoint.port}/webhooks/zoom"])
    assert done.exit_code != 0 and "401" in done.output
    assert endpoint.bodies == [] and set(endpoint.rejected) == {"bad_signature"}
