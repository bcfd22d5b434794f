"""`livepulse gateway` as a child process against the real broker, and a plain HTTP client for it."""

from __future__ import annotations

import hashlib
import http.client
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson

from streams.broker import free_port
from tests.integration.harness import Pipeline

API_KEY = "lp-test-key-0123456789"
WRITE_KEY = "pk-test-acme"
ORGANIZER = "acme"


class GatewayProcess:
    def __init__(self, pipeline: Pipeline, name: str = "g1", **settings: str) -> None:
        self.pipeline = pipeline
        self.name = name
        self.port = free_port()
        self.settings = settings
        self.log_path = pipeline.tmp / f"gateway-{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        env = self.pipeline.env()
        env.update({
            "LIVEPULSE_GATEWAY_HOST": "127.0.0.1", "LIVEPULSE_GATEWAY_PORT": str(self.port),
            "LIVEPULSE_GATEWAY_API_KEY_HASHES": orjson.dumps([hashlib.sha256(API_KEY.encode()).hexdigest()]).decode(),
            "LIVEPULSE_GATEWAY_BEACON_WRITE_KEYS": orjson.dumps({ORGANIZER: [WRITE_KEY]}).decode(),
        })
        env.update({f"LIVEPULSE_GATEWAY_{k.upper()}": v for k, v in self.settings.items()})
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "streams", "gateway"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 60.0, healthy: bool = True) -> None:
        """Until /health answers (200 when `healthy`, any answer otherwise)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _, _ = self.request("GET", "/health")
                last = status
                if status == 200 or not healthy:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"gateway not ready after {timeout} s (last /health {last}):\n{self.log_tail()}")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30.0) -> tuple[int, dict[str, str], object]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            raw = response.read()
            content_type = response.getheader("Content-Type", "")
            parsed = orjson.loads(raw) if "json" in content_type and raw else raw
            return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
        finally:
            conn.close()

    def post_api(self, path: str, records: list | bytes, key: str = API_KEY) -> tuple[int, dict[str, str], object]:
        body = records if isinstance(records, bytes) else orjson.dumps(records)
        return self.request("POST", path, body, {"Authorization": f"Bearer {key}",
                                                 "Content-Type": "application/json"})

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            return r.read().decode()

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


