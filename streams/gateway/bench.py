"""`livepulse gateway-bench`: requests/s and latency of the gateway on this machine, and its memory under a flood.

It starts the embedded broker and a real `livepulse gateway` process, then drives it over HTTP with aiohttp from
this process (so the client shares the machine's cores with the gateway and the broker: the figures are a floor).
Phases: single records, batched records (NDJSON), single beacons, single Zoom webhooks when the Zoom route exists,
then a flood of large requests while the gateway's RSS is sampled from /proc.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import click
import orjson

API_KEY = "bench-key"
WRITE_KEY = "bench-write-key"
ZOOM_SECRET = "bench-zoom-secret"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


async def run_phase(name: str, total: int, concurrency: int, one: Callable[[int], Awaitable[int]],
                    records_per_request: int = 1) -> dict:
    latencies: list[float] = []
    statuses: Counter = Counter()
    counter = iter(range(total))

    async def lane() -> None:
        for i in counter:
            started = time.perf_counter()
            status = await one(i)
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    result = {
        "phase": name, "requests": total, "concurrency": concurrency, "records_per_request": records_per_request,
        "requests_per_s": round(total / elapsed, 1), "records_per_s": round(total * records_per_request / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        "statuses": dict(statuses),
    }
    click.echo(f"{name:>10}: {result['requests_per_s']:>8} req/s {result['records_per_s']:>10} records/s  "
               f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  statuses {result['statuses']}")
    return result


async def bench(url: str, pid: int, requests: int, flood_s: float) -> list[dict]:
    import aiohttp

    now = int(time.time() * 1000)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    results = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def post(path: str, body: bytes, headers: dict[str, str]) -> int:
            async with session.post(url + path, data=body, headers=headers) as r:
                await r.read()
                return r.status

        def record(i: int) -> dict:
            return {"id": f"bench-{i}", "event_id": f"bench-{i % 16}", "attendee_id": f"a-{i % 1000}",
                    "type": "heartbeat", "ts": now}

        singles = [orjson.dumps([record(i)]) for i in range(requests)]
        results.append(await run_phase("single", requests, 32, lambda i: post("/v1/interactions", singles[i], auth)))
        batch = 500
        batches = [b"\n".join(orjson.dumps(record(i * batch + j)) for j in range(batch))
                   for i in range(max(10, requests // 50))]
        results.append(await run_phase("batched", len(batches), 8,
                                       lambda i: post("/v1/interactions", batches[i], auth), batch))
        beacons = [orjson.dumps({"k": WRITE_KEY, "e": f"bench-{i % 16}", "a": f"a-{i}", "r": [
            {"i": f"p{i}.0", "t": "heartbeat"}]}) for i in range(requests)]
        results.append(await run_phase("beacon", requests, 32, lambda i: post("/v1/collect", beacons[i], {})))
        zoom = zoom_deliveries(requests)
        if zoom is not None:
            results.append(await run_phase("zoom", requests, 32,
                                           lambda i: post("/webhooks/zoom", zoom[i][0], zoom[i][1])))

        # Flood: many concurrent near-cap bodies for flood_s seconds; the gateway must refuse (503) rather than
        # queue, and its memory must level off.
        big = b"\n".join(orjson.dumps({**record(i), "pad": "x" * 3000}) for i in range(300))  # ~0.95 MB
        rss_before, peak = rss_bytes(pid), 0
        statuses: Counter = Counter()
        deadline = time.monotonic() + flood_s

        async def flooder() -> None:
            while time.monotonic() < deadline:
                try:
                    statuses[await post("/v1/interactions", big, auth)] += 1
                except aiohttp.ClientError:
                    statuses["error"] += 1

        async def sampler() -> None:
            nonlocal peak
            while time.monotonic() < deadline:
                peak = max(peak, rss_bytes(pid))
                await asyncio.sleep(0.05)

        await asyncio.gather(sampler(), *(flooder() for _ in range(200)))
        await asyncio.sleep(1.0)
        flood = {"phase": "flood", "seconds": flood_s, "concurrency": 200, "body_bytes": len(big),
                 "statuses": dict(statuses), "rss_before_mib": round(rss_before / 2**20, 1),
                 "rss_peak_mib": round(peak / 2**20, 1), "rss_after_mib": round(rss_bytes(pid) / 2**20, 1)}
        click.echo(f"     flood: {flood['statuses']}  RSS {flood['rss_before_mib']} -> peak {flood['rss_peak_mib']} "
                   f"-> {flood['rss_after_mib']} MiB")
        results.append(flood)
    return results


def zoom_deliveries(n: int) -> list[tuple[bytes, dict[str, str]]] | None:
    """Signed Zoom webhooks (one participant_joined each), when the gateway has its Zoom route."""
    try:
        from streams.gateway import zoom  # noqa: F401 - only whether the Zoom mapping exists
    except ImportError:
        return None
    import hmac

    deliveries = []
    ts = str(int(time.time()))
    for i in range(n):
        body = orjson.dumps({"event": "webinar.participant_joined", "event_ts": int(time.time() * 1000), "payload": {
            "account_id": "bench", "object": {"id": "123456789", "uuid": "benchUuid==", "topic": "Bench",
                                              "participant": {"user_id": str(i), "participant_uuid": f"p-{i}",
                                                              "user_name": f"Bench {i}",
                                                              "email": f"bench{i}@example.com",
                                                              "join_time": "2026-12-07T10:00:00Z"}}}})
        signature = "v0=" + hmac.new(ZOOM_SECRET.encode(), b"v0:" + ts.encode() + b":" + body,
                                     hashlib.sha256).hexdigest()
        deliveries.append((body, {"x-zm-signature": signature, "x-zm-request-timestamp": ts,
                                  "Content-Type": "application/json"}))
    return deliveries


@click.command("gateway-bench")
@click.option("--requests", default=3000, show_default=True, type=click.IntRange(100), help="Requests per phase.")
@click.option("--flood-seconds", default=10.0, show_default=True, type=click.FloatRange(1), help="Flood length.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON.")
def gateway_bench_command(requests: int, flood_seconds: float, output: Path | None) -> None:
    """Measure the gateway on this machine against the embedded broker (docs/gateway.md "Speed")."""
    from streams.broker import EmbeddedBroker, free_port

    click.echo(f"machine: {machine()}; {time.strftime('%Y-%m-%d')}")
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        run = os.urandom(4).hex()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEPULSE_")}
        env.update({
            "LIVEPULSE_BROKER": broker.url, "LIVEPULSE_GATEWAY_HOST": "127.0.0.1", "LIVEPULSE_GATEWAY_PORT": str(port),
            "LIVEPULSE_TOPIC_INTERACTIONS": f"bench{run}.interactions", "LIVEPULSE_TOPIC_EVENTS": f"bench{run}.events",
            "LIVEPULSE_GATEWAY_API_KEY_HASHES": orjson.dumps([hashlib.sha256(API_KEY.encode()).hexdigest()]).decode(),
            "LIVEPULSE_GATEWAY_BEACON_WRITE_KEYS": orjson.dumps({"bench": [WRITE_KEY]}).decode(),
            "LIVEPULSE_GATEWAY_ZOOM_SECRET_TOKENS": orjson.dumps([ZOOM_SECRET]).decode(),
            "LIVEPULSE_GATEWAY_ID_HASH_KEY": "bench-id-key-0123456789", "LIVEPULSE_GATEWAY_RATE_PER_CLIENT": "1000000",
            "LIVEPULSE_GATEWAY_BURST_PER_CLIENT": "1000000", "LIVEPULSE_LOG_LEVEL": "warning",
            **{k: v for k, v in os.environ.items() if k.startswith("LIVEPULSE_GATEWAY_MAX")},
        })
        log = open(Path(tmp) / "gateway.log", "wb")  # noqa: SIM115 - closed below, after the child exits
        proc = subprocess.Popen([sys.executable, "-m", "streams", "gateway"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            results = asyncio.run(bench(url, proc.pid, requests, flood_seconds))
        finally:
            proc.terminate()
            proc.wait(20)
            log.close()
    if output:
        document = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "results": results}
        output.write_text(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"the gateway exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise click.ClickException("the gateway did not become healthy")
