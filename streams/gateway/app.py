"""The gateway's HTTP application: routes, body limits, answers, and the `livepulse gateway` command.

Every handler reads a bounded body within a deadline, refuses with a JSON reason code, and answers a write only
after Kafka acknowledged it (streams.gateway.producer). Nothing is kept between requests but rate-limit buckets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib import resources

import click
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest

from streams import logs
from streams.gateway.auth import ApiKeys
from streams.gateway.beacon import Collector, Cors
from streams.gateway.errors import Refused, json_response, refusal_response
from streams.gateway.http import (
    BUDGET,
    METRICS,
    PRODUCER,
    SETTINGS,
    BodyBudget,
    client_address,
    produce,
    read_body,
)
from streams.gateway.metrics import GatewayMetrics
from streams.gateway.producer import Producer
from streams.gateway.records import check, split_body
from streams.gateway.zoom_route import ZOOM, ZoomRoute, zoom_webhook
from streams.settings import Settings

log = logging.getLogger("livepulse.gateway")

BEACON_JS = resources.files("streams.gateway").joinpath("static", "livepulse.js").read_bytes()


def ingest_handler(kind: str, topic_field: str):
    async def handler(request: web.Request) -> web.Response:
        s = request.app[SETTINGS]
        request.app[API_KEYS].check(request.headers.get("Authorization"))
        body = await read_body(request, s.gateway_max_body_bytes, s.gateway_body_timeout_s)
        values = split_body(body, s.gateway_max_records)
        checked = check(kind, values, now_ms=int(time.time() * 1000), max_bytes=s.max_record_bytes,
                        max_future_skew_ms=round(s.max_future_skew_s * 1000))
        topic = getattr(s, topic_field)
        await produce(request, [(topic, c.key, c.value) for c in checked if c.rejection is None])
        metrics = request.app[METRICS]
        results = []
        for c in checked:
            if c.rejection is None:
                results.append({"index": c.index, "status": "accepted"})
            else:
                metrics.rejects.labels(c.rejection.reason).inc()
                results.append({"index": c.index, "status": "rejected", "reason": c.rejection.reason,
                                "error": c.rejection.error})
        accepted = sum(1 for c in checked if c.rejection is None)
        metrics.records.labels(kind).inc(accepted)
        return json_response({"accepted": accepted, "rejected": len(checked) - accepted, "results": results})

    return handler


API_KEYS = web.AppKey("api_keys", ApiKeys)
COLLECTOR = web.AppKey("collector", Collector)
CORS = web.AppKey("cors", Cors)


async def collect(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    cors = request.app[CORS]
    origin = request.headers.get("Origin")
    if not cors.allowed(origin):
        raise Refused(403, "origin_not_allowed", "this origin may not send beacons (gateway_cors_origins)")
    collector = request.app[COLLECTOR]
    collector.admit_client(client_address(request, s.gateway_trust_forwarded_for))
    body = await read_body(request, s.gateway_collect_max_bytes, s.gateway_body_timeout_s)
    collected = collector.collect(body, now_ms=int(time.time() * 1000))
    await produce(request, [(s.topic_interactions, key, value) for key, value in collected.records])
    metrics = request.app[METRICS]
    for result in collected.results:
        if result["status"] == "rejected":
            metrics.rejects.labels(result["reason"]).inc()
    metrics.records.labels("interaction").inc(len(collected.records))
    return json_response({"accepted": len(collected.records), "rejected": len(collected.results) - len(
        collected.records), "results": collected.results}, headers=cors.headers(origin))


async def collect_preflight(request: web.Request) -> web.Response:
    headers = request.app[CORS].preflight(request.headers.get("Origin"))
    return web.Response(status=204, headers=headers)


async def beacon_script(request: web.Request) -> web.Response:
    return web.Response(body=BEACON_JS, content_type="application/javascript", charset="utf-8",
                        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"})


async def health(request: web.Request) -> web.Response:
    """200 while the producer is connected and Kafka acknowledged the last send; 503 otherwise (a load balancer
    then sends traffic to the gateways that can deliver it)."""
    producer = request.app[PRODUCER]
    if producer.connected and producer.healthy:
        return json_response({"status": "ok"})
    return json_response({"status": "unavailable", "reason": "broker_unavailable", "error": producer.last_error},
                         503)


async def metrics_view(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[METRICS].registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def answers(request: web.Request, handler) -> web.StreamResponse:  # type: ignore[no-untyped-def]
    """Refusals become JSON answers; every answer is counted by route and status; no exception escapes."""
    metrics = request.app[METRICS]
    route = metrics.route(request.match_info.route.resource.canonical
                          if request.match_info.route.resource is not None else "")
    cors_headers = request.app[CORS].headers(request.headers.get("Origin")) if route == "/v1/collect" else {}
    try:
        response = await handler(request)
    except Refused as refused:
        metrics.rejects.labels(refused.reason).inc()
        response = refusal_response(refused, cors_headers)
    except web.HTTPException as exc:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        if exc.status >= 400:
            metrics.rejects.labels(reason).inc()
        response = json_response({"reason": reason, "error": exc.reason}, exc.status, cors_headers)
    except Exception:
        log.exception("gateway: unexpected error on %s", route)
        metrics.rejects.labels("internal_error").inc()
        response = json_response({"reason": "internal_error", "error": "unexpected error"}, 500)
    finally:
        request.app[BUDGET].give_back(request.get("budget_held", 0))
    metrics.requests.labels(route, str(response.status)).inc()
    return response


def build_app(settings: Settings) -> web.Application:
    # client_max_size: aiohttp's own cap, above ours, in case a handler ever reads with request.read()
    app = web.Application(middlewares=[answers], client_max_size=settings.gateway_max_body_bytes + 1)
    metrics = GatewayMetrics()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[PRODUCER] = Producer(settings, metrics)
    app[API_KEYS] = ApiKeys(settings.gateway_api_key_hashes)
    app[COLLECTOR] = Collector(settings)
    app[CORS] = Cors(settings.gateway_cors_origins)
    app[BUDGET] = BodyBudget(settings.gateway_max_buffered_bytes)
    app[ZOOM] = ZoomRoute(settings)
    app.router.add_post("/v1/interactions", ingest_handler("interaction", "topic_interactions"))
    app.router.add_post("/v1/events", ingest_handler("event", "topic_events"))
    app.router.add_post("/v1/opportunities", ingest_handler("opportunity", "topic_opportunities"))
    app.router.add_post("/v1/collect", collect)
    app.router.add_route("OPTIONS", "/v1/collect", collect_preflight)
    app.router.add_get("/v1/livepulse.js", beacon_script)
    app.router.add_post("/webhooks/zoom", zoom_webhook)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_view)

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        await app[PRODUCER].start()
        yield
        await app[PRODUCER].stop()

    app.cleanup_ctx.append(lifecycle)
    return app


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    app = build_app(settings)
    # keepalive_timeout: aiohttp closes a connection idle this long, also one that has not sent (all) the headers
    # of its first request since it opened (slow-header floods); header and line sizes are aiohttp's 8 KiB caps.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=settings.gateway_header_timeout_s,
                           handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port, backlog=1024)
    await site.start()
    log.info("gateway listening on http://%s:%d", settings.gateway_host, settings.gateway_port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@click.command("gateway")
@click.option("--broker", help="Kafka bootstrap servers [env LIVEPULSE_BROKER].")
@click.option("--host", help="Address to bind [env LIVEPULSE_GATEWAY_HOST, 127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535), help="Port [env LIVEPULSE_GATEWAY_PORT, 8080].")
def gateway_command(broker: str | None, host: str | None, port: int | None) -> None:
    """Run the HTTP gateway: ingest API, browser beacon and Zoom webhooks to the input topics (docs/gateway.md)."""
    import signal

    overrides = {k: v for k, v in {"broker": broker, "gateway_host": host, "gateway_port": port}.items() if v}
    settings = Settings(**overrides)
    disable_created_metrics()  # no *_created series: one per counter, of no use to the dashboards and alerts
    try:  # a misconfiguration (a malformed key digest, Zoom tokens without an id key) is one line, not a traceback
        ApiKeys(settings.gateway_api_key_hashes)
        ZoomRoute(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    logs.configure(settings, "%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
