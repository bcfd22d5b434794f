"""The beacon in a real browser: a page in headless Chromium (Debian's `chromium`, installed by `make chromium`)
includes /v1/livepulse.js from the gateway, joins, sends heartbeats, records a click on an element marked
data-livepulse-cta and leaves when the tab is closed; a real worker turns that into a lead with its dwell, the
CTA click and the leave. The browser is driven over the DevTools protocol with aiohttp's websocket client."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.gateway.harness import WRITE_KEY, GatewayProcess
from tests.integration.harness import Pipeline, WorkerProcess, consume

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EVENT = "beacon-browser"
ATTENDEE = "lead-7"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, installed through `make chromium` (root and apt) when missing, else the test skips."""
    found = shutil.which("chromium")
    if found is None and shutil.which("make") and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["make", "-s", "-C", str(ROOT), "chromium"], check=False, timeout=1000)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium not installed and not installable here (`make chromium` needs root and apt-get)")
    return found


@pytest.fixture
def page_server(tmp_path) -> Iterator[tuple[str, Path]]:
    """A static web server on its own port (another origin than the gateway's): (origin, its directory)."""
    root = tmp_path / "site"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()


class DevTools:
    """The few DevTools-protocol calls the test needs, over the browser's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, session: str | None = None, **params) -> dict:
        n = next(self.ids)
        message = {"id": n, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send_str(orjson.dumps(message).decode())
        while True:
            reply = orjson.loads((await asyncio.wait_for(self.ws.receive(), 30)).data)
            if reply.get("id") == n:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})


def start_browser(chromium: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([chromium, *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--remote-debugging-port=0",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        if m := re.search(r"DevTools listening on (ws://\S+)", line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining its log
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("chromium did not open its DevTools port")


async def visit(ws_url: str, page_url: str, stay_s: float) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        cdp = DevTools(ws)
        target = (await cdp.call("Target.createTarget", url=page_url))["targetId"]
        session = (await cdp.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the beacon script has run
            ready = await cdp.call("Runtime.evaluate", session, expression="!!(window.livepulse && "
                                   "window.livepulse.attendeeId())", returnByValue=True)
            if ready["result"].get("value"):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(stay_s / 2)
        await cdp.call("Runtime.evaluate", session, expression="document.getElementById('offer').click()")
        await asyncio.sleep(stay_s / 2)
        await cdp.call("Target.closeTarget", targetId=target)  # closing the tab: pagehide, the leave beacon


def test_a_page_in_headless_chromium_gives_a_lead_with_dwell_cta_click_and_leave(chromium, broker, tmp_path,
                                                                                  page_server):
    origin, site = page_server
    pipe = Pipeline(broker, tmp_path, partitions=2, extra_env={"LIVEPULSE_ALLOWED_LATENESS_S": "1"})
    gw = GatewayProcess(pipe, cors_origins=orjson.dumps([origin]).decode()).start()
    worker = WorkerProcess(pipe).start()
    browser = None
    try:
        gw.wait_ready()
        worker.wait_ready()
        (site / "webinar.html").write_text(f"""<!doctype html>
<html><head><title>Webinar</title>
<script src="{gw.url}/v1/livepulse.js" data-write-key="{WRITE_KEY}" data-event-id="{EVENT}"
        data-attendee-id="{ATTENDEE}" data-heartbeat-seconds="1" async></script></head>
<body><h1>Streaming analytics 101</h1><a id="offer" href="#book" data-livepulse-cta="demo-offer">Book a demo</a>
</body></html>""")
        started = int(time.time() * 1000)
        assert gw.post_api("/v1/events", [{"event_id": EVENT, "type": "started", "ts": started}])[0] == 200
        browser, ws_url = start_browser(chromium, tmp_path)
        asyncio.run(visit(ws_url, f"{origin}/webinar.html", stay_s=4.0))

        topic = pipe.settings.topic_interactions

        def left(received) -> bool:
            return any(orjson.loads(v)["type"] == "leave" for _, v in received[topic])

        got = asyncio.run(consume(broker, [topic], until=left, timeout=30))
        records = [orjson.loads(v) for _, v in got[topic]]
        types = [r["type"] for r in records]
        assert types[0] == "join" and types[-1] == "leave", types
        assert types.count("heartbeat") >= 2 and types.count("cta_click") == 1, types
        assert {r["attendee_id"] for r in records} == {ATTENDEE} and {r["event_id"] for r in records} == {EVENT}
        [click] = [r for r in records if r["type"] == "cta_click"]
        assert click["cta_id"] == "demo-offer"
        join, leave = records[0], records[-1]

        time.sleep(1.0)  # the event ends a while after the leave: the dwell ends at the leave, not at the end
        ended = int(time.time() * 1000)
        assert gw.post_api("/v1/events", [{"event_id": EVENT, "type": "ended", "ts": ended}])[0] == 200
        leads_topic = pipe.settings.topic_leads
        got = asyncio.run(consume(broker, [leads_topic], until=lambda r: len(r[leads_topic]) >= 1, timeout=60))
        [lead] = [orjson.loads(v) for _, v in got[leads_topic]]
        assert lead["attendee_id"] == ATTENDEE and lead["attended"] is True and lead["cta_clicked"] is True
        assert lead["dwell_seconds"] == pytest.approx((leave["ts"] - join["ts"]) / 1000, abs=0.01)
        assert lead["dwell_seconds"] < (ended - join["ts"]) / 1000 - 0.5, "the leave ended the presence"
    finally:
        if browser is not None:
            browser.kill()
            browser.wait(10)
        worker.stop()
        gw.stop()
