"""A real Prometheus and Alertmanager (Debian's packages) as child processes -- scrape workers, evaluate rules,
answer queries, route and inhibit alerts -- and an HTTP server standing in for the receivers and link targets."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import yaml

from streams.broker import free_port


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class _Server:
    """A Prometheus-family server as a child process, ready once /-/ready answers 200."""

    name = "server"
    url: str
    log_path: Path
    proc: subprocess.Popen | None

    def _launch(self, argv: list[str], timeout: float) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class PrometheusServer(_Server):
    """Scrapes `targets` (host:port of /metrics) as job "livepulse" every second and evaluates `rules` every second;
    sends alerts to `alertmanager` (host:port) with `external_labels` when given."""

    name = "prometheus"

    def __init__(self, tmp: Path, targets: list[str], rules: list[dict], *, alertmanager: str | None = None,
                 external_labels: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "prometheus.log"
        (tmp / "rules.yml").write_text(yaml.safe_dump({"groups": rules}, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms",
                       "external_labels": external_labels or {}},
            "rule_files": [str(tmp / "rules.yml")],
            "scrape_configs": [{"job_name": "livepulse", "static_configs": [{"targets": targets}]}],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        binary = prometheus_binary()
        assert binary, "prometheus is not installed"
        self._launch([binary, f"--config.file={self.tmp / 'prometheus.yml'}", f"--storage.tsdb.path={self.tmp / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"], timeout)
        return self

    def _get(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}" if params else f"{self.url}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = orjson.loads(r.read())
        except urllib.error.HTTPError as exc:  # a bad query: Prometheus says why in the body
            body = orjson.loads(exc.read())
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant query; the result as a list of {metric, value} (a scalar comes back as one element)."""
        data = self._get("/api/v1/query", query=expr)
        result = data["result"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float = 2.0) -> list[dict]:
        """Range query (what a Grafana panel or annotation runs over its time range); the series with data."""
        data = self._get("/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=str(step))
        return [series for series in data["result"] if series.get("values")]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["alerts"]

    def targets_up(self) -> int:
        return sum(1 for t in self._get("/api/v1/targets")["activeTargets"] if t["health"] == "up")


class AlertmanagerServer(_Server):
    """A real Alertmanager with `config` (a dict: routes, inhibitions, receivers), no clustering."""

    name = "alertmanager"

    def __init__(self, tmp: Path, config: dict) -> None:
        self.tmp = tmp / "alertmanager"
        self.tmp.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.tmp / "alertmanager.log"
        (self.tmp / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> AlertmanagerServer:
        binary = alertmanager_binary()
        assert binary, "alertmanager is not installed"
        self._launch([binary, f"--config.file={self.tmp / 'alertmanager.yml'}", f"--storage.path={self.tmp / 'data'}",
                      f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                      "--log.level=warn"], timeout)
        return self

    def alerts(self) -> list[dict]:
        """Every alert Alertmanager holds, inhibited ones included (status.inhibitedBy)."""
        url = f"{self.url}/api/v2/alerts?active=true&inhibited=true&silenced=true&unprocessed=true"
        with urllib.request.urlopen(url, timeout=10) as r:
            return orjson.loads(r.read())


class Receivers:
    """An HTTP server standing in for every receiver (webhook POSTs to /<receiver name>, kept in `received`) and
    for the targets of the alerts' links: GET /deploy/RUNBOOK.md serves the runbook, GET /grafana/d/<uid>/<slug>
    answers 200 for a committed dashboard (404 otherwise)."""

    def __init__(self, runbook: Path, dashboards: dict[str, dict]) -> None:
        self.received: list[tuple[str, dict]] = []  # (receiver, webhook payload)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        receivers = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receivers.received.append((self.path.strip("/"), orjson.loads(body)))
                self.send_response(200)
                self.end_headers()

            def do_GET(self) -> None:
                path = urllib.parse.urlparse(self.path).path
                parts = path.strip("/").split("/")
                if path == "/deploy/RUNBOOK.md":
                    body, status = runbook.read_bytes(), 200
                elif len(parts) == 4 and parts[:2] == ["grafana", "d"] and parts[2] in dashboards:
                    body, status = orjson.dumps(dashboards[parts[2]]), 200
                else:
                    body, status = b"not found", 404
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Receivers:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, receiver: str | None = None) -> list[tuple[str, dict]]:
        """(receiver, alert) of every alert in every notification so far (firing and resolved)."""
        return [(name, alert) for name, payload in list(self.received) if receiver in (None, name)
                for alert in payload["alerts"]]
