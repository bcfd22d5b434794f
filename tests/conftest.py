"""Shared pytest plumbing: one embedded broker per session, unique topic names, the soak switch."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from streams.broker import EmbeddedBroker, free_port  # noqa: F401 - free_port re-exported for tests
from streams.settings import Settings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False, help="run the long soak tests (make soak)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip soak tests unless asked for (--soak, or a -m expression selecting soak); tests that use
    the broker are integration tests whether or not they say so."""
    wanted = config.getoption("--soak") or re.search(r"(?<!not )\bsoak\b", config.getoption("-m") or "")
    skip = pytest.mark.skip(reason="soak test: run with --soak or -m soak (make soak)")
    for item in items:
        if item.get_closest_marker("soak") and not wanted:
            item.add_marker(skip)
        if "broker" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL (kafka://127.0.0.1:PORT) of an in-memory tansu broker shared by the whole session.

    Topics outlive tests: use `topic_name` for names no other test uses.
    """
    embedded = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    embedded.start()
    try:
        yield embedded.url
    finally:
        embedded.stop()


@pytest.fixture
def broker_settings(broker: str) -> Settings:
    """Settings pointing at the session broker (other fields from the environment as usual)."""
    return Settings(broker=broker)


_counter = itertools.count()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`topic_name("interactions")` -> a topic name unique to this test and call, readable in broker logs."""
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60]
    run = uuid.uuid4().hex[:6]

    def make(stem: str = "t") -> str:
        return f"test.{test}.{stem}.{run}{next(_counter)}"

    return make
